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
    # Under autocast the ops cast their operands themselves, and activations legitimately differ from the weights.
    if like is not None and x.dtype != like and not torch.is_autocast_enabled(x.device.type):
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


def check_class_labels(labels: object, logits: torch.Tensor, problem_type: str | None) -> None:
    """Labels of a (B, num_labels) classifier under transformers' problem types (None infers it as transformers
    does: regression for one label, single-label for integer labels, multi-label otherwise):
    regression float (B,) or (B, num_labels); single-label int64 class indices (B,) in [0, num_labels);
    multi-label float targets (B, num_labels) in [0, 1]. Float labels must have the logits' dtype."""
    name = "labels"
    check_tensor(name, labels)
    batch, num_labels = logits.shape
    if problem_type is None:
        if num_labels == 1:
            problem_type = "regression"
        elif not labels.is_floating_point():
            problem_type = "single_label_classification"
        else:
            problem_type = "multi_label_classification"
    if problem_type == "single_label_classification":
        check_dtype(name, labels, (torch.int64,), " (class indices)")
        if tuple(labels.shape) != (batch,):
            raise ValueError(f"{name}: shape {tuple(labels.shape)}; expected class indices ({batch},)")
        check_range(name, labels, 0, num_labels)
        return
    check_floating(name, labels, logits.dtype)
    if problem_type == "regression":
        if labels.numel() != batch * num_labels:
            raise ValueError(
                f"{name}: shape {tuple(labels.shape)}; expected regression targets ({batch}, {num_labels})"
            )
        check_finite(name, labels)
        return
    if tuple(labels.shape) != (batch, num_labels):
        raise ValueError(f"{name}: shape {tuple(labels.shape)}; expected multi-label targets ({batch}, {num_labels})")
    check_finite(name, labels)
    if values_checkable(labels) and not bool(((labels >= 0) & (labels <= 1)).all()):
        raise ValueError(
            f"{name}: multi-label targets range over [{float(labels.min())}, {float(labels.max())}]; expected [0, 1]"
        )


def check_token_labels(labels: object, batch: int, max_length: int, vocab_size: int, ignore_index: int = -100) -> None:
    """Masked-LM labels: int64 (B, L), 1 <= L <= max_length, each a token id in [0, vocab_size) or ``ignore_index``."""
    name = "labels"
    check_tensor(name, labels)
    check_dtype(name, labels, (torch.int64,), " (token ids, -100 where ignored)")
    if labels.dim() != 2 or labels.shape[0] != batch or not 1 <= labels.shape[1] <= max_length:
        raise ValueError(f"{name}: shape {tuple(labels.shape)}; expected ({batch}, L) with 1 <= L <= {max_length}")
    if values_checkable(labels):
        kept = labels[labels != ignore_index]
        if kept.numel() and (int(kept.min()) < 0 or int(kept.max()) >= vocab_size):
            raise ValueError(
                f"{name}: token ids range over [{int(kept.min())}, {int(kept.max())}]; expected [0, {vocab_size}) "
                f"or {ignore_index} (ignored)"
            )


def check_range(name: str, x: torch.Tensor, low: int, high: int) -> None:
    """Integer ``x`` lies in [low, high)."""
    if values_checkable(x):
        lo, hi = int(x.min()), int(x.max())
        if lo < low or hi >= high:
            raise ValueError(f"{name}: values range over [{lo}, {hi}]; expected [{low}, {high})")


def check_like(name: str, x: object, shape: Sequence[int], dtype: torch.dtype) -> None:
    """``x`` is a finite tensor of exactly ``shape`` and floating ``dtype`` (targets compared with an output)."""
    check_tensor(name, x)
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name}: shape {tuple(x.shape)}; expected {tuple(shape)}")
    check_floating(name, x, dtype)
    check_finite(name, x)


def check_model_inputs(name: str, x: object, width: int, dtype: torch.dtype | None) -> None:
    """Inputs that go to the encoder as they are: a finite (batch, length, width) tensor of the parameters'
    dtype, every size >= 1."""
    layout = f"(batch, length, {width})"
    check_tensor(name, x)
    if x.dim() != 3 or x.shape[-1] != width:
        raise ValueError(f"{name}: shape {tuple(x.shape)}; expected {layout}")
    check_nonempty(name, x, layout)
    check_floating(name, x, dtype)
    check_finite(name, x)
