"""Resumable training checkpoints, written atomically and loadable with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from perceiver_io.checkpoints.files import staged_file

FORMAT_VERSION = 1


def _rng_state() -> dict[str, Any]:
    # Only tensors and plain Python values, so the weights_only unpickler accepts the file. numpy's legacy
    # global generator is the one third-party code draws from, hence the legacy API.
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()  # noqa: NPY002
    return {
        "python": random.getstate(),
        "numpy": (
            np_kind,
            torch.from_numpy(np_keys.astype(np.int64)),
            int(np_pos),
            int(np_has_gauss),
            float(np_gauss),
        ),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (np_kind, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss)
    )
    torch.set_rng_state(state["torch"].cpu())
    # A checkpoint taken without CUDA (or with another GPU count) leaves the CUDA generators as they are.
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save_training_state(
    path: str | os.PathLike,
    *,
    model: nn.Module | dict[str, Any],
    optimizer: torch.optim.Optimizer | dict[str, Any],
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    step: int,
    data_state: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> None:
    """Write everything a bit-exact resume needs to ``path``, atomically.

    ``model`` and ``optimizer`` may be given as their state dicts (e.g. FSDP's gathered full state dicts).
    Saved: the model, optimizer and scheduler state dicts, ``step``, ``data_state`` (e.g.
    ``ShardedBatches.state_dict()``), ``extra`` (plain values or tensors only), and the Python, numpy and
    torch CPU/CUDA RNG states of this process. Pass the bare module (``ddp.module``), and call this on every
    rank with its own ``path`` if ranks draw different random numbers (dropout, augmentation).

    The file is written to a temporary file in the same directory, fsynced and then renamed over ``path``, so
    a crash or error mid-write leaves the previous checkpoint intact; it gets the user's umask (0644 under 0022).
    """
    path = Path(path)
    payload = {
        "format_version": FORMAT_VERSION,
        "model": model if isinstance(model, dict) else model.state_dict(),
        "optimizer": optimizer if isinstance(optimizer, dict) else optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "step": int(step),
        "data_state": data_state,
        "extra": extra or {},
        "rng": _rng_state(),
    }
    with staged_file(path) as tmp, open(tmp, "wb") as f:
        torch.save(payload, f)


def load_training_state(
    path: str | os.PathLike,
    model: nn.Module | None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Restore a :func:`save_training_state` file into model, optimizer, scheduler and the global RNGs.

    Loaded with ``weights_only=True``. The RNG states are restored last, so the next random draw is the one
    that followed the save. Optimizer state moves to its parameters' devices (``Optimizer.load_state_dict``).

    With ``model`` None neither model nor optimizer is restored; their state dicts are returned instead (under
    ``"model"`` and ``"optimizer"``) for the caller to apply, e.g. to an FSDP-sharded model.

    Returns:
        ``{"step": int, "data_state": dict, "extra": dict}``
    """
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{os.fspath(path)}: no such training checkpoint") from None
    except (RuntimeError, EOFError, pickle.UnpicklingError) as err:
        # A truncated or foreign file: torch's message names neither the file nor what it expected.
        raise ValueError(f"{os.fspath(path)}: not a readable training checkpoint ({err})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{os.fspath(path)}: not a training checkpoint (holds a {type(state).__name__})")
    if state.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unknown checkpoint format {state.get('format_version')!r}")
    if model is not None:
        model.load_state_dict(state["model"])
    if model is not None and optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        if state["scheduler"] is None:
            raise ValueError(f"{path} holds no scheduler state")
        scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    result = {"step": state["step"], "data_state": state["data_state"], "extra": state["extra"]}
    if model is None:
        result.update(model=state["model"], optimizer=state["optimizer"])
    return result
