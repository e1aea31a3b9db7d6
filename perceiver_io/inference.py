"""A model readied for CPU inference: every linear able to run on oneDNN, a precision, optionally compiled.

The attention projections and MLPs of every layer (nearly all of the FLOPs) already run on oneDNN whenever no
gradient is being recorded and it times faster than torch's kernel for the shape (``perceiver_io.layers.onednn``):
2.0–2.9× faster than MKL's AVX2 float32 GEMMs on AMD CPUs, 7–10 % on an Intel Xeon's 256-row GEMMs
(``benchmarks/gemm_paths.py``), bias and GELU fused. ``optimize_for_inference`` extends that to the few
linears outside those layers (input projections, decoder output layers, postprocessors) by swapping each
``nn.Linear`` for a ``OneDNNLinear`` that shares its parameters; state-dict keys are unchanged, so
``save_pretrained`` and weight loading keep working, and with autograd recording the model computes exactly what it
computed before. The ``perceiver`` commands call it (``--precision``); it also works on transformers' models.

bf16 inference: ``model.to(torch.bfloat16)`` with bf16 inputs, or ``torch.autocast("cpu", torch.bfloat16)``
(torch's own bf16 GEMMs then; oneDNN's operator takes no autocast). Either keeps the logits within about 1–3 %
relative L2 of float32 (``benchmarks/results``).

int8 inference: torch's dynamic quantization (``torch.ao.quantization.quantize_dynamic``, qint8) of every linear:
weights stored as int8 with one scale per tensor, activations quantized on the fly per call; inputs and outputs
stay float32. Attention scores, LayerNorms, embeddings and convolutions stay float32. The accuracy cost and speed of
each precision on real inputs are in ``benchmarks/results/precision.md``.

Compiled inference (``compile=True``, opt-in): ``CompiledForInference``, inductor with frozen weights.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from perceiver_io.layers import onednn
from perceiver_io.layers.onednn import OneDNNLinear

__all__ = ["PRECISIONS", "CompiledForInference", "OneDNNLinear", "optimize_for_inference"]

PRECISIONS = ("fp32", "bf16", "int8")


def _swap_linears(module: nn.Module) -> None:
    for name, child in module.named_children():
        if type(child) is nn.Linear:
            setattr(module, name, OneDNNLinear.wrap(child))
        else:
            _swap_linears(child)


def _plain_linears(module: nn.Module) -> None:
    """Every ``nn.Linear`` subclass (``OneDNNLinear``) below ``module`` → a plain ``nn.Linear`` sharing its
    parameters: torch's dynamic quantization converts exactly ``nn.Linear``, not its subclasses."""
    for name, child in module.named_children():
        if isinstance(child, nn.Linear) and type(child) is not nn.Linear:
            plain = nn.Linear(child.in_features, child.out_features, child.bias is not None, device="meta")
            plain.weight, plain.bias = child.weight, child.bias
            setattr(module, name, plain)
        else:
            _plain_linears(child)


def _quantize_linears(model: nn.Module) -> None:
    """Every linear of ``model`` → torch's dynamically quantized int8 linear, in place."""
    dtypes = sorted({str(m.weight.dtype) for m in model.modules() if isinstance(m, nn.Linear)})
    if dtypes not in ([], ["torch.float32"]):
        raise ValueError(
            f"precision='int8' quantizes float32 linears; this model's are {', '.join(dtypes)} (load the float32 "
            "model again rather than quantizing a converted one)"
        )
    _plain_linears(model)
    with warnings.catch_warnings():
        # torch marks its eager quantization deprecated in favour of torchao (not a dependency here); the API is
        # still torch's own in 2.13, and the tests check its output against a float reference.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*", category=UserWarning)
        torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)


class CompiledForInference(nn.Module):
    """``model`` (reachable as ``.model``) behind ``torch.compile`` (inductor) with its weights frozen into the
    compiled graph as constants: inductor then pre-packs them (for MKL in float32, oneDNN in bf16) and fuses the
    element-wise work around the GEMMs (on an Intel Xeon 1.15× eager on the released language model in fp32, 1.3× in
    bf16, batch 1; on an AMD Zen 4, where MKL's float32 GEMMs trail oneDNN's, 0.85–0.97× in fp32:
    ``benchmarks/default_path.py``, ``results/zen4/default_path.md``).

    Freezing applies without autograd only (``torch.no_grad()``); with gradients on, the compiled graph is an
    ordinary one. Each new input shape compiles anew (tens of seconds for a released model on 2 cores), so this pays
    off for many calls of one shape. The weights must not change afterwards: the compiled graphs hold pre-packed
    copies of some and read others live (a change gives a mixture), and compiling the same model again reuses
    them; load the model anew for new weights. Attributes
    other than ``model`` are the model's own (``config``, ``save_pretrained``, …); its state-dict keys carry the
    prefix ``model.``, so save ``.model``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.train(model.training)
        # A compiled function, not a compiled module: nn.Module would register the latter as a second submodule.
        self._compiled = torch.compile(model.forward)

    def forward(self, *args: object, **kwargs: object) -> object:
        """The model's forward, compiled; inductor's ``freezing`` is switched on only while it runs (and compiles:
        inductor compiles lazily, within the call)."""
        from torch._inductor import config as inductor_config  # imported on first use: a heavy import

        with inductor_config.patch(freezing=True):
            return self._compiled(*args, **kwargs)

    def __getattr__(self, name: str) -> object:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.model, name)


def optimize_for_inference(
    model: nn.Module, precision: str = "fp32", compile: bool = False, prepack: bool = False
) -> nn.Module:
    """Ready ``model`` for CPU inference in ``precision`` (in place; idempotent), eval mode; returns ``model``, or
    with ``compile`` a ``CompiledForInference`` around it.

    ``precision``:

    - ``"fp32"`` (default): the plain ``nn.Linear`` layers become ``OneDNNLinear`` (a no-op where oneDNN's
      operator is missing); the weights keep their dtype. The fast paths run under ``torch.no_grad()`` or
      ``torch.inference_mode()``; with gradients on, the model computes what it computed before.
    - ``"bf16"``: as fp32, then floating-point parameters and buffers cast to ``torch.bfloat16``; the caller passes
      bf16 float inputs and gets bf16 outputs (the task helpers cast at their boundary:
      ``perceiver_io.tasks.common.to_model``).
    - ``"int8"``: every linear (``nn.Linear`` and ``OneDNNLinear``) replaced by torch's dynamically quantized int8
      linear (``torch.ao.quantization.quantize_dynamic``); inputs and outputs stay float32. For inference only:
      the quantized linears hold packed weights, not parameters, so save the model before, not after.

    ``compile``: also compile the model with inductor, its weights frozen (``CompiledForInference``; opt-in: each
    input shape compiles first).

    ``prepack`` (fp32 and bf16; opt-in): each ``OneDNNLinear`` keeps a copy of its weight in oneDNN's blocked
    layout for its inference calls (``OneDNNLinear.pack_weight``): 1–9 % faster GEMMs, 1–7 % faster whole forwards
    on a Zen 4 (``benchmarks/results/zen4/default_path.md``), for twice the weights' memory. ``prepack=False``
    drops the copies again.

    Raises:
        TypeError: ``prepack`` not a bool.
        ValueError: an unknown ``precision``, ``"int8"`` on a model whose linears are not float32, ``"bf16"`` on
            a model already quantized to int8, ``prepack`` with ``"int8"`` (the quantized linears pack their own
            weights), or a ``CompiledForInference`` (its weights are frozen).
    """
    if isinstance(model, CompiledForInference):
        raise ValueError(
            "optimize_for_inference on a CompiledForInference: its weights and precision are frozen into the "
            "compiled graphs; call it on a freshly loaded model instead"
        )
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16" and any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in model.modules()):
        raise ValueError(
            "precision='bf16' on a model quantized to int8: its int8 linears take float32 only (load the float32 "
            "model again)"
        )
    if not isinstance(prepack, bool):
        raise TypeError(f"prepack must be True or False, got {prepack!r}")
    if precision == "int8" and prepack:
        raise ValueError("prepack=True applies to precision 'fp32' or 'bf16'; int8's quantized linears pack their own")
    if precision == "int8":
        _quantize_linears(model)
    elif onednn.available():
        _swap_linears(model)
    for module in model.modules():
        if isinstance(module, OneDNNLinear):
            module.prepack(prepack)
    if precision == "bf16":
        model.to(torch.bfloat16)
    model.eval()
    return CompiledForInference(model) if compile else model
