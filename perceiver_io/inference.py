"""Optional inference speed-up on CPU: every GEMM through oneDNN, with the MLPs' GELU fused into it.

Why: PyTorch sends float32 GEMMs to MKL, which on AMD CPUs runs its AVX2 kernels; oneDNN runs AVX-512 and is
2.0–2.9× faster on this model's shapes (``benchmarks/gemm_paths.py``). ``optimize_for_inference`` swaps every
``nn.Linear`` for a ``OneDNNLinear`` (bias and GELU applied in the same pass, instead of two more sweeps over the
activations) and lets attention use oneDNN's GEMMs (``attention_path``). oneDNN's operator has no autograd, so the
fast paths are taken only when no gradient is being recorded; otherwise the model computes exactly what it
computed before. Results differ from the default paths by float32 rounding only (max |Δ| of a few 1e-6 per layer
for unit-scale activations). Parameters are shared, not copied, and state-dict keys are unchanged, so
``save_pretrained`` and weight loading keep working.

bf16 inference needs no swap (PyTorch already runs bf16 GEMMs on oneDNN) but gains the fused bias/GELU from it:
``optimize_for_inference(model).to(torch.bfloat16)`` with bf16 inputs, or ``torch.autocast("cpu", torch.bfloat16)``.
Either keeps the logits within about 1–3 % relative L2 of float32 (``benchmarks/results``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from perceiver_io.layers import onednn
from perceiver_io.layers.attention import Attention
from perceiver_io.layers.layer import MLP


class OneDNNLinear(nn.Linear):
    """``nn.Linear`` (optionally followed by GELU) whose no-grad CPU forward runs as one oneDNN call.

    ``gelu`` is None (no activation) or GELU's ``approximate`` argument (``"none"`` or ``"tanh"``).
    """

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, gelu: str | None = None, **factory
    ) -> None:
        super().__init__(in_features, out_features, bias, **factory)
        self.gelu = gelu

    @classmethod
    def wrap(cls, linear: nn.Linear, gelu: str | None = None) -> OneDNNLinear:
        """A OneDNNLinear holding ``linear``'s own parameters (no copy)."""
        new = cls(linear.in_features, linear.out_features, linear.bias is not None, gelu, device="meta")
        new.weight = linear.weight
        new.bias = linear.bias
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(…, in_features) → (…, out_features)."""
        if x.dim() >= 2 and self.weight.is_contiguous() and onednn.usable(x, self.weight):
            return onednn.linear(x, self.weight, self.bias, self.gelu)
        y = F.linear(x, self.weight, self.bias)
        return y if self.gelu is None else F.gelu(y, approximate=self.gelu)

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", gelu={self.gelu!r}" if self.gelu is not None else "")


def _fuse_mlp_gelus(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, MLP) and isinstance(module.act, nn.GELU) and type(module.fc1) is nn.Linear:
            module.fc1 = OneDNNLinear.wrap(module.fc1, gelu=module.act.approximate)
            module.act = nn.Identity()


def _swap_linears(module: nn.Module) -> None:
    for name, child in module.named_children():
        if type(child) is nn.Linear:
            setattr(module, name, OneDNNLinear.wrap(child))
        else:
            _swap_linears(child)


def optimize_for_inference(model: nn.Module) -> nn.Module:
    """Route ``model``'s linears and attention GEMMs through oneDNN (in place), eval mode; returns ``model``.

    A no-op where oneDNN's operator is missing. Run the model under ``torch.no_grad()`` or
    ``torch.inference_mode()`` to get the fast paths; with gradients on it computes what it computed before.
    """
    if onednn.available():
        _fuse_mlp_gelus(model)
        _swap_linears(model)
        for module in model.modules():
            if isinstance(module, Attention):
                module.allow_onednn = True
    return model.eval()
