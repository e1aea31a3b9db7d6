"""DeepMind's six released Perceiver IO models: configurations, head classes, hub ids and original file names."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from perceiver_io.config import PerceiverConfig

_VISION = dict(
    num_latents=512,
    d_latents=1024,
    num_blocks=8,
    num_self_attends_per_block=6,
    num_self_attention_heads=8,
    num_cross_attention_heads=1,
    image_size=224,
    id2label={i: f"LABEL_{i}" for i in range(1000)},
)


@dataclass(frozen=True)
class ReleasedModel:
    name: str
    head: str  # class name in perceiver_io (and transformers)
    hub_id: str
    deepmind_file: str
    config: dict[str, Any] = field(default_factory=dict)


RELEASED: dict[str, ReleasedModel] = {
    m.name: m
    for m in [
        ReleasedModel(
            "language-perceiver",
            "PerceiverForMaskedLM",
            "deepmind/language-perceiver",
            "language_perceiver_io_bytes.pickle",
            dict(qk_channels=256, v_channels=1280),
        ),
        ReleasedModel(
            "vision-perceiver-learned",
            "PerceiverForImageClassificationLearned",
            "deepmind/vision-perceiver-learned",
            "imagenet_learned_position_encoding.pystate",
            dict(_VISION, d_model=512),
        ),
        ReleasedModel(
            "vision-perceiver-fourier",
            "PerceiverForImageClassificationFourier",
            "deepmind/vision-perceiver-fourier",
            "imagenet_fourier_position_encoding.pystate",
            dict(_VISION, d_model=261),
        ),
        ReleasedModel(
            "vision-perceiver-conv",
            "PerceiverForImageClassificationConvProcessing",
            "deepmind/vision-perceiver-conv",
            "imagenet_conv_preprocessing.pystate",
            dict(_VISION, d_model=322),
        ),
        ReleasedModel(
            "optical-flow-perceiver",
            "PerceiverForOpticalFlow",
            "deepmind/optical-flow-perceiver",
            "optical_flow_checkpoint.pystate",
            dict(
                num_latents=2048,
                d_latents=512,
                d_model=322,
                num_blocks=1,
                num_self_attends_per_block=24,
                num_self_attention_heads=16,
                num_cross_attention_heads=1,
                train_size=(368, 496),
            ),
        ),
        ReleasedModel(
            "multimodal-perceiver",
            "PerceiverForMultimodalAutoencoding",
            "deepmind/multimodal-perceiver",
            "video_autoencoding_checkpoint.pystate",
            dict(
                num_latents=784,
                d_latents=512,
                d_model=704,
                num_blocks=1,
                num_self_attends_per_block=8,
                num_self_attention_heads=8,
                num_cross_attention_heads=1,
                image_size=56,
                num_frames=16,
                audio_samples_per_frame=1920,
                samples_per_patch=16,
                output_shape=(1, 16, 224, 224),
                output_num_channels=512,
                id2label={i: f"LABEL_{i}" for i in range(700)},
            ),
        ),
    ]
}


def released_config(name: str, **overrides: Any) -> PerceiverConfig:
    """Configuration of a released model by name (``"vision-perceiver-fourier"``) or hub id, with ``overrides``.

    Widths the released model ties to other fields follow an override of those fields, so a resized model builds:
    the language model's ``v_channels`` is ``d_latents`` and its ``qk_channels`` is ``d_latents / 5`` (256 of
    1280) rounded to a multiple of both head counts; the multimodal model decodes ``output_shape = (1,
    num_frames, 4·image_size, 4·image_size)`` (its video patches are 4×4 pixels). A new label count
    (``num_labels``, ``id2label`` or ``label2id``) replaces the released label set. Explicit overrides win.
    """
    key = name.removeprefix("deepmind/")
    if key not in RELEASED:
        raise ValueError(f"unknown released model {name!r}; expected one of {sorted(RELEASED)}")
    values = {**RELEASED[key].config, "architectures": [RELEASED[key].head]}
    if {"num_labels", "id2label", "label2id"} & set(overrides):
        values.pop("id2label", None)
    values.update(overrides)
    if key == "language-perceiver" and {"d_latents", "num_self_attention_heads", "num_cross_attention_heads"} & set(
        overrides
    ):
        heads = math.lcm(values.get("num_self_attention_heads", 8), values.get("num_cross_attention_heads", 8))
        if "v_channels" not in overrides:
            values["v_channels"] = values.get("d_latents", 1280)
        if "qk_channels" not in overrides:
            values["qk_channels"] = max(1, round(values.get("d_latents", 1280) / 5 / heads)) * heads
    if key == "multimodal-perceiver" and {"num_frames", "image_size"} & set(overrides):
        if "output_shape" not in overrides:
            size = 4 * values["image_size"]
            values["output_shape"] = (1, values["num_frames"], size, size)
    return PerceiverConfig(**values)
