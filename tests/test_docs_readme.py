"""Docs that run: every Python block of the README, executed as written except that each released model's hub id
is replaced by a small local model of the same head (no weights can be fetched here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import SMALL_CONFIGS
from PIL import Image
from skimage import data
from test_docs_tasks import inside, local_models

from perceiver_io.released import RELEASED

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```$", README.read_text(encoding="utf-8"), re.DOTALL | re.MULTILINE)


def test_the_readme_has_python_blocks():
    assert BLOCKS


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index, tmp_path, capsys):
    Image.fromarray(data.chelsea()).save(tmp_path / "cat.jpg")  # the photo the API tour opens
    block = local_models(BLOCKS[index], tmp_path)
    assert not any(released.hub_id in block for released in RELEASED.values())
    with inside(tmp_path, 0o022):
        exec(compile(block, f"README block {index + 1}", "exec"), {"__name__": f"readme_block_{index}"})
    if "probs.shape" in block:  # the shapes its comments promise, with the small stand-in's label count
        labels = SMALL_CONFIGS["PerceiverForImageClassificationFourier"]["num_labels"]
        assert capsys.readouterr().out == f"(1, 3, 224, 224) (1, {labels})\n"
