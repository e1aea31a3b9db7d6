"""Multimodal autoencoding of video files (frames + soundtrack + class label), the paper's Kinetics recipe.

Loss, as in the paper: ``0.03·L1(video) + 1·L1(audio) + 1e-4·CE(label)``. The label input is always replaced by
the model's mask token, so the label term trains the clip classifier. As in DeepMind's training, each step
decodes only a random subset of the output points (``image_points`` pixels and ``audio_points`` audio
patches, the same for the whole batch); the label is always decoded. Clips are read once with
:func:`perceiver_io.tasks.autoencode.read_clips` (PyAV: ``pip install 'perceiver_io[video]'``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from perceiver_io.config import PerceiverConfig
from perceiver_io.heads import PerceiverForMultimodalAutoencoding
from perceiver_io.tasks.autoencode import ClipGeometry, read_clips

VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".mov", ".webm")
LOSS_WEIGHTS = {"image": 0.03, "audio": 1.0, "label": 1e-4}


@dataclass
class MultimodalTask:
    """Autoencode the clips of ``video_dir/<class>/*.avi`` (any of :data:`VIDEO_SUFFIXES`); each class
    subfolder is a label. ``max_windows`` clips of ``num_frames`` frames are cut from each file. There is no
    held-out evaluation (``evaluate`` returns ``{}``)."""

    video_dir: str = ""
    max_windows: int = 4
    image_points: int = 4096
    audio_points: int = 256
    allow_silence: bool = False
    model_config: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        root = Path(self.video_dir)
        if not self.video_dir or not root.is_dir():
            raise ValueError(f"the multimodal task needs [task] video_dir, a folder of class subfolders; got {root}")
        self.classes = sorted(d.name for d in root.iterdir() if d.is_dir())
        self.geometry = ClipGeometry.from_config(self.perceiver_config())
        videos, audios, labels = [], [], []
        for label, name in enumerate(self.classes):
            for path in sorted(p for p in (root / name).iterdir() if p.suffix.lower() in VIDEO_SUFFIXES):
                clips = read_clips(path, self.geometry, self.max_windows, allow_silence=self.allow_silence)
                videos.append(clips.video)
                audios.append(clips.audio)
                labels.extend([label] * len(clips.video))
        if not labels:
            raise ValueError(f"{root} holds no video files ({VIDEO_SUFFIXES}) in class subfolders")
        self.video = torch.from_numpy(np.concatenate(videos))  # uint8 (N, T, S, S, 3)
        self.audio = torch.from_numpy(np.concatenate(audios))  # float32 (N, A)
        self.labels = torch.tensor(labels)
        self.n_train = len(labels)

    def perceiver_config(self) -> PerceiverConfig:
        return PerceiverConfig(**(self.model_config or {}), id2label=dict(enumerate(self.classes)))

    def build_model(self) -> nn.Module:
        return PerceiverForMultimodalAutoencoding(self.perceiver_config())

    def batch(self, indices: torch.Tensor, train: bool) -> dict[str, torch.Tensor]:
        """Clips ``indices``: ``image`` (N, T, 3, S, S) in [0, 1], ``audio`` (N, A, 1), ``labels`` (N,), and the
        output points to decode this step: ``image_points`` (P,) flat pixel and ``audio_points`` (Q,) patch
        indices, drawn from the global RNG."""
        g = self.geometry
        return {
            "image": self.video[indices].permute(0, 1, 4, 2, 3).float() / 255,
            "audio": self.audio[indices, :, None],
            "labels": self.labels[indices],
            "image_points": torch.randperm(g.pixels)[: self.image_points].sort().values,
            "audio_points": torch.randperm(g.audio_patches)[: self.audio_points].sort().values,
        }

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``0.03·L1(video) + L1(audio) + 1e-4·CE(label)`` on the step's output points."""
        n, spp = len(batch["labels"]), self.geometry.samples_per_patch
        inputs = {
            "image": batch["image"],
            "audio": batch["audio"],
            "label": torch.zeros(n, len(self.classes), device=batch["image"].device),  # masked by the model
        }
        points = {"image": batch["image_points"], "audio": batch["audio_points"], "label": None}
        logits = model(inputs=inputs, subsampled_output_points=points).logits
        pixels = batch["image"].permute(0, 1, 3, 4, 2).reshape(n, -1, 3)[:, batch["image_points"]]  # (N, P, 3)
        samples = batch["audio"].reshape(n, -1, spp)[:, batch["audio_points"]].reshape(n, -1)  # (N, Q·spp)
        return (
            LOSS_WEIGHTS["image"] * F.l1_loss(logits["image"].float(), pixels)
            + LOSS_WEIGHTS["audio"] * F.l1_loss(logits["audio"].float(), samples)
            + LOSS_WEIGHTS["label"] * F.cross_entropy(logits["label"].float(), batch["labels"])
        )

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return {}

    def save_extras(self, directory: Path) -> None:
        """Nothing: ``perceiver autoencode`` reads its clip geometry from the model's config."""
