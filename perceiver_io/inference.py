"""Every remaining linear of a model on oneDNN, for CPU inference.

The attention projections and MLPs of every layer (nearly all of the FLOPs) already run on oneDNN whenever no
gradient is being recorded (``perceiver_io.layers.onednn``): 2.0–2.9× faster than MKL's AVX2 float32 GEMMs on AMD
CPUs (``benchmarks/gemm_paths.py``), bias and GELU fused. ``optimize_for_inference`` extends that to the few
linears outside those layers (input projections, decoder output layers, postprocessors) by swapping each
``nn.Linear`` for a ``OneDNNLinear`` that shares its parameters; state-dict keys are unchanged, so
``save_pretrained`` and weight loading keep working, and with autograd recording the model computes exactly what it
computed before. The task helpers (``perceiver_io.tasks``) call it; it also works on transformers' models.

bf16 inference: ``model.to(torch.bfloat16)`` with bf16 inputs, or ``torch.autocast("cpu", torch.bfloat16)``
(torch's own bf16 GEMMs then; oneDNN's operator takes no autocast). Either keeps the logits within about 1–3 %
relative L2 of float32 (``benchmarks/results``).
"""

from __future__ import annotations

import torch
from torch import nn

from perceiver_io.layers import onednn
from perceiver_io.layers.onednn import OneDNNLinear

__all__ = ["PRECISIONS", "OneDNNLinear", "optimize_for_inference"]

PRECISIONS = ("fp32", "bf16")


def _swap_linears(module: nn.Module) -> None:
    for name, child in module.named_children():
        if type(child) is nn.Linear:
            setattr(module, name, OneDNNLinear.wrap(child))
        else:
            _swap_linears(child)


def optimize_for_inference(model: nn.Module, precision: str = "fp32") -> nn.Module:
    """Swap ``model``'s plain ``nn.Linear`` layers for ``OneDNNLinear`` (in place; idempotent), eval mode; returns
    ``model``. A no-op where oneDNN's operator is missing. The fast paths run under ``torch.no_grad()`` or
    ``torch.inference_mode()``; with gradients on, the model computes what it computed before.

    ``precision``: ``"fp32"`` (default; the weights keep their dtype) or ``"bf16"`` (floating-point parameters and
    buffers cast to ``torch.bfloat16``; the caller then passes bf16 float inputs and gets bf16 outputs).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if onednn.available():
        _swap_linears(model)
    if precision == "bf16":
        model.to(torch.bfloat16)
    return model.eval()
