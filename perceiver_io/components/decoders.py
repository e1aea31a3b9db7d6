"""transformers' decoder classes: its constructor arguments, our ``PerceiverDecoder`` and query providers.

Every class is a ``PerceiverDecoder`` (or our projection decoder) whose ``queries`` provider builds what
transformers' ``decoder_query`` builds, and also answers transformers' own interface: ``decoder_query(inputs,
modality_sizes=None, inputs_without_pos=None, subsampled_points=None)`` and ``num_query_channels``.

``hf_prefix`` says where transformers nests the attention below the model's ``decoder.``: its classification,
flow, video and multimodal decoders wrap a basic decoder as ``.decoder`` (checkpoint names only).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from perceiver_io.adapters.text import EmbeddingDecoder
from perceiver_io.components.position import BUILD_KEYS, build_position, check_keys, trainable_shape
from perceiver_io.config import PerceiverConfig
from perceiver_io.decoders import PerceiverDecoder, ProjectionDecoder
from perceiver_io.outputs import PerceiverDecoderOutput
from perceiver_io.queries import ConcatInputQueries, FourierQueries, InputQueries, MultimodalQueries, TrainableQueries


def restructure(modality_sizes: Mapping[str, int], inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Flat multimodal inputs (B, M, C) → {modality: (B, M_m, C)}, taken in sorted modality order."""
    total = sum(modality_sizes.values())
    if inputs.shape[1] != total:
        raise ValueError(f"inputs of length {inputs.shape[1]} do not split into modality_sizes={dict(modality_sizes)}")
    out, start = {}, 0
    for m in sorted(modality_sizes):
        out[m] = inputs[:, start : start + modality_sizes[m]]
        start += modality_sizes[m]
    return out


class PerceiverProjectionDecoder(ProjectionDecoder):
    """No cross-attention: mean of the latents (B, N, d_latents) → Linear → (B, num_labels)."""

    def __init__(self, config: PerceiverConfig) -> None:
        super().__init__(config, config.num_labels)

    def decoder_query(
        self,
        inputs: torch.Tensor,
        modality_sizes: Mapping[str, int] | None = None,
        inputs_without_pos: torch.Tensor | None = None,
        subsampled_points: torch.Tensor | None = None,
    ) -> None:
        """This decoder asks no queries."""
        return None


class PerceiverBasicDecoder(PerceiverDecoder):
    """Queries cross-attend to the latents, then an optional Linear to ``output_num_channels`` (transformers'
    arguments).

    Queries: a trainable table (``trainable_position_encoding_kwargs``) or Fourier features over
    ``output_index_dims`` (``fourier_position_encoding_kwargs``), preceded by the preprocessed inputs without
    positions with ``concat_preprocessed_input`` (then ``num_channels`` is the total width). Their width must be
    ``num_channels``, the cross-attention's query width. ``position_encoding_only`` builds no attention: the decoder
    then only supplies queries to a ``PerceiverMultimodalDecoder``.

    Refused: position_encoding_type="none" (queries from elsewhere: use PerceiverMultimodalDecoder), a query
    projection (``project_pos_dim``/``out_channels``), ``subsampled_index_dims`` (stored by transformers, never
    read), Fourier queries without ``output_index_dims``.

    Where transformers' own behaviour is a slip, we do what its documentation says: without subsampling, Fourier queries
    cover the ``output_index_dims`` grid (transformers takes the grid from the inputs' trailing shape, i.e. their
    channel count), and ``subsampled_points`` pick rows of a trainable table (transformers returns all rows).
    """

    hf_prefix = ""

    def __init__(
        self,
        config: PerceiverConfig,
        output_num_channels: int,
        position_encoding_type: str = "trainable",
        output_index_dims: int | Sequence[int] | None = None,
        num_channels: int = 128,
        subsampled_index_dims: int | Sequence[int] | None = None,
        qk_channels: int | None = None,
        v_channels: int | None = None,
        num_heads: int = 1,
        widening_factor: int = 1,
        use_query_residual: bool = False,
        concat_preprocessed_input: bool = False,
        final_project: bool = True,
        position_encoding_only: bool = False,
        **position_encoding_kwargs: Any,
    ) -> None:
        owner = type(self).__name__
        check_keys(owner, position_encoding_kwargs, BUILD_KEYS)
        if subsampled_index_dims is not None:
            raise ValueError(f"{owner}: subsampled_index_dims={subsampled_index_dims} is not used; pass None")
        if position_encoding_kwargs.pop("project_pos_dim", -1) > 0 or "out_channels" in position_encoding_kwargs:
            raise ValueError(
                f"{owner}: projecting the decoder queries (project_pos_dim, out_channels) is not supported"
            )
        if concat_preprocessed_input and position_encoding_only:
            raise ValueError(f"{owner}: concat_preprocessed_input=True needs the decoder's own attention")
        queries = self._build_queries(
            owner, position_encoding_type, output_index_dims, num_channels, position_encoding_kwargs
        )
        if concat_preprocessed_input:
            queries = ConcatInputQueries(queries, num_channels)
        elif not position_encoding_only and queries.num_channels != num_channels:
            raise ValueError(
                f"{owner}: the queries have {queries.num_channels} channels but num_channels={num_channels}"
            )
        super().__init__(
            config,
            queries,
            final_channels=output_num_channels if final_project else None,
            qk_channels=qk_channels,
            v_channels=v_channels,
            num_heads=num_heads,
            widening_factor=widening_factor,
            use_query_residual=use_query_residual,
            queries_only=position_encoding_only,
        )
        self.output_num_channels = output_num_channels
        self.output_index_dims = output_index_dims
        self.num_channels = num_channels
        self.position_encoding_type = position_encoding_type
        self.concat_preprocessed_input = concat_preprocessed_input
        self.final_project = final_project
        self.position_encoding_only = position_encoding_only

    def _build_queries(
        self,
        owner: str,
        position_encoding_type: str,
        output_index_dims: int | Sequence[int] | None,
        num_channels: int,
        kwargs: dict[str, Any],
    ) -> nn.Module:
        """The query provider for the position encoding arguments."""
        if position_encoding_type == "none":
            raise ValueError(
                f"{owner}: position_encoding_type='none' leaves the decoder without queries; use 'trainable' or "
                "'fourier' (a PerceiverMultimodalDecoder builds its own shared attention)"
            )
        if position_encoding_type == "trainable":
            build_position(owner, "trainable", **kwargs)  # validates the keyword arguments
            return TrainableQueries(*trainable_shape(owner, kwargs["trainable_position_encoding_kwargs"]))
        encoding = build_position(owner, position_encoding_type, **kwargs)
        if output_index_dims is None:
            raise ValueError(f"{owner}: Fourier queries need output_index_dims (the output grid)")
        dims = (output_index_dims,) if isinstance(output_index_dims, int) else tuple(output_index_dims)
        return FourierQueries(dims, encoding)

    @property
    def num_query_channels(self) -> int:
        """transformers' value: the query width for a queries-only decoder, else the width of its output."""
        if self.position_encoding_only:
            return self.queries.num_channels
        return self.output_num_channels if self.final_project else self.num_channels

    def decoder_query(
        self,
        inputs: torch.Tensor,
        modality_sizes: Mapping[str, int] | None = None,
        inputs_without_pos: torch.Tensor | None = None,
        subsampled_points: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The queries (B, Nq, Cq) for preprocessed inputs (B, M, C)."""
        if modality_sizes is not None:
            raise ValueError(f"{type(self).__name__} decodes one modality: pass modality_sizes=None")
        return self.queries(inputs, subsampled_points=subsampled_points, inputs_without_pos=inputs_without_pos)

    def forward(self, query: torch.Tensor, z: torch.Tensor, query_mask: torch.Tensor | None = None, **options: Any):
        """query (B, Nq, Cq), latents z (B, N, D) → logits (B, Nq, output_num_channels or Cq) and, with
        ``output_attentions=True``, the cross-attention maps."""
        if self.cross_attn is None:
            raise ValueError(
                f"this {type(self).__name__} was built with position_encoding_only=True: it only makes queries"
            )
        return super().forward(query, z, query_mask, **options)


class PerceiverClassificationDecoder(PerceiverBasicDecoder):
    """One query → (B, num_labels) logits: a basic decoder with ``output_num_channels=config.num_labels`` and
    ``output_index_dims=1``; ``decoder_kwargs`` are the basic decoder's."""

    hf_prefix = "decoder."

    def __init__(self, config: PerceiverConfig, **decoder_kwargs: Any) -> None:
        for key in ("output_num_channels", "output_index_dims"):
            if key in decoder_kwargs:
                raise TypeError(f"{type(self).__name__} sets {key} itself")
        super().__init__(config, output_num_channels=config.num_labels, output_index_dims=1, **decoder_kwargs)
        self.num_labels = config.num_labels

    def forward(self, query: torch.Tensor, z: torch.Tensor, query_mask: torch.Tensor | None = None, **options: Any):
        """(B, 1, Cq) query → logits (B, num_labels)."""
        out = super().forward(query, z, query_mask, **options)
        return PerceiverDecoderOutput(logits=out.logits[:, 0], cross_attentions=out.cross_attentions)


class PerceiverOpticalFlowDecoder(PerceiverBasicDecoder):
    """Every preprocessed input pixel is a query → flow (B, *output_image_shape, output_num_channels), divided by
    ``rescale_factor``. position_encoding_type may be "fourier" (its encoding is built and unused, as in
    transformers) or "none"; a trainable table would be an unused parameter and is refused."""

    hf_prefix = "decoder."

    def __init__(
        self,
        config: PerceiverConfig,
        output_image_shape: Sequence[int],
        output_num_channels: int = 2,
        rescale_factor: float = 100.0,
        **decoder_kwargs: Any,
    ) -> None:
        super().__init__(config, output_num_channels=output_num_channels, **decoder_kwargs)
        self.output_image_shape = tuple(output_image_shape)
        self.rescale_factor = rescale_factor

    def _build_queries(
        self,
        owner: str,
        position_encoding_type: str,
        output_index_dims: int | Sequence[int] | None,
        num_channels: int,
        kwargs: dict[str, Any],
    ) -> nn.Module:
        if position_encoding_type == "fourier":
            build_position(owner, position_encoding_type, **kwargs)  # validates the keyword arguments
        elif position_encoding_type != "none":
            raise ValueError(
                f"{owner}: position_encoding_type={position_encoding_type!r}; the flow decoder's queries are its "
                "inputs (use 'fourier' or 'none')"
            )
        return InputQueries(num_channels)

    def forward(self, query: torch.Tensor, z: torch.Tensor, query_mask: torch.Tensor | None = None, **options: Any):
        """query (B, H·W, C) → logits: flow (B, *output_image_shape, output_num_channels)."""
        out = super().forward(query, z, query_mask, **options)
        preds = out.logits / self.rescale_factor
        flow = _reshape(preds, (preds.shape[0], *self.output_image_shape, preds.shape[-1]), "output_image_shape")
        return PerceiverDecoderOutput(logits=flow, cross_attentions=out.cross_attentions)


class PerceiverBasicVideoAutoencodingDecoder(PerceiverBasicDecoder):
    """Queries over the (T, H, W) grid of ``output_shape`` = (B, T, H, W) → (B, T, H, W, output_num_channels).

    ``decoder_kwargs`` are the basic decoder's and must include ``output_num_channels``.
    """

    hf_prefix = "decoder."

    def __init__(
        self, config: PerceiverConfig, output_shape: Sequence[int], position_encoding_type: str, **decoder_kwargs: Any
    ) -> None:
        if len(output_shape) != 4:
            raise ValueError(f"output_shape={tuple(output_shape)} must be (batch, frames, height, width)")
        if "output_num_channels" not in decoder_kwargs:
            raise TypeError(f"{type(self).__name__} needs output_num_channels")
        if "output_index_dims" in decoder_kwargs:
            raise TypeError(f"{type(self).__name__} sets output_index_dims from output_shape")
        super().__init__(
            config,
            output_index_dims=tuple(output_shape[1:4]),
            position_encoding_type=position_encoding_type,
            **decoder_kwargs,
        )
        self.output_shape = tuple(output_shape)

    def forward(self, query: torch.Tensor, z: torch.Tensor, query_mask: torch.Tensor | None = None, **options: Any):
        """query (B, T·H·W, Cq) → logits (B, T, H, W, output_num_channels)."""
        out = super().forward(query, z, query_mask, **options)
        logits = _reshape(out.logits, (*self.output_shape, out.logits.shape[-1]), "output_shape")
        return PerceiverDecoderOutput(logits=logits, cross_attentions=out.cross_attentions)


class PerceiverMultimodalDecoder(PerceiverDecoder):
    """One cross-attention for several modalities: each modality's decoder (built with
    ``position_encoding_only=True``) supplies queries, padded with a learned per-modality vector to
    max width + ``min_padding_size`` and concatenated in sorted modality order.

    ``decoder_kwargs`` configure the shared attention (qk_channels, v_channels, num_heads, widening_factor,
    use_query_residual, final_project). ``num_outputs`` is kept for reference, as transformers does; refused:
    ``subsampled_index_dims`` (never read) and ``concat_preprocessed_input=True`` (set it on a modality decoder).
    """

    hf_prefix = "decoder."

    def __init__(
        self,
        config: PerceiverConfig,
        modalities: Mapping[str, PerceiverBasicDecoder],
        num_outputs: int | None,
        output_num_channels: int,
        min_padding_size: int = 2,
        subsampled_index_dims: Mapping[str, Any] | None = None,
        **decoder_kwargs: Any,
    ) -> None:
        owner = type(self).__name__
        allowed = ("qk_channels", "v_channels", "num_heads", "widening_factor", "use_query_residual")
        check_keys(owner, decoder_kwargs, (*allowed, "concat_preprocessed_input", "final_project"))
        if decoder_kwargs.pop("concat_preprocessed_input", False):
            raise ValueError(f"{owner}: concat_preprocessed_input=True belongs on a modality's decoder")
        if subsampled_index_dims is not None:
            raise ValueError(f"{owner}: subsampled_index_dims={subsampled_index_dims} is not used; pass None")
        for name, decoder in modalities.items():
            if not isinstance(decoder, PerceiverBasicDecoder) or not decoder.position_encoding_only:
                raise ValueError(
                    f"{owner}: modality {name!r} must be a Perceiver*Decoder built with position_encoding_only=True "
                    f"(it only supplies queries); got {type(decoder).__name__}"
                )
        queries = MultimodalQueries(
            {m: d.queries for m, d in modalities.items()},
            min_padding_size,
            hf_prefixes={m: d.hf_prefix for m, d in modalities.items()},
        )
        final_project = decoder_kwargs.pop("final_project", True)
        super().__init__(
            config, queries, final_channels=output_num_channels if final_project else None, **decoder_kwargs
        )
        self.num_outputs = num_outputs
        self.output_num_channels = output_num_channels
        self.min_padding_size = min_padding_size

    @property
    def num_query_channels(self) -> int:
        return self.queries.num_channels

    def decoder_query(
        self,
        inputs: torch.Tensor,
        modality_sizes: Mapping[str, int],
        inputs_without_pos: Mapping[str, torch.Tensor] | None = None,
        subsampled_points: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Flat preprocessed inputs (B, M, C) split by ``modality_sizes`` → queries (B, sum Nq_m, Cq)."""
        if modality_sizes is None:
            raise ValueError(f"{type(self).__name__} needs modality_sizes to split its inputs")
        return self.queries(
            restructure(modality_sizes, inputs),
            subsampled_points=subsampled_points,
            inputs_without_pos=inputs_without_pos,
        )


class PerceiverEmbeddingDecoder(EmbeddingDecoder):
    """Decoder output (B, T, d_model) → (B, T, vocab_size) through the transposed input embedding + a bias."""

    def forward(self, hidden_states: torch.Tensor, embedding_layer: nn.Embedding | torch.Tensor) -> torch.Tensor:
        """``embedding_layer``: the text preprocessor's ``embeddings`` (transformers passes the module)."""
        weight = embedding_layer.weight if isinstance(embedding_layer, nn.Embedding) else embedding_layer
        return super().forward(hidden_states, weight)


def _reshape(x: torch.Tensor, shape: tuple[int, ...], name: str) -> torch.Tensor:
    if x.numel() != torch.Size(shape).numel():
        raise ValueError(f"decoder output {tuple(x.shape)} does not fit {name}: {shape}")
    return x.reshape(shape)
