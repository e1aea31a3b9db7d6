"""Pre-LayerNorm attention layer + MLP: Perceiver IO's cross-attention and self-attention blocks."""

from __future__ import annotations

import torch
from torch import nn

from perceiver_io.layers.attention import Attention, key_block_size
from perceiver_io.layers.onednn import OneDNNLinear

LAYER_NORM_EPS = 1e-5  # Haiku's default, and what transformers' layers compute despite its config's 1e-12


class MLP(nn.Module):
    """Linear(C → wC), GELU, Linear(wC → C)."""

    def __init__(self, channels: int, widening_factor: int, gelu_approximate: str = "none") -> None:
        super().__init__()
        self.fc1 = OneDNNLinear(channels, widening_factor * channels)
        self.act = nn.GELU(approximate=gelu_approximate)
        self.fc2 = OneDNNLinear(widening_factor * channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(…, C) → (…, C)."""
        if isinstance(self.fc1, OneDNNLinear) and type(self.act) is nn.GELU:
            # GELU inside fc1's oneDNN call: one pass over the (…, wC) activations instead of three (same result
            # where oneDNN does not apply: fc1 then computes F.linear and F.gelu).
            return self.fc2(self.fc1(x, gelu=self.act.approximate))
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
        # Keys per block for a cross-attention to huge inputs (None: key_block_size decides).
        self.max_key_block: int | None = None

    def keys_values(self, kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised, projected keys and values of a cross-attention's inputs kv (B, S, Ckv) →
        (B, H, S, Dqk), (B, H, S, Dv), to share between chunks of queries (``forward(keys_values=...)``)."""
        return self.attn.keys_values(self.norm_kv(kv))

    def forward(
        self,
        x: torch.Tensor,
        kv: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        *,
        keys_values: tuple[torch.Tensor, torch.Tensor] | None = None,
        output_attentions: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, Cq); kv: (B, S, Ckv) for cross-attention, or its ``keys_values``; mask: bool (B, T, S) or
        (B, 1, S) → (B, T, C), and with ``output_attentions`` the attention probabilities (B, H, T, S) as a second
        value (never through key blocks, which see one block of keys at a time)."""
        h = self.norm_q(x)
        block = None if keys_values is not None or output_attentions else self._key_block(h, kv, mask)
        probs = None
        if block is not None:
            a = self.attn.forward_key_blocks(h, kv, self.norm_kv, block)
        else:
            if keys_values is None:
                keys_values = self.attn.keys_values(h if self.norm_kv is None else self.norm_kv(kv))
            a = self.attn(h, mask=mask, keys_values=keys_values, output_attentions=output_attentions)
            if output_attentions:
                a, probs = a
        x = x + a if self.use_query_residual else a
        x = x + self.mlp(self.norm_mlp(x))
        return (x, probs) if output_attentions else x

    def _key_block(self, h: torch.Tensor, kv: torch.Tensor | None, mask: torch.Tensor | None) -> int | None:
        """Keys per block when this cross-attention should run over its inputs in key blocks, else None.

        Only for unmasked CPU inference (no autograd, no dropout) over more inputs than one block: that is where
        the inputs' LayerNorm, keys and values (3× the inputs' size) would dominate peak memory.
        """
        if self.norm_kv is None or mask is not None or kv.device.type != "cpu":
            return None
        if (self.training and self.attn.dropout) or torch.compiler.is_compiling():
            return None
        if torch.is_grad_enabled() and (kv.requires_grad or any(p.requires_grad for p in self.parameters())):
            return None
        block = self.max_key_block or key_block_size(h.shape[0], self.attn.num_heads, h.shape[1])
        return block if kv.shape[1] > block else None
