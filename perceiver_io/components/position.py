"""transformers' position-encoding arguments (``position_encoding_type`` + ``*_position_encoding_kwargs``) → ours."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from perceiver_io.layers.position import FourierPositionEncoding, TrainablePositionEncoding

TRAINABLE_KEYS = ("index_dims", "num_channels")
FOURIER_KEYS = ("num_bands", "max_resolution", "concat_pos", "sine_only")
# What transformers' ``build_position_encoding`` accepts besides the type.
BUILD_KEYS = (
    "out_channels",
    "project_pos_dim",
    "trainable_position_encoding_kwargs",
    "fourier_position_encoding_kwargs",
)


def check_keys(owner: str, given: Mapping[str, Any], allowed: Sequence[str]) -> None:
    """TypeError naming every keyword of ``given`` that ``owner`` does not take."""
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise TypeError(f"{owner} got unexpected keyword argument(s) {unknown}; it takes {sorted(allowed)}")


def index_dims_rank(index_dims: int | Sequence[int]) -> int:
    """How many index dimensions transformers' trainable encoding claims: 1 for an int, else the sequence length."""
    return 1 if isinstance(index_dims, int) else len(index_dims)


def trainable_shape(owner: str, kwargs: Mapping[str, Any]) -> tuple[int, int]:
    """(rows, channels) of the table that ``trainable_position_encoding_kwargs`` describe."""
    check_keys(f"{owner}'s trainable_position_encoding_kwargs", kwargs, TRAINABLE_KEYS)
    if "index_dims" not in kwargs:
        raise ValueError(f"{owner}: trainable_position_encoding_kwargs needs index_dims")
    dims = kwargs["index_dims"]
    rows = dims if isinstance(dims, int) else math.prod(dims)
    return int(rows), int(kwargs.get("num_channels", 128))


def build_position(
    owner: str,
    position_encoding_type: str,
    trainable_position_encoding_kwargs: Mapping[str, Any] | None = None,
    fourier_position_encoding_kwargs: Mapping[str, Any] | None = None,
) -> FourierPositionEncoding | TrainablePositionEncoding:
    """The encoding transformers' ``build_position_encoding`` makes, as one of ours.

    trainable: ``dict(index_dims, num_channels=128)`` → a (prod(index_dims), num_channels) table;
    fourier: ``dict(num_bands, max_resolution, concat_pos=True, sine_only=False)``.
    """
    if position_encoding_type == "trainable":
        kwargs = trainable_position_encoding_kwargs
        if not kwargs:
            raise ValueError(f"{owner}: position_encoding_type='trainable' needs trainable_position_encoding_kwargs")
        return TrainablePositionEncoding(*trainable_shape(owner, kwargs))
    if position_encoding_type == "fourier":
        kwargs = fourier_position_encoding_kwargs
        if not kwargs:
            raise ValueError(f"{owner}: position_encoding_type='fourier' needs fourier_position_encoding_kwargs")
        check_keys(f"{owner}'s fourier_position_encoding_kwargs", kwargs, FOURIER_KEYS)
        missing = [k for k in ("num_bands", "max_resolution") if k not in kwargs]
        if missing:
            raise ValueError(f"{owner}: fourier_position_encoding_kwargs needs {missing}")
        return FourierPositionEncoding(
            kwargs["num_bands"],
            kwargs["max_resolution"],
            concat_pos=kwargs.get("concat_pos", True),
            sine_only=kwargs.get("sine_only", False),
        )
    raise ValueError(f"{owner}: position_encoding_type={position_encoding_type!r}; expected 'trainable' or 'fourier'")


def projection_size(owner: str, project_pos_dim: int, out_channels: int, position_channels: int) -> int | None:
    """``project_pos_dim`` as ours (None: no projection), checked as transformers builds it.

    transformers projects with ``Linear(out_channels, project_pos_dim)`` whatever the encoding's width, so a
    projection only runs there when the two agree; anything else is refused here rather than given other weights.
    """
    if project_pos_dim <= 0:
        return None
    if out_channels != position_channels:
        raise ValueError(
            f"{owner}: project_pos_dim={project_pos_dim} projects from out_channels={out_channels} channels, but the "
            f"position encoding has {position_channels}; set out_channels={position_channels}"
        )
    return project_pos_dim
