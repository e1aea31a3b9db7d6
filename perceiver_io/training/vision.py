"""Image classification from an ImageNet-layout folder, with DeepMind's ImageNet training recipe.

The folder holds one subfolder per class (``root/<class>/*.jpg``); the class ids are the sorted subfolder
names. Training augmentation (DeepMind's ``perceiver/train/dataset.py``): Inception crop (area 8-100 %,
aspect 3/4-4/3) resized bicubically to ``image_size``, horizontal flip, RandAugment (4 layers, magnitude 5 of
10), then MixUp (α 0.2) on the first half of the batch and CutMix on the second
(:func:`~perceiver_io.training.losses.mixup_cutmix`). Evaluation: the centre ``224/256`` square, bicubic resize
to ``image_size`` (:func:`perceiver_io.tasks.classify.center_crop_resize`). Both normalise with the ImageNet
mean and std. The augmentations are kornia's (``pip install 'perceiver_io[augment]'``), imported on first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from perceiver_io.config import PerceiverConfig
from perceiver_io.heads import (
    PerceiverForImageClassificationConvProcessing,
    PerceiverForImageClassificationFourier,
    PerceiverForImageClassificationLearned,
)
from perceiver_io.tasks.classify import CROP_FRACTION, MEAN_RGB, STDDEV_RGB, center_crop_resize, normalize
from perceiver_io.tasks.common import model_device
from perceiver_io.training.losses import mixup_cutmix, smoothed_cross_entropy

# The three image-classification heads by the name a recipe's [task] head gives.
IMAGE_HEADS: dict[str, type[nn.Module]] = {
    "conv": PerceiverForImageClassificationConvProcessing,
    "fourier": PerceiverForImageClassificationFourier,
    "learned": PerceiverForImageClassificationLearned,
}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# RandAugment magnitudes: DeepMind (TF's autoaugment.py) counts 0..10, kornia 0..30 over the same ranges.
TF_MAX_LEVEL, KORNIA_MAX_LEVEL = 10, 30


def require_kornia() -> Any:
    """The ``kornia`` module, or an ImportError naming the extra that installs it."""
    try:
        import kornia
    except ImportError as error:
        raise ImportError(
            "image augmentation needs kornia: pip install 'perceiver_io[augment]' (or pip install kornia)"
        ) from error
    return kornia


def check_image_head(head: str) -> None:
    if head not in IMAGE_HEADS:
        raise ValueError(f"[task] head={head!r}; expected one of {sorted(IMAGE_HEADS)}")


def list_image_folder(root: str | Path) -> tuple[list[Path], list[int], list[str]]:
    """Image files under ``root/<class>/`` (sorted), their class ids, and the sorted class names.

    Raises:
        ValueError: ``root`` is not a folder or holds no class subfolder with an image.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"image folder {str(root)!r} does not exist")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        paths.extend(files)
        labels.extend([label] * len(files))
    if not paths:
        raise ValueError(f"image folder {str(root)!r} has no class subfolders with images ({IMAGE_SUFFIXES})")
    return paths, labels, classes


def read_rgb(path: Path) -> np.ndarray:
    """uint8 (H, W, 3) pixels of an image file (grey and RGBA converted to RGB)."""
    from PIL import Image

    with Image.open(path) as image:
        return np.array(image.convert("RGB"))  # a writable copy: torch.from_numpy warns on read-only arrays


class ImageAugment(nn.Module):
    """DeepMind's ImageNet training augmentation on uint8 images of any sizes → (B, 3, S, S) normalised.

    Randomness comes from the global torch RNG (kornia draws from it), so the trainer's per-step seeding makes
    a resumed run augment exactly as an uninterrupted one. kornia's RandAugment picks its ``layers`` operations
    once per call, i.e. per batch (DeepMind's per image); every image still gets its own crop, flip and mix.
    """

    def __init__(self, image_size: int, randaugment_layers: int = 4, randaugment_magnitude: float = 5.0) -> None:
        super().__init__()
        kornia = require_kornia()
        from kornia.augmentation.auto import RandAugment

        if not 0 < randaugment_magnitude < TF_MAX_LEVEL:
            raise ValueError(f"randaugment_magnitude={randaugment_magnitude}; expected 0 < m < {TF_MAX_LEVEL}")
        aug = kornia.augmentation
        self.crop = aug.RandomResizedCrop((image_size, image_size), scale=(0.08, 1.0), resample="bicubic")
        self.flip = aug.RandomHorizontalFlip()
        level = round(randaugment_magnitude * KORNIA_MAX_LEVEL / TF_MAX_LEVEL)
        self.randaugment = RandAugment(n=randaugment_layers, m=level) if randaugment_layers else nn.Identity()
        self.register_buffer("mean", torch.tensor(MEAN_RGB).view(1, 3, 1, 1) / 255, persistent=False)
        self.register_buffer("std", torch.tensor(STDDEV_RGB).view(1, 3, 1, 1) / 255, persistent=False)

    def forward(self, images: list[np.ndarray]) -> torch.Tensor:
        """uint8 (H_i, W_i, 3) arrays → float (B, 3, S, S)."""
        # Images differ in size, so each is cropped alone; the rest runs on the batch.
        crops = [self.crop(torch.from_numpy(im).permute(2, 0, 1)[None].float() / 255) for im in images]
        x = self.randaugment(self.flip(torch.cat(crops).clamp(0, 1)))
        return (x - self.mean) / self.std


@dataclass
class ImageFolderTask:
    """Classify the images of ``train_dir`` (ImageNet layout); ``val_dir`` (same classes) is held out.

    The paper's ImageNet recipe: see the module docstring; ``[train]`` defaults (LAMB, lr 5e-4·batch/256,
    constant-then-cosine, weight decay 0.1, clip 10) are the rest of it. ``mixup_alpha`` 0 turns MixUp and
    CutMix off. ``head``: ``"conv"``, ``"fourier"`` or ``"learned"`` (``[model] image_size`` must then equal
    ``image_size``).
    """

    train_dir: str = ""
    val_dir: str = ""
    head: str = "conv"
    image_size: int = 224
    randaugment_layers: int = 4
    randaugment_magnitude: float = 5.0
    mixup_alpha: float = 0.2
    label_smoothing: float = 0.1
    eval_batch_size: int = 32
    model_config: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        check_image_head(self.head)
        if not self.train_dir:
            raise ValueError("the image_folder task needs [task] train_dir (a folder of class subfolders)")
        self.paths, labels, self.classes = list_image_folder(self.train_dir)
        self.labels = torch.tensor(labels)
        self.n_train = len(self.paths)
        self.val_paths: list[Path] = []
        if self.val_dir:
            self.val_paths, val_labels, val_classes = list_image_folder(self.val_dir)
            if val_classes != self.classes:
                raise ValueError(f"val_dir classes {val_classes} differ from train_dir classes {self.classes}")
            self.val_labels = torch.tensor(val_labels)
        self.augment = ImageAugment(self.image_size, self.randaugment_layers, self.randaugment_magnitude)

    def perceiver_config(self) -> PerceiverConfig:
        """The ``[model]`` table with the folder's class names as labels."""
        return PerceiverConfig(**(self.model_config or {}), id2label=dict(enumerate(self.classes)))

    def build_model(self) -> nn.Module:
        return IMAGE_HEADS[self.head](self.perceiver_config())

    def batch(self, indices: torch.Tensor, train: bool) -> dict[str, torch.Tensor]:
        """``{"inputs": (N, 3, S, S), "labels": (N, K) soft targets}`` if ``train``, else centre crops and
        (N,) class ids."""
        images = [read_rgb(self.paths[i]) for i in indices.tolist()]
        labels = self.labels[indices]
        if not train:
            return {"inputs": self.eval_pixels(images), "labels": labels}
        inputs = self.augment(images)
        if self.mixup_alpha > 0:
            inputs, labels = mixup_cutmix(inputs, labels, len(self.classes), self.mixup_alpha)
        return {"inputs": inputs, "labels": labels}

    def eval_pixels(self, images: list[np.ndarray]) -> torch.Tensor:
        """uint8 (H_i, W_i, 3) images → (B, 3, S, S): centre crop 224/256, bicubic resize, normalise."""
        return torch.from_numpy(np.stack([normalize(center_crop_resize(im, self.image_size)) for im in images]))

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(inputs=batch["inputs"]).logits
        return smoothed_cross_entropy(logits, batch["labels"], self.label_smoothing)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Top-1 accuracy on ``val_dir``; ``{}`` without one."""
        if not self.val_paths:
            return {}
        correct = 0
        for start in range(0, len(self.val_paths), self.eval_batch_size):
            chunk = self.val_paths[start : start + self.eval_batch_size]
            pixels = self.eval_pixels([read_rgb(p) for p in chunk]).to(model_device(model))
            predicted = model(inputs=pixels).logits.argmax(-1).cpu()
            correct += int((predicted == self.val_labels[start : start + len(chunk)]).sum())
        return {"accuracy": correct / len(self.val_paths)}

    def save_extras(self, directory: Path) -> None:
        """``preprocessor_config.json``: transformers' pipeline (centre crop, bicubic resize, ImageNet stats)."""
        from perceiver_io.processing import PerceiverImageProcessor

        size = self.image_size
        PerceiverImageProcessor(size=size, crop_size=round(size / CROP_FRACTION)).save_pretrained(directory)
