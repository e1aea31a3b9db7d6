"""What the four task functions share: head checks, evaluation mode, moving inputs to the model, image arrays and
progress bars."""

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


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of ``model``'s floating-point parameters: bfloat16 after ``optimize_for_inference(model, "bf16")``,
    else float32 (an int8 model's quantized linears hold no parameters and take float32)."""
    return next(p.dtype for p in model.parameters() if p.is_floating_point())


def to_model(tensor: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """``tensor`` on ``model``'s device; a floating-point tensor also in ``model_dtype(model)``.

    This is where the task helpers cast their inputs for a bf16 model (float32 → bfloat16 rounds each value to 8
    significant bits); integer ids, masks and indices keep their dtype. The helpers convert the model's outputs to
    float32 before any softmax, top-k, PSNR or file.
    """
    if tensor.is_floating_point():
        return tensor.to(model_device(model), model_dtype(model))
    return tensor.to(model_device(model))


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
