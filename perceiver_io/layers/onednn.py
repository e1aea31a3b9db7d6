"""oneDNN's fused linear on CPU: the GEMM behind attention projections and MLPs in inference without autograd,
where it beats torch's on this CPU.

PyTorch sends float32 GEMMs to MKL. On AMD CPUs MKL runs its AVX2 kernels and oneDNN's AVX-512 ones are 2.0–2.9×
faster on this model's shapes; on an Intel Xeon MKL's are about 2× faster than oneDNN's instead
(``benchmarks/gemm_paths.py``). So which wins is measured, once per process, dtype and thread count, on two GEMMs of
the models' shapes (``wins``; about 50 ms), not assumed. oneDNN also applies the bias (and the MLPs' GELU) in the
same pass. Its operator has no autograd, so it is used only where no gradient is being recorded (``usable``):
training, autocast, tracing, compiling and export see ``F.linear`` exactly as before.

``use("on" | "off" | "auto")`` (or the environment variable ``PERCEIVER_ONEDNN`` at import) overrides the
measurement, e.g. to compare the two or to rule oneDNN out when outputs differ (they differ from ``F.linear``'s by
float32 rounding only); ``disabled()`` is ``use("off")``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

FAST_DTYPES = (torch.float32, torch.bfloat16)
MODES = ("auto", "on", "off")
# (rows, in, out, GELU) of the layers timed by ``wins``: a latent MLP's first layer of the vision model (GELU fused
# into oneDNN's GEMM) and a language cross-attention projection; large enough that call overheads do not decide,
# small enough to time in milliseconds.
PROBE_SHAPES = ((512, 1024, 1024, "none"), (2048, 256, 1280, None))
PROBE_ROUNDS = 3
# oneDNN is kept unless torch's layers time this much faster: where the two tie on the probes (an Intel Xeon's MKL
# and oneDNN, within each other's noise) oneDNN's fused bias and GELU still win 7 % on the language model
# (benchmarks/results/default_path.md), and a near-tie must not flip the choice from one process to the next.
TORCH_MARGIN = 1.05

_mode = os.environ.get("PERCEIVER_ONEDNN", "auto")
if _mode not in MODES:
    raise ValueError(f"PERCEIVER_ONEDNN={_mode!r}; expected one of {MODES}")
# (dtype, threads) -> whether oneDNN's GEMM beat torch's in this process.
_measured: dict[tuple[torch.dtype, int], bool] = {}


def available() -> bool:
    """Whether this PyTorch build has oneDNN's fused linear operator."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


@contextlib.contextmanager
def use(mode: str) -> Iterator[None]:
    """Within the block (process-wide): ``"on"`` takes oneDNN wherever ``usable``, ``"off"`` never, ``"auto"`` where
    it ``wins`` on this CPU (the default)."""
    global _mode
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    before, _mode = _mode, mode
    try:
        yield
    finally:
        _mode = before


def disabled() -> contextlib.AbstractContextManager[None]:
    """Within the block (process-wide), every oneDNN path falls back to torch's kernels: ``use("off")``."""
    return use("off")


def _seconds(fn: Callable[..., torch.Tensor], *args: torch.Tensor | str | None) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def _probe_onednn(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, gelu: str | None) -> torch.Tensor:
    return linear(x, w, b, gelu)


def _probe_torch(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, gelu: str | None) -> torch.Tensor:
    y = F.linear(x, w, b)
    return y if gelu is None else F.gelu(y, approximate=gelu)


@torch.no_grad()
def _measure(dtype: torch.dtype) -> bool:
    """Time oneDNN's and torch's layers (bias and GELU included) on PROBE_SHAPES, interleaved; compare the sums of
    each kernel's best of PROBE_ROUNDS (oneDNN wins ties within TORCH_MARGIN)."""
    generator = torch.Generator().manual_seed(0)  # the caller's random stream is left alone
    totals = {_probe_onednn: 0.0, _probe_torch: 0.0}
    for rows, k, n, gelu in PROBE_SHAPES:
        x, w, b = (torch.randn(*shape, generator=generator).to(dtype) for shape in ((rows, k), (n, k), (n,)))
        for fn in totals:
            fn(x, w, b, gelu)  # warm-up: oneDNN builds its kernel on the first call
        best = dict.fromkeys(totals, float("inf"))
        for _ in range(PROBE_ROUNDS):
            for fn in totals:
                best[fn] = min(best[fn], _seconds(fn, x, w, b, gelu))
        for fn in totals:
            totals[fn] += best[fn]
    return totals[_probe_onednn] < TORCH_MARGIN * totals[_probe_torch]


def wins(dtype: torch.dtype) -> bool:
    """Whether oneDNN computes in ``dtype`` here (see ``use``): in ``"auto"`` mode, whether its GEMM beat torch's
    when measured (once per process, dtype and thread count; the first call takes about 50 ms)."""
    if _mode != "auto":
        return _mode == "on"
    key = (dtype, torch.get_num_threads())
    if key not in _measured:
        _measured[key] = _measure(dtype)
    return _measured[key]


def mode() -> str:
    """The current setting of ``use``: "auto", "on" or "off"."""
    return _mode


def plain_inference(*tensors: torch.Tensor) -> bool:
    """Whether these CPU tensors are in eager inference: no gradient recorded, no autocast (which would not cast
    oneDNN's arguments), not traced, compiled or exported (graphs keep torch's operators, which every backend
    knows). Only there may a kernel be chosen by timing it, or run on oneDNN."""
    return (
        tensors[0].device.type == "cpu"
        and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()
    )


def allowed(*tensors: torch.Tensor) -> bool:
    """Whether oneDNN can compute with these tensors: not ``use("off")``, one fast dtype, ``plain_inference``, and
    the operator exists."""
    first = tensors[0]
    return (
        _mode != "off"
        and first.dtype in FAST_DTYPES
        and all(t.dtype == first.dtype for t in tensors)
        and plain_inference(*tensors)
        and available()
    )


def usable(*tensors: torch.Tensor) -> bool:
    """Whether oneDNN's GEMM should replace torch's for these tensors: ``allowed`` and it ``wins`` here."""
    return allowed(*tensors) and wins(tensors[0].dtype)


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
