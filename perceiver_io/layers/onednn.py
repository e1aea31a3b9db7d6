"""oneDNN's fused linear on CPU: the GEMM that the optional inference paths use.

PyTorch sends float32 GEMMs to MKL, which on AMD CPUs runs its AVX2 kernels; oneDNN runs AVX-512 and is 2.0–2.9×
faster on this model's shapes (``benchmarks/gemm_paths.py``). Its operator has no autograd: callers use it only when
no gradient is being recorded (see ``usable``).
"""

from __future__ import annotations

import torch

FAST_DTYPES = (torch.float32, torch.bfloat16)


def available() -> bool:
    """Whether this PyTorch build has oneDNN's fused linear operator."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def usable(*tensors: torch.Tensor) -> bool:
    """Whether oneDNN may compute with these CPU tensors: same fast dtype, no gradient recorded, no autocast (which
    would not cast this operator's arguments), and the operator exists."""
    first = tensors[0]
    return (
        first.device.type == "cpu"
        and first.dtype in FAST_DTYPES
        and all(t.dtype == first.dtype for t in tensors)
        and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
        and not torch.is_autocast_enabled("cpu")
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
