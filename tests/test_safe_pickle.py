"""The allow-list unpickler on Haiku checkpoint pickles shaped like DeepMind's six released files."""

from __future__ import annotations

import base64
import builtins
import io
import math
import os
import pickle
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from perceiver_io.checkpoints.haiku_trees import random_params_from_tree, read_param_tree, write_haiku_pickle
from perceiver_io.checkpoints.safe_pickle import (
    CheckpointFormatError,
    HaikuCheckpoint,
    UnsafeCheckpointError,
    identify_checkpoint,
    load_haiku_pickle,
)
from perceiver_io.released import RELEASED

# Parameter trees of the released checkpoints (from `jax.eval_shape` of the colab models), one file each.
TREE_FILES = {
    "language-perceiver": "mlm_language_perceiver_io_bytes.tsv",
    "vision-perceiver-learned": "imagenet_learned_position_encoding.tsv",
    "vision-perceiver-fourier": "imagenet_fourier_position_encoding.tsv",
    "vision-perceiver-conv": "imagenet_conv_preprocessing.tsv",
    "optical-flow-perceiver": "optical_flow.tsv",
    "multimodal-perceiver": "video_autoencoding.tsv",
}
TREE_DIR = Path(os.environ.get("PERCEIVER_PARAM_TREES", Path(__file__).parent / "data" / "deepmind-param-trees"))
needs_trees = pytest.mark.skipif(
    not all((TREE_DIR / f).is_file() for f in TREE_FILES.values()),
    reason=f"DeepMind parameter trees not found in {TREE_DIR} (set PERCEIVER_PARAM_TREES)",
)
# The two largest trees (201M and 62M parameters) round-trip at full size only in the slow suite.
BIG_TREES = ("language-perceiver", "vision-perceiver-learned")


def tree_rows(name: str) -> list:
    return read_param_tree(TREE_DIR / TREE_FILES[name])


def write_like_release(name: str, path: Path, params: dict, state: dict, **kwargs) -> None:
    """The ImageNet files are {'params', 'state'} (state possibly empty); the others are params only."""
    write_haiku_pickle(path, params, state if name.startswith("vision-") else None, **kwargs)


def assert_same_arrays(loaded: dict, expected: dict) -> None:
    assert loaded.keys() == expected.keys()
    for key, value in expected.items():
        assert loaded[key].dtype == value.dtype and loaded[key].shape == value.shape, key
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)


class _Inert:
    """Stands in for every global while `pickle_globals` reads a pickle."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __setstate__(self, state) -> None:
        pass


def pickle_globals(data: bytes) -> set[str]:
    """``module.name`` of every global the pickle refers to; each is replaced by `_Inert`, so nothing runs."""
    names = set()

    class Recorder(pickle.Unpickler):
        def find_class(self, module, name):
            names.add(f"{module}.{name}")
            return _Inert

    Recorder(io.BytesIO(data)).load()
    return names


def rename_global(data: bytes, old: str, new: str) -> bytes:
    """Rename a global in a protocol <= 3 pickle, whose GLOBAL opcodes are text lines ("c<module>\\n<name>\\n")."""
    old_line = b"c" + old.rsplit(".", 1)[0].encode() + b"\n" + old.rsplit(".", 1)[1].encode() + b"\n"
    new_line = b"c" + new.rsplit(".", 1)[0].encode() + b"\n" + new.rsplit(".", 1)[1].encode() + b"\n"
    assert old_line in data
    return data.replace(old_line, new_line)


def small_tree(seed: int = 0) -> tuple[dict, dict]:
    """The conv model's tree without its large arrays: params and BatchNorm state, quick to write."""
    rows = [row for row in tree_rows("vision-perceiver-conv") if math.prod(row[2]) <= 4096]
    return random_params_from_tree(rows, seed)


# ---------------------------------------------------------------------------------------------------------
# Round trips of the released trees
# ---------------------------------------------------------------------------------------------------------


def _full_tree_params():
    for name in TREE_FILES:
        marks = [pytest.mark.slow] if name in BIG_TREES else []
        yield pytest.param(name, marks=[*marks, needs_trees], id=name)


@pytest.fixture(scope="module", params=list(_full_tree_params()))
def full_tree(request):
    """(name, rows, params, state) at the tree's full size; pytest sets up one tree at a time."""
    rows = tree_rows(request.param)
    return request.param, rows, *random_params_from_tree(rows, seed=1)


@pytest.mark.parametrize("flatmapping", [True, False], ids=["FlatMapping", "dict"])
def test_full_tree_round_trip(full_tree, flatmapping, tmp_path):
    name, rows, params, state = full_tree
    path = tmp_path / "checkpoint.pystate"
    write_like_release(name, path, params, state, flatmapping=flatmapping)
    ckpt = load_haiku_pickle(path)
    assert set(ckpt.params) == {key for collection, key, *_ in rows if collection == "params"}
    assert set(ckpt.state) == {key for collection, key, *_ in rows if collection == "state"}
    assert_same_arrays(ckpt.params, params)
    assert_same_arrays(ckpt.state, state)
    assert identify_checkpoint(ckpt) == name


@needs_trees
@pytest.mark.parametrize("name", BIG_TREES)
@pytest.mark.parametrize("flatmapping", [True, False], ids=["FlatMapping", "dict"])
def test_big_tree_subset_round_trip(name, flatmapping, tmp_path):
    # Every array of up to 2**18 elements, with the tree's own paths and shapes (fast stand-in for the slow
    # full-size round trip above).
    rows = [row for row in tree_rows(name) if math.prod(row[2]) <= 2**18]
    params, state = random_params_from_tree(rows, seed=2)
    path = tmp_path / "checkpoint.pickle"
    write_like_release(name, path, params, state, flatmapping=flatmapping)
    ckpt = load_haiku_pickle(path)
    assert len(params) > 50
    assert_same_arrays(ckpt.params, params)
    assert_same_arrays(ckpt.state, state)


@needs_trees
@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_every_pickle_protocol_and_the_flatmapping_global(protocol, tmp_path):
    params, state = small_tree()
    path = tmp_path / "checkpoint.pystate"
    write_haiku_pickle(path, params, state, protocol=protocol)
    data = path.read_bytes()
    assert "haiku._src.data_structures.FlatMapping" in pickle_globals(data)
    for source in (path, data):
        ckpt = load_haiku_pickle(source)
        assert_same_arrays(ckpt.params, params)
        assert_same_arrays(ckpt.state, state)
    plain = tmp_path / "plain.pystate"
    write_haiku_pickle(plain, params, state, flatmapping=False, protocol=protocol)
    assert not any(g.startswith("haiku") for g in pickle_globals(plain.read_bytes()))


@needs_trees
@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("haiku_class", ["FlatMapping", "FlatMap", "frozendict"])
def test_numpy1_and_older_haiku_globals(protocol, haiku_class, tmp_path):
    # NumPy 1.x pickles name numpy.core where 2.x names numpy._core; otherwise the bytes are identical
    # (checked against numpy 1.26.4). Haiku 0.0.1-0.0.2 pickled `frozendict`.
    params, state = small_tree()
    path = tmp_path / "checkpoint.pystate"
    write_haiku_pickle(path, params, state, protocol=protocol)
    data = rename_global(path.read_bytes(), "numpy._core.multiarray._reconstruct", "numpy.core.multiarray._reconstruct")
    data = rename_global(data, "haiku._src.data_structures.FlatMapping", f"haiku._src.data_structures.{haiku_class}")
    assert "numpy.core.multiarray._reconstruct" in pickle_globals(data)
    ckpt = load_haiku_pickle(data)
    assert_same_arrays(ckpt.params, params)
    assert_same_arrays(ckpt.state, state)


# Written by numpy 1.26.4 with `write_haiku_pickle(path, params, protocol=5)`, params {"linear/w":
# arange(6).reshape(2, 3), "linear/b": full(3, 0.5), "ema/counter": np.int32(7)} (float32; the counter a scalar).
NUMPY1_PROTOCOL5 = base64.b64decode(
    "gAWVbQEAAAAAAACMGmhhaWt1Ll9zcmMuZGF0YV9zdHJ1Y3R1cmVzlIwLRmxhdE1hcHBpbmeUk5R9lCiMBmxpbmVhcpRoAn2UKIwBd5SM"
    "Em51bXB5LmNvcmUubnVtZXJpY5SMC19mcm9tYnVmZmVylJOUKJYYAAAAAAAAAAAAAAAAAIA/AAAAQAAAQEAAAIBAAACgQJSMBW51bXB5"
    "lIwFZHR5cGWUk5SMAmY0lImIh5RSlChLA4wBPJROTk5K/////0r/////SwB0lGJLAksDhpSMAUOUdJRSlIwBYpRoCSiWDAAAAAAAAAAA"
    "AAA/AAAAPwAAAD+UaBBLA4WUaBR0lFKUdYWUUpSMA2VtYZRoAn2UjAdjb3VudGVylIwVbnVtcHkuY29yZS5tdWx0aWFycmF5lIwGc2Nh"
    "bGFylJOUaA2MAmk0lImIh5RSlChLA2gRTk5OSv////9K/////0sAdJRiQwQHAAAAlIaUUpRzhZRSlHWFlFKULg=="
)


def test_numpy1_protocol5_file():
    assert {"numpy.core.numeric._frombuffer", "numpy.core.multiarray.scalar"} <= pickle_globals(NUMPY1_PROTOCOL5)
    ckpt = load_haiku_pickle(NUMPY1_PROTOCOL5)
    assert_same_arrays(
        ckpt.params,
        {
            "linear/w": np.arange(6, dtype=np.float32).reshape(2, 3),
            "linear/b": np.full(3, 0.5, np.float32),
            "ema/counter": np.array(7, np.int32),
        },
    )
    assert ckpt.state == {}


class _JaxArrayLike:
    """Pickles the way a JAX array does: ``(jax_reconstruct, (np_reconstruct, args, state, aval_state))``."""

    def __init__(self, array: np.ndarray, inner: object = None) -> None:
        self.array, self.inner = array, inner

    def __reduce__(self):
        reconstruct, args, array_state = self.array.__reduce__()
        # math.prod stands for JAX's reconstructor until `rename_global` puts JAX's name in its place.
        return math.prod, (self.inner or reconstruct, args, array_state, {"weak_type": False})


@pytest.mark.parametrize(
    "jax_global", ["jax._src.array._reconstruct_array", "jax._src.device_array.reconstruct_device_array"]
)
def test_jax_array_leaves_become_numpy(jax_global):
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    data = pickle.dumps({"linear": {"w": _JaxArrayLike(w)}}, protocol=3)
    ckpt = load_haiku_pickle(rename_global(data, "math.prod", jax_global))
    assert_same_arrays(ckpt.params, {"linear/w": w})


def test_jax_array_with_foreign_inner_reconstructor_is_refused():
    data = pickle.dumps({"linear": {"w": _JaxArrayLike(np.zeros(2), inner=np.dtype)}}, protocol=3)
    with pytest.raises(UnsafeCheckpointError, match="refused"):
        load_haiku_pickle(rename_global(data, "math.prod", "jax._src.array._reconstruct_array"))


# ---------------------------------------------------------------------------------------------------------
# identify_checkpoint
# ---------------------------------------------------------------------------------------------------------


def shapes_only(rows) -> HaikuCheckpoint:
    """A checkpoint with the tree's shapes whose arrays take no memory (broadcast zeros)."""
    arrays: dict[str, dict] = {"params": {}, "state": {}}
    for collection, path, shape, dtype in rows:
        arrays[collection][path] = np.broadcast_to(np.zeros((), dtype), shape)
    return HaikuCheckpoint(params=arrays["params"], state=arrays["state"])


@needs_trees
@pytest.mark.parametrize("name", TREE_FILES)
def test_identify_all_six(name):
    assert identify_checkpoint(shapes_only(tree_rows(name))) == name


def test_identify_names_are_the_released_registry():
    assert set(TREE_FILES) == set(RELEASED)


@needs_trees
def test_identify_rejects_unknown_and_incomplete_trees():
    # The small tree lacks the conv model's 7x7 kernel, its marker.
    with pytest.raises(ValueError, match="matches none"):
        identify_checkpoint(HaikuCheckpoint(*small_tree()))
    ckpt = shapes_only(tree_rows("optical-flow-perceiver"))
    del ckpt.params["perceiver_encoder/~/self_attention_23/mlp/linear_1/w"]
    with pytest.raises(ValueError, match="optical-flow-perceiver but 424 param arrays"):
        identify_checkpoint(ckpt)


# ---------------------------------------------------------------------------------------------------------
# Refused globals: nothing runs
# ---------------------------------------------------------------------------------------------------------


class _Payload:
    """An object whose unpickling calls ``call(*args)``, as an attacker's pickle would."""

    def __init__(self, call, *args) -> None:
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


@pytest.mark.parametrize(
    ("make_payload", "refused_global"),
    [
        (lambda marker: _Payload(os.system, f"touch {marker}"), f"{os.system.__module__}.system"),
        (lambda marker: _Payload(builtins.eval, f"open({str(marker)!r}, 'w')"), "builtins.eval"),
        (lambda marker: _Payload(subprocess.Popen, ["touch", str(marker)]), "subprocess.Popen"),
    ],
    ids=["os.system", "builtins.eval", "subprocess.Popen"],
)
def test_malicious_pickle_is_refused_and_not_run(make_payload, refused_global, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pystate"
    # Hidden among ordinary arrays, inside Haiku's FlatMapping, as a tampered checkpoint would be.
    params = {"linear/w": np.ones((2, 2), np.float32), "linear/b": make_payload(marker)}
    write_haiku_pickle(path, params)
    with pytest.raises(UnsafeCheckpointError) as info:
        load_haiku_pickle(path)
    message = str(info.value)
    assert refused_global in message and str(path) in message and "refused" in message
    assert "not" in message and "executed" in message
    assert not marker.exists()


def test_the_os_system_payload_would_run_under_plain_pickle(tmp_path):
    # Shows the payload above is live: plain pickle runs it, which is exactly what the loader prevents.
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(_Payload(os.system, f"touch {marker}")))
    assert marker.exists()


def test_codecs_encode_is_limited_to_latin1():
    data = rename_global(pickle.dumps(_Payload(math.prod, "text", "rot13"), protocol=2), "math.prod", "_codecs.encode")
    with pytest.raises(UnsafeCheckpointError, match="latin-1"):
        load_haiku_pickle(data)


# ---------------------------------------------------------------------------------------------------------
# Files that are not checkpoints
# ---------------------------------------------------------------------------------------------------------


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pickle"
    path.write_bytes(b"")
    with pytest.raises(
        CheckpointFormatError, match=rf"{re.escape(str(path))}: the file is empty; expected a Haiku checkpoint"
    ):
        load_haiku_pickle(path)


@needs_trees
def test_truncated_file(tmp_path):
    params, state = small_tree()
    path = tmp_path / "cut.pystate"
    write_haiku_pickle(path, params, state)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(
        CheckpointFormatError, match=rf"{re.escape(str(path))}: the pickle is truncated .*expected a Haiku"
    ):
        load_haiku_pickle(path)


@needs_trees
def test_extra_bytes_after_the_pickle(tmp_path):
    params, state = small_tree()
    path = tmp_path / "long.pystate"
    write_haiku_pickle(path, params, state)
    path.write_bytes(path.read_bytes() + b"\x00junk")
    with pytest.raises(CheckpointFormatError, match="extra bytes after the end of the pickle"):
        load_haiku_pickle(path)


def test_random_bytes(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    path = tmp_path / "noise.pickle"
    path.write_bytes(b"\x13" + noise)
    with pytest.raises(
        CheckpointFormatError, match=rf"{re.escape(str(path))}: this is not a pickle of protocol 2 or later"
    ):
        load_haiku_pickle(path)
    # Noise behind a valid protocol header fails inside the unpickler and is still reported as ours.
    path.write_bytes(b"\x80\x04" + noise)
    with pytest.raises(CheckpointFormatError, match=rf"{re.escape(str(path))}: the pickle is (corrupt|truncated)"):
        load_haiku_pickle(path)


def test_png_file(tmp_path):
    path = tmp_path / "sintel_frame1.png"
    Image.new("RGB", (8, 8), (200, 30, 30)).save(path)
    with pytest.raises(
        CheckpointFormatError, match=rf"{re.escape(str(path))}: this is a PNG image; expected a Haiku checkpoint"
    ):
        load_haiku_pickle(path)


def test_torch_zip_file(tmp_path):
    path = tmp_path / "model.pth"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(
        CheckpointFormatError, match=rf"{re.escape(str(path))}: this is a zip archive \(a torch.save file"
    ):
        load_haiku_pickle(path)


@pytest.mark.parametrize(
    ("tree", "problem"),
    [
        ([np.zeros(2)], "found a list"),
        ({"linear": np.zeros(2)}, "entry 'linear' holds a ndarray, not a dict of arrays"),
        ({"linear": {"w": "weights"}}, "linear/w is str, not a numeric array"),
        ({"linear": {"w": np.array([None], dtype=object)}}, "linear/w is object, not a numeric array"),
        ({"linear": {"a/b": np.zeros(2)}}, "bad parameter name 'a/b'"),
        ({}, "holds no parameters"),
        ({"params": {"linear": {"w": np.zeros(2)}}, "state": [1]}, r"\['state'\]: found a list"),
    ],
)
def test_pickles_that_are_not_param_trees(tree, problem):
    with pytest.raises(CheckpointFormatError, match=problem):
        load_haiku_pickle(pickle.dumps(tree))


# ---------------------------------------------------------------------------------------------------------
# The helpers themselves
# ---------------------------------------------------------------------------------------------------------


@needs_trees
def test_random_params_follow_the_tree():
    rows = tree_rows("vision-perceiver-conv")
    params, state = random_params_from_tree(rows, seed=0)
    for collection, path, shape, dtype in rows:
        array = (params if collection == "params" else state)[path]
        assert array.shape == shape and array.dtype == np.dtype(dtype), path
    bn = "image_preprocessor/~/conv2_d_downsample/~/batchnorm/~/"
    assert (state[bn + "var_ema/average"] > 0).all() and (state[bn + "var_ema/hidden"] > 0).all()
    assert state[bn + "mean_ema/counter"].shape == () and state[bn + "mean_ema/counter"].dtype == np.int32
    again, _ = random_params_from_tree(rows[:5], seed=0)
    other, _ = random_params_from_tree(rows[:5], seed=1)
    key = rows[0][1]
    assert np.array_equal(again[key], params[key]) and not np.array_equal(other[key], params[key])


def test_read_param_tree_rejects_malformed_lines(tmp_path):
    path = tmp_path / "tree.tsv"
    path.write_text("params\tlinear/w\t(2, 3)\tfloat32\nparams\tlinear/b\t3\tfloat32\n")
    with pytest.raises(ValueError, match=r"tree.tsv:2: expected"):
        read_param_tree(path)
