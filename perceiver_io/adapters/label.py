"""Class labels: one-hot vectors in, class logits out."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from perceiver_io.adapters.arguments import check_postprocessor_call, check_preprocessor_call
from perceiver_io.checks import check_finite, check_floating, check_nonempty, check_tensor


class OneHotPreprocessor(nn.Module):
    """One-hot (or soft) labels (B, K) → a single input token (B, 1, K); no position encoding."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_channels = num_classes

    def forward(
        self,
        inputs: torch.Tensor,
        pos: torch.Tensor | None = None,
        network_input_is_1d: bool = True,
        interpolate_pos_encoding: bool = False,
    ) -> tuple[torch.Tensor, None, torch.Tensor]:
        """transformers' preprocessor call → (tokens (B, 1, K), None, the same tokens)."""
        check_preprocessor_call(type(self).__name__, pos, network_input_is_1d, interpolate_pos_encoding)
        name, layout = "label inputs", f"one-hot labels (batch, {self.num_channels})"
        check_tensor(name, inputs)
        if inputs.dim() != 2 or inputs.shape[1] != self.num_channels:
            raise ValueError(f"{name}: shape {tuple(inputs.shape)}; expected {layout}")
        check_nonempty(name, inputs, layout)
        check_floating(name, inputs, None)
        check_finite(name, inputs)
        tokens = inputs[:, None, :]
        return tokens, None, tokens


class ClassificationPostprocessor(nn.Module):
    """Decoder output (B, 1, C) → logits (B, num_classes)."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(in_channels, num_classes)

    def forward(
        self, x: torch.Tensor, pos: torch.Tensor | None = None, modality_sizes: Mapping[str, int] | None = None
    ) -> torch.Tensor:
        """transformers' postprocessor call; ``pos`` and ``modality_sizes`` must be None."""
        check_postprocessor_call(type(self).__name__, pos, modality_sizes)
        return self.classifier(x)[:, 0]
