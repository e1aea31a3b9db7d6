"""Audio: raw samples cut into patches with 1-d positions in; samples out."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from perceiver_io.adapters.arguments import check_postprocessor_call, check_preprocessor_call
from perceiver_io.checks import check_finite, check_floating, check_nonempty, check_rank, check_tensor, parameter_dtype
from perceiver_io.layers.position import FourierPositionEncoding, TrainablePositionEncoding


class AudioPreprocessor(nn.Module):
    """Samples (B, S) or (B, S, 1) → patches of ``samples_per_patch`` with positions (B, S/p, p + C_pos).

    Positions are Fourier features over the patch axis or a trainable table with one row per patch, optionally
    projected to ``project_pos_dim`` channels; concatenated to the patches, or added (then C_pos must be p).
    """

    def __init__(
        self,
        samples_per_patch: int,
        position: FourierPositionEncoding | TrainablePositionEncoding,
        *,
        project_pos_dim: int | None = None,
        concat_or_add_pos: str = "concat",
    ) -> None:
        super().__init__()
        if concat_or_add_pos not in ("concat", "add"):
            raise ValueError(f"concat_or_add_pos={concat_or_add_pos!r}; expected 'concat' or 'add'")
        self.samples_per_patch = samples_per_patch
        self.position = position
        self.positions_projection = nn.Linear(position.num_channels, project_pos_dim) if project_pos_dim else None
        self.concat_or_add_pos = concat_or_add_pos
        pos_channels = project_pos_dim or position.num_channels
        if concat_or_add_pos == "add" and pos_channels != samples_per_patch:
            raise ValueError(f"cannot add {pos_channels} position channels to patches of {samples_per_patch} samples")
        self.num_channels = pos_channels if concat_or_add_pos == "add" else samples_per_patch + pos_channels

    def forward(
        self,
        inputs: torch.Tensor,
        pos: torch.Tensor | None = None,
        network_input_is_1d: bool = True,
        interpolate_pos_encoding: bool = False,
    ) -> tuple[torch.Tensor, None, torch.Tensor]:
        """transformers' preprocessor call → (with positions (B, N, C), None, patches (B, N, p))."""
        check_preprocessor_call(type(self).__name__, pos, network_input_is_1d, interpolate_pos_encoding)
        name, layout = "audio inputs", "samples (B, S) or (B, S, 1)"
        check_tensor(name, inputs)
        check_rank(name, inputs, (2, 3), layout)
        if inputs.dim() == 3 and inputs.shape[2] != 1:
            raise ValueError(f"{name}: shape {tuple(inputs.shape)}; expected {layout}")
        check_nonempty(name, inputs, layout)
        check_floating(name, inputs, parameter_dtype(self))
        check_finite(name, inputs)
        b, total = inputs.shape[0], inputs.shape[1]
        if total % self.samples_per_patch:
            raise ValueError(
                f"{name} of shape {tuple(inputs.shape)}: {total} samples are not a multiple of "
                f"samples_per_patch={self.samples_per_patch}"
            )
        patches = inputs.reshape(b, -1, self.samples_per_patch)
        n = patches.shape[1]
        if isinstance(self.position, FourierPositionEncoding):
            pos_enc = self.position.grid((n,), patches.device, patches.dtype)
        else:
            rows = self.position.embeddings.shape[0]
            if rows != n:
                raise ValueError(f"{n} audio patches but the position table has {rows} rows")
            pos_enc = self.position().to(patches.dtype)
        if self.positions_projection is not None:
            pos_enc = self.positions_projection(pos_enc)
        pos_enc = pos_enc.expand(b, -1, -1)
        with_pos = torch.cat([patches, pos_enc], dim=-1) if self.concat_or_add_pos == "concat" else patches + pos_enc
        return with_pos, None, patches


class AudioPostprocessor(nn.Module):
    """Decoder output (B, N, C) → samples (B, N·samples_per_patch)."""

    def __init__(self, in_channels: int, samples_per_patch: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(in_channels, samples_per_patch)

    def forward(
        self, x: torch.Tensor, pos: torch.Tensor | None = None, modality_sizes: Mapping[str, int] | None = None
    ) -> torch.Tensor:
        """transformers' postprocessor call; ``pos`` and ``modality_sizes`` must be None."""
        check_postprocessor_call(type(self).__name__, pos, modality_sizes)
        return self.classifier(x).reshape(x.shape[0], -1)
