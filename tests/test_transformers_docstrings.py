"""Every ``>>>`` example in transformers' Perceiver docstrings runs against perceiver_io.

The examples are read from the installed transformers' source (``models/perceiver/*.py``), so this runs offline.
Each is rewritten before it runs: ``from transformers import …`` and ``transformers.models.perceiver.*`` imports
take perceiver_io's objects (``AutoTokenizer``/``AutoImageProcessor`` become the Perceiver classes a hub folder
resolves to), hub ids become local folders of the released architectures with random weights (written by
transformers' classes with seed 0), and ``httpx.stream(url)`` downloads serve a real local photo of a cat.

Expected outputs: a shape (``[1, 2048, 262]``) must be printed exactly as the docstring says. Values that depend on
the pretrained weights (a loss, decoded text, a predicted ImageNet label) cannot match random weights; for those the
expected output is what transformers prints when the same rewritten example runs with its own classes on the same
folder and inputs — and transformers' run must also print the docstring's shapes, so the rewrite is checked too.
"""

from __future__ import annotations

import ast
import doctest
import importlib.util
import io
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")

PERCEIVER_SOURCES = ("configuration_perceiver.py", "modeling_perceiver.py")
HUB_ID = re.compile(r"""(["'])deepmind/([\w.-]+)\1""")
SHAPE = re.compile(r"^\[[\d, ]*\]$")
FENCE = re.compile(r"```(?:py|python)?\n(.*?)```", re.S)
# Release-size examples: 4-35 s each on a CPU (each runs twice, ours and transformers'), plus building its folder.
SLOW = {
    "PerceiverModel.forward",
    "PerceiverForOpticalFlow.forward",
    "PerceiverForMaskedLM.forward",
    "PerceiverForMultimodalAutoencoding.forward",
    "PerceiverForImageClassificationLearned.forward",
    "PerceiverForImageClassificationFourier.forward",
    "PerceiverForImageClassificationConvProcessing.forward",
}
# perceiver_io has no Auto* registry; a hub folder of a Perceiver model resolves to these classes.
AUTO_TO_PERCEIVER = {"AutoTokenizer": "PerceiverTokenizer", "AutoImageProcessor": "PerceiverImageProcessor"}
TOKENIZER_HEADS = {"PerceiverForMaskedLM", "PerceiverForSequenceClassification"}


def _perceiver_dir() -> Path:
    spec = importlib.util.find_spec("transformers")
    return Path(next(iter(spec.submodule_search_locations))) / "models" / "perceiver"


def _docstring_examples() -> dict[str, list[doctest.Example]]:
    """``Class.method`` (or ``Class``) -> the doctest examples of its docstring's fenced code blocks."""
    found: dict[str, list[doctest.Example]] = {}
    parser = doctest.DocTestParser()
    for filename in PERCEIVER_SOURCES:
        tree = ast.parse((_perceiver_dir() / filename).read_text(encoding="utf-8"))
        for cls in (node for node in tree.body if isinstance(node, ast.ClassDef)):
            owners = [cls, *(n for n in cls.body if isinstance(n, ast.FunctionDef))]
            for owner in owners:
                doc = ast.get_docstring(owner, clean=True) or ""
                examples = [ex for block in FENCE.findall(doc) for ex in parser.get_examples(block)]
                if examples:
                    found[cls.name if owner is cls else f"{cls.name}.{owner.name}"] = examples
    return found


EXAMPLES = _docstring_examples()


# --- what the rewritten examples import -------------------------------------------------------------------------


def _ours(module: str, name: str) -> Any:
    import importlib
    import pkgutil

    import perceiver_io

    name = AUTO_TO_PERCEIVER.get(name, name)
    if hasattr(perceiver_io, name):
        return getattr(perceiver_io, name)
    for info in pkgutil.walk_packages(perceiver_io.__path__, "perceiver_io."):
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # a module needing an optional dependency cannot hold the name we want
            continue
        if getattr(getattr(module, name, None), "__module__", "").startswith("perceiver_io"):
            return getattr(module, name)
    raise ImportError(f"perceiver_io does not provide {name}")


def _theirs(module: str, name: str) -> Any:
    import importlib

    from transformers.utils import is_torchvision_available

    name = AUTO_TO_PERCEIVER.get(name, name)
    if name == "PerceiverImageProcessor" and not is_torchvision_available():
        return transformers.PerceiverImageProcessorPil  # transformers 5's torchvision backend needs torchvision
    return getattr(importlib.import_module(module), name)


class _LocalHttpx:
    """``httpx.stream("GET", url)`` serving a real photograph of a cat (scikit-image's chelsea) as PNG bytes."""

    def __init__(self) -> None:
        from PIL import Image
        from skimage import data

        buffer = io.BytesIO()
        Image.fromarray(data.chelsea()).save(buffer, format="PNG")
        self._bytes = buffer.getvalue()

    def stream(self, method: str, url: str, **kwargs: Any) -> _LocalHttpx:
        if method != "GET":
            raise ValueError(f"only GET is served, not {method!r}")
        return self

    def __enter__(self) -> _LocalHttpx:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def read(self) -> bytes:
        return self._bytes


class _ImportSwap(ast.NodeTransformer):
    """``from transformers… import X, Y`` -> ``X, Y = _import("transformers…", "X"), _import(…, "Y")``;
    ``from huggingface_hub.utils import httpx`` -> the local photo server."""

    def visit_ImportFrom(self, node: ast.ImportFrom) -> Any:
        module = node.module or ""
        if module == "transformers" or module.startswith("transformers.models.perceiver"):
            func = "_import"
        elif module == "huggingface_hub.utils" and [a.name for a in node.names] == ["httpx"]:
            return ast.parse("httpx = _local_httpx").body
        else:
            return node
        # one statement: doctest compiles each example in "single" mode
        names = [ast.Name(id=alias.asname or alias.name, ctx=ast.Store()) for alias in node.names]
        calls = [
            ast.Call(
                func=ast.Name(id=func, ctx=ast.Load()),
                args=[ast.Constant(module), ast.Constant(alias.name)],
                keywords=[],
            )
            for alias in node.names
        ]
        return ast.Assign(targets=[ast.Tuple(names, ctx=ast.Store())], value=ast.Tuple(calls, ctx=ast.Load()))


def _rewrite(source: str, folders: Callable[[str], str]) -> str:
    source = HUB_ID.sub(lambda m: repr(folders(m.group(2))), source)
    if "import" not in source:
        return source
    tree = _ImportSwap().visit(ast.parse(source))
    return ast.unparse(ast.fix_missing_locations(tree)) + "\n"


# --- released folders with random weights --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def released_folders(tmp_path_factory) -> Callable[[str], str]:
    """Name -> folder of that released architecture with random weights, built on first use by transformers'
    classes (seed 0). ``PERCEIVER_RELEASED_DIR`` keeps them between sessions."""
    from perceiver_io.released import RELEASED

    root = Path(os.environ.get("PERCEIVER_RELEASED_DIR") or tmp_path_factory.mktemp("released"))

    def folder(name: str) -> str:
        path = root / name
        if not (path / "config.json").exists():
            spec = RELEASED[name]
            torch.manual_seed(0)
            model = getattr(transformers, spec.head)(transformers.PerceiverConfig(**spec.config))
            model.save_pretrained(path)
            if spec.head in TOKENIZER_HEADS:
                transformers.PerceiverTokenizer().save_pretrained(path)
            if spec.head.startswith("PerceiverForImageClassification"):
                transformers.PerceiverImageProcessorPil().save_pretrained(path)
        return str(path)

    return folder


# --- running -------------------------------------------------------------------------------------------------------


class _Recorder(doctest.DocTestRunner):
    """Runs every example, keeping what each printed (expected outputs ignored)."""

    def __init__(self) -> None:
        super().__init__(optionflags=doctest.NORMALIZE_WHITESPACE)
        self.outputs: list[str] = []

    def report_success(self, out, test, example, got) -> None:
        self.outputs.append(got)

    def report_failure(self, out, test, example, got) -> None:
        self.outputs.append(got)

    def report_unexpected_exception(self, out, test, example, exc_info) -> None:
        raise RuntimeError(f"transformers' own run of {example.source!r} failed") from exc_info[1]


def _globs(importer: Callable[[str, str], Any]) -> dict[str, Any]:
    return {"__name__": "__main__", "_import": importer, "_local_httpx": _LocalHttpx()}


def _doctest(name: str, examples: list[doctest.Example], globs: dict[str, Any]) -> doctest.DocTest:
    return doctest.DocTest(examples, globs, name, None, 0, None)


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in sorted(EXAMPLES)]
)
def test_docstring_example(name: str, released_folders) -> None:
    rewritten = [
        doctest.Example(_rewrite(ex.source, released_folders), ex.want.strip() + "\n" if ex.want.strip() else "")
        for ex in EXAMPLES[name]
    ]

    # transformers' own run of the rewritten example: the reference for weight-dependent outputs.
    recorder = _Recorder()
    torch.manual_seed(0)
    recorder.run(_doctest(name, rewritten, _globs(_theirs)), clear_globs=True)
    expected = []
    for ex, theirs in zip(rewritten, recorder.outputs, strict=True):
        if SHAPE.match(ex.want.strip()):
            assert theirs.strip() == ex.want.strip(), f"transformers itself prints {theirs!r} for {ex.source!r}"
            expected.append(ex)
        else:
            expected.append(doctest.Example(ex.source, theirs if ex.want else ""))

    report = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.REPORT_ONLY_FIRST_FAILURE)
    torch.manual_seed(0)
    result = runner.run(_doctest(name, expected, _globs(_ours)), out=report.write, clear_globs=True)
    assert result.failed == 0, report.getvalue()


def test_every_docstring_with_examples_is_collected() -> None:
    """The parser finds the examples transformers documents: the config and each head's forward."""
    heads = {n for n in dir(transformers) if n.startswith("PerceiverFor")}
    assert {f"{h}.forward" for h in heads} | {"PerceiverConfig", "PerceiverModel.forward"} <= set(EXAMPLES)
