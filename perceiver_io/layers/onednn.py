"""oneDNN's fused linear on CPU: the GEMM behind attention projections and MLPs, where it beats torch's on this CPU.

PyTorch sends float32 GEMMs to MKL. On AMD CPUs MKL runs its AVX2 kernels and oneDNN's AVX-512 ones are faster on
this model's shapes (2.0–2.9× on a Zen 5; 1.08–1.23× on a Zen 4, whose AVX-512 units are 256 bits wide, and
1.64–1.75× on its 50,176- and 6,290-row ones: ``benchmarks/results/zen4/gemm_paths.md``); on an Intel Xeon the
two tie on wide GEMMs while oneDNN is 7–10 % ahead on the 256-row GEMMs of a batch-1 latent array
(``benchmarks/gemm_paths.py``). So which wins is measured per layer shape, not assumed: the first call of each
(dtype, rows, out, in, bias, GELU, threads, training) times both kernels on the caller's own tensors (``fast``; a
warm-up and 1–3 timed calls each) and every later call takes the winner.

In inference (``plain_inference``) oneDNN also applies the bias (and the MLPs' GELU) in the same pass. Its operator
has no autograd, so a float32 linear that autograd records runs as ``OneDNNLinearFunction``: oneDNN computes the
output and, in the backward pass, the input's gradient (against the transposed weight, laid out anew each time);
the weight's gradient stays with torch (oneDNN would need both operands transposed, which costs more than it
wins). Autocast, tracing, compiling and export see ``F.linear`` exactly as before.

``use("on" | "off" | "auto")`` (or the environment variable ``PERCEIVER_ONEDNN`` at import) overrides the
measurement, e.g. to compare the two or to rule oneDNN out when outputs differ (they differ from ``F.linear``'s by
float32 rounding only); ``disabled()`` is ``use("off")``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from perceiver_io.layers.timing import fastest

FAST_DTYPES = (torch.float32, torch.bfloat16)
MODES = ("auto", "on", "off")

_mode = os.environ.get("PERCEIVER_ONEDNN", "auto")
if _mode not in MODES:
    raise ValueError(f"PERCEIVER_ONEDNN={_mode!r}; expected one of {MODES}")
# (dtype, rows, out, in, bias, GELU, threads, training) -> whether oneDNN's layer timed faster than torch's in this
# process.
_measured: dict[tuple, bool] = {}


def measured() -> dict[tuple, bool]:
    """The choices ``fast`` has timed in this process (a copy): (dtype, rows, out, in, bias, GELU, threads,
    training) → whether oneDNN's kernel was the faster."""
    return dict(_measured)


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


def trainable(*tensors: torch.Tensor) -> bool:
    """Whether a linear that autograd records on these tensors may run as ``OneDNNLinearFunction``: not
    ``use("off")``, all float32 on CPU (bfloat16 GEMMs already go to oneDNN inside torch), no autocast (which casts
    ``F.linear``'s arguments, not ours), not traced or compiled, and the operator exists."""
    return (
        _mode != "off"
        and tensors[0].device.type == "cpu"
        and all(t.dtype == torch.float32 for t in tensors)
        and recording(*tensors)
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()
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


def _timed_layers(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: str | None, training: bool
) -> dict[str, Callable[[], object]]:
    """What the kernel choice changes, through each kernel, for timing (``fast``): in inference the layer itself; in
    training its two GEMMs that oneDNN would take — the output and the input's gradient (the output standing in for
    its gradient: same shape)."""
    if training:
        return {
            "onednn": lambda: linear(linear(x, weight, bias), weight.t().contiguous()),
            "torch": lambda: torch.matmul(F.linear(x, weight, bias), weight),
        }
    return {"onednn": lambda: linear(x, weight, bias, gelu), "torch": lambda: _torch_linear(x, weight, bias, gelu)}


def fast(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, gelu: str | None = None) -> bool:
    """Whether oneDNN should replace torch's kernels for ``linear(x, weight, bias, gelu)`` here: in inference
    (``allowed``) as one fused call, with autograd recording (``trainable``; ``gelu`` then runs apart) as
    ``OneDNNLinearFunction``; in ``"auto"`` mode only where that timed faster on the first call of this shape (see
    the module's docstring)."""
    tensors = (x, weight) if bias is None else (x, weight, bias)
    training = recording(*tensors)
    if not (x.dim() >= 2 and weight.is_contiguous() and (trainable if training else allowed)(*tensors)):
        return False
    if _mode == "on":
        return True
    rows = x.numel() // x.shape[-1]
    key = (x.dtype, rows, *weight.shape, bias is not None, gelu, torch.get_num_threads(), training)
    if key not in _measured:
        with torch.no_grad():
            layers = _timed_layers(x.detach(), weight.detach(), bias, gelu, training)
            flops = (4 if training else 2) * rows * weight.numel()
            _measured[key] = fastest(list(layers), lambda name: layers[name](), flops) == "onednn"
    return _measured[key]


class OneDNNLinearFunction(torch.autograd.Function):
    """``F.linear`` with autograd whose output and input gradient are oneDNN GEMMs (float32, CPU; see the module's
    docstring). x (…, K), weight (N, K) contiguous, bias (N) or None → (…, N)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return linear(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        need_x, need_weight, need_bias = ctx.needs_input_grad
        grad = grad.contiguous()
        rows = grad.view(-1, grad.shape[-1])  # (M, N)
        grad_x = linear(grad, weight.t().contiguous()) if need_x else None  # (…, K) = grad @ weight
        grad_weight = rows.t() @ x.reshape(-1, x.shape[-1]) if need_weight else None  # (N, K)
        grad_bias = rows.sum(0) if ctx.has_bias and need_bias else None
        return grad_x, grad_weight, grad_bias


class OneDNNLinear(nn.Linear):
    """``nn.Linear`` whose forward runs as one oneDNN call (bias included) wherever ``fast`` allows, and as
    ``F.linear`` otherwise. Same parameters, same state-dict keys, same autograd behaviour as ``nn.Linear``.

    With ``pack_weight`` set (``prepack()``, which ``optimize_for_inference(prepack=True)`` calls) its inference
    calls multiply by a copy of the weight in oneDNN's blocked layout instead of the dense one, which oneDNN would
    otherwise reorder on every call: 1–9 % faster GEMMs on the released models' shapes (1–5 % on a Zen 4, 3–9 % on a
    Xeon: ``benchmarks/gemm_paths.py``) for a second copy of the weight in memory. The copy is a cache: made on the
    first inference call, made again whenever the weight changes (in place, replaced or cast), never saved, pickled
    or deep-copied.
    """

    pack_weight: bool = False
    # (the weight's storage, version counter, dtype and shape when packed; the packed copy)
    _packed: tuple[tuple, torch.Tensor] | None = None

    @classmethod
    def wrap(cls, linear: nn.Linear) -> OneDNNLinear:
        """A OneDNNLinear holding ``linear``'s own parameters (no copy)."""
        new = cls(linear.in_features, linear.out_features, linear.bias is not None, device="meta")
        new.weight = linear.weight
        new.bias = linear.bias
        return new

    def forward(self, x: torch.Tensor, gelu: str | None = None) -> torch.Tensor:
        """(…, in_features) → (…, out_features), then GELU if ``gelu`` is its ``approximate`` argument."""
        if not fast(x, self.weight, self.bias, gelu):
            return _torch_linear(x, self.weight, self.bias, gelu)
        if not recording(x, self.weight, *(() if self.bias is None else (self.bias,))):
            return linear(x, self._inference_weight(), self.bias, gelu)
        y = OneDNNLinearFunction.apply(x, self.weight, self.bias)
        return y if gelu is None else F.gelu(y, approximate=gelu)

    def prepack(self, on: bool = True) -> None:
        """Whether inference calls multiply by a copy of the weight in oneDNN's blocked layout (``pack_weight``);
        any copy made so far is dropped (the next call packs anew)."""
        self.pack_weight, self._packed = on, None

    def _inference_weight(self) -> torch.Tensor:
        """The weight oneDNN multiplies by without autograd: the packed copy with ``pack_weight`` (packed anew if
        the weight changed since), the parameter itself otherwise."""
        if not self.pack_weight:
            return self.weight
        weight = self.weight
        key = (weight.data_ptr(), weight._version, weight.dtype, weight.shape)
        if self._packed is None or self._packed[0] != key:
            self._packed = (key, torch.ops.mkldnn._reorder_linear_weight(weight.detach()))
        return self._packed[1]

    def __getstate__(self) -> dict[str, Any]:
        # oneDNN's opaque packed tensor cannot be copied or pickled; the next inference call packs anew.
        return {**self.__dict__, "_packed": None}
