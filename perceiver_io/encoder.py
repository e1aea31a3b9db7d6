"""The Perceiver encoder: a learned latent array cross-attends to the inputs, then self-attends in latent space."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from perceiver_io.config import PerceiverConfig
from perceiver_io.layers.layer import PerceiverLayer
from perceiver_io.outputs import PerceiverModelOutput


class PerceiverEncoder(nn.Module):
    """Latents (N, D) ← one cross-attention to inputs (B, M, C), then ``num_blocks`` × a shared block of
    ``num_self_attends_per_block`` self-attention layers. Self-attention is never masked."""

    def __init__(self, config: PerceiverConfig, input_channels: int) -> None:
        super().__init__()
        self.num_blocks = config.num_blocks
        self.gradient_checkpointing = False
        common = dict(
            qk_channels=config.qk_channels,
            v_channels=config.v_channels,
            gelu_approximate=config.gelu_approximate,
            dropout=config.attention_probs_dropout_prob,
        )
        self.latents = nn.Parameter(torch.randn(config.num_latents, config.d_latents) * config.initializer_range)
        self.cross_attn = PerceiverLayer(
            config.d_latents,
            input_channels,
            num_heads=config.num_cross_attention_heads,
            widening_factor=config.cross_attention_widening_factor,
            use_query_residual=config.use_query_residual,
            shape_for_attn=config.cross_attention_shape_for_attention,
            wipe_fully_masked_rows=config.wipe_fully_masked_rows,
            **common,
        )
        self.self_attns = nn.ModuleList(
            PerceiverLayer(
                config.d_latents,
                num_heads=config.num_self_attention_heads,
                widening_factor=config.self_attention_widening_factor,
                **common,
            )
            for _ in range(config.num_self_attends_per_block)
        )

    @property
    def input_channels(self) -> int:
        return self.cross_attn.norm_kv.normalized_shape[0]

    def forward(
        self,
        inputs: torch.Tensor,
        input_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> PerceiverModelOutput:
        """inputs: (B, M, C); input_mask: bool (B, M), True = real input → ``last_hidden_state``: the latents
        (B, N, D), and what ``output_attentions`` and ``output_hidden_states`` ask for, counted as transformers
        counts them (see ``PerceiverModelOutput``); no logits."""
        z = self.latents.expand(inputs.shape[0], -1, -1)
        mask = None if input_mask is None else input_mask[:, None, :]  # every latent sees the same keys
        hidden = [] if output_hidden_states else None
        attentions = [] if output_attentions else None
        z, cross = self._run(self.cross_attn, z, inputs, mask, output_attentions=output_attentions)
        for _ in range(self.num_blocks):
            for layer in self.self_attns:
                if hidden is not None:
                    hidden.append(z)
                z, probs = self._run(layer, z, output_attentions=output_attentions)
                if attentions is not None:
                    attentions.append(probs)
            if hidden is not None:
                hidden.append(z)
        return PerceiverModelOutput(
            last_hidden_state=z,
            hidden_states=None if hidden is None else tuple(hidden),
            attentions=None if attentions is None else tuple(attentions),
            cross_attentions=(cross,) if output_attentions else None,
        )

    def _run(
        self, layer: nn.Module, *args: torch.Tensor | None, output_attentions: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One layer (recomputed in the backward pass under gradient checkpointing) → output, probabilities or
        None."""
        if self.gradient_checkpointing and self.training:
            out = checkpoint(layer, *args, output_attentions=output_attentions, use_reentrant=False)
        else:
            out = layer(*args, output_attentions=output_attentions)
        return out if output_attentions else (out, None)
