"""Optical flow between two frames of any size, as in DeepMind's optical-flow colab.

Frames are scaled to [-1, 1] (``im / 255 * 2 - 1``), cut into 3×3 patches per pixel, and fed to the model in
tiles of the model's ``config.train_size`` (368×496), blended with the colab's pyramid weights
(`perceiver_io.tasks.flow_utils.tiled_flow`). Frames smaller than a tile are edge-padded to one tile and the
result cropped back (the colab refuses them); at the few sizes where the colab's tile grid would leave the frame,
the offending tile is moved back inside (see `tile_origins`). The model returns flow / 20 (transformers'
convention); the colab multiplies by ``FLOW_SCALE_FACTOR = 20`` to get pixels, and so does this module.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import PIL.Image
import torch
from torch import nn

from perceiver_io.adapters.image import patches_for_flow
from perceiver_io.tasks.common import evaluating, progress_bar, require_head, to_model
from perceiver_io.tasks.flow_utils import MIN_OVERLAP, tile_origins, tiled_flow
from perceiver_io.tasks.images import load_image, pil_to_rgb

FLOW_SCALE_FACTOR = 20.0
FLOW_HEADS = ("PerceiverForOpticalFlow",)


def default_overlap(tile: tuple[int, int]) -> int:
    """The colab's 20-pixel minimum overlap, reduced to half the shorter tile side for tiny test models."""
    return min(MIN_OVERLAP, min(tile) // 2)


def as_frame(frame: Any) -> np.ndarray:
    """A path, PIL image or ``[H, W, 3]`` array in 0..255 → float32 ``[H, W, 3]`` (floats are not rounded).

    Raises:
        ValueError: an unreadable file, another shape, an empty frame, or values outside 0..255 or not finite.
    """
    if isinstance(frame, (str, os.PathLike)):
        frame = load_image(frame)
    if isinstance(frame, PIL.Image.Image):
        frame = pil_to_rgb(frame, "frame")
    array = frame.detach().cpu().numpy() if isinstance(frame, torch.Tensor) else np.asarray(frame)
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"a frame must hold real numbers in 0..255, got dtype {array.dtype}")
    if array.ndim != 3 or array.shape[2] != 3 or 0 in array.shape:
        raise ValueError(f"a frame must be [H, W, 3] RGB with H, W > 0, got shape {array.shape}")
    outside = int((~((array >= 0) & (array <= 255))).sum())  # NaN is outside too
    if outside:
        raise ValueError(f"a frame holds {outside} values outside 0..255 or not finite")
    return array.astype(np.float32)


def predict_tile(model: nn.Module, frame1: np.ndarray, frame2: np.ndarray) -> np.ndarray:
    """One forward pass on two whole frames, no tiling: ``[h, w, 3]`` in 0..255 → float32 flow ``[h, w, 2]`` in
    pixels. The patches are cast to the model's dtype (bf16 for a bf16 model, `to_model`)."""
    frames = torch.from_numpy(np.stack([frame1, frame2])).float()  # (2, h, w, 3)
    frames = (frames / 255 * 2 - 1).permute(0, 3, 1, 2)[None]  # (1, 2, 3, h, w) in [-1, 1]
    patches = to_model(patches_for_flow(frames), model)  # (1, 2, 27, h, w)
    with evaluating(model):
        flow = model(inputs=patches).logits[0]  # (h, w, 2), pixels / 20
    return flow.float().cpu().numpy() * FLOW_SCALE_FACTOR


def optical_flow(
    model: nn.Module, frame1: Any, frame2: Any, min_overlap: int | None = None, progress: bool = False
) -> np.ndarray:
    """Flow from ``frame1`` to ``frame2`` in pixels.

    Args:
        model: a ``PerceiverForOpticalFlow``; tiles have its ``config.train_size``. A bf16 model gets its patches
            in bf16 (`predict_tile`); the flow comes back float32 whatever the precision.
        frame1, frame2: paths, PIL images or ``[H, W, 3]`` RGB arrays in 0..255, of the same size (any size).
        min_overlap: minimum tile overlap in pixels; default `default_overlap` (20 for the released model).
        progress: show a tqdm bar over the tiles.

    Returns:
        float32 ``[H, W, 2]``: ``(u, v)`` per pixel of frame 1, u to the right and v down.

    Raises:
        TypeError: ``model`` is not an optical-flow model.
        ValueError: unreadable frames or frames of different sizes.
    """
    require_head(model, FLOW_HEADS, "optical flow")
    f1, f2 = as_frame(frame1), as_frame(frame2)
    if f1.shape != f2.shape:
        raise ValueError(f"the frames differ in size: {f1.shape[:2]} and {f2.shape[:2]}")
    tile = tuple(int(t) for t in model.config.train_size)
    overlap = default_overlap(tile) if min_overlap is None else min_overlap
    padded = (max(f1.shape[0], tile[0]), max(f1.shape[1], tile[1]))
    bar = progress_bar(len(set(tile_origins(*padded, tile, overlap))), "tile", progress)

    def predict(tile1: np.ndarray, tile2: np.ndarray) -> np.ndarray:
        flow = predict_tile(model, tile1, tile2)
        bar.update()
        return flow

    try:
        return tiled_flow(predict, f1, f2, tile, overlap)
    finally:
        bar.close()
