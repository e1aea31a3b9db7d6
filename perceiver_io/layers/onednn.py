"""oneDNN's fused linear on CPU: the GEMM behind every attention projection and MLP in inference without autograd.

PyTorch sends float32 GEMMs to MKL, which on AMD CPUs runs its AVX2 kernels; oneDNN runs AVX-512 and is 2.0–2.9×
faster on this model's shapes (``benchmarks/gemm_paths.py``), and applies the bias (and the MLPs' GELU) in the same
pass. Its operator has no autograd, so it is used only where no gradient is being recorded (``usable``): training,
autocast, tracing, compiling and export see ``F.linear`` exactly as before. ``disabled()`` switches it off, e.g.
to measure what it gains or to rule it out when outputs differ (they differ from ``F.linear``'s by float32
rounding only).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

FAST_DTYPES = (torch.float32, torch.bfloat16)

_enabled = True


def available() -> bool:
    """Whether this PyTorch build has oneDNN's fused linear operator."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Within the block (process-wide), every oneDNN path falls back to torch's kernels."""
    global _enabled
    before, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = before


def usable(*tensors: torch.Tensor) -> bool:
    """Whether oneDNN may compute with these CPU tensors: same fast dtype, no gradient recorded, no autocast (which
    would not cast this operator's arguments), not traced, compiled or exported (graphs keep torch's operators,
    which every backend knows), not ``disabled()``, and the operator exists."""
    first = tensors[0]
    return (
        _enabled
        and first.device.type == "cpu"
        and first.dtype in FAST_DTYPES
        and all(t.dtype == first.dtype for t in tensors)
        and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()
        and available()
    )


def linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, gelu: str | None = None
) -> torch.Tensor:
    """x (…, K) @ weight (N, K)ᵀ + bias (N), then GELU if ``gelu`` is its ``approximate`` argument → (…, N).

    ``weight`` must be contiguous: a strided one makes oneDNN build a new kernel on every call (100× slower).
    """
    attr, algorithm = ("none", "") if gelu is None else ("gelu", gelu)
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, attr, [], algorithm)


def fast(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``linear(x, weight, …)`` should replace ``F.linear`` here (``usable``, and shapes oneDNN takes)."""
    return x.dim() >= 2 and weight.is_contiguous() and usable(x, weight)


class OneDNNLinear(nn.Linear):
    """``nn.Linear`` whose forward runs as one oneDNN call (bias included) wherever ``fast`` allows, and as
    ``F.linear`` otherwise. Same parameters, same state-dict keys, same autograd behaviour as ``nn.Linear``."""

    @classmethod
    def wrap(cls, linear: nn.Linear) -> OneDNNLinear:
        """A OneDNNLinear holding ``linear``'s own parameters (no copy)."""
        new = cls(linear.in_features, linear.out_features, linear.bias is not None, device="meta")
        new.weight = linear.weight
        new.bias = linear.bias
        return new

    def forward(self, x: torch.Tensor, gelu: str | None = None) -> torch.Tensor:
        """(…, in_features) → (…, out_features), then GELU if ``gelu`` is its ``approximate`` argument."""
        if fast(x, self.weight):
            return linear(x, self.weight, self.bias, gelu)
        y = F.linear(x, self.weight, self.bias)
        return y if gelu is None else F.gelu(y, approximate=gelu)
