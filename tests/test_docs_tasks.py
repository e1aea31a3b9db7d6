"""Docs that run: every Python block of docs/tasks.md, executed as written except that each released model's hub id
is replaced by a small local model of the same head (no weights can be fetched here)."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import SMALL_CONFIGS, randomize_
from PIL import Image
from skimage import data

import perceiver_io
from perceiver_io import PerceiverConfig
from perceiver_io.released import RELEASED

DOC = Path(__file__).resolve().parents[1] / "docs" / "tasks.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```$", DOC.read_text(encoding="utf-8"), re.DOTALL | re.MULTILINE)


def test_the_page_has_python_blocks():
    assert len(BLOCKS) >= 4


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """The files the blocks name (two frames, a 16-bit scan) in a folder of their own."""
    folder = tmp_path_factory.mktemp("docs")
    frame = data.astronaut()[100:116, 100:124]  # 16x24: nine tiles of the small model
    Image.fromarray(frame).save(folder / "frame1.png")
    Image.fromarray(np.roll(frame, 2, axis=1)).save(folder / "frame2.png")
    Image.fromarray(data.camera().astype(np.uint16) * 257).save(folder / "scan-16bit.png")
    return folder


def local_models(block: str, folder: Path) -> str:
    """``block`` with every released hub id in quotes replaced by a small random model of that head, saved."""
    for released in RELEASED.values():
        if f'"{released.hub_id}"' in block:
            target = folder / "models" / released.name
            if not target.is_dir():
                config = PerceiverConfig.from_dict(SMALL_CONFIGS[released.head])
                randomize_(getattr(perceiver_io, released.head)(config)).save_pretrained(target)
            block = block.replace(f'"{released.hub_id}"', repr(str(target)))
    return block


@contextlib.contextmanager
def inside(folder: Path, umask: int):
    cwd, previous = os.getcwd(), os.umask(umask)
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(cwd)
        os.umask(previous)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_python_block_runs(index, workdir, capsys):
    block = local_models(BLOCKS[index], workdir)
    assert not any(released.hub_id in block for released in RELEASED.values())
    with inside(workdir, 0o022):
        exec(compile(block, f"{DOC.name} block {index + 1}", "exec"), {"__name__": f"docs_block_{index}"})
    out = capsys.readouterr().out
    # What a block prints is what its comments say.
    if "load_image(" in block:
        assert out == "uint8 (512, 512, 3)\n"
    if "st_mode" in block:
        assert out == "0o644\n"
