"""Text: UTF-8 byte embeddings plus learned positions in; logits tied to the input embeddings out."""

from __future__ import annotations

import torch
from torch import nn

from perceiver_io.adapters.arguments import check_preprocessor_call
from perceiver_io.checks import check_dtype, check_nonempty, check_rank, check_tensor, values_checkable
from perceiver_io.config import PerceiverConfig


class TextPreprocessor(nn.Module):
    """Token ids (B, T) → embeddings + learned positions (B, T, d_model)."""

    def __init__(self, config: PerceiverConfig) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(config.vocab_size, config.d_model)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.d_model)
        self.num_channels = config.d_model

    def forward(
        self,
        inputs: torch.Tensor,
        pos: torch.Tensor | None = None,
        network_input_is_1d: bool = True,
        interpolate_pos_encoding: bool = False,
    ) -> tuple[torch.Tensor, None, torch.Tensor]:
        """transformers' preprocessor call → (embeddings + positions (B, T, d_model), None, embeddings)."""
        check_preprocessor_call(type(self).__name__, pos, network_input_is_1d, interpolate_pos_encoding)
        name, layout = "token ids (inputs)", "(batch, length)"
        check_tensor(name, inputs)
        check_rank(name, inputs, (2,), layout)
        check_dtype(name, inputs, (torch.int64, torch.int32))
        check_nonempty(name, inputs, layout)
        length, max_len = inputs.shape[1], self.position_embeddings.num_embeddings
        if length > max_len:
            raise ValueError(f"sequence of {length} tokens is longer than the position table ({max_len})")
        vocab = self.embeddings.num_embeddings
        # The range check reads values, which a traced graph cannot (torch.compile would break, ONNX export fail).
        if values_checkable(inputs) and (int(inputs.min()) < 0 or int(inputs.max()) >= vocab):
            raise ValueError(f"token ids must lie in [0, {vocab}); got {int(inputs.min())}..{int(inputs.max())}")
        tokens = self.embeddings(inputs)
        return tokens + self.position_embeddings.weight[:length], None, tokens


class EmbeddingDecoder(nn.Module):
    """Decoder output (B, T, d_model) → logits (B, T, vocab) through the transposed input embedding + a bias."""

    def __init__(self, config: PerceiverConfig) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(hidden, embeddings, self.bias)
