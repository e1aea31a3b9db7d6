"""Every remaining linear of a model on oneDNN, for CPU inference.

The attention projections and MLPs of every layer (nearly all of the FLOPs) already run on oneDNN whenever no
gradient is being recorded (``perceiver_io.layers.onednn``): 2.0–2.9× faster than MKL's AVX2 float32 GEMMs on AMD
CPUs (``benchmarks/gemm_paths.py``), bias and GELU fused. ``optimize_for_inference`` extends that to the few
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
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from perceiver_io.layers import onednn
from perceiver_io.layers.onednn import OneDNNLinear

__all__ = ["PRECISIONS", "OneDNNLinear", "optimize_for_inference"]

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


def optimize_for_inference(model: nn.Module, precision: str = "fp32") -> nn.Module:
    """Ready ``model`` for CPU inference in ``precision`` (in place; idempotent), eval mode; returns ``model``.

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

    Raises:
        ValueError: an unknown ``precision``, ``"int8"`` on a model whose linears are not float32, or ``"bf16"`` on
            a model already quantized to int8.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16" and any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in model.modules()):
        raise ValueError(
            "precision='bf16' on a model quantized to int8: its int8 linears take float32 only (load the float32 "
            "model again)"
        )
    if precision == "int8":
        _quantize_linears(model)
    elif onednn.available():
        _swap_linears(model)
    if precision == "bf16":
        model.to(torch.bfloat16)
    return model.eval()
