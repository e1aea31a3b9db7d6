"""Image classification, as in DeepMind's ImageNet colab.

``processor="original"`` repeats the colab's preprocessing of a uint8 RGB image:

1. a centre square crop of side ``c = int(224/256 · min(H, W))`` at offset ``((H - c) + 1) // 2`` (and the
   same for W);
2. ``cv2.resize(..., INTER_CUBIC)`` to the model's ``config.image_size`` (224): bicubic with a = -0.75, pixel
   centres aligned, no antialiasing, rounded back to uint8 — done here with torch, which computes the same
   kernel (checked against OpenCV: at most 1 grey level apart on a handful of pixels);
3. ``(x - mean·255) / (std·255)`` with the ImageNet mean and std.

``processor="transformers"`` uses ``perceiver_io.processing.PerceiverImageProcessor`` (transformers' pipeline:
crop offset rounded down, PIL bicubic with antialiasing, no uint8 rounding). Any callable mapping a list of
uint8 ``[H, W, 3]`` images to a ``(B, 3, S, S)`` tensor can be passed instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from perceiver_io.tasks.common import (
    IMAGE_CLASSIFIERS,
    as_rgb_array,
    evaluating,
    progress_bar,
    require_head,
    to_model,
)

# The colab's MEAN_RGB and STDDEV_RGB: ImageNet statistics on the 0..255 scale.
MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STDDEV_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)
CROP_FRACTION = 224 / (224 + 32)
PROCESSORS = ("original", "transformers")

Processor = Callable[[list[np.ndarray]], torch.Tensor]


def center_crop_resize(image: np.ndarray, size: int = 224) -> np.ndarray:
    """The colab's ``resize_and_center_crop``: uint8 ``[H, W, 3]`` → uint8 ``[size, size, 3]``."""
    height, width = image.shape[:2]
    crop = int(CROP_FRACTION * min(height, width))
    if crop == 0:
        raise ValueError(f"image of {height}x{width} pixels is too small: its centre crop would be empty")
    top, left = ((height - crop) + 1) // 2, ((width - crop) + 1) // 2
    window = torch.from_numpy(np.ascontiguousarray(image[top : top + crop, left : left + crop]))
    chw = window.permute(2, 0, 1)[None].double()
    # cv2 INTER_CUBIC on uint8: Keys kernel a=-0.75, half-pixel centres, edge clamping, saturating round.
    resized = F.interpolate(chw, size=(size, size), mode="bicubic", align_corners=False)
    return resized.round().clamp(0, 255)[0].permute(1, 2, 0).numpy().astype(np.uint8)


def normalize(image: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W, 3]`` → float32 ``[3, H, W]``, ``(x - MEAN_RGB) / STDDEV_RGB`` computed in float64."""
    out = (image.astype(np.float64) - np.array(MEAN_RGB)) / np.array(STDDEV_RGB)
    return out.transpose(2, 0, 1).astype(np.float32)


def original_processor(size: int = 224) -> Processor:
    """The colab's preprocessing (crop, cv2-style bicubic resize, normalise) as a batch processor."""

    def process(images: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack([normalize(center_crop_resize(im, size)) for im in images]))

    return process


def transformers_processor(size: int = 224, folder: str | os.PathLike[str] | None = None) -> Processor:
    """``PerceiverImageProcessor`` (equal to transformers'): from ``folder``'s ``preprocessor_config.json`` if
    it has one, else the defaults with the crop scaled to keep 224/256 of the shorter side."""
    from perceiver_io.processing import PerceiverImageProcessor

    if folder is not None and os.path.isfile(os.path.join(folder, "preprocessor_config.json")):
        processor = PerceiverImageProcessor.from_pretrained(folder)
    else:
        processor = PerceiverImageProcessor(size=size, crop_size=round(size / CROP_FRACTION))

    def process(images: list[np.ndarray]) -> torch.Tensor:
        return processor(images, return_tensors="pt")["pixel_values"]

    return process


def class_names(model: nn.Module, labels: Sequence[str] | None = None) -> list[str]:
    """Names of the model's classes: ``labels`` if given, else the config's ``id2label`` unless it holds only
    transformers' placeholders (``LABEL_0`` …), else the ImageNet names for a 1000-class model, else ``"i"``.

    Raises:
        ValueError: ``labels`` has a different number of names than the model has classes.
    """
    count = model.config.num_labels
    if labels is not None:
        if len(labels) != count:
            raise ValueError(f"{len(labels)} label names given but the model has {count} classes")
        return list(labels)
    id2label = model.config.id2label
    if any(id2label.get(i) != f"LABEL_{i}" for i in range(count)):
        return [str(id2label.get(i, i)) for i in range(count)]
    if count == 1000:
        return imagenet_class_names()
    return [str(i) for i in range(count)]


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet class names in index order (``perceiver_io/data/imagenet_classes.txt``)."""
    text = resources.files("perceiver_io").joinpath("data/imagenet_classes.txt").read_text(encoding="utf-8")
    return text.splitlines()


def _resolve_processor(processor: str | Processor, size: int) -> Processor:
    if callable(processor):
        return processor
    if processor == "original":
        return original_processor(size)
    if processor == "transformers":
        return transformers_processor(size)
    raise ValueError(f"processor={processor!r}; expected one of {PROCESSORS} or a callable")


def classify(
    model: nn.Module,
    images: Sequence[Any],
    top_k: int = 5,
    processor: str | Processor = "original",
    labels: Sequence[str] | None = None,
    batch_size: int = 8,
    progress: bool = False,
) -> list[list[tuple[str, float]]]:
    """Top-k classes of each image with softmax probabilities.

    Args:
        model: one of the three image-classification heads; images are resized to ``config.image_size``. A bf16
            model (``optimize_for_inference(model, "bf16")``) gets the processed images cast to bf16; its logits
            are converted to float32 before the softmax.
        images: paths, PIL images or uint8 ``[H, W, 3]`` RGB arrays (any size; floats in 0..255 are rounded).
        top_k: classes reported per image.
        processor: ``"original"`` (the colab), ``"transformers"``, or a callable (see the module docstring).
        labels: class names overriding the model's (see `class_names`).
        batch_size: images per forward pass.
        progress: show a tqdm bar over the batches.

    Returns:
        One list per image of ``(class name, probability)``, most probable first.

    Raises:
        TypeError: ``model`` is not an image classifier.
        ValueError: an unreadable image, labels that do not match the model, ``top_k`` or ``batch_size`` < 1.
    """
    require_head(model, IMAGE_CLASSIFIERS, "classify")
    for name, value in (("top_k", top_k), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    names = class_names(model, labels)
    process = _resolve_processor(processor, model.config.image_size)
    results: list[list[tuple[str, float]]] = []
    bar = progress_bar(len(images), "image", progress)
    with evaluating(model):
        for start in range(0, len(images), batch_size):
            # Images are read batch by batch, so a folder of thousands never sits in memory at once.
            batch = [as_rgb_array(im, n) for n, im in enumerate(images[start : start + batch_size], start)]
            probs = model(inputs=to_model(process(batch), model)).logits.float().softmax(dim=-1).cpu()
            top_p, top_i = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
            for p_row, i_row in zip(top_p.tolist(), top_i.tolist(), strict=True):
                results.append([(names[i], p) for i, p in zip(i_row, p_row, strict=True)])
            bar.update(len(batch))
    bar.close()
    return results
