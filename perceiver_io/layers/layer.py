"""Pre-LayerNorm attention layer + MLP: Perceiver IO's cross-attention and self-attention blocks."""

from __future__ import annotations

import torch
from torch import nn

from perceiver_io.layers.attention import Attention

LAYER_NORM_EPS = 1e-5  # Haiku's default, and what transformers' layers compute despite its config's 1e-12


class MLP(nn.Module):
    """Linear(C → wC), GELU, Linear(wC → C)."""

    def __init__(self, channels: int, widening_factor: int, gelu_approximate: str = "none") -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, widening_factor * channels)
        self.act = nn.GELU(approximate=gelu_approximate)
        self.fc2 = nn.Linear(widening_factor * channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class PerceiverLayer(nn.Module):
    """Attention then MLP, each behind a LayerNorm, with residuals.

    Self-attention when ``kv_dim`` is None (one LayerNorm before the attention), cross-attention otherwise (separate
    LayerNorms for queries and keys/values). The query residual can be dropped when the query's meaning differs from
    the output's (e.g. decoder queries that are positions, outputs that are pixels).
    """

    def __init__(
        self,
        q_dim: int,
        kv_dim: int | None = None,
        *,
        qk_channels: int | None = None,
        v_channels: int | None = None,
        num_heads: int = 1,
        widening_factor: int = 1,
        use_query_residual: bool = True,
        shape_for_attn: str = "kv",
        dropout: float = 0.0,
        gelu_approximate: str = "none",
        wipe_fully_masked_rows: bool = False,
    ) -> None:
        super().__init__()
        is_cross = kv_dim is not None
        if qk_channels is None:
            qk_channels = kv_dim if is_cross and shape_for_attn == "kv" else q_dim
        if v_channels is None:
            v_channels = qk_channels
        # The output returns to the query width in cross-attention; self-attention outputs v_channels, which must
        # then equal q_dim for the residual (as in DeepMind's and transformers' code).
        output_channels = q_dim if is_cross else v_channels
        if use_query_residual and output_channels != q_dim:
            raise ValueError(f"self-attention with v_channels={v_channels} cannot add a residual to width {q_dim}")
        self.use_query_residual = use_query_residual
        self.norm_q = nn.LayerNorm(q_dim, eps=LAYER_NORM_EPS)
        self.norm_kv = nn.LayerNorm(kv_dim, eps=LAYER_NORM_EPS) if is_cross else None
        self.attn = Attention(
            q_dim,
            kv_dim if is_cross else q_dim,
            qk_channels,
            v_channels,
            output_channels,
            num_heads,
            dropout=dropout,
            wipe_fully_masked_rows=wipe_fully_masked_rows,
        )
        self.norm_mlp = nn.LayerNorm(output_channels, eps=LAYER_NORM_EPS)
        self.mlp = MLP(output_channels, widening_factor, gelu_approximate)

    def forward(
        self, x: torch.Tensor, kv: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x: (B, T, Cq); kv: (B, S, Ckv) for cross-attention; mask: bool (B, T, S) or (B, 1, S)."""
        h = self.norm_q(x)
        kv = h if self.norm_kv is None else self.norm_kv(kv)
        a = self.attn(h, kv, mask)
        x = x + a if self.use_query_residual else a
        return x + self.mlp(self.norm_mlp(x))
