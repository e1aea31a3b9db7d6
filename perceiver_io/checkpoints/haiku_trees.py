"""Haiku parameter trees for tests and tools: read tree listings, fill them with arrays, write Haiku pickles.

The tree listings (``collection<TAB>module/param<TAB>shape<TAB>dtype``, one array a line) describe DeepMind's
released checkpoints. `write_haiku_pickle` writes a tree the way Haiku pickles it, ``FlatMapping`` global
included, without Haiku installed, so that loaders can be tested on files shaped like the real ones.
"""

from __future__ import annotations

import ast
import math
import os
import pickle
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

# (collection, path, shape, dtype): collection is "params" or "state", path "module/param", dtype "float32".
ParamRow = tuple[str, str, tuple[int, ...], str]


def read_param_tree(tsv_path: str | os.PathLike[str]) -> list[ParamRow]:
    """Read a tree listing: lines ``params|state<TAB>module/param<TAB>(d0, d1, ...)<TAB>dtype``."""
    rows = []
    with open(tsv_path, encoding="utf-8") as file:
        for line_number, line in enumerate(file, 1):
            if not line.strip():
                continue
            fields = line.rstrip("\n").split("\t")
            shape = _parse_shape(fields[2]) if len(fields) == 4 else None
            if shape is None or fields[0] not in ("params", "state"):
                raise ValueError(
                    f"{tsv_path}:{line_number}: expected "
                    f"'params|state<TAB>module/param<TAB>(shape)<TAB>dtype', got {line!r}"
                )
            rows.append((fields[0], fields[1], shape, fields[3]))
    return rows


def _parse_shape(text: str) -> tuple[int, ...] | None:
    try:
        shape = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
        return None
    return shape


def random_params_from_tree(rows: Iterable[ParamRow], seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Random ``(params, state)`` with the listed paths, shapes and dtypes, reproducible from ``seed``.

    Values are scaled like a trained network's (weights ~ 1/sqrt(fan_in), norm scales near 1, positive
    BatchNorm variances, positive int32 EMA counters) so that a forward pass through them stays finite.
    """
    rng = np.random.default_rng(seed)
    params: dict[str, np.ndarray] = {}
    state: dict[str, np.ndarray] = {}
    for collection, path, shape, dtype in rows:
        target = params if collection == "params" else state
        target[path] = _random_array(rng, path, shape, np.dtype(dtype))
    return params, state


def _random_array(rng: np.random.Generator, path: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    module, _, name = path.rpartition("/")
    if dtype.kind in "iu":  # Haiku's EMA counters: how many updates the average has seen
        return np.asarray(rng.integers(1, 100_000, size=shape), dtype=dtype)
    if module.endswith("var_ema"):  # running variances (average and its debiasing hidden value)
        return rng.uniform(0.5, 1.5, size=shape).astype(dtype)
    values = rng.standard_normal(size=shape, dtype=np.float32)
    if name == "w":  # Linear [in, out] and Conv2D [h, w, in, out] kernels
        values *= 1.0 / math.sqrt(max(1, math.prod(shape[:-1])))
    elif name == "scale":  # LayerNorm / BatchNorm
        values = 1.0 + 0.1 * values
    else:  # biases, offsets, embeddings, position encodings, EMA means
        values *= 0.1
    return values.astype(dtype, copy=False)


# ---------------------------------------------------------------------------------------------------------
# Writing pickles the way Haiku does
# ---------------------------------------------------------------------------------------------------------


class _FlatMapping:
    """Stand-in for Haiku's ``FlatMapping``: it pickles as Haiku's does, ``FlatMapping(mapping)``."""

    # The names the pickle records; `_HaikuPickler` writes them without importing Haiku.
    __module__ = "haiku._src.data_structures"
    __qualname__ = "FlatMapping"

    def __init__(self, mapping: dict[str, Any]) -> None:
        self.mapping = mapping

    def __reduce__(self) -> tuple[type, tuple[dict[str, Any]]]:
        return type(self), (self.mapping,)


# The C Pickler imports every class it writes to check it, which fails for Haiku's without Haiku; the
# pure-Python Pickler (the reference implementation, same output) lets us write that one reference by name.
class _HaikuPickler(pickle._Pickler):
    def save_global(self, obj: Any, name: str | None = None) -> None:
        if obj is not _FlatMapping:
            super().save_global(obj, name)
            return
        # What pickle writes for an importable class (Pickler.save_global), without the import check.
        module, qualname = _FlatMapping.__module__, _FlatMapping.__qualname__
        if self.proto >= 4:
            self.save(module)
            self.save(qualname)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode())
        self.memoize(obj)


def write_haiku_pickle(
    path: str | os.PathLike[str],
    params: Mapping[str, np.ndarray],
    state: Mapping[str, np.ndarray] | None = None,
    *,
    flatmapping: bool = True,
    protocol: int = pickle.DEFAULT_PROTOCOL,
) -> None:
    """Write flat ``{"module/param": array}`` dicts as a Haiku checkpoint pickle.

    ``state=None`` writes the params tree alone, as the MLM, flow and video files are; a state (even ``{}``)
    writes ``{'params': ..., 'state': ...}`` as the ImageNet files are. With ``flatmapping=True`` each tree
    level is a ``haiku._src.data_structures.FlatMapping``, byte for byte what Haiku writes for the same
    arrays and key order; with ``flatmapping=False`` the levels are plain dicts.
    """
    tree: Any = _nest(params, flatmapping)
    if state is not None:
        tree = {"params": tree, "state": _nest(state, flatmapping)}
    with open(path, "wb") as file:
        _HaikuPickler(file, protocol=protocol).dump(tree)


def _nest(flat: Mapping[str, np.ndarray], flatmapping: bool) -> dict[str, Any] | _FlatMapping:
    """``{"module/param": array}`` -> ``{module: {param: array}}``, keeping the order of first appearance."""
    modules: dict[str, dict[str, np.ndarray]] = {}
    for key, value in flat.items():
        module, _, param = key.rpartition("/")
        if not module or not param:
            raise ValueError(f"parameter key {key!r} is not of the form 'module/param'")
        modules.setdefault(module, {})[param] = value
    if not flatmapping:
        return modules
    return _FlatMapping({module: _FlatMapping(leaves) for module, leaves in modules.items()})
