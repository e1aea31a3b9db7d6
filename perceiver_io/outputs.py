"""What the models return: transformers' Perceiver output classes (same names, fields and field order) on a small
``ModelOutput`` base of our own that reads like transformers' one."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch


class ModelOutput(Mapping):
    """Base of the output dataclasses: attributes, and a mapping and a tuple of the fields that are set (not None).

    As transformers' ``ModelOutput``: ``out.logits`` reads a field; ``out["logits"]`` reads a set field (KeyError
    for one that is None); ``out[0]`` and ``out[:2]`` index ``to_tuple()``, the set fields in field order (what
    ``return_dict=False`` returns); ``keys()``, ``values()``, ``items()``, iteration (over names), ``len`` and
    ``in`` cover the set fields only. Setting a field, as attribute or as key, changes every view: they are all
    read from the fields (transformers keeps a separate dict, which setting a field back to None leaves stale).
    """

    def _set_names(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]

    def to_tuple(self) -> tuple[Any, ...]:
        """The set fields' values, in field order."""
        return tuple(getattr(self, name) for name in self._set_names())

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, str):
            if key not in self._set_names():
                raise KeyError(f"{key!r} is not a set field of {type(self).__name__}; set: {self._set_names()}")
            return getattr(self, key)
        if isinstance(key, int | slice):
            return self.to_tuple()[key]
        raise TypeError(f"{type(self).__name__} indices are field names, integers or slices, not {type(key).__name__}")

    def __setitem__(self, key: str, value: Any) -> None:
        names = [f.name for f in dataclasses.fields(self)]
        if key not in names:
            raise KeyError(f"{type(self).__name__} has no field {key!r}; fields: {names}")
        setattr(self, key, value)

    def __iter__(self) -> Iterator[str]:
        return iter(self._set_names())

    def __len__(self) -> int:
        return len(self._set_names())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self._set_names()

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self else default


@dataclass
class PerceiverModelOutput(ModelOutput):
    """``PerceiverModel``'s output.

    logits: the decoder's output after the postprocessor (a dict per modality for the multimodal model), None
        without a decoder; last_hidden_state: the latents (B, N, D);
    hidden_states: with ``output_hidden_states``, ``num_blocks · (num_self_attends_per_block + 1)`` latent arrays
        (B, N, D): each block's input before each of its layers, then its output (so a block's output also opens
        the next block, and the first is the cross-attention's output);
    attentions: with ``output_attentions``, the probabilities (B, heads, N, N) of every latent self-attention, in
        order (``num_blocks · num_self_attends_per_block``);
    cross_attentions: with ``output_attentions``, the encoder's cross-attention probabilities (B, heads, N, M),
        then the decoder's (B, heads, Nq, N) where there is a decoder.
    """

    logits: torch.Tensor | dict[str, torch.Tensor] | None = None
    last_hidden_state: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class PerceiverDecoderOutput(ModelOutput):
    """A decoder's output: logits (B, Nq, C) (or what the decoder makes of them); cross_attentions, with
    ``output_attentions``, the decoder's cross-attention probabilities (B, heads, Nq, N) (empty for a decoder
    without attention)."""

    logits: torch.Tensor | dict[str, torch.Tensor] | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class PerceiverMaskedLMOutput(ModelOutput):
    """``PerceiverForMaskedLM``'s output: loss (scalar) with ``labels``; logits (B, T, vocab_size); hidden_states,
    attentions and cross_attentions as in ``PerceiverModelOutput``."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class PerceiverClassifierOutput(ModelOutput):
    """The output of the classifiers, optical flow and multimodal autoencoding: loss (scalar) with ``labels``;
    logits (B, num_labels), flow (B, H, W, 2) or a dict per modality; hidden_states, attentions and
    cross_attentions as in ``PerceiverModelOutput``."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | dict[str, torch.Tensor] | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None


# pytree nodes, so that torch.export and DDP see the tensors inside (transformers registers its outputs too).
for _cls in (PerceiverModelOutput, PerceiverDecoderOutput, PerceiverMaskedLMOutput, PerceiverClassifierOutput):
    torch.export.register_dataclass(_cls, serialized_type_name=f"{__name__}.{_cls.__name__}")
