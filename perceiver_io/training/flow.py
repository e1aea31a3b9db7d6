"""Optical-flow training on frame pairs with exactly known flow: warped real photos and ``.flo`` pairs.

Synthetic pairs (:func:`warped_crop`): a random crop of a real photo is frame 2, and frame 1 is that photo
backward-warped by a random global affine motion or a smooth random field
(:func:`perceiver_io.tasks.flow_utils.synthetic_flow_pair`), so the flow frame 1 → frame 2 is known exactly.
Folder pairs: FlyingChairs naming, ``NAME_img1.*``, ``NAME_img2.*``, ``NAME_flow.flo``, randomly cropped.
Inputs follow DeepMind's colab (frames in [-1, 1], 3×3 patches); the model's output is flow / 20 pixels
(:data:`~perceiver_io.tasks.optical_flow.FLOW_SCALE_FACTOR`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from perceiver_io.adapters.image import patches_for_flow
from perceiver_io.config import PerceiverConfig
from perceiver_io.heads import PerceiverForOpticalFlow
from perceiver_io.tasks.common import load_image, model_device
from perceiver_io.tasks.flow_utils import read_flo, reverse_flow, synthetic_flow_pair
from perceiver_io.tasks.optical_flow import FLOW_SCALE_FACTOR


def load_photo(source: str) -> np.ndarray:
    """uint8 (H, W, 3): ``"skimage:NAME"`` (e.g. ``skimage:chelsea``, scikit-image's bundled photos) or a path."""
    if source.startswith("skimage:"):
        from skimage import color, data

        image = getattr(data, source.removeprefix("skimage:"))()
        return image if image.ndim == 3 else (color.gray2rgb(image)).astype(np.uint8)
    return load_image(source)


def warped_crop(
    photo: np.ndarray,
    size: tuple[int, int],
    max_disp: float,
    seed: int,
    motion: str = "smooth",
    contrast: float = 0.0,
    reverse: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A synthetic pair from a random ``size`` crop of ``photo`` (uint8 (H, W, 3)); ``seed`` fixes everything.

    ``motion``: ``"smooth"`` (a smooth random field) or ``"affine"`` (a global translation, rotation and zoom),
    see :func:`~perceiver_io.tasks.flow_utils.synthetic_flow_pair`. ``contrast``: if > 0, the crop's
    intensities are first mapped linearly to mean 127.5 and this standard deviation (clipped to 0..255), so
    that every pair shows motion at one contrast; 0 keeps the photo's. ``reverse``: the same pair in reversed
    order (the crop is then frame 1) with its flow from :func:`~perceiver_io.tasks.flow_utils.reverse_flow`.

    The flow is drawn and the warp done on the crop plus a margin of ``ceil(max_disp) + 1`` pixels, which is
    then cut away, so no pixel of the returned frames comes from outside the photo (the border-padding zone
    where the flow is not the true motion).

    Returns:
        float32 frame1, frame2 (h, w, 3) in 0..255 and flow (h, w, 2) in pixels.
    """
    margin = math.ceil(max_disp) + 1
    h, w = size
    height, width = photo.shape[:2]
    if height < h + 2 * margin or width < w + 2 * margin:
        raise ValueError(f"photo of {height}x{width} is too small for {h}x{w} crops with a {margin}-pixel margin")
    rng = np.random.default_rng(seed)
    top = int(rng.integers(0, height - h - 2 * margin + 1))
    left = int(rng.integers(0, width - w - 2 * margin + 1))
    region = photo[top : top + h + 2 * margin, left : left + w + 2 * margin].astype(np.float64)
    if contrast > 0:
        # A flat crop's std is floored at 1 grey level so that noise is not blown up without bound.
        region = np.clip((region - region.mean()) * (contrast / max(region.std(), 1.0)) + 127.5, 0, 255)
    frame1, frame2, flow = synthetic_flow_pair(region, int(rng.integers(2**31)), max_disp, motion)
    if reverse:
        frame1, frame2, flow = frame2, frame1, reverse_flow(flow)
    inner = (slice(margin, margin + h), slice(margin, margin + w))
    return frame1[inner], frame2[inner], flow[inner]


def flo_pairs(folder: str | Path) -> list[tuple[Path, Path, Path]]:
    """``(img1, img2, flow)`` paths of the FlyingChairs-style triples in ``folder``, sorted by name."""
    triples = []
    for flo in sorted(Path(folder).glob("*_flow.flo")):
        stem = flo.name.removesuffix("_flow.flo")
        frames = [sorted(flo.parent.glob(f"{stem}_img{k}.*")) for k in (1, 2)]
        if frames[0] and frames[1]:
            triples.append((frames[0][0], frames[1][0], flo))
    if not triples:
        raise ValueError(f"{folder} holds no NAME_img1.* / NAME_img2.* / NAME_flow.flo triple")
    return triples


def flow_inputs(frame1: np.ndarray, frame2: np.ndarray) -> torch.Tensor:
    """Float frames (B, H, W, 3) in 0..255 → model inputs (B, 2, 27, H, W), as the colab prepares them."""
    frames = torch.from_numpy(np.stack([frame1, frame2], axis=1)).float()  # (B, 2, H, W, 3)
    return patches_for_flow((frames / 255 * 2 - 1).permute(0, 1, 4, 2, 3))


@dataclass
class FlowTask:
    """Train ``PerceiverForOpticalFlow`` on ``crop``-sized pairs; the model's ``train_size`` is set to ``crop``.

    Training pairs are warped crops of ``images`` (paths or ``skimage:NAME``; ``motion``, ``max_disp`` and
    ``contrast`` as in :func:`warped_crop`), or crops of the triples in ``flo_dir`` if given; each of the
    ``n_train`` items is a fresh random pair (drawn from the global RNG, which the trainer seeds per step).
    With ``reversed_pairs`` every synthetic pair is in the batch twice, forward and reversed, as DeepMind
    trained their flow model: whatever a feature shares between the two orders cancels in the gradient, and
    only what tells the direction of motion is learned (without it a small model stays at zero flow).
    Evaluation: ``n_val`` fixed forward warped crops of ``val_images`` (photos not trained on); ``epe`` is the
    mean end-point error in pixels and ``epe_baseline`` that of zero flow.
    """

    images: list[str] | None = None
    val_images: list[str] | None = None
    flo_dir: str = ""
    crop: tuple[int, int] = (32, 48)
    max_disp: float = 1.5
    motion: str = "affine"
    contrast: float = 64.0
    reversed_pairs: bool = True
    n_train: int = 100_000
    n_val: int = 32
    eval_batch_size: int = 16
    model_config: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.crop = tuple(self.crop)
        if len(self.crop) != 2 or min(self.crop) < 4:
            raise ValueError(f"crop={self.crop}; expected (height, width), each >= 4")
        if self.motion not in ("smooth", "affine"):
            raise ValueError(f"motion={self.motion!r}; expected 'smooth' or 'affine'")
        if not 0 <= self.contrast <= 127.5:
            raise ValueError(f"contrast={self.contrast}; expected a grey-level standard deviation in [0, 127.5]")
        self.triples = flo_pairs(self.flo_dir) if self.flo_dir else []
        self.photos = [load_photo(s) for s in self.images or []]
        if not self.photos and not self.triples:
            raise ValueError("the flow task needs [task] images = [...] or flo_dir")
        self.val_photos = [load_photo(s) for s in self.val_images or []]

    def perceiver_config(self) -> PerceiverConfig:
        return PerceiverConfig(**{**(self.model_config or {}), "train_size": self.crop})

    def build_model(self) -> nn.Module:
        return PerceiverForOpticalFlow(self.perceiver_config())

    def _folder_crop(self, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        img1, img2, flo = self.triples[int(rng.integers(len(self.triples)))]
        frame1, frame2, flow = load_image(img1), load_image(img2), read_flo(flo)
        h, w = self.crop
        top, left = int(rng.integers(0, flow.shape[0] - h + 1)), int(rng.integers(0, flow.shape[1] - w + 1))
        window = (slice(top, top + h), slice(left, left + w))
        return frame1[window].astype(np.float32), frame2[window].astype(np.float32), flow[window]

    @staticmethod
    def _stack(pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, torch.Tensor]:
        frame1, frame2, flow = (np.stack(parts) for parts in zip(*pairs, strict=True))
        return {"inputs": flow_inputs(frame1, frame2), "labels": torch.from_numpy(flow)}

    def _warped(
        self, seeds: list[int], photos: list[np.ndarray], reverse: list[bool] | None = None
    ) -> dict[str, torch.Tensor]:
        reverse = reverse or [False] * len(seeds)
        crop, disp, motion, contrast = self.crop, self.max_disp, self.motion, self.contrast
        return self._stack(
            [
                warped_crop(photos[s % len(photos)], crop, disp, s, motion, contrast, reversed_)
                for s, reversed_ in zip(seeds, reverse, strict=True)
            ]
        )

    def batch(self, indices: torch.Tensor, train: bool) -> dict[str, torch.Tensor]:
        """``{"inputs": (N, 2, 27, h, w), "labels": (N, h, w, 2) flow in pixels}``: random pairs, each
        followed by its reversed copy with ``reversed_pairs`` (an odd N ends with a forward pair)."""
        n = len(indices)
        seeds = torch.randint(0, 2**31 - 1, (n,)).tolist()
        if self.triples:
            return self._stack([self._folder_crop(s) for s in seeds])
        if not self.reversed_pairs:
            return self._warped(seeds, self.photos)
        seeds = [s for s in seeds[: (n + 1) // 2] for _ in range(2)][:n]
        return self._warped(seeds, self.photos, [i % 2 == 1 for i in range(n)])

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean end-point error in pixels (NaN flow, i.e. unknown ground truth, is left out)."""
        predicted = model(inputs=batch["inputs"]).logits * FLOW_SCALE_FACTOR  # (N, h, w, 2)
        labels = batch["labels"]
        known = ~labels.isnan().any(-1)
        return torch.linalg.vector_norm(predicted - labels.nan_to_num(), dim=-1)[known].mean()

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """``epe`` and ``epe_baseline`` (zero flow) in pixels on ``n_val`` fixed pairs of ``val_images``."""
        if not self.val_photos:
            return {}
        batch = self._warped(list(range(self.n_val)), self.val_photos)
        errors = []
        for start in range(0, self.n_val, self.eval_batch_size):
            part = {k: v[start : start + self.eval_batch_size].to(model_device(model)) for k, v in batch.items()}
            errors.append(self.loss(model, part).item() * len(part["labels"]))
        return {
            "epe": sum(errors) / self.n_val,
            "epe_baseline": torch.linalg.vector_norm(batch["labels"], dim=-1).mean().item(),
        }

    def save_extras(self, directory: Path) -> None:
        """Nothing: ``perceiver flow`` needs only the model (its tiles have the config's ``train_size``)."""
