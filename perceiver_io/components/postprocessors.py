"""transformers' postprocessor classes: its constructor arguments, our adapters.

All take transformers' call ``(inputs, pos=None, modality_sizes=None)``.
"""

from __future__ import annotations

from perceiver_io.adapters.audio import AudioPostprocessor
from perceiver_io.adapters.image import ProjectionPostprocessor
from perceiver_io.adapters.label import ClassificationPostprocessor
from perceiver_io.adapters.multimodal import MultimodalPostprocessor
from perceiver_io.config import PerceiverConfig


class PerceiverProjectionPostprocessor(ProjectionPostprocessor):
    """Decoder output (B, N, in_channels) → (B, N, out_channels)."""


class PerceiverAudioPostprocessor(AudioPostprocessor):
    """Decoder output (B, N, in_channels) → samples (B, N·config.samples_per_patch)."""

    def __init__(self, config: PerceiverConfig, in_channels: int, postproc_type: str = "patches") -> None:
        if postproc_type != "patches":
            raise ValueError(f"{type(self).__name__}: postproc_type={postproc_type!r}; only 'patches' exists")
        super().__init__(in_channels, config.samples_per_patch)


class PerceiverClassificationPostprocessor(ClassificationPostprocessor):
    """Decoder output (B, 1, in_channels) → logits (B, config.num_labels)."""

    def __init__(self, config: PerceiverConfig, in_channels: int) -> None:
        super().__init__(in_channels, config.num_labels)


class PerceiverMultimodalPostprocessor(MultimodalPostprocessor):
    """Decoder output (B, sum N_m, C), split by ``modality_sizes`` (or a dict with ``input_is_dict``) → {modality:
    that modality's postprocessor output}."""
