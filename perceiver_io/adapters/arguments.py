"""The extra arguments of transformers' pre- and postprocessor calls, checked where we do not support them."""

from __future__ import annotations

from collections.abc import Mapping

import torch


def check_preprocessor_call(
    owner: str,
    pos: torch.Tensor | None,
    network_input_is_1d: bool,
    interpolate_pos_encoding: bool = False,
    interpolates: bool = False,
) -> None:
    """Raise for a value of transformers' preprocessor arguments that ``owner`` does not honour.

    ``pos`` (explicit input positions) is accepted by transformers' preprocessors but never read; grid-shaped
    outputs (``network_input_is_1d=False``) cannot feed the encoder; only image preprocessors fit their positions
    to another grid (``interpolates``).
    """
    if pos is not None:
        raise ValueError(f"{owner} does not take explicit input positions: pass pos=None")
    if network_input_is_1d is not True:
        raise ValueError(f"{owner} only flattens its inputs to (batch, length, channels): network_input_is_1d=True")
    if interpolate_pos_encoding and not interpolates:
        raise ValueError(f"{owner} has no position table to interpolate: interpolate_pos_encoding=False")


def check_postprocessor_call(
    owner: str, pos: torch.Tensor | None, modality_sizes: Mapping[str, int] | None, splits: bool = False
) -> None:
    """Raise for a value of transformers' postprocessor arguments that ``owner`` does not honour."""
    if pos is not None:
        raise ValueError(f"{owner} does not use output positions: pass pos=None")
    if modality_sizes is not None and not splits:
        raise ValueError(f"{owner} handles a single modality: pass modality_sizes=None")
