"""What the four task functions share: head checks, evaluation mode, image arrays and progress bars."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import PIL.Image
import torch
from torch import nn
from tqdm import tqdm

from perceiver_io.tasks.images import load_image, pil_to_rgb

IMAGE_CLASSIFIERS = (
    "PerceiverForImageClassificationLearned",
    "PerceiverForImageClassificationFourier",
    "PerceiverForImageClassificationConvProcessing",
)


def require_head(model: nn.Module, heads: tuple[str, ...], task: str) -> None:
    """Raise TypeError unless ``model`` is one of ``heads``.

    Heads are compared by class name, so transformers' Perceiver classes (same names, same call conventions)
    pass as well as ours.
    """
    name = type(model).__name__
    if name not in heads:
        raise TypeError(f"{task} needs a {' or '.join(heads)} model; got a {name}")


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (no dropout) for the block; the model's mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """``eval_mode`` and ``torch.inference_mode`` for the block."""
    with eval_mode(model), torch.inference_mode():
        yield model


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def as_rgb_array(image: Any, index: int = 0) -> np.ndarray:
    """A path, PIL image, ``[H, W, 3]`` RGB or ``[H, W]`` grey array (uint8, or numbers in 0..255, rounded) → uint8
    RGB ``[H, W, 3]``. Files are read by `load_image`.

    Raises:
        ValueError: an unreadable file, an array of another shape, or values outside 0..255 (never clipped).
    """
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if isinstance(image, PIL.Image.Image):
        return pil_to_rgb(image, f"image {index}")
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3) or 0 in array.shape:
        raise ValueError(f"image {index} has shape {array.shape}; expected [H, W, 3] RGB or [H, W] grey")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
            raise ValueError(f"image {index} must hold real numbers in 0..255, got dtype {array.dtype}")
        outside = int((~((array >= 0) & (array <= 255))).sum())  # NaN is outside too
        if outside:
            raise ValueError(
                f"image {index}: {outside} of {array.size} values are outside 0..255 or not finite (an image "
                "array holds 0..255; scale floats in [0, 1] by 255 first)"
            )
        array = np.rint(array).astype(np.uint8)
    return np.repeat(array[..., None], 3, axis=-1) if array.ndim == 2 else array


def progress_bar(total: int, unit: str, enabled: bool) -> tqdm:
    """A tqdm bar on stderr counting ``unit``s; disabled, it ignores updates."""
    return tqdm(total=total, unit=f" {unit}", leave=False, disable=not enabled)
