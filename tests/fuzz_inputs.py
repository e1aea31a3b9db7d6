"""Strategies and validity predicates for the models' inputs (tests/test_fuzz_models.py).

A strategy draws a *plan* (shapes, dtype, value kind, seed) and the tensors are built from it with a seeded
torch generator, which is fast. Each predicate reads the built tensors and returns the list of contract
violations; it is written from the documented contract (transformers' Perceiver docs and ours), never by calling
perceiver_io, so it can disagree with the library.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from hypothesis import strategies as st

Problem = tuple[str, tuple[str, ...]]  # (kind, strings a refusal may name it by)

ODD_DTYPES = (
    torch.uint8,
    torch.int16,
    torch.int32,
    torch.bool,
    torch.float16,
    torch.bfloat16,
    torch.float64,
    torch.complex64,
)
FLOAT_SPECIALS = ("nan", "inf", "-inf")


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def often(common: object, *rare: object, weight: int = 4) -> st.SearchStrategy:
    """``common`` ``weight`` times as likely as each of ``rare``."""
    return st.sampled_from([common] * weight + list(rare))


def build(
    shape: Sequence[int], dtype: torch.dtype, seed: int, *, low: int = 0, high: int = 2, special: str | None = None
) -> torch.Tensor:
    """A tensor of ``shape`` and ``dtype``: integers in [low, high) (cast, so they may wrap for small dtypes), or
    normal floats; ``special`` puts one NaN / ±inf at a seeded position of a floating tensor."""
    g = torch.Generator().manual_seed(seed)
    shape = tuple(shape)
    if dtype.is_complex:
        x = torch.randn(shape, generator=g, dtype=torch.complex64).to(dtype)
    elif dtype.is_floating_point:
        x = torch.randn(shape, generator=g).to(dtype)
    elif dtype == torch.bool:
        x = torch.rand(shape, generator=g) > 0.5
    else:
        x = torch.randint(low, max(high, low + 1), shape, generator=g).to(dtype)
    if special is not None and x.numel() and (dtype.is_floating_point or dtype.is_complex):
        index = int(torch.randint(0, x.numel(), (1,), generator=g))
        x.view(-1)[index] = float(special)
    return x


def shape_of(x: object) -> str:
    return str(tuple(x.shape)) if torch.is_tensor(x) else type(x).__name__


def nonfinite(x: torch.Tensor) -> bool:
    return bool((x.is_floating_point() or x.is_complex()) and x.numel() and not torch.isfinite(x).all())


# ---------------------------------------------------------------------------------------------------------
# Masks and labels, shared by several heads
# ---------------------------------------------------------------------------------------------------------

MASK_PLANS = (
    "none",
    "none",
    "valid",
    "valid",
    "valid",
    "wrong length",
    "wrong batch",
    "rank 1",
    "value 2",
    "half",
    "nan",
)
MASK_DTYPES = (torch.long, torch.long, torch.int32, torch.bool, torch.float32)


def build_mask(plan: str, dtype: torch.dtype, batch: int, length: int, seed: int) -> torch.Tensor | None:
    """(batch, length) padding mask by plan; ``valid`` masks keep the first position of every row."""
    if plan == "none":
        return None
    b, n = batch + (plan == "wrong batch"), length + (plan == "wrong length")
    mask = build((b, n), torch.long, seed, low=0, high=2)
    if n:
        mask[:, 0] = 1
    if plan == "rank 1":
        mask = mask[0] if b else mask.reshape(-1)
    if plan == "value 2" and mask.numel():
        mask.view(-1)[-1] = 2
    if plan in ("half", "nan"):
        mask = mask.float()
        if mask.numel():
            mask.view(-1)[-1] = 0.5 if plan == "half" else float("nan")
        return mask
    return mask.to(dtype)


def mask_problems(mask: torch.Tensor | None, batch: int, length: int) -> list[Problem]:
    """A padding mask is (B, M) with values 0/1 (bool, integer or float), every row keeping one input."""
    if mask is None:
        return []
    names = ("attention_mask", "mask")
    if not torch.is_tensor(mask) or mask.dim() != 2 or tuple(mask.shape) != (batch, length):
        return [("attention_mask shape", names)]
    if mask.dtype.is_complex or mask.dtype not in (torch.bool, torch.long, torch.int32, torch.float32):
        return [("attention_mask dtype", names)]
    if mask.numel() and not ((mask == 0) | (mask == 1)).all():
        return [("attention_mask values not 0/1", names)]
    if mask.numel() and not (mask != 0).any(dim=1).all():
        return [("attention_mask row fully masked", names)]
    return []


CLASS_LABEL_PLANS = (
    "none",
    "none",
    "valid",
    "valid",
    "multi-label",
    "out of range",
    "negative",
    "wrong batch",
    "int32",
    "float 1-d",
    "rank 2",
    "nan",
)


def build_class_labels(plan: str, batch: int, num_labels: int, seed: int) -> torch.Tensor | None:
    if plan == "none":
        return None
    if plan == "multi-label":
        return torch.rand((batch, num_labels), generator=torch.Generator().manual_seed(seed))
    if plan == "nan":
        labels = torch.rand((batch, num_labels), generator=torch.Generator().manual_seed(seed))
        if labels.numel():
            labels.view(-1)[0] = float("nan")
        return labels
    b = batch + 1 if plan == "wrong batch" else batch
    labels = build((b,), torch.long, seed, low=0, high=num_labels)
    if plan == "out of range" and b:
        labels[-1] = num_labels + int(labels[-1])
    if plan == "negative" and b:
        labels[-1] = -1 - int(labels[-1])
    if plan == "int32":
        labels = labels.to(torch.int32)
    if plan == "float 1-d":
        labels = labels.float()
    if plan == "rank 2":
        labels = labels[:, None].expand(b, 2).contiguous()
    return labels


def class_label_problems(labels: torch.Tensor | None, batch: int, num_labels: int) -> list[Problem]:
    """Classification labels: int64 class indices (B,) in [0, num_labels), or float32 multi-label targets
    (B, num_labels) in [0, 1] (transformers' problem types; num_labels > 1 in every small config)."""
    if labels is None:
        return []
    names = ("labels",)
    if labels.dtype == torch.long:
        if labels.dim() != 1 or labels.shape[0] != batch:
            return [("labels shape", names)]
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_labels):
            return [("labels out of [0, num_labels)", names)]
        return []
    if labels.dtype == torch.float32:
        if tuple(labels.shape) != (batch, num_labels):
            return [("float labels shape", names)]
        if labels.numel() and (not torch.isfinite(labels).all() or labels.min() < 0 or labels.max() > 1):
            return [("float labels outside [0, 1]", names)]
        return []
    return [("labels dtype", names)]


def plans(aspects: dict[str, tuple[st.SearchStrategy, st.SearchStrategy]]) -> st.SearchStrategy[dict]:
    """Plans with (mostly) one fault: ``fault`` names the one aspect drawn from its ``anything`` strategy, the
    others are drawn from their ``valid`` one; "none" keeps all valid, "several" draws every aspect freely."""

    @st.composite
    def draw_plan(draw: st.DrawFn) -> dict:
        fault = draw(st.sampled_from(["none", "none", *aspects, "several"]))
        plan = {"fault": fault, "seed": draw(st.integers(0, 2**16))}
        for name, (valid, anything) in aspects.items():
            plan[name] = draw(anything if fault in (name, "several") else valid)
        return plan

    return draw_plan()
