"""Decoders: queries cross-attend to the latents, then an optional final projection."""

from __future__ import annotations

import torch
from torch import nn

from perceiver_io.config import PerceiverConfig
from perceiver_io.layers.layer import PerceiverLayer
from perceiver_io.outputs import PerceiverDecoderOutput
from perceiver_io.queries import NoQueries

# Queries decoded at once. Each query's output depends only on itself and the latents, so decoding in chunks is
# exact and bounds the decoder's activations (optical flow asks 182,528 queries per tile, a full video 800 k).
DECODER_QUERY_CHUNK = 16384


class PerceiverDecoder(nn.Module):
    """Cross-attention decoder (DeepMind's ``BasicDecoder``): queries (B, Nq, Cq) attend to latents (B, N, D).

    The query provider decides what is asked (see ``perceiver_io.queries``); ``final_channels=None`` returns the
    raw cross-attention output (B, Nq, Cq), otherwise a Linear maps it to (B, Nq, final_channels). Queries are
    decoded ``query_chunk_size`` at a time (None: all at once). ``queries_only`` builds no attention: such a
    decoder only provides queries to a multimodal decoder (transformers' ``position_encoding_only``).
    """

    # Where transformers nests this decoder's attention and query table below the model's ``decoder.``: most of its
    # decoders wrap a PerceiverBasicDecoder as ``.decoder`` (see checkpoints/transformers_names.py).
    hf_prefix = "decoder."

    def __init__(
        self,
        config: PerceiverConfig,
        queries: nn.Module,
        *,
        final_channels: int | None,
        qk_channels: int | None = None,
        v_channels: int | None = None,
        num_heads: int = 1,
        widening_factor: int = 1,
        use_query_residual: bool = False,
        queries_only: bool = False,
    ) -> None:
        super().__init__()
        self.queries = queries
        self.mask_queries = config.mask_decoder_queries
        self.cross_attn = None
        self.final = None
        if not queries_only:
            self.cross_attn = PerceiverLayer(
                queries.num_channels,
                config.d_latents,
                qk_channels=qk_channels,
                v_channels=v_channels,
                num_heads=num_heads,
                widening_factor=widening_factor,
                use_query_residual=use_query_residual,
                shape_for_attn=config.cross_attention_shape_for_attention,
                gelu_approximate=config.gelu_approximate,
                dropout=config.attention_probs_dropout_prob,
                wipe_fully_masked_rows=config.wipe_fully_masked_rows,
            )
            if final_channels is not None:
                self.final = nn.Linear(queries.num_channels, final_channels)
        self.query_chunk_size: int | None = DECODER_QUERY_CHUNK

    def forward(
        self,
        query: torch.Tensor,
        z: torch.Tensor,
        query_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> PerceiverDecoderOutput:
        """query: (B, Nq, Cq), z: (B, N, D), query_mask: bool (B, Nq) → logits (B, Nq, C_out), and with
        ``output_attentions`` the cross-attention probabilities (B, H, Nq, N) of all queries (chunks joined)."""
        mask = None
        if self.mask_queries and query_mask is not None:
            if query_mask.shape[1] != query.shape[1]:
                raise ValueError(f"query mask of length {query_mask.shape[1]} for {query.shape[1]} decoder queries")
            mask = query_mask[:, :, None]  # (B, Nq, 1): a masked query sees no latent
        kv = self.cross_attn.keys_values(z)  # once, shared by every chunk of queries
        n, chunk = query.shape[1], self.query_chunk_size or query.shape[1]
        if n <= chunk:
            out, probs = self._decode(query, kv, mask, output_attentions)
        else:
            parts = [
                self._decode(
                    query[:, i : i + chunk], kv, None if mask is None else mask[:, i : i + chunk], output_attentions
                )
                for i in range(0, n, chunk)
            ]
            out = torch.cat([p[0] for p in parts], dim=1)
            probs = torch.cat([p[1] for p in parts], dim=2) if output_attentions else None
        return PerceiverDecoderOutput(logits=out, cross_attentions=(probs,) if output_attentions else None)

    def _decode(
        self, query: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor | None, weights: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One chunk: query (B, n, Cq), the latents' keys/values, mask (B, n, 1) or None → (B, n, C_out), and the
        probabilities (B, H, n, N) if ``weights`` else None."""
        out = self.cross_attn(query, mask=mask, keys_values=kv, output_attentions=weights)
        out, probs = out if weights else (out, None)
        return (out if self.final is None else self.final(out)), probs


class ProjectionDecoder(nn.Module):
    """No cross-attention: average the latents, then a Linear (B, N, D) → (B, num_classes)."""

    def __init__(self, config: PerceiverConfig, num_classes: int) -> None:
        super().__init__()
        self.queries = NoQueries()
        self.classifier = nn.Linear(config.d_latents, num_classes)

    def forward(
        self, query: None, z: torch.Tensor, query_mask: torch.Tensor | None = None, output_attentions: bool = False
    ) -> PerceiverDecoderOutput:
        """z: (B, N, D) → logits (B, num_classes); no attention, so ``output_attentions`` gives no maps."""
        return PerceiverDecoderOutput(
            logits=self.classifier(z.mean(dim=1)), cross_attentions=() if output_attentions else None
        )
