"""Load DeepMind's Haiku checkpoint pickles without running code from them.

DeepMind released its Perceiver IO weights as Python pickles of Haiku parameter trees: nested
``haiku._src.data_structures.FlatMapping`` objects holding ``{module_path: {param_name: ndarray}}``, and, for
the ImageNet models, a plain ``{'params': ..., 'state': ...}`` dict around two such trees. ``pickle.load``
would call whatever callable a file names, so this module unpickles through an allow-list instead: Haiku's
mapping classes become ``dict``, a few NumPy reconstructors rebuild arrays and scalars, and any other global
is refused before it is imported or called. Neither Haiku nor JAX is needed.
"""

from __future__ import annotations

import collections
import io
import math
import mmap
import os
import pickle
import pickletools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np


class UnsafeCheckpointError(ValueError):
    """The pickle names a global outside the allow-list; it was refused and nothing from it was executed."""


class CheckpointFormatError(ValueError):
    """The data is not a complete pickle of a Haiku parameter tree (empty, truncated, another format...)."""


@dataclass
class HaikuCheckpoint:
    """Arrays of a Haiku checkpoint, keyed ``"module/path/param"`` as in DeepMind's parameter trees."""

    params: dict[str, np.ndarray]
    state: dict[str, np.ndarray] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------
# The allow-list
# ---------------------------------------------------------------------------------------------------------

# NumPy's own reconstructors, taken from what an array and a scalar pickle to. This picks the right objects
# under NumPy 1.x (``numpy.core``) and 2.x (``numpy._core``) without importing either private module.
_NP_RECONSTRUCT = np.empty(0).__reduce__()[0]  # ndarray, pickle protocols 2-4
_NP_FROMBUFFER = np.empty(0).__reduce_ex__(5)[0]  # ndarray, pickle protocol 5
_NP_SCALAR = np.float32(0).__reduce__()[0]  # numpy scalars such as np.float32(1.0)


def _latin1_encode(text: str, encoding: str) -> bytes:
    """Stand-in for ``_codecs.encode``: protocol-2 pickles store ``bytes`` as ``encode(str, 'latin1')``."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafeCheckpointError(
            f"refused _codecs.encode({type(text).__name__}, {encoding!r}): only the latin-1 encoding of a "
            "str, which pickle protocol 2 uses for bytes, is allowed; nothing was executed"
        )
    return text.encode("latin-1")


def _numpy_from_jax_pickle(reconstruct: Any, args: Any, array_state: Any, aval_state: Any) -> np.ndarray:
    """Stand-in for JAX's array unpickling: rebuild the NumPy array that a JAX array pickle wraps.

    JAX arrays pickle as ``(jax_reconstruct, (np_reconstruct, args, array_state, aval_state))``, where the
    first three are the NumPy array's own reduce triple. ``aval_state`` (weak type) is dropped.
    """
    del aval_state
    if reconstruct is not _NP_RECONSTRUCT:
        raise UnsafeCheckpointError(
            f"refused a JAX array pickle whose inner reconstructor is {reconstruct!r} rather than NumPy's "
            "_reconstruct; nothing was executed"
        )
    array = reconstruct(*args)
    array.__setstate__(array_state)
    return array


_HAIKU_MAPPINGS = (
    "FlatMapping",  # haiku >= 0.0.3: FlatMapping, and FlatMap (>= 0.0.5), pickle to this name
    "FlatMap",
    "frozendict",  # haiku 0.0.1-0.0.2
)

_ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any]] = {
    **{("haiku._src.data_structures", name): dict for name in _HAIKU_MAPPINGS},
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _NP_RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _NP_RECONSTRUCT,
    ("numpy.core.numeric", "_frombuffer"): _NP_FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _NP_FROMBUFFER,
    ("numpy.core.multiarray", "scalar"): _NP_SCALAR,
    ("numpy._core.multiarray", "scalar"): _NP_SCALAR,
    ("_codecs", "encode"): _latin1_encode,
    # Haiku params straight from `init` are JAX arrays; these unwrap them to NumPy without importing JAX.
    ("jax._src.device_array", "reconstruct_device_array"): _numpy_from_jax_pickle,
    ("jax._src.array", "_reconstruct_array"): _numpy_from_jax_pickle,
}


class _AllowListUnpickler(pickle.Unpickler):
    """An unpickler that resolves globals from `_ALLOWED_GLOBALS` only and never imports anything."""

    def __init__(self, file: BinaryIO, source: str) -> None:
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"{self._source}: the pickle refers to the global {module}.{name}, which is not on the "
                "allow-list for Haiku checkpoints (Haiku mappings and NumPy array reconstructors); it was "
                "refused and nothing was imported or executed"
            ) from None


# ---------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------

# Leading bytes of formats that people mistake for checkpoints, to say what a file is instead.
_OTHER_FORMATS = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"PK\x03\x04", "a zip archive (a torch.save file, an .npz or similar)"),
    (b"\x1f\x8b", "gzip-compressed data"),
    (b"\x93NUMPY", "a NumPy .npy file"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file"),
)

_EXPECTED = "expected a Haiku checkpoint pickle ({module_path: {param_name: array}}, protocol 2 or later)"


def _describe_format(head: bytes) -> str:
    for magic, description in _OTHER_FORMATS:
        if head.startswith(magic):
            return description
    # safetensors: an 8-byte little-endian header length, then the JSON header.
    if head[8:9] == b"{":
        return "a safetensors file"
    return f"not a pickle of protocol 2 or later (it starts with {head[:8]!r})"


def load_haiku_pickle(source: str | os.PathLike[str] | bytes | bytearray) -> HaikuCheckpoint:
    """Read a Haiku checkpoint pickle from a path or from bytes, executing nothing from it.

    Accepts params-only files (MLM, optical flow, video) and ``{'params', 'state'}`` files (ImageNet).
    Raises `UnsafeCheckpointError` for any global outside the allow-list and `CheckpointFormatError` for
    data that is not a complete pickle of nested dicts of numeric arrays.
    """
    if isinstance(source, bytes | bytearray):
        return _load(io.BytesIO(source), "<checkpoint bytes>")
    with open(source, "rb") as file:
        if os.fstat(file.fileno()).st_size == 0:
            return _load(file, os.fspath(source))  # mmap cannot map an empty file; _load reports it
        # Read through a memory map, which (like BytesIO) returns what is there when asked for more: a corrupt
        # length field then cannot make a buffered file read allocate gigabytes before failing.
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            return _load(mapped, os.fspath(source))


def _load(file: BinaryIO | mmap.mmap, name: str) -> HaikuCheckpoint:
    head = file.read(16)
    if not head:
        raise CheckpointFormatError(f"{name}: the file is empty; {_EXPECTED}")
    if head[:1] != pickle.PROTO:
        raise CheckpointFormatError(f"{name}: this is {_describe_format(head)}; {_EXPECTED}")
    file.seek(0)
    _check_memo_indices(file, name)
    file.seek(0)
    try:
        tree = _AllowListUnpickler(file, name).load()
    except CheckpointFormatError:
        raise
    except UnsafeCheckpointError as exc:
        if str(exc).startswith(name):
            raise
        # The stand-ins (_latin1_encode, _numpy_from_jax_pickle) do not know the file; the reader needs it.
        raise UnsafeCheckpointError(f"{name}: {exc}") from None
    except Exception as exc:  # the unpickler raises many types on bad data; all mean "not a valid pickle"
        # EOFError, or CPython's "pickle data was truncated", means the data stops early.
        problem = "truncated" if isinstance(exc, EOFError) or "truncated" in str(exc) else "corrupt"
        raise CheckpointFormatError(
            f"{name}: the pickle is {problem} ({type(exc).__name__}: {exc}); {_EXPECTED}"
        ) from exc
    if file.read(1):
        raise CheckpointFormatError(f"{name}: there are extra bytes after the end of the pickle; {_EXPECTED}")
    return _to_checkpoint(tree, name)


def _check_memo_indices(file: BinaryIO | mmap.mmap, name: str) -> None:
    """Refuse memo indices that no pickler writes, before the C unpickler sees them.

    The C unpickler grows its memo table to the largest index a PUT names, so one corrupt byte (an index near
    2**32) makes it allocate tens of gigabytes. Picklers number memo entries 0, 1, 2, ... in order, so an index
    beyond the entries stored so far means the data is corrupt. Scanning the opcodes executes nothing.
    """
    stored = 0
    try:
        for opcode, arg, position in pickletools.genops(file):
            if opcode.name == "MEMOIZE":
                stored += 1
            elif opcode.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                if arg > stored:
                    raise CheckpointFormatError(
                        f"{name}: the pickle is corrupt (memo index {arg} at byte {position}, where at most "
                        f"{stored} entries exist); {_EXPECTED}"
                    )
                stored = max(stored, arg + 1)
    except CheckpointFormatError:
        raise
    except Exception as exc:  # pickletools raises ValueError on unknown opcodes and short data, others on garbage
        short = ("not enough data", "remain", "exhausted")
        problem = "truncated" if any(word in str(exc) for word in short) else "corrupt"
        raise CheckpointFormatError(
            f"{name}: the pickle is {problem} ({type(exc).__name__}: {exc}); {_EXPECTED}"
        ) from exc


def _to_checkpoint(tree: Any, name: str) -> HaikuCheckpoint:
    # The ImageNet files wrap two trees in a plain dict; the other files are the params tree itself.
    if isinstance(tree, dict) and "params" in tree and set(tree) <= {"params", "state"}:
        params = _flatten(tree["params"], f"{name} ['params']")
        state = _flatten(tree.get("state", {}), f"{name} ['state']")
    else:
        params, state = _flatten(tree, name), {}
    if not params:
        raise CheckpointFormatError(f"{name}: the pickle holds no parameters; {_EXPECTED}")
    return HaikuCheckpoint(params=params, state=state)


def _flatten(tree: Any, where: str) -> dict[str, np.ndarray]:
    """``{module: {param: array}}`` -> ``{"module/param": array}``, checking every level."""
    if not isinstance(tree, dict):
        raise CheckpointFormatError(f"{where}: found a {type(tree).__name__}; {_EXPECTED}")
    flat = {}
    for module, leaves in tree.items():
        if not isinstance(module, str) or not isinstance(leaves, dict):
            raise CheckpointFormatError(
                f"{where}: entry {module!r} holds a {type(leaves).__name__}, not a dict of arrays; {_EXPECTED}"
            )
        for param, value in leaves.items():
            # Haiku parameter names never contain "/", so "module/param" splits back at the last "/".
            if not isinstance(param, str) or "/" in param:
                raise CheckpointFormatError(f"{where}: bad parameter name {param!r} in module {module!r}")
            key = f"{module}/{param}"
            if isinstance(value, np.generic):  # a NumPy scalar, e.g. a counter saved without its array
                value = np.asarray(value)
            if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
                kind = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
                raise CheckpointFormatError(f"{where}: {key} is {kind}, not a numeric array; {_EXPECTED}")
            flat[key] = value
    return flat


# ---------------------------------------------------------------------------------------------------------
# Which released model is it?
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Signature:
    """How to recognise one of the released checkpoints (names as in `perceiver_io.released.RELEASED`)."""

    name: str
    markers: Mapping[str, tuple[int, ...]]  # parameters that only this model has, with their shapes
    num_arrays: int  # in `params`
    num_params: int  # total elements in `params`
    num_state_arrays: int


# Counts from `jax.eval_shape` of the colab models' `init`, which match the released files.
_SIGNATURES = (
    _Signature(
        "language-perceiver",
        {"embed/embeddings": (262, 768), "embedding_decoder/bias": (262,)},
        457,
        201_108_230,
        0,
    ),
    _Signature(
        "vision-perceiver-learned",
        {"image_preprocessor/~_build_network_inputs/trainable_position_encoding/pos_embs": (50176, 256)},
        141,
        62_255_848,
        0,
    ),
    _Signature(
        "vision-perceiver-fourier",
        {
            # 261 = 3 RGB channels + 258 Fourier features: raw pixels are the only preprocessing.
            "perceiver_encoder/~/cross_attention/attention/linear_1/w": (261, 261),
            "classification_decoder/~/basic_decoder/output/w": (1024, 1000),
        },
        136,
        48_440_627,
        0,
    ),
    _Signature(
        "vision-perceiver-conv",
        {"image_preprocessor/~/conv2_d_downsample/~/conv/w": (7, 7, 3, 64)},
        139,
        48_646_522,
        6,
    ),
    _Signature(
        "optical-flow-perceiver",
        {"image_preprocessor/patches_linear/w": (54, 64), "flow_decoder/~/basic_decoder/output/w": (322, 2)},
        425,
        41_057_134,
        0,
    ),
    _Signature(
        "multimodal-perceiver",
        {
            "multimodal_decoder/~/basic_decoder/output/w": (1026, 512),
            "classification_postprocessor/linear/w": (512, 700),
        },
        183,
        19_858_855,
        0,
    ),
)


def identify_checkpoint(ckpt: HaikuCheckpoint, exact: bool = True) -> str:
    """Name the released model (e.g. ``'vision-perceiver-conv'``) whose parameter tree ``ckpt`` has.

    A model matches when all its marker parameters are present with their shapes; with ``exact`` the array and
    parameter counts must then equal the released file's (a caller that checks every array itself, such as the
    loader's name table, passes False to accept e.g. a model with fewer layers). Raises ValueError otherwise.
    """
    for signature in _SIGNATURES:
        if not all(key in ckpt.params and ckpt.params[key].shape == shape for key, shape in signature.markers.items()):
            continue
        counts = (len(ckpt.params), sum(math.prod(a.shape) for a in ckpt.params.values()), len(ckpt.state))
        if not exact:
            return signature.name
        expected = (signature.num_arrays, signature.num_params, signature.num_state_arrays)
        if counts != expected:
            raise ValueError(
                f"the checkpoint has the distinctive parameters of {signature.name} but {counts[0]} param "
                f"arrays, {counts[1]:,} parameters and {counts[2]} state arrays, where the released "
                f"checkpoint has {expected[0]}, {expected[1]:,} and {expected[2]}"
            )
        return signature.name
    known = ", ".join(signature.name for signature in _SIGNATURES)
    raise ValueError(
        f"the checkpoint ({len(ckpt.params)} param arrays) matches none of DeepMind's released Perceiver IO "
        f"models ({known}): none has all its distinctive parameters present with the expected shapes"
    )
