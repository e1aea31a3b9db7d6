"""Fuzzing checkpoint files: corrupted model.safetensors / pytorch_model.bin / config.json in a saved folder, and
DeepMind Haiku pickles (garbled, truncated, or calling os.system). Every load is refused naming the file, or
loads the model the reference describes (see tests/fuzzing.py)."""

from __future__ import annotations

import io
import json
import os
import pickle
import pickletools
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL_CONFIGS, randomize_, small_inputs
from fuzzing import FILE_REFUSAL_TYPES, Case, Tally, assert_no_failures, close, examples, fuzz, run_case
from hypothesis import strategies as st

import perceiver_io
from perceiver_io.checkpoints.deepmind import load_deepmind
from perceiver_io.checkpoints.haiku_trees import write_haiku_pickle
from perceiver_io.checkpoints.safe_pickle import load_haiku_pickle

HEAD = "PerceiverForSequenceClassification"
# Fields whose value fixes a weight shape: changing one must be refused (the weights no longer fit).
SHAPE_FIELDS = (
    "d_model",
    "d_latents",
    "num_latents",
    "num_self_attends_per_block",
    "max_position_embeddings",
    "vocab_size",
    "qk_channels",
    "v_channels",
    "cross_attention_widening_factor",
    "self_attention_widening_factor",
    "id2label",
)
# Fields that change the computation but no shape: a well-typed new value is another well-formed model.
OTHER_FIELDS = (
    "hidden_act",
    "attention_probs_dropout_prob",
    "use_query_residual",
    "num_blocks",
    "num_self_attention_heads",
    "num_cross_attention_heads",
)
GARBAGE = ("32", 32.5, None, True, [32], {}, -1, 0, 10**12, "gelu", 24, 33)


@pytest.fixture(scope="module")
def saved(transformers_module, tmp_path_factory):
    """(folder with config.json + model.safetensors, its bytes, transformers' logits on fixed inputs, inputs)."""
    torch.manual_seed(0)
    ref = randomize_(
        getattr(transformers_module, HEAD)(transformers_module.PerceiverConfig(**SMALL_CONFIGS[HEAD])), seed=4
    )
    folder = tmp_path_factory.mktemp("saved")
    ref.save_pretrained(folder)
    inputs = small_inputs(HEAD)
    with torch.no_grad():
        logits = ref(**inputs).logits
    bin_bytes = io.BytesIO()
    torch.save(ref.state_dict(), bin_bytes)
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    return {
        "files": files,
        "bin": bin_bytes.getvalue(),
        "logits": logits,
        "inputs": inputs,
        "defaults": transformers_module.PerceiverConfig().to_dict(),
    }


def write_folder(root: Path, files: dict[str, bytes]) -> Path:
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


def load_and_check(saved: dict, folder: Path):
    model = getattr(perceiver_io, HEAD).from_pretrained(folder)

    def check(model) -> str | None:
        with torch.no_grad():
            return close(model(**saved["inputs"]).logits, saved["logits"])

    return model, check


def safetensors_header(data: bytes) -> object:
    """The parsed JSON header of safetensors bytes, or None if the framing itself is broken (8-byte little-endian
    length, then that many bytes of UTF-8 JSON, then the data)."""
    if len(data) < 8:
        return None
    (n,) = struct.unpack("<Q", data[:8])
    if 8 + n > len(data):
        return None
    try:
        return json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


# ---------------------------------------------------------------------------------------------------------
# A saved transformers folder
# ---------------------------------------------------------------------------------------------------------

FOLDER_PLAN = st.fixed_dictionaries(
    {
        "target": st.sampled_from(["safetensors", "safetensors", "config", "config", "bin"]),
        "op": st.sampled_from(["truncate", "flip header", "flip anywhere", "replace header", "none"]),
        "position": st.floats(0, 1, exclude_max=True),
        "byte": st.integers(1, 255),
        "config_op": st.sampled_from(["invalid json", "wrong value", "missing field", "none"]),
        "field": st.sampled_from(SHAPE_FIELDS + OTHER_FIELDS),
        "value": st.sampled_from(GARBAGE),
        "header": st.sampled_from(
            [b"{}", b"[]", b'{"a": 1}', b"\xff\xfe", b'{"__metadata__": {"format": "pt"}}', b"null"]
        ),
    }
)


# The 10x profile still finds two open classes (issue 15 follow-up): a config.json with a field removed loads with
# that field's default (transformers does the same; whether to refuse it is undecided), and a shape field of a wrong
# value can still fail in Attention.__init__ with a message that does not name config.json.
DEEP_FOLDER_KNOWN = pytest.mark.xfail(strict=False, reason="config.json missing field takes its default; see comment")


@pytest.mark.parametrize(
    "slow", [False, pytest.param(True, marks=[pytest.mark.slow, DEEP_FOLDER_KNOWN])], ids=["ci", "slow"]
)
def test_fuzz_saved_folder(slow, saved, tmp_path, tmp_path_factory):
    tally = Tally(f"{HEAD}.from_pretrained(folder)")
    original = saved["files"]
    header = safetensors_header(original["model.safetensors"])
    config = json.loads(original["config.json"])

    def one(plan: dict) -> None:
        files = dict(original)
        kind, valid = "unchanged", True
        if plan["target"] == "bin":
            del files["model.safetensors"]
            data = bytearray(saved["bin"])
            i = int(plan["position"] * len(data))
            if plan["op"] == "truncate":
                data, kind = data[:i], "pytorch_model.bin truncated"
            elif plan["op"] != "none":
                data[i] ^= plan["byte"]
                kind = "pytorch_model.bin byte flipped"
            files["pytorch_model.bin"] = bytes(data)
            if kind != "unchanged":
                # Independent validity: a zip whose every member passes its CRC, else the file is corrupt.
                try:
                    with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
                        valid = z.testzip() is None
                except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError):
                    valid = False
            culprits = ("pytorch_model.bin",)
        elif plan["target"] == "safetensors":
            data = bytearray(original["model.safetensors"])
            n = 8 + struct.unpack("<Q", bytes(data[:8]))[0]
            op = plan["op"]
            if op == "truncate":
                data = data[: int(plan["position"] * len(data))]
            elif op == "flip header":
                data[int(plan["position"] * n)] ^= plan["byte"]
            elif op in ("flip anywhere", "replace header"):
                # A flip in the tensor data changes weights undetectably (safetensors has no checksum), so
                # "replace header" swaps in other JSON of the same framing instead.
                new = plan["header"]
                data = bytearray(struct.pack("<Q", len(new)) + new + bytes(data[n:]))
            kind = "model.safetensors " + {"none": "unchanged", "flip anywhere": "replace header"}.get(op, op)
            # Independent validity: the header parses to the original one and the data is all there.
            valid = safetensors_header(bytes(data)) == header and len(data) == len(original["model.safetensors"])
            files["model.safetensors"] = bytes(data)
            culprits = ("model.safetensors",)
        else:
            op = plan["config_op"]
            new_config = dict(config)
            if op == "invalid json":
                text = original["config.json"][: int(plan["position"] * len(original["config.json"]))]
                files["config.json"] = text
                kind, valid = "config.json truncated", False
                try:
                    valid = json.loads(text) == config
                except (json.JSONDecodeError, UnicodeDecodeError):
                    pass
            elif op == "wrong value":
                field, value = plan["field"], plan["value"]
                new_config[field] = value
                old = config.get(field)
                valid = type(value) is type(old) and value == old
                if field in OTHER_FIELDS and type(value) is type(old) and value != old and value not in (0, -1, 10**12):
                    return  # another well-formed model: no reference here
                kind = f"config.json {'shape ' if field in SHAPE_FIELDS else ''}field of wrong type/value"
                files["config.json"] = json.dumps(new_config).encode()
            elif op == "missing field":
                field = plan["field"]
                new_config.pop(field, None)
                default = saved["defaults"].get(field)
                # transformers fills a missing field with its default; the model fits only if that is the stored value.
                valid = default == config.get(field) or field not in SHAPE_FIELDS
                kind = "config.json missing field"
                files["config.json"] = json.dumps(new_config).encode()
                if field not in SHAPE_FIELDS and default != config.get(field):
                    return  # a different but well-formed model: no reference here
            culprits = ("config.json", plan["field"])
        folder = write_folder(tmp_path / "model", files)
        holder = {}

        def call():
            model, holder["check"] = load_and_check(saved, folder)
            return model

        detail = f"{kind}: {plan}"
        case = Case(kind, valid, (*culprits, str(folder)), detail)
        run_case(tally, case, call, lambda model: holder["check"](model), FILE_REFUSAL_TYPES)

    fuzz(tally, FOLDER_PLAN, one, examples(100, slow), tmp_path_factory.getbasetemp())
    assert_no_failures(tally)


# ---------------------------------------------------------------------------------------------------------
# DeepMind Haiku pickles
# ---------------------------------------------------------------------------------------------------------


class _Payload:
    """Unpickling this calls ``call(*args)``, as an attacker's pickle would."""

    def __init__(self, call, *args) -> None:
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def _latin1(text: object, encoding: object) -> bytes:
    """What protocol 2 stores bytes as: ``_codecs.encode(str, "latin1")``; any other call is not a checkpoint."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode({text!r}, {encoding!r})")
    return text.encode("latin-1")


def _reference_load(data: bytes) -> dict[str, np.ndarray] | None:
    """The test's own reading of a Haiku pickle: numpy reconstructors and dict-like Haiku mappings only, the
    whole data consumed, a {module: {param: numeric array}} tree (or {'params', 'state'}); None if not one."""
    import collections
    import importlib

    allowed = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("haiku._src.data_structures", "FlatMapping"): dict,
        ("haiku._src.data_structures", "FlatMap"): dict,
        ("haiku._src.data_structures", "frozendict"): dict,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric", "numpy._core.numeric"):
        for name in ("_reconstruct", "scalar", "_frombuffer"):
            allowed[(module, name)] = getattr(
                importlib.import_module(module.replace("numpy.core", "numpy._core")), name, None
            )

    # The pure-Python unpickler keeps its memo in a dict: a corrupt memo index costs it nothing.
    class Reference(pickle._Unpickler):
        def find_class(self, module, name):
            if allowed.get((module, name)) is None:
                raise pickle.UnpicklingError(f"{module}.{name}")
            return allowed[(module, name)]

    # The documented rule of load_haiku_pickle: memo entries are numbered in order as every pickler writes them
    # (an index beyond them is refused as corrupt: the C unpickler would allocate memory in proportion to it).
    try:
        stored = 0
        for opcode, arg, position in pickletools.genops(io.BytesIO(data)):
            if opcode.name in ("PUT", "BINPUT", "LONG_BINPUT") and arg > stored:
                return None
            if opcode.name == "FRAME" and arg > len(data) - position - 9:  # a frame longer than the data
                return None
            stored += opcode.name == "MEMOIZE" or (opcode.name.endswith("PUT") and arg == stored)
    except Exception:  # not even a sequence of opcodes
        return None
    stream = io.BytesIO(data)
    try:
        tree = Reference(stream).load()
    except Exception:  # anything the reference cannot read is not a checkpoint
        return None
    if stream.read(1):
        return None
    if isinstance(tree, dict) and "params" in tree and set(tree) <= {"params", "state"}:
        parts = [tree["params"], tree.get("state", {})]
    else:
        parts = [tree]
    flat = {}
    for part in parts:
        if not isinstance(part, dict):
            return None
        for module, leaves in part.items():
            if not isinstance(module, str) or not isinstance(leaves, dict):
                return None
            for param, value in leaves.items():
                value = np.asarray(value) if isinstance(value, np.generic) else value
                if (
                    not isinstance(param, str)
                    or "/" in param
                    or not isinstance(value, np.ndarray)
                    or value.dtype.kind not in "biuf"
                ):
                    return None
                flat[f"{module}/{param}"] = value
    return flat if parts and flat and parts[0] else None


PICKLE_PLAN = st.fixed_dictionaries(
    {
        "protocol": st.integers(2, 5),
        "flatmapping": st.booleans(),
        "state": st.booleans(),
        "op": st.sampled_from(["none", "truncate", "flip", "flip", "append", "payload", "payload", "payload in state"]),
        "position": st.floats(0, 1, exclude_max=True),
        "byte": st.integers(1, 255),
        "payload": st.sampled_from(["os.system", "eval", "exec", "Popen", "makedirs"]),
        "seed": st.integers(0, 2**16),
    }
)


@pytest.mark.parametrize("slow", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["ci", "slow"])
def test_fuzz_haiku_pickles(slow, tmp_path, tmp_path_factory):
    import builtins
    import subprocess

    tally = Tally("load_haiku_pickle(path)")
    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoint.pickle"

    def one(plan: dict) -> None:
        rng = np.random.default_rng(plan["seed"])
        params = {
            "linear/w": rng.standard_normal((3, 2)).astype(np.float32),
            "linear/b": rng.standard_normal(2).astype(np.float32),
            "layer_norm/scale": np.ones(4, np.float32),
            "embed/counter": np.int32(7),
        }
        state = {"batchnorm/~/mean_ema/average": rng.standard_normal(3).astype(np.float64)} if plan["state"] else None
        op = plan["op"]
        if op.startswith("payload"):
            payload = {
                "os.system": _Payload(os.system, f"touch {marker}"),
                "eval": _Payload(builtins.eval, f"open({str(marker)!r}, 'w')"),
                "exec": _Payload(builtins.exec, f"open({str(marker)!r}, 'w')"),
                "Popen": _Payload(subprocess.Popen, ["touch", str(marker)]),
                "makedirs": _Payload(os.makedirs, str(marker)),
            }[plan["payload"]]
            if op == "payload in state":
                state = {**(state or {}), "evil/leaf": payload}
            else:
                params["evil/leaf"] = payload
        write_haiku_pickle(path, params, state, flatmapping=plan["flatmapping"], protocol=plan["protocol"])
        data = bytearray(path.read_bytes())
        i = int(plan["position"] * len(data))
        if op == "truncate":
            data = data[:i]
        elif op == "flip":
            data[i] ^= plan["byte"]
        elif op == "append":
            data += b"\x00garbage"
        path.write_bytes(bytes(data))
        expected = None if op.startswith("payload") else _reference_load(bytes(data))
        case = Case(f"pickle {op}", expected is not None, (str(path),), f"{op} at {i} protocol {plan['protocol']}")

        def check(ckpt) -> str | None:
            got = {**ckpt.params, **ckpt.state}
            if got.keys() != expected.keys():
                return f"keys {sorted(got)} vs {sorted(expected)}"
            for key, value in expected.items():
                if got[key].dtype != value.dtype or not np.array_equal(got[key], value, equal_nan=True):
                    return f"{key} differs"
            return None

        run_case(tally, case, lambda: load_haiku_pickle(path), check, FILE_REFUSAL_TYPES)
        assert not marker.exists(), f"a pickle payload ran: {plan}"

    fuzz(tally, PICKLE_PLAN, one, examples(200, slow), tmp_path_factory.getbasetemp())
    assert_no_failures(tally)


@pytest.mark.parametrize("slow", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["ci", "slow"])
def test_fuzz_deepmind_loader(slow, tmp_path, tmp_path_factory):
    """load_deepmind on well-formed pickles of trees that are no released model: refused, naming the file."""
    tally = Tally("load_deepmind(path)")
    path = tmp_path / "not-a-release.pystate"

    def one(plan: dict) -> None:
        rng = np.random.default_rng(plan["seed"])
        params = {f"{m}/w": rng.standard_normal((plan["size"], 2)).astype(np.float32) for m in plan["modules"]}
        write_haiku_pickle(path, params, None, protocol=plan["protocol"])
        case = Case("tree of no released model", False, (str(path), path.name), str(plan))
        run_case(tally, case, lambda: load_deepmind(None, path), None, FILE_REFUSAL_TYPES)

    plan = st.fixed_dictionaries(
        {
            "seed": st.integers(0, 2**16),
            "size": st.integers(1, 4),
            "protocol": st.integers(2, 5),
            "modules": st.lists(
                st.sampled_from(["embed", "linear", "perceiver_encoder/~/cross_attention/attention/linear", "x"]),
                min_size=1,
                max_size=3,
                unique=True,
            ),
        }
    )
    fuzz(tally, plan, one, examples(30, slow), tmp_path_factory.getbasetemp())
    assert_no_failures(tally)


def test_corrupt_memo_index_is_refused_before_allocating(tmp_path):
    # Found by the fuzzer: one flipped byte turned BINPUT ("q") into LONG_BINPUT ("r") with an index near 2**32;
    # the C unpickler then grew its memo to tens of gigabytes (MemoryError, or the OOM killer).
    path = tmp_path / "memo.pickle"
    write_haiku_pickle(path, {"linear/w": np.ones((2, 2), np.float32)}, None, protocol=2)
    data = path.read_bytes()
    i = data.index(b"q\x00")
    path.write_bytes(data[:i] + b"r\xf0\xff\xff\xff" + data[i + 2 :])
    with pytest.raises(ValueError, match=r"memo index 4294967280 at byte \d+, where at most 0 entries exist") as info:
        load_haiku_pickle(path)
    assert str(path) in str(info.value)
