"""Images, video and frame pairs: conv stem / 1×1 conv / raw pixels / space-to-depth patches, plus positions."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from perceiver_io.adapters.arguments import check_postprocessor_call, check_preprocessor_call
from perceiver_io.checks import (
    check_finite,
    check_floating,
    check_nonempty,
    check_rank,
    check_tensor,
    parameter_dtype,
)
from perceiver_io.layers.position import FourierPositionEncoding, TrainablePositionEncoding

PREP_TYPES = ("conv", "conv1x1", "pixels", "patches")


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (before, after) for one dimension: the extra pixel goes after."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def space_to_depth(frames: torch.Tensor, temporal_block: int = 1, spatial_block: int = 1) -> torch.Tensor:
    """Channels-first blocks into channels-last depth.

    (B, C, H, W) → (B, H/s, W/s, s·s·C); (B, T, C, H, W) → (B, T/t, H/s, W/s, t·s·s·C), depth ordered (t, sy, sx, c).
    """
    s, t = spatial_block, temporal_block
    if frames.dim() == 4:
        b, c, h, w = frames.shape
        x = frames.reshape(b, c, h // s, s, w // s, s).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(b, h // s, w // s, s * s * c)
    if frames.dim() == 5:
        b, n, c, h, w = frames.shape
        x = frames.reshape(b, n // t, t, c, h // s, s, w // s, s).permute(0, 1, 4, 6, 2, 5, 7, 3)
        return x.reshape(b, n // t, h // s, w // s, t * s * s * c)
    raise ValueError(f"expected (B, C, H, W) or (B, T, C, H, W) frames; got shape {tuple(frames.shape)}")


def patches_for_flow(frames: torch.Tensor) -> torch.Tensor:
    """3×3 neighbourhoods of every pixel, zero-padded: (B, 2, C, H, W) → (B, 2, 9·C, H, W).

    Channel order is (dy, dx, c), as TensorFlow's ``extract_patches`` gives and DeepMind's flow model expects.
    """
    b, n, c, h, w = frames.shape
    x = F.unfold(frames.reshape(b * n, c, h, w), kernel_size=3, padding=1)  # (BN, C·9 ordered (c, dy, dx), HW)
    x = x.reshape(b * n, c, 9, h * w).transpose(1, 2)  # → (dy dx, c)
    return x.reshape(b, n, 9 * c, h, w)


class ConvStem(nn.Module):
    """Conv 7×7/2 (no bias) → BatchNorm → ReLU → MaxPool 3×3/2: a 4× downsampling stem.

    ``use_batchnorm=False`` drops the BatchNorm.
    ``padding="transformers"`` pads the conv by 3 on every side and the pool not at all (224 → 55);
    ``padding="tf_same"`` uses TensorFlow's asymmetric SAME padding for both, as DeepMind's model (224 → 56).
    """

    def __init__(
        self, in_channels: int, out_channels: int, padding: str = "transformers", use_batchnorm: bool = True
    ) -> None:
        super().__init__()
        self.padding = padding
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=7, stride=2, bias=False)
        self.batchnorm = nn.BatchNorm2d(out_channels) if use_batchnorm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → (B, out, H', W')."""
        if self.padding == "tf_same":
            (top, bottom), (left, right) = (same_padding(n, 7, 2) for n in x.shape[-2:])
            x = F.pad(x, (left, right, top, bottom))
        else:
            x = F.pad(x, (3, 3, 3, 3))
        x = self.conv(x)
        x = F.relu(x if self.batchnorm is None else self.batchnorm(x))
        if self.padding == "tf_same":
            (top, bottom), (left, right) = (same_padding(n, 3, 2) for n in x.shape[-2:])
            x = F.pad(x, (left, right, top, bottom), value=float("-inf"))  # pads never win the max
        return F.max_pool2d(x, kernel_size=3, stride=2)


class ImagePreprocessor(nn.Module):
    """Images (B, C, H, W), videos (B, T, C, H, W) or frame pairs → (B, M, C_feat + C_pos).

    prep_type: ``"conv"`` (ConvStem, 4× down), ``"conv1x1"`` (1×1 conv), ``"pixels"`` (raw values, optional
    stride), ``"patches"`` (space-to-depth, optional Linear after). Positions are Fourier features over the
    feature grid, or a trainable table (optionally projected by a Linear); concatenated or added.
    ``in_channels=None`` accepts any channel count where the Linear after patching fixes the depth instead.
    """

    def __init__(
        self,
        prep_type: str,
        *,
        in_channels: int | None = 3,
        out_channels: int = 64,
        spatial_downsample: int = 1,
        temporal_downsample: int = 1,
        position: FourierPositionEncoding | TrainablePositionEncoding,
        project_pos_dim: int | None = None,
        concat_or_add_pos: str = "concat",
        conv_after_patching_in: int | None = None,
        stem_padding: str = "transformers",
        stem_batchnorm: bool = True,
    ) -> None:
        super().__init__()
        if prep_type not in PREP_TYPES:
            raise ValueError(f"prep_type={prep_type!r}; expected one of {PREP_TYPES}")
        if concat_or_add_pos not in ("concat", "add"):
            raise ValueError(f"concat_or_add_pos={concat_or_add_pos!r}; expected 'concat' or 'add'")
        if in_channels is None and (prep_type != "patches" or conv_after_patching_in is None):
            raise ValueError("in_channels=None needs prep_type='patches' with a Linear after patching")
        self.prep_type = prep_type
        self.in_channels = in_channels
        self.spatial_downsample = spatial_downsample
        self.temporal_downsample = temporal_downsample
        self.concat_or_add_pos = concat_or_add_pos
        if prep_type == "conv":
            if spatial_downsample not in (1, 4) or temporal_downsample != 1:
                raise ValueError("the conv stem downsamples space by exactly 4 and time not at all")
            self.convnet = ConvStem(in_channels, out_channels, stem_padding, stem_batchnorm)
            feat = out_channels
        elif prep_type == "conv1x1":
            self.convnet_1x1 = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=spatial_downsample)
            feat = out_channels
        elif prep_type == "pixels":
            feat = in_channels
        elif conv_after_patching_in is not None:
            self.conv_after_patches = nn.Linear(conv_after_patching_in, out_channels)
            feat = out_channels
        else:
            feat = in_channels * spatial_downsample**2 * temporal_downsample
        self.position = position
        self.positions_projection = nn.Linear(position.num_channels, project_pos_dim) if project_pos_dim else None
        pos_channels = project_pos_dim or position.num_channels
        if concat_or_add_pos == "add" and pos_channels != feat:
            raise ValueError(f"cannot add {pos_channels} position channels to {feat} feature channels")
        self.num_channels = feat + pos_channels if concat_or_add_pos == "concat" else feat

    def check_inputs(self, inputs: torch.Tensor) -> None:
        """Refuse what the features cannot be computed from: a non-tensor, a wrong rank or channel count, a zero
        size, a dtype other than floats of the parameters' dtype, NaN or inf, an image too small for the stem."""
        name = "image inputs"
        check_tensor(name, inputs)
        c = "C" if self.in_channels is None else self.in_channels
        layout = f"images (B, {c}, H, W) or videos (B, T, {c}, H, W)"
        if isinstance(self.position, FourierPositionEncoding):
            # Fourier positions span a grid of fixed rank: (H, W) for images, (T, H, W) for videos; frame pairs
            # (B, t, C, H, W) folded into one time step by t-frame patches make an (H, W) grid too.
            folds = self.prep_type == "patches" and self.temporal_downsample > 1 and self.position.num_dims == 2
            rank = 5 if folds else self.position.num_dims + 2
            t = self.temporal_downsample
            layout = f"images (B, {c}, H, W)" if rank == 4 else f"videos (B, {t if folds else 'T'}, {c}, H, W)"
            check_rank(name, inputs, (rank,), layout)
            if folds and inputs.shape[1] != t:
                raise ValueError(f"{name}: shape {tuple(inputs.shape)}; expected {layout}")
        elif self.prep_type in ("conv", "conv1x1"):
            layout = f"images (B, {c}, H, W)"  # 2-d convolutions
            check_rank(name, inputs, (4,), layout)
        else:
            check_rank(name, inputs, (4, 5), layout)
        channel_axis = 1 if inputs.dim() == 4 else 2
        if c != "C" and inputs.shape[channel_axis] != c:
            raise ValueError(f"{name}: shape {tuple(inputs.shape)}; expected {layout} with {c} channels")
        check_nonempty(name, inputs, layout)
        check_floating(name, inputs, parameter_dtype(self))
        check_finite(name, inputs)
        if self.prep_type == "conv":
            # A 7×7 stride-2 conv padded by 3, then an unpadded 3×3 stride-2 max pool: the pool needs 3 conv rows.
            minimum = 5 if self.convnet.padding == "transformers" else 1
            if min(inputs.shape[-2:]) < minimum:
                raise ValueError(
                    f"{name} of shape {tuple(inputs.shape)} are too small for the conv stem: H and W must be >= "
                    f"{minimum} (a 7×7 stride-2 conv, then a 3×3 stride-2 max pool without padding)"
                )

    def features(self, inputs: torch.Tensor) -> torch.Tensor:
        """Raw inputs → channels-last features (B, *index_dims, C_feat)."""
        self.check_inputs(inputs)
        if self.prep_type == "conv":
            return self.convnet(inputs).permute(0, 2, 3, 1)
        if self.prep_type == "conv1x1":
            return self.convnet_1x1(inputs).permute(0, 2, 3, 1)
        if self.prep_type == "pixels":
            s, t = self.spatial_downsample, self.temporal_downsample
            if inputs.dim() == 4:
                return inputs[:, :, ::s, ::s].permute(0, 2, 3, 1)
            return inputs[:, ::t, :, ::s, ::s].permute(0, 1, 3, 4, 2)
        h, w = inputs.shape[-2:]
        s, t = self.spatial_downsample, self.temporal_downsample
        if h % s or w % s or (inputs.dim() == 5 and inputs.shape[1] % t):
            raise ValueError(f"image inputs of shape {tuple(inputs.shape)} do not divide into {t}×{s}×{s} patches")
        x = space_to_depth(inputs, t, s)
        if x.dim() == 5 and x.shape[1] == 1:  # a frame pair folded into one time step (optical flow)
            x = x[:, 0]
        if hasattr(self, "conv_after_patches"):
            if x.shape[-1] != self.conv_after_patches.in_features:
                raise ValueError(
                    f"patches of image inputs {tuple(inputs.shape)} are {x.shape[-1]} deep; the Linear after "
                    f"patching takes {self.conv_after_patches.in_features}"
                )
            x = self.conv_after_patches(x)
        return x

    def forward(
        self,
        inputs: torch.Tensor,
        pos: torch.Tensor | None = None,
        network_input_is_1d: bool = True,
        interpolate_pos_encoding: bool = False,
    ) -> tuple[torch.Tensor, None, torch.Tensor]:
        """transformers' preprocessor call → (with positions (B, M, C), None, without positions (B, M, C_feat))."""
        # Fourier positions follow any grid, so interpolation is what they always do.
        check_preprocessor_call(type(self).__name__, pos, network_input_is_1d, interpolate_pos_encoding, True)
        x = self.features(inputs)
        b, index_dims = x.shape[0], tuple(x.shape[1:-1])
        x = x.reshape(b, -1, x.shape[-1])
        if isinstance(self.position, FourierPositionEncoding):
            pos = self.position.grid(index_dims, x.device, x.dtype)
        else:
            rows = self.position.embeddings.shape[0]
            if interpolate_pos_encoding:
                pos = self.position(index_dims)
            elif x.shape[1] != rows:
                raise ValueError(
                    f"input grid {index_dims} has {x.shape[1]} positions but the position table has {rows}; "
                    "resize the input or pass interpolate_pos_encoding=True"
                )
            else:
                pos = self.position()
            pos = pos.to(x.dtype)
        if self.positions_projection is not None:
            pos = self.positions_projection(pos)
        pos = pos.expand(b, -1, -1)
        with_pos = torch.cat([x, pos], dim=-1) if self.concat_or_add_pos == "concat" else x + pos
        return with_pos, None, x


class ProjectionPostprocessor(nn.Module):
    """Decoder output (B, N, C) → (B, N, out_channels), e.g. RGB per decoded pixel."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(in_channels, out_channels)

    def forward(
        self, x: torch.Tensor, pos: torch.Tensor | None = None, modality_sizes: Mapping[str, int] | None = None
    ) -> torch.Tensor:
        """transformers' postprocessor call; ``pos`` and ``modality_sizes`` must be None."""
        check_postprocessor_call(type(self).__name__, pos, modality_sizes)
        return self.classifier(x)
