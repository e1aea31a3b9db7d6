"""Class labels: one-hot vectors in, class logits out."""

from __future__ import annotations

import torch
from torch import nn


class OneHotPreprocessor(nn.Module):
    """One-hot (or soft) labels (B, K) → a single input token (B, 1, K); no position encoding."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_channels = num_classes

    def forward(self, inputs: torch.Tensor, interpolate_pos_encoding: bool = False):
        if inputs.dim() != 2 or inputs.shape[1] != self.num_channels:
            raise ValueError(f"label input must be (batch, {self.num_channels}); got {tuple(inputs.shape)}")
        tokens = inputs[:, None, :]
        return tokens, None, tokens


class ClassificationPostprocessor(nn.Module):
    """Decoder output (B, 1, C) → logits (B, num_classes)."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x)[:, 0]
