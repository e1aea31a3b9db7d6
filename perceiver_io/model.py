"""PerceiverModel: preprocess → encode into latents → decode queries → postprocess."""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from perceiver_io.config import PerceiverConfig
from perceiver_io.encoder import PerceiverEncoder
from perceiver_io.layers.position import TrainablePositionEncoding
from perceiver_io.outputs import ModelOutput, PerceiverDecoderOutput, PerceiverModelOutput

# False while a checkpoint loader builds a model whose every weight it then overwrites (see ``no_init_weights``).
_INIT_WEIGHTS = contextvars.ContextVar("perceiver_io_init_weights", default=True)


@contextlib.contextmanager
def no_init_weights() -> Iterator[None]:
    """Models built inside skip ``init_weights`` (seconds for the 200M-parameter language model): for loaders
    that then overwrite every parameter and raise on any they miss."""
    token = _INIT_WEIGHTS.set(False)
    try:
        yield
    finally:
        _INIT_WEIGHTS.reset(token)


class PerceiverPreTrainedModel(nn.Module):
    """Shared by every model: weight init, ``from_pretrained`` and ``save_pretrained``."""

    # transformers' prefix for the decoder's inner BasicDecoder (see checkpoints/transformers_names.py).
    hf_decoder_prefix = "perceiver.decoder.decoder."

    def __init__(self, config: PerceiverConfig) -> None:
        super().__init__()
        self.config = config

    @torch.no_grad()
    def init_weights(self) -> None:
        """DeepMind's initialisation: fan-in truncated-normal linears and convs (Haiku's VarianceScaling(1.0)), zero
        biases, and truncated normals of std ``initializer_range`` for latents, position tables, embeddings, padding
        and mask tokens. Skipped inside ``no_init_weights``."""
        if not _INIT_WEIGHTS.get():
            return
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Conv2d):
                scale = module.weight[0].numel() ** -0.5
                nn.init.trunc_normal_(module.weight, std=scale, a=-2 * scale, b=2 * scale)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.Embedding):
                nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
            elif isinstance(module, TrainablePositionEncoding):
                nn.init.trunc_normal_(module.embeddings, std=std, a=-2 * std, b=2 * std)
            elif isinstance(module, nn.ParameterDict | PerceiverEncoder):
                for p in module.parameters(recurse=False) if isinstance(module, PerceiverEncoder) else module.values():
                    nn.init.trunc_normal_(p, std=std, a=-2 * std, b=2 * std)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each encoder layer in the backward pass instead of storing its activations."""
        self.perceiver.encoder.gradient_checkpointing = enabled

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike, **config_overrides: Any):
        """Load a transformers folder, a hub id (needs ``huggingface_hub`` and a network) or a DeepMind file.

        ``config_overrides`` replace fields of the stored configuration (e.g. ``hidden_act``).
        """
        from perceiver_io.checkpoints.loading import load_pretrained

        return load_pretrained(cls, source, **config_overrides)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write ``config.json`` + ``model.safetensors`` in transformers' layout (atomically)."""
        from perceiver_io.checkpoints.loading import save_pretrained

        save_pretrained(self, directory)


class PerceiverModel(PerceiverPreTrainedModel):
    """The architecture with pluggable ends (same arguments as transformers' ``PerceiverModel``).

    Without an input preprocessor, inputs are (B, M, d_model) arrays. Without a decoder, the output's
    ``last_hidden_state`` holds the latents (B, num_latents, d_latents) and ``logits`` is None.
    """

    def __init__(
        self,
        config: PerceiverConfig,
        decoder: nn.Module | None = None,
        input_preprocessor: nn.Module | None = None,
        output_postprocessor: nn.Module | None = None,
    ) -> None:
        super().__init__(config)
        self.input_preprocessor = input_preprocessor
        self.encoder = PerceiverEncoder(
            config, input_preprocessor.num_channels if input_preprocessor is not None else config.d_model
        )
        self.decoder = decoder
        self.output_postprocessor = output_postprocessor

    @property
    def perceiver(self) -> PerceiverModel:
        return self

    def forward(
        self,
        inputs: torch.Tensor | Mapping[str, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        subsampled_output_points: Mapping[str, torch.Tensor] | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
        *,
        query_mask: torch.Tensor | None = None,
    ) -> PerceiverModelOutput | tuple:
        """inputs: raw inputs for the preprocessor (or (B, M, d_model)); attention_mask: (B, M), 1 = real input;
        query_mask: (B, Nq) decoder query mask (DeepMind's MLM masks padded queries; transformers has none).

        ``output_attentions``, ``output_hidden_states`` and ``return_dict`` default (None) to the config's fields;
        ``return_dict=False`` returns transformers' tuple (see ``transformers_tuple``).
        """
        output_attentions = config_default(output_attentions, self.config.output_attentions, "output_attentions")
        output_hidden_states = config_default(
            output_hidden_states, self.config.output_hidden_states, "output_hidden_states"
        )
        return_dict = config_default(return_dict, self.config.return_dict, "return_dict")
        encoded = self.encode(
            inputs,
            attention_mask,
            interpolate_pos_encoding,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        out = PerceiverModelOutput(
            last_hidden_state=encoded.latents,
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
            cross_attentions=encoded.cross_attentions,
        )
        if self.decoder is not None:
            decoded = self.decode(encoded, subsampled_output_points, query_mask, output_attentions=output_attentions)
            out.logits = decoded.logits
            if output_attentions and decoded.cross_attentions is not None:  # None: a decoder that keeps no maps
                out.cross_attentions = out.cross_attentions + decoded.cross_attentions
        return out if return_dict else transformers_tuple(out)

    def encode(
        self,
        inputs: torch.Tensor | Mapping[str, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        *,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> Encoded:
        """The encoder half of ``forward``: preprocess, cross-attend into the latents, self-attend.

        Decoding several query sets from one ``encode`` (``decode``) gives what as many ``forward`` calls give,
        without re-running the encoder: the video autoencoder decodes its 800k outputs in chunks this way.
        """
        if self.input_preprocessor is not None:
            x, modality_sizes, without_pos = self.input_preprocessor(
                inputs, interpolate_pos_encoding=interpolate_pos_encoding
            )
        else:
            if not torch.is_tensor(inputs) or inputs.dim() != 3 or inputs.shape[-1] != self.config.d_model:
                shape = tuple(inputs.shape) if torch.is_tensor(inputs) else type(inputs).__name__
                raise ValueError(f"inputs must be (batch, length, d_model={self.config.d_model}); got {shape}")
            x, modality_sizes, without_pos = inputs, None, None
        mask = _check_mask(attention_mask, x.shape[:2], "attention_mask")
        out = self.encoder(x, mask, output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        return Encoded(
            latents=out.last_hidden_state,
            inputs=x,
            modality_sizes=modality_sizes,
            inputs_without_pos=without_pos,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
            cross_attentions=out.cross_attentions,
        )

    def decode(
        self,
        encoded: Encoded,
        subsampled_output_points: Mapping[str, torch.Tensor] | None = None,
        query_mask: torch.Tensor | None = None,
        *,
        output_attentions: bool = False,
    ) -> PerceiverDecoderOutput:
        """The decoder half of ``forward``: build the queries, cross-attend to the latents, postprocess → logits,
        and with ``output_attentions`` the decoder's cross-attention probabilities."""
        if self.decoder is None:
            raise ValueError("this PerceiverModel has no decoder; its output is the latents from encode()")
        query = self.decoder.queries(
            _split(encoded.inputs, encoded.modality_sizes),
            subsampled_points=subsampled_output_points,
            inputs_without_pos=encoded.inputs_without_pos,
        )
        qmask = None if query_mask is None else _check_mask(query_mask, query.shape[:2], "query_mask")
        out = self.decoder(query, encoded.latents, qmask, output_attentions=output_attentions)
        if self.output_postprocessor is None:
            return out
        if encoded.modality_sizes is not None:
            logits = self.output_postprocessor(
                out.logits, modality_sizes=self.decoder.queries.output_sizes(subsampled_output_points)
            )
        else:
            logits = self.output_postprocessor(out.logits)
        return PerceiverDecoderOutput(logits=logits, cross_attentions=out.cross_attentions)


@dataclass
class Encoded:
    """What ``PerceiverModel.encode`` hands to ``decode``: ``latents`` (B, N, D); ``inputs`` (B, M, C) the
    preprocessed inputs (flow and multimodal queries are built from them); ``modality_sizes`` {name: M_m} or
    None; ``inputs_without_pos`` the inputs before position encodings (flow's queries) or None; the encoder's
    ``hidden_states``, ``attentions`` and ``cross_attentions`` when asked for (see ``PerceiverModelOutput``)."""

    latents: torch.Tensor
    inputs: torch.Tensor
    modality_sizes: Mapping[str, int] | None
    inputs_without_pos: torch.Tensor | None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None


def transformers_tuple(output: ModelOutput) -> tuple:
    """``return_dict=False``'s tuple, laid out as transformers lays it out: ``output.to_tuple()`` (the set fields in
    order), except that transformers appends the decoder's cross-attention maps after the encoder's one-map tuple
    as bare tensors instead of inside it: (..., (encoder map,), decoder map)."""
    items = output.to_tuple()
    cross = output.cross_attentions
    if cross is None or len(cross) < 2:
        return items
    return (*items[:-1], cross[:1], *cross[1:])


def config_default(value: bool | None, default: bool, name: str) -> bool:
    """A forward's boolean option: None takes the config's ``default``."""
    if value is None:
        return default
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True, False or None (the config's {default}); got {value!r}")
    return value


def _check_mask(mask: torch.Tensor | None, shape: torch.Size, name: str) -> torch.Tensor | None:
    """(B, M) mask of 0/1 or bool → bool, checked against the (B, M) it applies to."""
    if mask is None:
        return None
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(mask.shape)} but the inputs it masks are {tuple(shape)}")
    return mask if mask.dtype == torch.bool else mask != 0


def _split(x: torch.Tensor, modality_sizes: Mapping[str, int] | None) -> torch.Tensor | dict[str, torch.Tensor]:
    """Flat multimodal inputs (B, M, C) → per-modality views, in sorted order (DeepMind's ``restructure``)."""
    if modality_sizes is None:
        return x
    out, start = {}, 0
    for m in sorted(modality_sizes):
        out[m] = x[:, start : start + modality_sizes[m]]
        start += modality_sizes[m]
    return out
