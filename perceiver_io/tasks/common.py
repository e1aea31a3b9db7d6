"""What the four task functions share: head checks, evaluation mode, image loading and progress bars."""

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
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (no dropout) and ``torch.inference_mode`` for the block; the model's mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield model
    finally:
        model.train(was_training)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as uint8 RGB ``[H, W, 3]`` (grey, palette and alpha images are converted).

    Raises:
        ValueError: the file does not exist or is not an image PIL can decode.
    """
    try:
        with PIL.Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise ValueError(f"{os.fspath(path)}: no such file") from None
    except (PIL.UnidentifiedImageError, OSError) as err:
        # PIL raises OSError for truncated or corrupt data too; both mean "not a usable image".
        raise ValueError(f"{os.fspath(path)}: not a readable image ({err})") from None


def as_rgb_array(image: Any, index: int = 0) -> np.ndarray:
    """A path, PIL image, ``[H, W, 3]`` RGB or ``[H, W]`` grey array (uint8, or numbers in 0..255) → uint8 RGB
    ``[H, W, 3]``."""
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if isinstance(image, PIL.Image.Image):
        return np.asarray(image.convert("RGB"))
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[2] != 3 or 0 in array.shape:
        raise ValueError(f"image {index} has shape {array.shape}; expected [H, W, 3] RGB or [H, W] grey")
    if array.dtype == np.uint8:
        return array
    if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
        raise ValueError(f"image {index} must hold finite numbers in 0..255, got dtype {array.dtype}")
    return np.clip(np.rint(array), 0, 255).astype(np.uint8)


def progress_bar(total: int, unit: str, enabled: bool) -> tqdm:
    """A tqdm bar on stderr counting ``unit``s; disabled, it ignores updates."""
    return tqdm(total=total, unit=f" {unit}", leave=False, disable=not enabled)
