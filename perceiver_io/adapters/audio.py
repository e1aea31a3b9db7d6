"""Audio: raw samples cut into patches with 1-d Fourier positions in; samples out."""

from __future__ import annotations

import torch
from torch import nn

from perceiver_io.layers.position import FourierPositionEncoding


class AudioPreprocessor(nn.Module):
    """Samples (B, S) or (B, S, 1) → patches of ``samples_per_patch`` + Fourier positions (B, S/p, p + C_pos)."""

    def __init__(self, samples_per_patch: int, encoding: FourierPositionEncoding) -> None:
        super().__init__()
        self.samples_per_patch = samples_per_patch
        self.encoding = encoding
        self.num_channels = samples_per_patch + encoding.num_channels

    def forward(self, inputs: torch.Tensor, interpolate_pos_encoding: bool = False):
        b = inputs.shape[0]
        total = inputs[0].numel()
        if total % self.samples_per_patch:
            raise ValueError(f"{total} audio samples are not a multiple of samples_per_patch={self.samples_per_patch}")
        patches = inputs.reshape(b, -1, self.samples_per_patch)
        pos = self.encoding.grid((patches.shape[1],), patches.device, patches.dtype)
        return torch.cat([patches, pos.expand(b, -1, -1)], dim=-1), None, patches


class AudioPostprocessor(nn.Module):
    """Decoder output (B, N, C) → samples (B, N·samples_per_patch)."""

    def __init__(self, in_channels: int, samples_per_patch: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(in_channels, samples_per_patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x).reshape(x.shape[0], -1)
