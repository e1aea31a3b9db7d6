"""Text classification from CSV or JSONL files of (text, label) rows, with the byte-level Perceiver."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from perceiver_io.config import PerceiverConfig
from perceiver_io.heads import PerceiverForSequenceClassification
from perceiver_io.tasks.common import model_device
from perceiver_io.training.losses import smoothed_cross_entropy


def read_labelled_texts(path: str | Path, text_column: str = "text", label_column: str = "label") -> list[tuple]:
    """``(text, label)`` rows of a ``.csv`` (with a header row) or ``.jsonl``/``.json`` (one object per line)
    file; labels are read as strings.

    Raises:
        ValueError: an unknown suffix, or a row without one of the columns.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".json"):
        raise ValueError(f"{path}: expected a .csv or .jsonl file, got suffix {suffix!r}")
    with path.open(encoding="utf-8", newline="") as f:
        rows: list[dict[str, Any]] = (
            list(csv.DictReader(f)) if suffix == ".csv" else [json.loads(line) for line in f if line.strip()]
        )
    for number, row in enumerate(rows, start=1):
        if text_column not in row or label_column not in row:
            raise ValueError(f"{path} row {number} lacks column {text_column!r} or {label_column!r}: {row}")
    return [(str(row[text_column]), str(row[label_column])) for row in rows]


@dataclass
class TextClassificationTask:
    """Classify texts (``train_file``, ``val_file``: CSV or JSONL, columns ``text_column``/``label_column``).

    Texts are UTF-8 bytes as :class:`~perceiver_io.processing.PerceiverTokenizer` encodes them (``[CLS] …
    [SEP]``), padded or cut to ``max_position_embeddings``. The class names are the sorted distinct training
    labels. Without ``val_file`` there is no evaluation. Evaluation reports accuracy and the majority-class
    baseline (the most frequent training label).
    """

    train_file: str = ""
    val_file: str = ""
    text_column: str = "text"
    label_column: str = "label"
    label_smoothing: float = 0.0
    eval_batch_size: int = 32
    model_config: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        from perceiver_io.processing import PerceiverTokenizer

        if not self.train_file:
            raise ValueError("the text_classification task needs [task] train_file (a .csv or .jsonl file)")
        train = read_labelled_texts(self.train_file, self.text_column, self.label_column)
        self.classes = sorted({label for _, label in train})
        seq_len = PerceiverConfig(**(self.model_config or {})).max_position_embeddings
        self.tokenizer = PerceiverTokenizer(model_max_length=seq_len)
        self.inputs, self.labels = self._encode(train)
        self.n_train = len(self.labels)
        self.majority = int(torch.bincount(self.labels).argmax())
        self.val: tuple[dict[str, torch.Tensor], torch.Tensor] | None = None
        if self.val_file:
            self.val = self._encode(read_labelled_texts(self.val_file, self.text_column, self.label_column))

    def _encode(self, rows: list[tuple[str, str]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Token ids and attention mask (N, max_position_embeddings), class ids (N,)."""
        ids = {name: i for i, name in enumerate(self.classes)}
        unknown = sorted({label for _, label in rows} - set(ids))
        if unknown:
            raise ValueError(f"labels {unknown} do not occur in train_file {self.train_file!r}")
        encoded = self.tokenizer([t for t, _ in rows], padding="max_length", truncation=True, return_tensors="pt")
        inputs = {"inputs": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
        return inputs, torch.tensor([ids[label] for _, label in rows])

    def perceiver_config(self) -> PerceiverConfig:
        """The ``[model]`` table with the training labels as class names."""
        return PerceiverConfig(**(self.model_config or {}), id2label=dict(enumerate(self.classes)))

    def build_model(self) -> nn.Module:
        return PerceiverForSequenceClassification(self.perceiver_config())

    def batch(self, indices: torch.Tensor, train: bool) -> dict[str, torch.Tensor]:
        """``inputs``/``attention_mask`` (N, T) and ``labels`` (N,) of training rows ``indices``."""
        return {**{k: v[indices] for k, v in self.inputs.items()}, "labels": self.labels[indices]}

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(inputs=batch["inputs"], attention_mask=batch["attention_mask"]).logits
        return smoothed_cross_entropy(logits, batch["labels"], self.label_smoothing)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """``accuracy`` on ``val_file`` and ``accuracy_baseline`` (always the majority training label)."""
        if self.val is None:
            return {}
        inputs, labels = self.val
        device, correct = model_device(model), 0
        for start in range(0, len(labels), self.eval_batch_size):
            part = {k: v[start : start + self.eval_batch_size].to(device) for k, v in inputs.items()}
            predicted = model(**part).logits.argmax(-1).cpu()
            correct += int((predicted == labels[start : start + self.eval_batch_size]).sum())
        return {
            "accuracy": correct / len(labels),
            "accuracy_baseline": (labels == self.majority).double().mean().item(),
        }

    def save_extras(self, directory: Path) -> None:
        self.tokenizer.save_pretrained(directory)
