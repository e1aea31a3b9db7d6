"""Multi-head attention: the one implementation used by the encoder, the decoders and every head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def mask_to_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean mask (True = attend) → additive bias with the dtype's most negative value.

    A large finite value rather than -inf keeps a fully masked row finite: it then attends uniformly, as in
    transformers (DeepMind's -1e30 does the same in float32).
    """
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, torch.finfo(dtype).min)


def _use_fused(q: torch.Tensor, v: torch.Tensor) -> bool:
    # On CPU, SDPA wins for fp32 with equal q/v head widths; it loses for the language model's 32/160 split and in
    # bf16 (measured in benchmarks/attention_paths.py). On GPU the fused kernels always win.
    if q.device.type != "cpu":
        return True
    return q.dtype == torch.float32 and q.shape[-1] == v.shape[-1]


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    dropout_p: float = 0.0,
    wipe_fully_masked_rows: bool = False,
) -> torch.Tensor:
    """Scaled dot-product attention with per-head scaling 1/sqrt(d_qk).

    Args:
        q: (B, H, T, Dqk) queries; k: (B, H, S, Dqk) keys; v: (B, H, S, Dv) values.
        mask: optional bool (B, T, S) or (B, 1, S); True marks a key the query may attend to.
        wipe_fully_masked_rows: zero the output of queries whose keys are all masked (DeepMind's rule).
    Returns:
        (B, H, T, Dv)
    """
    bias = None if mask is None else mask_to_bias(mask[:, None], q.dtype)
    if _use_fused(q, v):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p)
    else:
        scores = torch.matmul(q, k.transpose(-1, -2)) * q.shape[-1] ** -0.5  # (B, H, T, S)
        if bias is not None:
            scores = scores + bias
        probs = scores.softmax(dim=-1)
        if dropout_p:
            probs = F.dropout(probs, dropout_p)
        out = torch.matmul(probs, v)
    if wipe_fully_masked_rows and mask is not None:
        out = out * mask.any(dim=-1)[:, None, :, None].to(out.dtype)
    return out


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v/output projections (DeepMind's `Attention`).

    qk_channels and v_channels are totals over heads; output_channels defaults to v_channels.
    """

    def __init__(
        self,
        q_dim: int,
        kv_dim: int,
        qk_channels: int,
        v_channels: int,
        output_channels: int,
        num_heads: int,
        dropout: float = 0.0,
        wipe_fully_masked_rows: bool = False,
    ) -> None:
        super().__init__()
        if qk_channels % num_heads or v_channels % num_heads:
            raise ValueError(
                f"qk_channels={qk_channels} and v_channels={v_channels} must be divisible by num_heads={num_heads}"
            )
        self.num_heads = num_heads
        self.dropout = dropout
        self.wipe_fully_masked_rows = wipe_fully_masked_rows
        self.q = nn.Linear(q_dim, qk_channels)
        self.k = nn.Linear(kv_dim, qk_channels)
        self.v = nn.Linear(kv_dim, v_channels)
        self.o = nn.Linear(v_channels, output_channels)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)  # (B, H, N, C/H)

    def forward(self, x_q: torch.Tensor, x_kv: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x_q: (B, T, Cq), x_kv: (B, S, Ckv), mask: bool (B, T, S) or (B, 1, S) → (B, T, output_channels)."""
        q, k, v = self._heads(self.q(x_q)), self._heads(self.k(x_kv)), self._heads(self.v(x_kv))
        out = attend(
            q,
            k,
            v,
            mask,
            dropout_p=self.dropout if self.training else 0.0,
            wipe_fully_masked_rows=self.wipe_fully_masked_rows,
        )
        b, h, t, d = out.shape
        return self.o(out.transpose(1, 2).reshape(b, t, h * d))
