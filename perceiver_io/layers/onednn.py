"""oneDNN's fused linear on CPU: the GEMM behind attention projections and MLPs in inference without autograd,
where it beats torch's on this CPU.

PyTorch sends float32 GEMMs to MKL. On AMD CPUs MKL runs its AVX2 kernels and oneDNN's AVX-512 ones are 2.0–2.9×
faster on this model's shapes; on an Intel Xeon the two tie on wide GEMMs while oneDNN is 7–10 % ahead on the
256-row GEMMs of a batch-1 latent array (``benchmarks/gemm_paths.py``). So which wins is measured per layer shape,
not assumed: the first call of each (dtype, rows, in, out, bias, GELU, threads) in inference times both kernels on
the caller's own tensors (``fast``; a warm-up and 1–3 timed calls each) and every later call takes the winner.
oneDNN also applies the bias (and the MLPs' GELU) in the same pass. Its operator has no autograd, so it is used
only in ``plain_inference``: training, autocast, tracing, compiling and export see ``F.linear`` exactly as before.

``use("on" | "off" | "auto")`` (or the environment variable ``PERCEIVER_ONEDNN`` at import) overrides the
measurement, e.g. to compare the two or to rule oneDNN out when outputs differ (they differ from ``F.linear``'s by
float32 rounding only); ``disabled()`` is ``use("off")``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from perceiver_io.layers.timing import fastest

FAST_DTYPES = (torch.float32, torch.bfloat16)
MODES = ("auto", "on", "off")

_mode = os.environ.get("PERCEIVER_ONEDNN", "auto")
if _mode not in MODES:
    raise ValueError(f"PERCEIVER_ONEDNN={_mode!r}; expected one of {MODES}")
# (dtype, rows, in, out, bias, GELU, threads) -> whether oneDNN's layer timed faster than torch's in this process.
_measured: dict[tuple, bool] = {}


def available() -> bool:
    """Whether this PyTorch build has oneDNN's fused linear operator."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


@contextlib.contextmanager
def use(mode: str) -> Iterator[None]:
    """Within the block (process-wide): ``"on"`` takes oneDNN wherever ``allowed``, ``"off"`` never, ``"auto"`` where
    it timed faster for the shape at hand (the default; see ``fast``)."""
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


def mode() -> str:
    """The current setting of ``use``: "auto", "on" or "off"."""
    return _mode


def recording(*tensors: torch.Tensor) -> bool:
    """Whether autograd records an operation on these tensors (grad mode on and one of them requires grad)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def plain_inference(*tensors: torch.Tensor) -> bool:
    """Whether these CPU tensors are in eager inference: no gradient recorded, no autocast (which would not cast
    oneDNN's arguments), not traced, compiled or exported (graphs keep torch's operators, which every backend
    knows). Only there may a kernel be chosen by timing it, or run on oneDNN."""
    return (
        tensors[0].device.type == "cpu"
        and not recording(*tensors)
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


def forced(*tensors: torch.Tensor) -> bool:
    """Whether ``use("on")`` takes oneDNN for these tensors without measuring: on, and ``allowed``."""
    return _mode == "on" and allowed(*tensors)


def linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, gelu: str | None = None
) -> torch.Tensor:
    """x (…, K) @ weight (N, K)ᵀ + bias (N), then GELU if ``gelu`` is its ``approximate`` argument → (…, N).

    ``weight`` must be contiguous: a strided one makes oneDNN build a new kernel on every call (100× slower).
    """
    attr, algorithm = ("none", "") if gelu is None else ("gelu", gelu)
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, attr, [], algorithm)


def _torch_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, gelu: str | None = None
) -> torch.Tensor:
    """``linear`` through torch's kernels (MKL in float32)."""
    y = F.linear(x, weight, bias)
    return y if gelu is None else F.gelu(y, approximate=gelu)


def fast(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, gelu: str | None = None) -> bool:
    """Whether ``linear(x, weight, bias, gelu)`` should replace torch's layer here: ``allowed`` (shapes oneDNN
    takes), and in ``"auto"`` mode timed faster on the first call of this shape (see the module's docstring)."""
    if not (x.dim() >= 2 and weight.is_contiguous() and allowed(x, weight)):
        return False
    if _mode == "on":
        return True
    rows = x.numel() // x.shape[-1]
    key = (x.dtype, rows, *weight.shape, bias is not None, gelu, torch.get_num_threads())
    if key not in _measured:
        layers = {"onednn": linear, "torch": _torch_linear}

        def run(name: str) -> torch.Tensor:
            return layers[name](x, weight, bias, gelu)

        _measured[key] = fastest(list(layers), run, flops=2 * rows * weight.numel()) == "onednn"
    return _measured[key]


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
        if fast(x, self.weight, self.bias, gelu):
            return linear(x, self.weight, self.bias, gelu)
        return _torch_linear(x, self.weight, self.bias, gelu)
