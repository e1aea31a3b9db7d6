"""from_pretrained / save_pretrained for transformers-style folders, hub ids and DeepMind's original files."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from perceiver_io.checkpoints.files import staged_files
from perceiver_io.checkpoints.transformers_names import name_table
from perceiver_io.config import PerceiverConfig
from perceiver_io.model import no_init_weights

DEEPMIND_SUFFIXES = (".pickle", ".pystate", ".pkl")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def load_pretrained(cls: type, source: str | os.PathLike, **config_overrides: Any) -> nn.Module:
    path = Path(source)
    if path.is_file() and path.suffix in DEEPMIND_SUFFIXES:
        from perceiver_io.checkpoints.deepmind import load_deepmind

        return load_deepmind(cls, path, **config_overrides)
    if path.is_file():
        raise ValueError(
            f"{path} is a file; expected a model folder (config.json + weights) or a DeepMind "
            f"checkpoint ending in {DEEPMIND_SUFFIXES}"
        )
    if not path.is_dir():
        path = _download(str(source))
    config = PerceiverConfig.load(path, **config_overrides)
    architectures = config.extra.get("architectures") or []
    if architectures and cls.__name__ not in architectures and cls.__name__ != "PerceiverModel":
        raise ValueError(f"{path} holds a {architectures[0]}; it cannot be loaded as {cls.__name__}")
    with no_init_weights():  # every parameter is loaded below, and a missing one raises
        model = cls(config)
    load_transformers_state_dict(model, read_weights(path))
    return model.eval()


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The state dict in a transformers folder: safetensors (single or sharded) first, else a .bin read safely."""
    from safetensors.torch import load_file

    if (folder / "model.safetensors").is_file():
        return load_file(folder / "model.safetensors")
    if (folder / "model.safetensors.index.json").is_file():
        index = json.loads((folder / "model.safetensors.index.json").read_text())
        state: dict[str, torch.Tensor] = {}
        for shard in sorted(set(index["weight_map"].values())):
            state.update(load_file(folder / shard))
        return state
    if (folder / "pytorch_model.bin").is_file():
        # weights_only refuses any pickled object other than tensors and plain containers.
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{folder} has no weights: expected one of {WEIGHT_FILES}")


def load_transformers_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a state dict spelled with transformers' names; raise listing every missing/unexpected/mis-shaped key."""
    table = name_table(model)
    ours = model.state_dict()
    by_hf = {hf: k for k, hf in table.items()}
    missing = [hf for hf in by_hf if hf not in state and not hf.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in by_hf]
    misshaped = [
        f"{hf}: checkpoint {tuple(state[hf].shape)} vs model {tuple(ours[k].shape)}"
        for hf, k in by_hf.items()
        if hf in state and state[hf].shape != ours[k].shape
    ]
    if missing or unexpected or misshaped:
        parts = []
        for title, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if items:
                shown = "\n  ".join(items[:20]) + (f"\n  … and {len(items) - 20} more" if len(items) > 20 else "")
                parts.append(f"{len(items)} {title} key(s):\n  {shown}")
        raise ValueError(f"checkpoint does not fit {type(model).__name__} with this config:\n" + "\n".join(parts))
    cast = sorted({str(state[hf].dtype) for hf in by_hf if hf in state and state[hf].dtype != ours[by_hf[hf]].dtype})
    if cast:
        warnings.warn(f"checkpoint tensors of dtype {cast} were cast to the model's dtype", stacklevel=3)
    converted = {k: state[hf] for hf, k in by_hf.items() if hf in state}
    for k, v in ours.items():
        converted.setdefault(k, v)  # num_batches_tracked, if the file lacks it
    model.load_state_dict(converted, strict=True)


def transformers_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Our state dict, renamed to transformers' keys."""
    state = model.state_dict()
    return {hf: state[k].detach().contiguous() for k, hf in name_table(model).items()}


def save_pretrained(model: nn.Module, directory: str | os.PathLike) -> None:
    """config.json + model.safetensors that transformers' ``from_pretrained`` loads.

    Both files are written in full to hidden temporary files first and then renamed over the old ones, so a
    process killed while saving leaves the previous model loadable; they get the user's umask (0644 under
    0022), like any file the user writes.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config: PerceiverConfig = model.config
    config.extra["architectures"] = [type(model).__name__]
    # The weights are renamed into place first: a config naming weights that are not there yet would be a
    # folder that looks like a model but is not one.
    with staged_files([directory / "model.safetensors", directory / "config.json"]) as (weights, config_file):
        save_file(transformers_state_dict(model), weights, metadata={"format": "pt"})
        # The same text as PerceiverConfig.save writes.
        config_file.write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _download(repo_id: str) -> Path:
    if repo_id.count("/") != 1 or repo_id.startswith((".", "/")):
        raise FileNotFoundError(f"{repo_id!r} is neither a model folder, a DeepMind file nor a hub id (owner/name)")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ImportError(f"loading {repo_id!r} from the hub needs `pip install perceiver_io[hub]`") from None
    try:
        folder = snapshot_download(repo_id, allow_patterns=["config.json", "*.safetensors", "*.json", "*.bin"])
    except Exception as err:  # the hub client raises many types (offline, 404, auth); all mean "cannot fetch"
        raise OSError(
            f"could not fetch {repo_id!r} from the Hugging Face hub ({type(err).__name__}: {err}). Check the "
            "network (or HF_HUB_OFFLINE) or pass a local folder or DeepMind checkpoint file instead."
        ) from None
    return Path(folder)


def load_model(source: str | os.PathLike, **config_overrides: Any) -> nn.Module:
    """Load any Perceiver checkpoint, choosing the head class the checkpoint was saved from."""
    import perceiver_io

    path = Path(source)
    if path.is_file() and path.suffix in DEEPMIND_SUFFIXES:
        from perceiver_io.checkpoints.deepmind import load_deepmind

        return load_deepmind(None, path, **config_overrides)
    folder = path if path.is_dir() else _download(str(source))
    architectures = PerceiverConfig.load(folder).extra.get("architectures") or []
    heads = [a for a in architectures if a in perceiver_io.__all__ and a.startswith("PerceiverFor")]
    if not heads:
        raise ValueError(f"{folder}/config.json names no Perceiver head in 'architectures' ({architectures})")
    return getattr(perceiver_io, heads[0]).from_pretrained(folder, **config_overrides)
