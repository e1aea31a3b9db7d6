"""from_pretrained / save_pretrained for transformers-style folders, hub ids and DeepMind's original files."""

from __future__ import annotations

import copy
import inspect
import json
import os
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from perceiver_io.checkpoints.files import staged_files
from perceiver_io.checkpoints.hub import HubOptions, resolve_source
from perceiver_io.checkpoints.safe_pickle import CheckpointFormatError
from perceiver_io.checkpoints.transformers_names import name_table
from perceiver_io.config import PerceiverConfig, read_config_dict, to_torch_dtype
from perceiver_io.model import no_init_weights

DEEPMIND_SUFFIXES = (".pickle", ".pystate", ".pkl")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
HUB_PATTERNS = ["config.json", "*.safetensors", "model.safetensors.index.json", "pytorch_model.bin"]
# transformers' prefix of the base model inside every head (``base_model_prefix``).
BASE_PREFIX = "perceiver."


class CheckpointMismatchError(ValueError, RuntimeError):
    """The checkpoint's tensors do not fit the model (missing, unexpected or mis-shaped ones). A ValueError, and a
    RuntimeError as transformers raises for the same case."""


def load_pretrained(
    cls: type,
    source: str | os.PathLike | None,
    *,
    config: PerceiverConfig | str | os.PathLike | None = None,
    state_dict: Mapping[str, torch.Tensor] | None = None,
    hub: HubOptions | None = None,
    ignore_mismatched_sizes: bool = False,
    dtype: torch.dtype | str | None = None,
    device: torch.device | None = None,
    output_loading_info: bool = False,
    **kwargs: Any,
) -> nn.Module | tuple[nn.Module, dict[str, Any]]:
    """``cls.from_pretrained``: see ``PerceiverPreTrainedModel.from_pretrained`` for the keywords.

    ``kwargs`` are config overrides, then (for ``PerceiverModel``) constructor arguments; any other raises.
    """
    if torch.empty(0).device.type == "meta":
        raise RuntimeError(
            "You are using `from_pretrained` with a meta device context manager (torch.device('meta')): the "
            "weights would be read and then dropped; leave the context, or build the model there without weights"
        )
    hub = hub if hub is not None else HubOptions()
    if source is None:
        hub.check_local("the state_dict given")  # no files to fetch: hub keywords would be ignored
        return _load_state_dict_only(cls, config, state_dict, ignore_mismatched_sizes, dtype, device,
                                     output_loading_info, kwargs)  # fmt: skip
    path = Path(source)
    if path.is_file() and path.suffix in DEEPMIND_SUFFIXES:
        return _load_deepmind_file(
            cls, path, config, hub, ignore_mismatched_sizes, dtype, device, output_loading_info, kwargs
        )
    if path.is_file():
        raise ValueError(
            f"{path} is a file; expected a model folder (config.json + weights) or a DeepMind "
            f"checkpoint ending in {DEEPMIND_SUFFIXES}"
        )
    folder = resolve_source(source, hub, HUB_PATTERNS)
    stored = read_config_dict(folder / "config.json") if (folder / "config.json").is_file() else None
    if config is None:
        if stored is None:
            raise FileNotFoundError(f"{folder} has no config.json; pass config= or a complete model folder")
        config, rest = PerceiverConfig._from_dict(stored, folder / "config.json", True, kwargs)
        config.name_or_path = str(source)
    elif isinstance(config, PerceiverConfig):
        _refuse_config_overrides(kwargs)
        config, rest = copy.deepcopy(config), kwargs
    elif isinstance(config, str | os.PathLike):
        config, rest = PerceiverConfig.from_pretrained(config, return_unused_kwargs=True, **kwargs)
    else:
        raise TypeError(f"config must be a PerceiverConfig or a folder/file path; got {type(config).__name__}")
    held = ((stored or {}).get("architectures") or [None])[0]
    state = read_weights(folder) if state_dict is None else dict(state_dict)
    fit = {"ignore_mismatched_sizes": ignore_mismatched_sizes, "strict": held in (None, cls.__name__), "held": held}
    constructor_kwargs = _constructor_kwargs(cls, rest)
    # The fit is checked on a model without storage first: a config.json whose widths do not match the weights
    # (a typo of 10**12) is refused before its tensors are allocated.
    with torch.device("meta"), no_init_weights():
        skeleton = cls(config, **constructor_kwargs)
        state = in_transformers_names(skeleton, state)
        check_fit(skeleton, state, source=folder, **fit)
    with no_init_weights():  # every parameter is loaded or initialised below
        model = cls(config, **constructor_kwargs)
    info = load_transformers_state_dict(model, state, source=folder, **fit)
    model = _place(model, _resolve_dtype(dtype, config, state), device)
    return (model, info) if output_loading_info else model


def _load_state_dict_only(
    cls: type,
    config: Any,
    state_dict: Mapping[str, torch.Tensor] | None,
    ignore_mismatched_sizes: bool,
    dtype: torch.dtype | str | None,
    device: torch.device | None,
    output_loading_info: bool,
    kwargs: dict[str, Any],
) -> nn.Module | tuple[nn.Module, dict[str, Any]]:
    """``from_pretrained(None, config=config, state_dict=weights)``: nothing read from disk."""
    if not isinstance(config, PerceiverConfig) or state_dict is None:
        raise TypeError(
            "from_pretrained(None, ...) needs config= (a PerceiverConfig) and state_dict=; got "
            f"config={type(config).__name__}, state_dict={type(state_dict).__name__}"
        )
    _refuse_config_overrides(kwargs)
    constructor_kwargs = _constructor_kwargs(cls, kwargs)
    state = dict(state_dict)
    with no_init_weights():
        model = cls(copy.deepcopy(config), **constructor_kwargs)
    state = in_transformers_names(model, state)
    info = load_transformers_state_dict(model, state, ignore_mismatched_sizes=ignore_mismatched_sizes)
    model = _place(model, _resolve_dtype(dtype, model.config, state), device)
    return (model, info) if output_loading_info else model


def _refuse_config_overrides(kwargs: dict[str, Any]) -> None:
    """Config keys beside a ``config=`` object would be ignored by it: raise instead."""
    overrides = sorted(k for k in kwargs if PerceiverConfig.is_config_key(k))
    if overrides:
        raise TypeError(f"config keys {overrides} were passed along with config=; set them on that config")


def _load_deepmind_file(
    cls: type,
    path: Path,
    config: Any,
    hub: HubOptions,
    ignore_mismatched_sizes: bool,
    dtype: torch.dtype | str | None,
    device: torch.device | None,
    output_loading_info: bool,
    kwargs: dict[str, Any],
) -> nn.Module | tuple[nn.Module, dict[str, Any]]:
    """A DeepMind file fixes the architecture and holds every weight: keywords that choose either raise."""
    from perceiver_io.checkpoints.deepmind import load_deepmind

    hub.check_local(path)
    inapplicable = [
        name
        for name, given in (
            ("config", config is not None),
            ("ignore_mismatched_sizes", ignore_mismatched_sizes),
            ("subfolder", bool(hub.subfolder)),
        )
        if given
    ]
    inapplicable += sorted(k for k in kwargs if not PerceiverConfig.is_config_key(k))
    if inapplicable:
        raise TypeError(f"{inapplicable} do not apply to DeepMind checkpoint {path.name} (its file fixes the model)")
    model = load_deepmind(cls, path, **kwargs)
    model = _place(model, torch.float32 if dtype == "auto" else dtype, device)  # DeepMind's arrays are float32
    info = {"missing_keys": set(), "unexpected_keys": set(), "mismatched_keys": set(), "error_msgs": []}
    return (model, info) if output_loading_info else model


def _constructor_kwargs(cls: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keywords ``cls(config, ...)`` takes besides ``config`` (e.g. PerceiverModel's ``decoder``); any other
    keyword raises TypeError naming it, as transformers' ``from_pretrained`` does through the constructor."""
    params = inspect.signature(cls.__init__).parameters
    accepted = {n for n, p in params.items() if n not in ("self", "config") and p.kind is not p.VAR_KEYWORD}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise TypeError(
            f"{cls.__name__}.from_pretrained() got unexpected keyword argument(s) {unknown}: they are neither "
            f"loading options, PerceiverConfig keys nor {cls.__name__} constructor arguments"
            + (f" ({sorted(accepted)})" if accepted else "")
        )
    return kwargs


def _resolve_dtype(
    dtype: torch.dtype | str | None, config: PerceiverConfig, state: dict[str, torch.Tensor]
) -> torch.dtype:
    """transformers' rule: None or "auto" → the config's dtype, else the checkpoint's first floating dtype."""
    if dtype is None or dtype == "auto":
        if config.dtype is not None:
            return config.dtype
        floating = [t.dtype for t in state.values() if t.is_floating_point()]
        return floating[0] if floating else torch.get_default_dtype()
    return to_torch_dtype(dtype, "dtype")


def _place(model: nn.Module, dtype: torch.dtype | str | None, device: torch.device | None) -> nn.Module:
    """Cast and move the loaded model; the config records the dtype, as transformers' does."""
    if dtype is not None:
        dtype = to_torch_dtype(dtype, "dtype")
        model.to(dtype=dtype)
        model.config.dtype = dtype
    if device is not None:
        model.to(device=device)
    return model.eval()


def one_device(device_map: Any, device: Any) -> torch.device | None:
    """The single device that ``device_map`` / ``device`` name (transformers' spellings: "cpu", "cuda:1", 0,
    torch.device, {"": "cpu"}, "auto" = the first CUDA device if there is one, else the CPU). A map spreading the
    model over several devices raises: our models load on one."""
    if device_map is not None and device is not None:
        raise ValueError("pass device_map or device, not both")
    where = device if device is not None else device_map
    if where is None:
        return None
    if isinstance(where, dict):
        places = {str(_as_device(v)) for v in where.values()}
        if len(places) != 1:
            raise ValueError(f"device_map={where!r} spreads the model over {sorted(places)}; we load on one device")
        return _as_device(next(iter(where.values())))
    if where == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if where in ("balanced", "balanced_low_0", "sequential"):
        raise ValueError(f"device_map={where!r} spreads a model over devices; pass one device (e.g. 'cpu' or 0)")
    return _as_device(where)


def _as_device(value: Any) -> torch.device:
    if isinstance(value, bool) or not isinstance(value, str | int | torch.device):
        raise TypeError(f"a device must be a name, an index or a torch.device; got {value!r}")
    try:
        device = torch.device("cuda", value) if isinstance(value, int) else torch.device(value)
    except RuntimeError as err:
        raise ValueError(f"{value!r} is not a device: {err}") from None
    if device.type in ("meta", "disk"):
        raise ValueError(f"cannot load weights onto the {device.type!r} device")
    return device


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The state dict in a transformers folder: safetensors (single or sharded) first, else a .bin read safely.

    A file that cannot be read (truncated, garbled) raises ``CheckpointFormatError`` naming it."""
    if (folder / "model.safetensors").is_file():
        return _read_weight_file(folder / "model.safetensors")
    index_path = folder / "model.safetensors.index.json"
    if index_path.is_file():
        try:
            shards = sorted(set(json.loads(index_path.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            why = f"{type(err).__name__}: {err}"
            raise CheckpointFormatError(f"{index_path}: not a safetensors index ({why})") from None
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(_read_weight_file(folder / shard))
        return state
    if (folder / "pytorch_model.bin").is_file():
        return _read_weight_file(folder / "pytorch_model.bin")
    raise FileNotFoundError(f"{folder} has no weights: expected one of {WEIGHT_FILES}")


def _read_weight_file(path: Path) -> dict[str, torch.Tensor]:
    """One safetensors or .bin file → tensors; any failure of the readers becomes an error naming the file."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    try:
        if path.suffix == ".bin":
            _check_zip_crcs(path)
            # weights_only refuses any pickled object other than tensors and plain containers.
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            state = load_file(path)
    except CheckpointFormatError:
        raise
    except Exception as err:  # the readers raise their own types (SafetensorError, UnpicklingError, RuntimeError)
        raise CheckpointFormatError(f"{path}: cannot be read as weights ({type(err).__name__}: {err})") from None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointFormatError(f"{path}: expected a mapping of names to tensors; got {type(state).__name__}")
    return state


def load_transformers_state_dict(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    *,
    ignore_mismatched_sizes: bool = False,
    strict: bool = True,
    held: str | None = None,
    source: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Load a state dict spelled with transformers' names; return transformers' loading info
    ``{"missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"}``.

    A head's checkpoint loads into a bare ``PerceiverModel`` and back (the ``perceiver.`` prefix is dropped or
    added, as transformers does). ``strict`` (a checkpoint of this very class): a missing or unexpected key raises.
    Otherwise (``held`` names another class, e.g. a masked-LM checkpoint fine-tuned as a sequence classifier) the
    shared weights load, missing tensors get ``init_weights``' values and unexpected ones are dropped, with a
    warning listing both. A tensor whose shape differs raises, or with ``ignore_mismatched_sizes`` is initialised
    afresh (with a warning listing it). ``source`` (the folder the weights came from) prefixes any error.
    """
    by_hf, state, missing, unexpected, mismatched, which = check_fit(
        model, state, ignore_mismatched_sizes=ignore_mismatched_sizes, strict=strict, held=held, source=source
    )
    fresh = set(missing) | {k for k, _, _ in mismatched}
    _init_owners(model, [by_hf[hf] for hf in fresh])
    converted = {k: state[hf] for hf, k in by_hf.items() if hf in state and hf not in fresh}
    current = model.state_dict()
    for k, v in current.items():
        converted.setdefault(k, v)  # freshly initialised, or num_batches_tracked if the file lacks it
    model.load_state_dict(converted, strict=True)
    notes = [
        _listing("newly initialised (train them before use)", sorted(set(missing))),
        _listing("unused checkpoint", unexpected),
        _listing(
            "mis-shaped and initialised afresh (ignore_mismatched_sizes=True)",
            [f"{k}: checkpoint {a} vs model {b}" for k, a, b in mismatched],
        ),
    ]
    notes = [n for n in notes if n]
    if notes:
        warnings.warn(f"{which}:\n" + "\n".join(notes), UserWarning, stacklevel=4)
    return {
        "missing_keys": set(missing),
        "unexpected_keys": set(unexpected),
        "mismatched_keys": set(mismatched),
        "error_msgs": [],
    }


def in_transformers_names(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` spelled with transformers' names: a state dict in ``model``'s own names (``state_dict()`` of a
    perceiver_io model, as transformers' tests pass to ``from_pretrained(state_dict=...)``) is translated."""
    table = name_table(model)
    if state and set(state) <= set(table):
        return {table[k]: v for k, v in state.items()}
    return state


def check_fit(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    *,
    ignore_mismatched_sizes: bool = False,
    strict: bool = True,
    held: str | None = None,
    source: str | os.PathLike | None = None,
) -> tuple[dict[str, str], dict[str, torch.Tensor], list[str], list[str], list[tuple], str]:
    """Raise ValueError (naming ``source``) if ``state`` does not fit ``model`` under the rules of
    ``load_transformers_state_dict``; else return what loading needs: ({transformers key: our key}, the state
    with its prefix matched, missing, unexpected and mis-shaped keys, the description of the load).

    Reads only names and shapes: ``model`` may live on the meta device."""
    table = name_table(model)
    ours = model.state_dict()
    by_hf = {hf: k for k, hf in table.items()}
    state, file_names = _match_prefix(state, by_hf)
    missing = sorted(hf for hf in by_hf if hf not in state and not hf.endswith("num_batches_tracked"))
    unexpected = sorted(file_names[k] for k in state if k not in by_hf)
    mismatched = sorted(
        (hf, tuple(state[hf].shape), tuple(ours[k].shape))
        for hf, k in by_hf.items()
        if hf in state and state[hf].shape != ours[k].shape
    )
    name = type(model).__name__
    which = f"the checkpoint holds a {held}, loaded as {name}" if held not in (None, name) else f"loading {name}"
    if source is not None:
        which = f"{source}: {which}"
    problems = []
    if strict:
        problems += [_listing("missing", missing), _listing("unexpected", unexpected)]
    if not ignore_mismatched_sizes:
        problems.append(_listing("mis-shaped", [f"{k}: checkpoint {a} vs model {b}" for k, a, b in mismatched]))
    problems = [p for p in problems if p]
    if problems:
        hint = "\npass ignore_mismatched_sizes=True to initialise the mis-shaped tensors afresh" if mismatched else ""
        listing = "\n".join(problems)
        raise CheckpointMismatchError(f"{which}: the checkpoint does not fit this config:\n{listing}{hint}")
    return by_hf, state, missing, unexpected, mismatched, which


def _match_prefix(
    state: dict[str, torch.Tensor], model_keys: dict[str, str]
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Drop (bare model, head checkpoint) or add (head, bare checkpoint) transformers' ``perceiver.`` prefix;
    returns the renamed state and {new name: name in the file} (reports use the file's names, as transformers')."""
    model_prefixed = any(k.startswith(BASE_PREFIX) for k in model_keys)
    state_prefixed = any(k.startswith(BASE_PREFIX) for k in state)
    if state_prefixed and not model_prefixed:
        names = {k.removeprefix(BASE_PREFIX) if k.startswith(BASE_PREFIX) else k: k for k in state}
    elif model_prefixed and not state_prefixed:
        names = {BASE_PREFIX + k: k for k in state}
    else:
        names = {k: k for k in state}
    return {new: state[old] for new, old in names.items()}, names


def _init_owners(model: nn.Module, keys: list[str]) -> None:
    """Apply ``init_weights``' rule to the modules that own ``keys`` (the loader then restores the loaded ones)."""
    modules = dict(model.named_modules())
    for owner in sorted({k.rpartition(".")[0] for k in keys}):
        model._init_weights(modules[owner])


def _listing(title: str, items: list[str]) -> str:
    if not items:
        return ""
    shown = "\n  ".join(items[:20]) + (f"\n  … and {len(items) - 20} more" if len(items) > 20 else "")
    return f"{len(items)} {title} key(s):\n  {shown}"


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
    config.architectures = [type(model).__name__]
    config.dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    # The weights are renamed into place first: a config naming weights that are not there yet would be a
    # folder that looks like a model but is not one.
    with staged_files([directory / "model.safetensors", directory / "config.json"]) as (weights, config_file):
        save_file(transformers_state_dict(model), weights, metadata={"format": "pt"})
        config_file.write_text(config.to_json_string(use_diff=False), encoding="utf-8")


def load_model(source: str | os.PathLike, **config_overrides: Any) -> nn.Module:
    """Load any Perceiver checkpoint, choosing the head class the checkpoint was saved from."""
    import perceiver_io

    path = Path(source)
    if path.is_file() and path.suffix in DEEPMIND_SUFFIXES:
        from perceiver_io.checkpoints.deepmind import load_deepmind

        return load_deepmind(None, path, **config_overrides)
    folder = resolve_source(source, HubOptions(), HUB_PATTERNS)
    architectures = read_config_dict(folder / "config.json").get("architectures") or []
    heads = [a for a in architectures if a in perceiver_io.__all__ and a.startswith("PerceiverFor")]
    if not heads:
        raise ValueError(f"{folder}/config.json names no Perceiver head in 'architectures' ({architectures})")
    return getattr(perceiver_io, heads[0]).from_pretrained(folder, **config_overrides)


def _check_zip_crcs(path: Path) -> None:
    """Raise if a member of a zip-format .bin fails its CRC: torch.load does not check them, so a flipped byte in
    the tensor data would load as silently wrong weights. Costs about one more read of the file (~2 GB/s).
    Legacy (pre-1.6, non-zip) .bin files carry no checksum and pass unchecked."""
    if not zipfile.is_zipfile(path):
        return
    with zipfile.ZipFile(path) as archive:
        bad = archive.testzip()
    if bad is not None:
        raise CheckpointFormatError(f"{path}: member {bad!r} fails its CRC check: the file is corrupted")
