"""transformers' preprocessor classes: its constructor arguments, our adapters (``perceiver_io.adapters``).

Each returns ``(inputs, modality_sizes, inputs_without_pos)`` from transformers' call ``(inputs, pos=None,
network_input_is_1d=True, interpolate_pos_encoding=False)`` and exposes ``num_channels``. Argument values whose
transformers behaviour we do not reproduce raise ValueError naming them.
"""

from __future__ import annotations

from typing import Any

from perceiver_io.adapters.audio import AudioPreprocessor
from perceiver_io.adapters.image import ImagePreprocessor
from perceiver_io.adapters.label import OneHotPreprocessor
from perceiver_io.adapters.multimodal import MultimodalPreprocessor
from perceiver_io.adapters.text import TextPreprocessor
from perceiver_io.components.position import build_position, check_keys, index_dims_rank, projection_size
from perceiver_io.config import PerceiverConfig
from perceiver_io.layers.position import FourierPositionEncoding

POSITION_KWARGS = ("trainable_position_encoding_kwargs", "fourier_position_encoding_kwargs")


class PerceiverTextPreprocessor(TextPreprocessor):
    """Token ids (B, T) → byte embeddings + learned positions (B, T, d_model)."""


class PerceiverOneHotPreprocessor(OneHotPreprocessor):
    """One-hot labels (B, num_labels) → one input token (B, 1, num_labels)."""

    def __init__(self, config: PerceiverConfig) -> None:
        super().__init__(config.num_labels)


class PerceiverMultimodalPreprocessor(MultimodalPreprocessor):
    """{modality: raw input} → (B, sum M_m, max C_m + min_padding_size), each modality padded with its own learned
    vector and, with probability ``mask_probs[modality]``, replaced by a learned mask token."""


class PerceiverImagePreprocessor(ImagePreprocessor):
    """Images (B, C, H, W) or videos (B, T, C, H, W) → (B, M, num_channels), transformers' arguments.

    prep_type: "conv" (7×7/2 conv + BatchNorm + max-pool, always 4× down: spatial_downsample 1 or 4), "conv1x1",
    "pixels", "patches" (space-to-depth, then a Linear of ``conv_after_patching_in_channels`` → ``out_channels``
    with ``conv_after_patching``). position_encoding_type "fourier" or "trainable" with
    ``fourier_position_encoding_kwargs`` / ``trainable_position_encoding_kwargs``; ``project_pos_dim`` > 0 adds a
    Linear on the positions; ``concat_or_add_pos`` "concat" or "add".

    Refused (ValueError): "conv" with spatial_downsample above 4 (transformers builds the same 4× stem for any power
    of 4) or time downsampling; "pixels" with spatial_downsample > 1 on 2-d positions (transformers' slicing of 4-d
    images there cuts the batch and channel axes); "patches" with temporal_downsample > 1 on 2-d positions and no
    conv_after_patching (transformers counts C·s² channels where frames folded in time give C·s²·t);
    conv_after_patching or conv2d_use_batchnorm=False outside the prep_type that uses them.
    """

    def __init__(
        self,
        config: PerceiverConfig,
        prep_type: str = "conv",
        spatial_downsample: int = 4,
        temporal_downsample: int = 1,
        position_encoding_type: str = "fourier",
        in_channels: int = 3,
        out_channels: int = 64,
        conv_after_patching: bool = False,
        conv_after_patching_in_channels: int = 54,
        conv2d_use_batchnorm: bool = True,
        concat_or_add_pos: str = "concat",
        project_pos_dim: int = -1,
        **position_encoding_kwargs: Any,
    ) -> None:
        owner = type(self).__name__
        check_keys(owner, position_encoding_kwargs, POSITION_KWARGS)
        if prep_type == "conv" and spatial_downsample not in (1, 4):
            raise ValueError(f"{owner}: prep_type='conv' downsamples 4× once; spatial_downsample={spatial_downsample}")
        if prep_type in ("conv", "conv1x1") and temporal_downsample != 1:
            raise ValueError(
                f"{owner}: prep_type={prep_type!r} cannot downsample time: temporal_downsample={temporal_downsample}"
            )
        if conv_after_patching and prep_type != "patches":
            raise ValueError(f"{owner}: conv_after_patching=True only applies to prep_type='patches'")
        if not conv2d_use_batchnorm and prep_type != "conv":
            raise ValueError(f"{owner}: conv2d_use_batchnorm=False only applies to prep_type='conv'")
        position = build_position(owner, position_encoding_type, **position_encoding_kwargs)
        if isinstance(position, FourierPositionEncoding):
            rank = position.num_dims
        else:
            rank = index_dims_rank(position_encoding_kwargs["trainable_position_encoding_kwargs"]["index_dims"])
        if prep_type == "pixels" and spatial_downsample != 1 and rank <= 2:
            raise ValueError(
                f"{owner}: prep_type='pixels' with spatial_downsample={spatial_downsample} on images: only 1 is "
                "supported (transformers' slicing of 4-d images there cuts the batch and channel axes)"
            )
        if prep_type == "patches" and temporal_downsample != 1 and rank <= 2 and not conv_after_patching:
            raise ValueError(
                f"{owner}: temporal_downsample={temporal_downsample} with {rank}-d positions and no "
                "conv_after_patching has no agreed channel count; use 3-d positions or conv_after_patching=True"
            )
        super().__init__(
            prep_type,
            # After patching, transformers' Linear alone fixes the depth (its flow model keeps in_channels=3 for
            # 27-channel frames): any channel count goes in.
            in_channels=None if conv_after_patching else in_channels,
            out_channels=out_channels,
            spatial_downsample=spatial_downsample,
            temporal_downsample=temporal_downsample,
            position=position,
            project_pos_dim=projection_size(owner, project_pos_dim, out_channels, position.num_channels),
            concat_or_add_pos=concat_or_add_pos,
            conv_after_patching_in=conv_after_patching_in_channels if conv_after_patching else None,
            stem_padding=config.conv_stem_padding,
            stem_batchnorm=conv2d_use_batchnorm,
        )


class PerceiverAudioPreprocessor(AudioPreprocessor):
    """Samples (B, S) or (B, S, 1) → patches of ``samples_per_patch`` with 1-d positions, transformers' arguments.

    ``out_channels`` only sizes the position projection (``project_pos_dim`` > 0), as in transformers.
    """

    def __init__(
        self,
        config: PerceiverConfig,
        prep_type: str = "patches",
        samples_per_patch: int = 96,
        position_encoding_type: str = "fourier",
        concat_or_add_pos: str = "concat",
        out_channels: int = 64,
        project_pos_dim: int = -1,
        **position_encoding_kwargs: Any,
    ) -> None:
        owner = type(self).__name__
        check_keys(owner, position_encoding_kwargs, POSITION_KWARGS)
        if prep_type != "patches":
            raise ValueError(f"{owner}: prep_type={prep_type!r}; only 'patches' exists")
        position = build_position(owner, position_encoding_type, **position_encoding_kwargs)
        super().__init__(
            samples_per_patch,
            position,
            project_pos_dim=projection_size(owner, project_pos_dim, out_channels, position.num_channels),
            concat_or_add_pos=concat_or_add_pos,
        )
