"""Run transformers' own Perceiver tests against perceiver_io and write a per-test report.

    python scripts/run_transformers_tests.py --source /path/to/transformers [--out docs/transformers_tests.md]

``--source`` is a transformers checkout (only its ``tests/`` folder, and ``utils/`` when the tests import from it,
are read). Nothing of it is committed here: the files are copied into a temporary folder laid out as a package and
rewritten there at run time, by AST transformation:

* Perceiver names (``PerceiverConfig``, ``PerceiverModel``, ``PerceiverFor…``, ``PerceiverTokenizer``,
  ``PerceiverImageProcessor(Fast)`` and every name imported from ``transformers.models.perceiver.*``) are taken
  from perceiver_io; a name perceiver_io lacks becomes a placeholder that raises ``ImportError`` when used, so one
  missing class fails only the tests that use it. transformers' generic machinery (mixins, ``testing_utils``,
  auto mappings) stays transformers'.
* Hub ids (``"deepmind/language-perceiver"`` …) become local folders of the released architectures with random
  weights, written once by transformers' own classes (``--released-dir``, cached between runs).
* Integration tests (classes named ``*IntegrationTest``) compare against hard-coded numbers of the pretrained
  weights, which random weights cannot reproduce. Each ``expected_*`` list or tensor literal there is replaced by
  the value transformers computes on the same folder and inputs: the harness first runs the integration tests
  with transformers' classes (untouched imports) in *record* mode, then with ours in *compare* mode, so each
  assertion keeps its own tolerance and only its reference changes. Shape expectations stay literal.
* A few imports of the stored test files name things the installed transformers dropped (``is_tf_available``,
  ``cached_property``, ``AnnotionFormat``); ``COMPAT_IMPORTS`` maps them to their present spelling. Network
  fixtures (``datasets.load_dataset`` of Sintel frames, ``requests.get`` of the COCO cats photo) are served from
  real local photos (scikit-image's data) when those packages are absent; no test reaches the network.
* When the source lacks a shared test module the Perceiver files import (``tests/test_modeling_common.py`` …),
  a labelled stand-in supplies just the names imported, with no tests of its own, so the model-specific tests
  still run; the report lists what was stood in, and those inherited tests count as not run.

Tests in ``NOT_APPLICABLE`` check transformers' private machinery; they are deselected and reported with the
reason. Every other test is reported passed or failed (with the first line of its error).
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PERCEIVER_TESTS = ("test_modeling_perceiver.py", "test_tokenization_perceiver.py", "test_image_processing_perceiver.py")
DEFAULT_RELEASED_DIR = Path.home() / ".cache" / "perceiver_io" / "released-random"
HOW_TO_GET_SOURCE = """\
--source must be a transformers checkout with tests/models/perceiver/. Obtain one matching the installed version:
    git clone --depth 1 --branch v$(python -c 'import transformers; print(transformers.__version__)') \\
        https://github.com/huggingface/transformers /path/to/transformers
(or download that tag's source archive), then rerun with --source /path/to/transformers."""

# transformers test name (fnmatch pattern on the method name) -> why it does not apply to perceiver_io.
NOT_APPLICABLE: dict[str, str] = {
    "test_torchscript*": "TorchScript tracing of transformers' forward (torchscript config flag); not part of the API",
    "test_torch_fx*": "torch.fx symbolic tracing through transformers.utils.fx",
    "test_pipeline_*": "transformers' pipelines resolve models through the Auto* registries, not perceiver_io",
    "test_*sdpa*": "attention-backend dispatch (_supports_sdpa, attn_implementation registry) is transformers' own",
    "test_*flash_attn*": "FlashAttention backends (_supports_flash_attn) are transformers' own; needs a GPU",
    "test_*flex_attn*": "flex attention backend (_supports_flex_attn) is transformers' own",
    "test_*flex_attention*": "flex attention backend (_supports_flex_attn) is transformers' own",
    "test_can_set_attention_dynamically*": "transformers' set_attn_implementation machinery",
    "test_attn_implementation_composite_models": "transformers' composite-config attention registry",
    "test_cpu_offload": "device_map offload via accelerate and _no_split_modules",
    "test_disk_offload*": "device_map offload via accelerate and _no_split_modules",
    "test_model_parallelism": "device_map splitting via _no_split_modules; needs several GPUs",
    "test_model_parallel*": "device_map splitting via _no_split_modules; needs several GPUs",
    "test_multi_gpu_data_parallel_forward": "needs several GPUs",
    "test_keep_in_fp32_modules*": "private _keep_in_fp32_modules loading hook",
    "test_save_load_keys_to_ignore_on_save": "private _keys_to_ignore_on_save attribute",
    "test_tied_weights_keys": "private _tied_weights_keys bookkeeping (Perceiver ties no weights)",
    "test_model_weights_reload_no_missing_tied_weights": "private _tied_weights_keys bookkeeping",
    "test_load_save_without_tied_weights": "private _tied_weights_keys bookkeeping",
    "test_mismatched_shapes_have_properly_initialized_weights": "private _init_weights / _is_hf_initialized hooks",
    "test_can_init_all_missing_weights": "private _init_weights / _is_hf_initialized hooks",
    "test_init_weights_can_init_buffers": "private _init_weights hook",
    "test_all_tensors_are_parameter_or_buffer": "transformers' meta-device init internals",
    "test_can_load_with_*device*": "transformers' device-context loading internals",
    "test_can_load_with_meta_device*": "transformers' meta-device loading internals",
    "test_model_is_small": "transformers' CI budget check on the tester's config size",
    "test_torch_compile*": "torch.compile of transformers' generation/training loops",
    "test_fast_is_faster_than_slow": "a timing race between two implementations, not behaviour",
    "test_image_processor_preprocess_arguments": "private _valid_processor_keys / filter_out_non_signature_kwargs",
    "test_can_compile_fast_image_processor": "torch.compile on a GPU (reduce-overhead mode)",
    "test_save_load_fast_slow_auto": "AutoImageProcessor resolves transformers' classes from the auto registry",
    "test_save_load_backends_auto": "AutoImageProcessor resolves transformers' classes from the auto registry",
    "test_image_processor_save_load_with_autoimageprocessor": "AutoImageProcessor resolves transformers' classes",
    "test_tokenizer_mismatch_warning": "AutoTokenizer registry warning",
    "test_prepare_batch_integration": "asserts isinstance of transformers' own BatchEncoding; perceiver_io's cannot "
    "subclass it without importing transformers (optional); its ids and shapes are checked in tests/test_processing.py",
    "test_training_gradient_checkpointing*": "transformers' GradientCheckpointingLayer wrapper",
    "test_gradient_checkpointing_*": "transformers' GradientCheckpointingLayer wrapper",
    "test_headmasking": "head_mask was removed from transformers' Perceiver interface",
    "test_head_pruning*": "prune_heads machinery (PreTrainedModel._prune_heads)",
    "test_resize_*": "Perceiver does not support resize_token_embeddings (skipped by transformers too)",
    "test_peft_*": "PEFT adapter integration",
    "test_*bnb*": "bitsandbytes quantisation; needs a GPU",
    "test_*quant*": "transformers' quantizer registry",
    "test_eager_matches_batched_and_grouped_inference*": "mixture-of-experts kernels "
    "(_can_set_experts_implementation); Perceiver has no experts",
    "test_model_get_set_embeddings": "asserts get_input_embeddings() is the latent nn.Parameter for every head; "
    "perceiver_io returns the byte nn.Embedding for the text heads by design (README, Coming from transformers) and "
    "the latents for the others (tests/test_model_methods.py)",
    "test_enable_input_require_grads_with_gradient_checkpointing": "feeds PerceiverModel's (B, M, d_model) inputs to "
    "every head and never runs in transformers (its latents have no .weight); perceiver_io's text heads expose the "
    "byte embedding and refuse float inputs as token ids (tests/test_model_methods.py covers the hook)",
    "test_can_load_ignoring_mismatched_shapes": "asserts the text of transformers' logger ('Reinit due to size "
    "mismatch'); perceiver_io raises a RuntimeError without the keyword and warns listing the re-initialised "
    "tensors with it (tests/test_from_pretrained.py, tests/test_model_methods.py)",
    "test_convert_tokens_to_string_format": "passes fast=True to from_pretrained, which transformers stores and "
    "ignores; perceiver_io has one tokenizer and refuses keywords it would ignore (convert_tokens_to_string: "
    "tests/test_processing.py)",
    "test_pil_can_run_without_torchvision": "loads the processor through AutoImageProcessor (transformers' classes) "
    "in a subprocess; perceiver_io's processors never import torchvision",
    "test_onnx_export_*": "the stored exporter tests expect HfExporter.export to return the bare program; the "
    "installed transformers 5.25 returns its ExportedModel wrapper, whatever the model (perceiver_io's export: "
    "`perceiver export`, tests/test_export.py)",
    "test_torch_export_*": "the stored exporter tests expect HfExporter.export to return the bare program; the "
    "installed transformers 5.25 returns its ExportedModel wrapper, whatever the model (perceiver_io's export: "
    "`perceiver export`, tests/test_export.py)",
    "test_added_tokens_serialization": "asserts transformers' private _special_tokens_map; the public behaviour "
    "(an AddedToken eos_token kept with its lstrip through save/load, both ways) is in tests/test_tokenizer_api.py",
    "test_chat_template*": "chat templates: a byte-level masked-LM tokenizer has no chat format",
    "test_continue_final_message*": "chat templates: a byte-level masked-LM tokenizer has no chat format",
    "test_jinja_*": "chat templates (Jinja): a byte-level masked-LM tokenizer has no chat format",
}

# Skip messages of transformers' tests that mean a perceiver_io class is missing (the test skips itself when its
# class is None): reported as failed, not as not applicable.
SKIP_MEANS_MISSING: dict[str, str] = {
    "one of the image processors is not defined": "perceiver_io lacks PerceiverImageProcessorFast (test skips itself)",
}

# (module, name) the stored test files import that the installed transformers no longer has -> replacement.
COMPAT_IMPORTS: dict[tuple[str, str], str] = {
    ("transformers.utils", "cached_property"): "functools.cached_property",
    ("transformers.utils", "is_tf_available"): "run_transformers_tests.is_unavailable",
    ("transformers.utils", "is_flax_available"): "run_transformers_tests.is_unavailable",
    ("transformers", "is_tf_available"): "run_transformers_tests.is_unavailable",
    ("transformers.image_utils", "AnnotionFormat"): "transformers.image_utils.AnnotationFormat",
}

# Functions of the shared test modules that download fixtures -> offline stand-ins here serving real local photos.
OFFLINE_CALLS = ("load_test_image",)

# Gates of the Perceiver test files on transformers' optional backends, asked of perceiver_io instead in our run:
# transformers' fast image processor needs torchvision, perceiver_io's does not.
OUR_GATES: dict[tuple[str, str], str] = {
    ("transformers.utils", "is_torchvision_available"): "run_transformers_tests.fast_image_processor_available",
}

# perceiver_io spells a few transformers names differently (transformers 5 renamed its PIL processor).
OUR_ALIASES = {"PerceiverImageProcessorPil": "PerceiverImageProcessor"}

# transformers 5.2x's image-processor registry (backend -> class name) as perceiver_io's classes: its torchvision
# backend is the batched-torch processor, its PIL backend the numpy one.
OUR_REGISTRY_NAMES = {
    "PerceiverImageProcessor": "PerceiverImageProcessorFast",
    "PerceiverImageProcessorPil": "PerceiverImageProcessor",
}

HUB_PREFIX = "deepmind/"
# The registry lookup transformers' shared image-processing tests resolve a model's processors with.
REGISTRY_LOOKUP = "get_image_processor_class_from_name"


# ---------------------------------------------------------------------------------------------------------------
# Run-time support imported by the rewritten tests (they do `import run_transformers_tests as _harness`).
# ---------------------------------------------------------------------------------------------------------------


def is_unavailable() -> bool:
    """Stand-in for transformers' dropped ``is_tf_available``/``is_flax_available``: those frameworks are gone."""
    return False


def fast_image_processor_available() -> bool:
    """Whether perceiver_io provides PerceiverImageProcessorFast (the gate transformers' tests spell as
    ``is_torchvision_available``)."""
    return not getattr(resolve("PerceiverImageProcessorFast"), "__perceiver_missing__", False)


class _MissingMeta(type):
    def __getattr__(cls, item: str) -> Any:
        if item.startswith("__"):
            raise AttributeError(item)
        raise ImportError(f"perceiver_io does not provide {cls.__name__} (test used .{item})")


def _missing(name: str) -> type:
    def _fail(*args: Any, **kwargs: Any) -> None:
        raise ImportError(f"perceiver_io does not provide {name}")

    return _MissingMeta(name, (), {"__init__": _fail, "__perceiver_missing__": True})


_RESOLVED: dict[str, Any] = {}


def _perceiver_io_lookup(name: str) -> Any:
    import importlib
    import pkgutil

    import perceiver_io

    if hasattr(perceiver_io, name):
        return getattr(perceiver_io, name)
    for info in pkgutil.walk_packages(perceiver_io.__path__, "perceiver_io."):
        try:
            module = importlib.import_module(info.name)
        except Exception:  # a module needing an optional dependency cannot hold the name we want
            continue
        obj = getattr(module, name, None)
        if obj is not None and getattr(obj, "__module__", "").startswith("perceiver_io"):
            return obj
    return None


def resolve(name: str) -> Any:
    """perceiver_io's object for a transformers Perceiver name, or a placeholder raising ImportError on use."""
    if name not in _RESOLVED:
        obj = _perceiver_io_lookup(OUR_ALIASES.get(name, name))
        _RESOLVED[name] = obj if obj is not None else _missing(name)
    return _RESOLVED[name]


def reference(name: str) -> Any:
    """transformers' object for a name in the reference run. transformers 5 made ``PerceiverImageProcessor`` the
    torchvision backend; without torchvision its PIL twin computes the same thing."""
    import transformers
    from transformers.utils import is_torchvision_available

    if not is_torchvision_available():
        if name == "PerceiverImageProcessor":
            return transformers.PerceiverImageProcessorPil
        if name == "PerceiverImageProcessorFast":
            return None
    if name == "PerceiverImageProcessorFast":
        return transformers.PerceiverImageProcessor
    return getattr(transformers, name)


def image_processor_class(name: str) -> Any:
    """The class transformers' image-processor registry returns for ``name``; perceiver_io's for Perceiver's."""
    if name in OUR_REGISTRY_NAMES:
        return resolve(OUR_REGISTRY_NAMES[name])
    from transformers.models.auto.image_processing_auto import get_image_processor_class_from_name

    return get_image_processor_class_from_name(name)


def local_folder(hub_id: str) -> str:
    """Local folder standing in for a released hub id: the released architecture with random weights (seed 0),
    saved by transformers' own classes, with the tokenizer or image processor the hub folder carries."""
    import torch
    import transformers

    from perceiver_io.released import RELEASED

    name = hub_id.removeprefix(HUB_PREFIX)
    if name not in RELEASED:
        raise ValueError(f"no released Perceiver named {hub_id!r}; expected one of {sorted(RELEASED)}")
    root = Path(os.environ.get("PERCEIVER_RELEASED_DIR", DEFAULT_RELEASED_DIR))
    folder = root / name
    if (folder / "config.json").exists():
        return str(folder)
    spec = RELEASED[name]
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    torch.manual_seed(0)
    model = getattr(transformers, spec.head)(transformers.PerceiverConfig(**spec.config))
    model.save_pretrained(staging)
    if spec.head in ("PerceiverForMaskedLM", "PerceiverForSequenceClassification"):
        transformers.PerceiverTokenizer().save_pretrained(staging)
    if spec.head.startswith("PerceiverForImageClassification"):
        transformers.PerceiverImageProcessorPil().save_pretrained(staging)
    staging.rename(folder)
    return str(folder)


def parity_expected(key: str, actual: Any) -> Any:
    """The reference an integration assertion compares with: recorded from transformers' run of the same test on
    the same folder (record mode), read back in our run (compare mode)."""
    import torch

    mode = os.environ.get("PERCEIVER_PARITY_MODE", "compare")
    store = Path(os.environ["PERCEIVER_PARITY_STORE"])
    recorded = torch.load(store, weights_only=False) if store.exists() else {}
    if mode == "record":
        recorded[key] = actual.detach().cpu().clone() if isinstance(actual, torch.Tensor) else actual
        torch.save(recorded, store)
        return actual
    if key not in recorded:
        raise AssertionError(f"no transformers reference for {key}: transformers' own run of this test failed")
    ref = recorded[key]
    return ref.to(actual.device) if isinstance(ref, torch.Tensor) else ref


def _photo(name: str):
    """A real photograph from scikit-image's bundled data, as a PIL image."""
    from PIL import Image
    from skimage import data

    return Image.fromarray(getattr(data, name)())


def load_dataset(path: str, *args: Any, split: str | None = None, **kwargs: Any) -> dict[str, list]:
    """Offline stand-in for ``datasets.load_dataset`` serving the one fixture the Perceiver tests read: two video
    frames (Sintel's in transformers' CI) — here a real photo and the same photo shifted 3 px right."""
    if path != "hf-internal-testing/fixtures_sintel":
        raise ValueError(f"offline datasets stand-in only serves hf-internal-testing/fixtures_sintel, not {path!r}")
    import numpy as np
    from PIL import Image

    first = np.asarray(_photo("astronaut"))
    return {"image": [Image.fromarray(first), Image.fromarray(np.roll(first, 3, axis=1))]}


def load_test_image(url: str) -> Any:
    """Offline stand-in for transformers' ``load_test_image``: a real photo of a cat (scikit-image's) for the
    COCO cats URL its tests name."""
    if not url.lower().endswith((".jpg", ".jpeg", ".png")):
        raise ValueError(f"offline load_test_image stand-in only serves image URLs, not {url!r}")
    return _photo("chelsea")


@dataclass
class _Response:
    raw: io.BytesIO


def requests_get(url: str, *args: Any, **kwargs: Any) -> _Response:
    """Offline stand-in for ``requests.get`` serving image URLs with a real photo of a cat (PNG bytes)."""
    if not url.lower().endswith((".jpg", ".jpeg", ".png")):
        raise ValueError(f"offline requests stand-in only serves image URLs, not {url!r}")
    buffer = io.BytesIO()
    _photo("chelsea").save(buffer, format="PNG")
    buffer.seek(0)
    return _Response(buffer)


# Stand-ins for shared test modules missing from --source: only the names the Perceiver files import.


def floats_tensor(shape, scale: float = 1.0, rng=None, name=None):
    import torch

    return torch.rand(tuple(shape)) * scale


def ids_tensor(shape, vocab_size: int, rng=None, name=None):
    import torch

    return torch.randint(0, vocab_size, tuple(shape), dtype=torch.long)


def random_attention_mask(shape, rng=None, name=None):
    mask = ids_tensor(shape, 2)
    mask[:, -1] = 1  # at least one attended position per row
    return mask


class StandinModelTesterMixin:
    """No tests: stands in for transformers' ModelTesterMixin when the source lacks it."""

    test_missing_keys = True


class StandinPipelineTesterMixin:
    """No tests: stands in for transformers' PipelineTesterMixin when the source lacks it."""


class StandinTokenizerTesterMixin:
    """No tests: a temporary folder per test and ``get_tokenizers`` over the slow tokenizer."""

    tokenizer_class = None
    rust_tokenizer_class = None
    test_slow_tokenizer = True
    test_rust_tokenizer = False

    def setUp(self) -> None:
        self.tmpdirname = tempfile.mkdtemp()

    def tearDown(self) -> None:
        shutil.rmtree(self.tmpdirname, ignore_errors=True)

    def get_tokenizers(self, **kwargs: Any) -> list:
        kwargs.pop("fast", None)
        return [self.get_tokenizer(**kwargs)]


STANDINS: dict[str, str] = {
    "test_modeling_common": "StandinModelTesterMixin as ModelTesterMixin, floats_tensor, ids_tensor, "
    "random_attention_mask",
    "test_pipeline_mixin": "StandinPipelineTesterMixin as PipelineTesterMixin",
    "test_tokenization_common": "StandinTokenizerTesterMixin as TokenizerTesterMixin",
}


def not_applicable_reason(test_name: str) -> str | None:
    method = test_name.split("[")[0]
    for pattern, reason in NOT_APPLICABLE.items():
        if fnmatch.fnmatch(method, pattern):
            return reason
    return None


def pytest_collection_modifyitems(config, items) -> None:
    """Skip the tests listed in NOT_APPLICABLE (reported with their reason) and those named by --skip."""
    import pytest

    requested = {name for name in os.environ.get("PERCEIVER_SKIP_TESTS", "").split(",") if name}
    for item in items:
        reason = not_applicable_reason(item.name)
        if item.name.split("[")[0] in requested:
            item.add_marker(pytest.mark.skip(reason=f"NOT RUN: {os.environ.get('PERCEIVER_SKIP_REASON', '')}"))
        elif reason:
            item.add_marker(pytest.mark.skip(reason=f"N/A: {reason}"))


# ---------------------------------------------------------------------------------------------------------------
# Rewriting the copied test files.
# ---------------------------------------------------------------------------------------------------------------


def _is_perceiver_import(module: str, name: str) -> bool:
    if module.startswith("transformers.models.perceiver"):
        return True
    return module == "transformers" and name.startswith("Perceiver")


def _call(func: str, *args: ast.expr) -> ast.Call:
    return ast.Call(
        func=ast.Attribute(value=ast.Name(id="_harness", ctx=ast.Load()), attr=func, ctx=ast.Load()),
        args=list(args),
        keywords=[],
    )


def _has_number_list(node: ast.AST) -> bool:
    """A hard-coded numeric list (``[0.1, -2]`` or nested), as opposed to a shape tuple."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.List) and any(
            (isinstance(e, ast.Constant) and isinstance(e.value, (int, float)))
            or isinstance(e, ast.UnaryOp)
            or isinstance(e, ast.List)
            for e in sub.elts
        ):
            return True
    return False


class _Rewriter(ast.NodeTransformer):
    """Swaps Perceiver imports (mode "ours") or pins them to transformers (mode "reference"), replaces hub ids by
    local folders and integration tests' hard-coded numbers by parity references."""

    def __init__(self, mode: str, perceiver_file: bool) -> None:
        self.mode = mode
        self.perceiver_file = perceiver_file
        self.used = False
        self._integration_class: str | None = None
        self._test: str | None = None
        self._expected: set[str] = set()

    def visit_ImportFrom(self, node: ast.ImportFrom) -> Any:
        module = node.module or ""
        if node.level:  # relative imports of transformers' own test machinery stay as they are
            return node
        kept, extra = [], []
        for alias in node.names:
            target = alias.asname or alias.name
            compat = COMPAT_IMPORTS.get((module, alias.name))
            gate = OUR_GATES.get((module, alias.name)) if self.mode == "ours" and self.perceiver_file else None
            if gate:
                mod, _, attr = gate.rpartition(".")
                extra.append(ast.ImportFrom(module=mod, names=[ast.alias(name=attr, asname=target)], level=0))
            elif compat and not _installed_has(module, alias.name):
                mod, _, attr = compat.rpartition(".")
                extra.append(ast.ImportFrom(module=mod, names=[ast.alias(name=attr, asname=target)], level=0))
            elif _is_perceiver_import(module, alias.name):
                func = "resolve" if self.mode == "ours" else "reference"
                value = _call(func, ast.Constant(alias.name))
                extra.append(ast.Assign(targets=[ast.Name(id=target, ctx=ast.Store())], value=value))
                self.used = True
            else:
                kept.append(alias)
        out: list[ast.stmt] = [ast.ImportFrom(module=module, names=kept, level=0)] if kept else []
        return [*out, *extra] or ast.Pass()

    def visit_ClassDef(self, node: ast.ClassDef) -> Any:
        outer = self._integration_class
        self._integration_class = node.name if node.name.endswith("IntegrationTest") else None
        self.generic_visit(node)
        self._integration_class = outer
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> Any:
        if self._integration_class and node.name.startswith("test"):
            self._test = f"{self._integration_class}.{node.name}"
            self._expected = {
                stmt.targets[0].id
                for stmt in ast.walk(node)
                if isinstance(stmt, ast.Assign)
                and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name)
                and stmt.targets[0].id.startswith("expected_")
                and _has_number_list(stmt.value)
            }
            self.generic_visit(node)
            self._test, self._expected = None, set()
            return node
        self.generic_visit(node)
        return node

    def visit_Call(self, node: ast.Call) -> Any:
        self.generic_visit(node)
        if self.mode == "ours" and isinstance(node.func, ast.Name) and node.func.id == REGISTRY_LOOKUP:
            self.used = True
            return _call("image_processor_class", *node.args)
        if isinstance(node.func, ast.Name) and node.func.id in OFFLINE_CALLS:
            self.used = True
            return _call(node.func.id, *node.args)
        if self._test and len(node.args) >= 2:
            first, second = node.args[0], node.args[1]
            for idx, (arg, other) in enumerate(((first, second), (second, first))):
                if isinstance(arg, ast.Name) and arg.id in self._expected:
                    key = f"{self._test}:{arg.id}"
                    node.args[idx] = _call("parity_expected", ast.Constant(key), other)
                    self.used = True
                    break
        return node

    def visit_Constant(self, node: ast.Constant) -> Any:
        if isinstance(node.value, str) and node.value.startswith(HUB_PREFIX):
            self.used = True
            return _call("local_folder", node)
        return node


def _installed_has(module: str, name: str) -> bool:
    import importlib

    try:
        return hasattr(importlib.import_module(module), name)
    except ImportError:
        return False


def rewrite_source(text: str, mode: str, perceiver_file: bool = False) -> str:
    """The test file's source with the harness's rewrites applied (see the module docstring)."""
    tree = ast.parse(text)
    rewriter = _Rewriter(mode, perceiver_file)
    tree = rewriter.visit(tree)
    if rewriter.used:
        body = tree.body
        at = 1 if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) else 0
        while at < len(body) and isinstance(body[at], ast.ImportFrom) and body[at].module == "__future__":
            at += 1
        body.insert(at, ast.Import(names=[ast.alias(name="run_transformers_tests", asname="_harness")]))
    return ast.unparse(ast.fix_missing_locations(tree)) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# Laying out the temporary package and running pytest.
# ---------------------------------------------------------------------------------------------------------------


def _relative_imports(path: Path) -> list[str]:
    """Module names (relative to tests/) imported with ``from ...x import`` or ``from .x import``."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level and node.module:
            names.append(node.module)
    return names


@dataclass
class Layout:
    root: Path
    standins: list[str]
    copied: list[str]


def lay_out(source: Path, root: Path, mode: str) -> Layout:
    """Copy the Perceiver tests and the shared modules they import under root/tests/, rewritten for mode."""
    tests = root / "tests"
    perceiver = tests / "models" / "perceiver"
    perceiver.mkdir(parents=True)
    for package in (tests, tests / "models", perceiver):
        (package / "__init__.py").write_text("")
    copied, standins = [], []
    pending = []
    for name in PERCEIVER_TESTS:
        src = source / "tests" / "models" / "perceiver" / name
        if src.exists():
            text = rewrite_source(src.read_text(encoding="utf-8"), mode, perceiver_file=True)
            (perceiver / name).write_text(text, encoding="utf-8")
            copied.append(f"tests/models/perceiver/{name}")
            pending.extend(_relative_imports(src))
    seen = set()
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        src = source / "tests" / f"{module.replace('.', '/')}.py"
        dst = tests / f"{module.replace('.', '/')}.py"
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.exists():
            dst.write_text(rewrite_source(src.read_text(encoding="utf-8"), mode), encoding="utf-8")
            copied.append(f"tests/{module.replace('.', '/')}.py")
            pending.extend(_relative_imports(src))
        elif module in STANDINS:
            dst.write_text(f"from run_transformers_tests import {STANDINS[module]}  # noqa: F401\n")
            standins.append(f"tests/{module}.py")
    if (source / "utils").is_dir():  # some shared modules put transformers' utils/ on sys.path
        shutil.copytree(source / "utils", root / "utils", ignore=shutil.ignore_patterns("*.pyc", "__pycache__"))
    sample_text = source / "tests" / "fixtures" / "sample_text.txt"  # read by the shared tokenizer tests
    if sample_text.exists():
        (tests / "fixtures").mkdir(exist_ok=True)
        shutil.copy(sample_text, tests / "fixtures" / "sample_text.txt")
    coco = source / "tests" / "fixtures" / "tests_samples" / "COCO"
    target = tests / "fixtures" / "tests_samples" / "COCO"
    if (coco / "000000039769.png").exists():
        shutil.copytree(coco, target)
    else:  # the cats photo transformers' tests open by relative path; a real cat photo stands in
        target.mkdir(parents=True)
        _photo("chelsea").save(target / "000000039769.png")
    (root / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: transformers' slow tests\n")
    (root / "conftest.py").write_text(
        "from run_transformers_tests import pytest_collection_modifyitems  # noqa: F401\n"
    )
    import importlib.util

    if importlib.util.find_spec("datasets") is None:
        (root / "datasets.py").write_text("from run_transformers_tests import load_dataset  # noqa: F401\n")
    if importlib.util.find_spec("requests") is None:
        (root / "requests.py").write_text("from run_transformers_tests import requests_get as get  # noqa: F401\n")
    return Layout(root, standins, copied)


def _run_pytest(root: Path, targets: list[str], env: dict[str, str], junit: Path, extra: list[str]) -> int:
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rN", f"--junitxml={junit}"]
    cmd += [*extra, *targets]
    return subprocess.call(cmd, cwd=root, env=env)


def _env(root: Path, parity_mode: str, store: Path, released_dir: Path, slow: bool) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(root), str(REPO), str(Path(__file__).resolve().parent), env.get("PYTHONPATH", "")]
    env.update(
        PYTHONPATH=os.pathsep.join(p for p in paths if p),
        PERCEIVER_PARITY_MODE=parity_mode,
        PERCEIVER_PARITY_STORE=str(store),
        PERCEIVER_RELEASED_DIR=str(released_dir),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        RUN_SLOW="1" if slow else "0",
    )
    return env


# ---------------------------------------------------------------------------------------------------------------
# Classifying results and writing the report.
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    test: str
    outcome: str  # passed | failed | not applicable | not run
    reason: str = ""


def _first_line(text: str | None) -> str:
    for line in (text or "").splitlines():
        line = line.strip()
        if line:
            return line[:220].replace("|", "\\|")
    return ""


def classify(junit: Path) -> list[Outcome]:
    outcomes = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}.{case.get('name', '')}".removeprefix("tests.models.perceiver.")
        failure = case.find("failure")
        error = case.find("error")
        skipped = case.find("skipped")
        if failure is not None or error is not None:
            node = failure if failure is not None else error
            message = node.get("message") or node.text
            outcomes.append(Outcome(name, "failed", _first_line(message)))
        elif skipped is not None:
            message = _first_line(skipped.get("message"))
            missing = next((why for text, why in SKIP_MEANS_MISSING.items() if text in message), None)
            if missing:
                outcomes.append(Outcome(name, "failed", missing))
            elif message.startswith("NOT RUN: "):
                outcomes.append(Outcome(name, "not run", message.removeprefix("NOT RUN: ")))
            else:
                outcomes.append(Outcome(name, "not applicable", message.removeprefix("N/A: ") or "skipped"))
        else:
            outcomes.append(Outcome(name, "passed"))
    return outcomes


def own_tests(source: Path) -> set[str]:
    """``module.Class.test_method`` of every test the Perceiver files define themselves (the model-specific tests;
    the rest are inherited from transformers' shared mixins)."""
    own = set()
    for name in PERCEIVER_TESTS:
        path = source / "tests" / "models" / "perceiver" / name
        if not path.exists():
            continue
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef):
                own |= {
                    f"{name.removesuffix('.py')}.{node.name}.{f.name}"
                    for f in node.body
                    if isinstance(f, ast.FunctionDef) and f.name.startswith("test")
                }
    return own


def _totals(outcomes: list[Outcome]) -> str:
    totals = Counter(o.outcome for o in outcomes)
    return (
        f"{totals['passed']} passed, {totals['failed']} failed, {totals['not applicable']} not applicable, "
        f"{totals['not run']} not run, {len(outcomes)} in all"
    )


def write_report(
    path: Path, outcomes: list[Outcome], layouts: Layout, notes: list[str], command: str, own: set[str]
) -> None:
    specific = [o for o in outcomes if o.test.split("[")[0] in own]
    lines = [
        "# transformers' Perceiver tests against perceiver_io",
        "",
        f"Generated by `{command}` (scripts/run_transformers_tests.py; see its docstring for the rewrites).",
        "",
        f"**Totals:** {_totals(outcomes)}.",
        "",
        f"**Model-specific** (defined in the Perceiver test files themselves): {_totals(specific)}. The others are "
        "inherited from transformers' shared mixins (column *from*).",
        "",
        "Copied from the source: " + ", ".join(f"`{c}`" for c in layouts.copied) + ".",
    ]
    if layouts.standins:
        lines += [
            "",
            "Stood in (absent from the source; their inherited tests were **not run**): "
            + ", ".join(f"`{s}`" for s in layouts.standins)
            + ".",
        ]
    lines += ["", *[f"- {n}" for n in notes]]
    failures = Counter(o.reason for o in outcomes if o.outcome == "failed")
    if failures:
        lines += ["", "Failures grouped by error:", ""]
        lines += [f"- {count} × {reason}" for reason, count in failures.most_common()]
    lines += ["", "| test | from | outcome | reason |", "| --- | --- | --- | --- |"]
    for o in sorted(outcomes, key=lambda o: o.test):
        origin = "Perceiver file" if o.test.split("[")[0] in own else "inherited"
        lines.append(f"| `{o.test}` | {origin} | {o.outcome} | {o.reason} |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, help="transformers checkout (holding tests/models/perceiver/)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "transformers_tests.md")
    parser.add_argument("--released-dir", type=Path, default=DEFAULT_RELEASED_DIR, help="cache of random folders")
    parser.add_argument("--workdir", type=Path, help="keep the rewritten tests here instead of a temporary folder")
    parser.add_argument("--skip-slow", action="store_true", help="skip @slow tests (release-size integration)")
    parser.add_argument("--skip", action="append", default=[], metavar="TEST", help="test method not to run")
    parser.add_argument("--skip-reason", default="heavy on this machine", help="why --skip tests are not run")
    parser.add_argument("-k", dest="keyword", help="pytest -k selection")
    parser.add_argument("--note", action="append", default=[], help="line added to the report (e.g. source version)")
    args = parser.parse_args(argv)
    if args.source is None or not (args.source / "tests" / "models" / "perceiver").is_dir():
        print(HOW_TO_GET_SOURCE, file=sys.stderr)
        return 2

    work = args.workdir or Path(tempfile.mkdtemp(prefix="perceiver-trtests-"))
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    store = work / "parity_reference.pt"
    slow = not args.skip_slow
    skip = {"PERCEIVER_SKIP_TESTS": ",".join(args.skip), "PERCEIVER_SKIP_REASON": args.skip_reason}
    keyword = ["-k", args.keyword] if args.keyword else []
    if slow:  # transformers' run of the integration tests records the references ours are compared with
        reference = lay_out(args.source, work / "reference", "reference")
        env = _env(reference.root, "record", store, args.released_dir, slow) | skip
        selection = f"IntegrationTest and ({args.keyword})" if args.keyword else "IntegrationTest"
        _run_pytest(reference.root, ["tests/models/perceiver"], env, work / "reference.xml", ["-k", selection])
    ours = lay_out(args.source, work / "ours", "ours")
    env = _env(ours.root, "compare", store, args.released_dir, slow) | skip
    _run_pytest(ours.root, ["tests/models/perceiver"], env, work / "ours.xml", keyword)
    outcomes = classify(work / "ours.xml")

    notes = [
        "Hub ids are local folders of the released architectures with random weights (seed 0), written by "
        "transformers' classes; integration tests' hard-coded numbers are replaced by transformers' values on "
        "the same folder and inputs (recorded in a first run with transformers' classes), same tolerances.",
    ]
    if args.skip:
        notes.append(f"Not run on request (--skip, {args.skip_reason}): " + ", ".join(f"`{s}`" for s in args.skip))
    if args.skip_slow:
        notes.append("`@slow` tests were not run (--skip-slow).")
    notes += args.note
    command = shlex.join(["python", "scripts/run_transformers_tests.py", *(argv if argv is not None else sys.argv[1:])])
    write_report(args.out, outcomes, ours, notes, command, own_tests(args.source))
    totals = Counter(o.outcome for o in outcomes)
    print(json.dumps(dict(totals)), f"-> {args.out}")
    return 0 if totals["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
