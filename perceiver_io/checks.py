"""Checks of tensors at the public boundary, written once. Each raises TypeError (wrong type or dtype) or
ValueError (wrong shape or values) with a message naming the value (``name``) and what was expected.

Checks that read values (finiteness, ranges) are skipped while torch.compile, torch.export or the TorchScript
tracer records a graph: a branch on data would break the graph or be baked into it. Everything else reads only
shapes and dtypes, which tracing sees too.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch


def values_checkable(x: torch.Tensor) -> bool:
    """Whether a check may read ``x``'s values: it holds some and no graph is being traced."""
    return x.numel() > 0 and not torch.compiler.is_compiling() and not torch.jit.is_tracing()


def check_tensor(name: str, x: object) -> None:
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")


def check_rank(name: str, x: torch.Tensor, ranks: Sequence[int], layout: str) -> None:
    """``x.dim()`` is one of ``ranks``; ``layout`` spells the expected shape, e.g. "(batch, length)"."""
    if x.dim() not in ranks:
        raise ValueError(f"{name}: shape {tuple(x.shape)}; expected {layout}")


def check_nonempty(name: str, x: torch.Tensor, layout: str) -> None:
    """No size of ``x`` is 0: an empty batch, sequence or image has nothing to compute on."""
    if 0 in x.shape:
        raise ValueError(f"{name}: shape {tuple(x.shape)} has a zero size; expected {layout}, every size >= 1")


def check_dtype(name: str, x: torch.Tensor, expected: Sequence[torch.dtype], hint: str = "") -> None:
    if x.dtype not in expected:
        allowed = " or ".join(str(d) for d in expected)
        raise TypeError(f"{name}: dtype {x.dtype}; expected {allowed}{hint}")


def check_floating(name: str, x: torch.Tensor, like: torch.dtype | None) -> None:
    """``x`` holds floats of dtype ``like`` (the parameters' dtype; any floating dtype when None). Integer data
    is refused rather than cast: its scale (0..255 pixels? class ids?) is the caller's to decide."""
    if not x.is_floating_point():
        hint = (
            "; scale integer pixels to normalised floats first, e.g. with PerceiverImageProcessor"
            if x.dtype == torch.uint8
            else ""
        )
        raise TypeError(f"{name}: dtype {x.dtype}; expected a floating dtype ({like or torch.float32}){hint}")
    if like is not None and x.dtype != like:
        raise TypeError(f"{name}: dtype {x.dtype}; the model's parameters are {like}: cast one to the other")


def check_finite(name: str, x: torch.Tensor) -> None:
    """No NaN or infinity in a floating ``x`` (one pass over it; counted only when the check fails)."""
    if x.is_floating_point() and values_checkable(x) and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name}: {bad} non-finite values (NaN or inf); expected finite numbers")


def parameter_dtype(module: torch.nn.Module) -> torch.dtype | None:
    """The floating dtype of ``module``'s first floating parameter or buffer; None if it has none."""
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return None
