"""Export to ONNX and torch.export (.pt2): every head, both formats, on the small configurations.

The artefact is reloaded here and run on inputs of its own (a batch size neither traced nor checked at export,
another point count for the multimodal graph), against the eager model called the usual way."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL_CONFIGS, assert_close_to_reference, randomize_, small_inputs
from test_cli import assert_user_error, run, save_small

import perceiver_io
from perceiver_io import export
from perceiver_io.checkpoints.loading import load_model
from perceiver_io.cli import main
from perceiver_io.export import ExportMismatchError, export_onnx, export_program
from perceiver_io.released import RELEASED

HEADS = list(SMALL_CONFIGS)
# Image sizes of the small image configurations (the Fourier and conv heads default to 224).
IMAGE_SIZES = {"PerceiverForImageClassificationFourier": 12, "PerceiverForImageClassificationConvProcessing": 32}
EXPORTERS = {"onnx": export_onnx, "pt2": export_program}
ONNX_SHAPES = {
    "PerceiverForMaskedLM": {"inputs": ["batch", 24], "attention_mask": ["batch", 24], "logits": ["batch", 24, 262]},
    "PerceiverForMultimodalAutoencoding": {
        "image": ["batch", 2, 3, 16, 16],
        "audio": ["batch", 64, 1],
        "label": ["batch", 5],
        "image_points": ["image_points"],
        "audio_points": ["audio_points"],
        "image_logits": ["batch", "image_points", 3],
        "audio_logits": ["batch", "16*audio_points"],
        "label_logits": ["batch", 5],
    },
}
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def _model(head: str, **overrides) -> torch.nn.Module:
    size = {"image_size": IMAGE_SIZES[head]} if head in IMAGE_SIZES else {}
    config = perceiver_io.PerceiverConfig.from_dict({**SMALL_CONFIGS[head], **size, **overrides})
    torch.manual_seed(0)
    return randomize_(getattr(perceiver_io, head)(config), seed=3)


def _call(head: str, model: torch.nn.Module, batch: int, seed: int = 7) -> tuple[dict[str, torch.Tensor], list]:
    """Graph inputs by name (fresh ones: another seed and batch than export uses) and the eager model's outputs."""
    if head in IMAGE_SIZES:
        size = IMAGE_SIZES[head]
        kwargs = dict(inputs=torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)))
    else:
        kwargs = small_inputs(head, batch=batch, seed=seed)
    with torch.no_grad():
        if head == "PerceiverForMultimodalAutoencoding":
            points = {"image": torch.tensor([0, 7, 300, 511, 64]), "audio": torch.tensor([3, 1, 2])}
            logits = model(inputs=kwargs["inputs"], subsampled_output_points=points).logits
            named = {**kwargs["inputs"], "image_points": points["image"], "audio_points": points["audio"]}
            return named, [logits["image"], logits["audio"], logits["label"]]
        return kwargs, [model(**kwargs).logits]


def _run_artefact(fmt: str, path: Path, named: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    if fmt == "onnx":
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feeds = {i.name: named[i.name].numpy() for i in session.get_inputs()}
        return [torch.from_numpy(y) for y in session.run(None, feeds)]
    module = torch.export.load(path).module()
    with torch.no_grad():
        out = module(*named.values())  # positional, in the order of the graph's inputs
    return list(out) if isinstance(out, tuple) else [out]


def _graph_ops(fmt: str, path: Path) -> set[str]:
    if fmt == "onnx":
        import onnx

        return {f"{n.domain}::{n.op_type}" for n in onnx.load(path).graph.node}
    return {str(n.target) for n in torch.export.load(path).graph.nodes if n.op == "call_function"}


@pytest.mark.parametrize("fmt", list(EXPORTERS))
@pytest.mark.parametrize("head", HEADS)
def test_every_head_exports_with_a_dynamic_batch(head, fmt, tmp_path):
    model = _model(head)
    path = tmp_path / f"model.{fmt}"
    result = EXPORTERS[fmt](model, path)
    assert result.path == path and path.stat().st_size == result.size_bytes > 0
    assert [c.batch for c in result.checks] == [1, 3]
    assert all(c.max_abs_diff <= c.bound for c in result.checks)
    assert [p.name for p in tmp_path.iterdir()] == ["model." + fmt]  # no temporary file left
    named, expected = _call(head, model, batch=4)
    assert list(named)[: len(result.inputs)] == list(result.inputs)
    got = _run_artefact(fmt, path, named)
    assert len(got) == len(expected) == len(result.outputs)
    for g, e in zip(got, expected, strict=True):
        assert_close_to_reference(g, e)
    if fmt == "onnx" and head in ONNX_SHAPES:  # the dynamic dimensions are named in the graph
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        shapes = {i.name: i.shape for i in (*session.get_inputs(), *session.get_outputs())}
        assert shapes == ONNX_SHAPES[head]
    # Portable graphs: ONNX's standard operators only; no oneDNN operator pinned into the program.
    ops = _graph_ops(fmt, path)
    assert all(op.startswith("::") for op in ops) if fmt == "onnx" else not any("mkldnn" in op for op in ops)


def test_multimodal_point_counts_are_bounded_by_the_decoder_chunk():
    model = _model("PerceiverForMultimodalAutoencoding")
    layout = export.MultimodalLayout.of(model)
    assert layout.max_points == (512, 4)  # the whole small grid fits one chunk
    model.perceiver.decoder.query_chunk_size = 100
    assert export.MultimodalLayout.of(model).max_points == (95, 4)  # 95 + 4 + the label query = 100


@pytest.mark.parametrize("fmt", list(EXPORTERS))
def test_bare_model_exports_latents_with_any_input_count(fmt, tmp_path):
    config = perceiver_io.PerceiverConfig.from_dict(SMALL_CONFIGS["PerceiverForSequenceClassification"])
    model = randomize_(perceiver_io.PerceiverModel(config))
    result = EXPORTERS[fmt](model, tmp_path / f"m.{fmt}")
    assert list(result.outputs) == ["last_hidden_state"]
    x = torch.randn(5, 41, config.d_model)
    with torch.no_grad():
        expected = model(inputs=x).last_hidden_state
    assert_close_to_reference(_run_artefact(fmt, tmp_path / f"m.{fmt}", {"inputs": x})[0], expected)
    with pytest.raises(ValueError, match="without preprocessor and decoder"):
        export_onnx(_model("PerceiverForSequenceClassification").perceiver, tmp_path / "x.onnx")


@pytest.mark.parametrize("fmt", list(EXPORTERS))
def test_fixed_batch(fmt, tmp_path):
    model = _model("PerceiverForImageClassificationLearned")
    result = EXPORTERS[fmt](model, tmp_path / f"m.{fmt}", batch=5)
    assert result.batch == 5 and [c.batch for c in result.checks] == [5]
    assert result.inputs["inputs"].startswith("float32 (5, 3, 8, 8)")
    named, expected = _call("PerceiverForImageClassificationLearned", model, batch=5)
    assert_close_to_reference(_run_artefact(fmt, tmp_path / f"m.{fmt}", named)[0], expected[0])
    if fmt == "onnx":
        session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
        assert session.get_inputs()[0].shape == [5, 3, 8, 8]


@pytest.mark.parametrize("fmt", list(EXPORTERS))
def test_a_mismatch_names_the_difference_and_writes_nothing(fmt, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "PARITY_TOLERANCE", -1.0)  # every difference, even 0, is over the bound
    target = tmp_path / f"m.{fmt}"
    target.write_bytes(b"previous")
    with pytest.raises(ExportMismatchError, match=r"at batch 1: max\|Δ\| = .* over the tolerance -1.*nothing was"):
        EXPORTERS[fmt](_model("PerceiverForSequenceClassification"), target)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_missing_onnx_extra(tmp_path, monkeypatch):
    model = _model("PerceiverForSequenceClassification")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r"needs onnxruntime: pip install perceiver_io\[onnx\]"):
        export_onnx(model, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
    export_onnx(model, tmp_path / "m.onnx", check=False)  # the check is what needs onnxruntime
    assert (tmp_path / "m.onnx").is_file()
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(ImportError, match=r"needs onnxscript: pip install perceiver_io\[onnx\]"):
        export_onnx(model, tmp_path / "m.onnx", check=False)


def test_bad_arguments(tmp_path):
    model = _model("PerceiverForSequenceClassification")
    with pytest.raises(ValueError, match="is a folder"):
        export_program(model, tmp_path)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        export_program(model, tmp_path / "missing" / "m.pt2")
    with pytest.raises(ValueError, match="batch must be a whole number >= 1"):
        export_program(model, tmp_path / "m.pt2", batch=0)
    with pytest.raises(TypeError, match=r"float32 graphs; the model.s parameters are torch\.bfloat16"):
        export_program(model.to(torch.bfloat16), tmp_path / "m.pt2")
    with pytest.raises(TypeError, match=r"takes a perceiver_io model; got a torch\.nn\.modules\.linear\.Linear"):
        export_program(torch.nn.Linear(2, 2), tmp_path / "m.pt2")
    assert not any(tmp_path.iterdir())


# ---- the command ----


def test_cli_export_end_to_end(capsys, tmp_path):
    folder = save_small(tmp_path / "mlm", "PerceiverForMaskedLM")
    out = tmp_path / "new" / "folder" / "mlm.onnx"
    code, stdout, _ = run(capsys, "export", "-m", folder, "-o", out)
    assert code == 0, stdout
    assert f"wrote {out}: PerceiverForMaskedLM as onnx, any batch size" in stdout
    assert "input inputs: int64 (batch, 24)" in stdout and "output logits: float32 (batch, 24, 262)" in stdout
    assert "check: onnxruntime matches the model" in stdout and "batch 3:" in stdout
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    ids = np.random.default_rng(0).integers(6, 262, (2, 24))
    mask = np.ones((2, 24), dtype=np.int64)
    with torch.no_grad():
        expected = load_model(folder)(inputs=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits
    got = session.run(None, {"inputs": ids, "attention_mask": mask})[0]
    assert_close_to_reference(torch.from_numpy(got), expected)

    code, stdout, _ = run(capsys, "export", "-m", folder, "-o", tmp_path / "mlm.pt2", "--batch", "2", "--no-check")
    assert code == 0 and "as pt2, batch 2" in stdout and "check: skipped (--no-check)" in stdout
    assert torch.export.load(tmp_path / "mlm.pt2").module() is not None


def test_cli_export_errors(capsys, tmp_path, monkeypatch):
    folder = save_small(tmp_path / "cls", "PerceiverForSequenceClassification")
    assert_user_error(capsys, ["export", "-m", folder, "-o", tmp_path / "m.bin"], "cannot tell the format")
    assert_user_error(
        capsys, ["export", "-m", folder, "-o", tmp_path / "m.onnx", "--format", "pt2"], "--format pt2 writes a .pt2"
    )
    for bad, message in (("--batch=0", "--batch: 0 is less than 1"), ("--format=tf", "--format: invalid choice")):
        with pytest.raises(SystemExit) as exit_info:
            main(["export", "-m", folder, "-o", str(tmp_path / "m.onnx"), bad])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    (tmp_path / "dir.onnx").mkdir()
    assert_user_error(capsys, ["export", "-m", folder, "-o", tmp_path / "dir.onnx"], "is a folder")
    (tmp_path / "file").write_text("")
    assert_user_error(capsys, ["export", "-m", folder, "-o", tmp_path / "file" / "m.onnx"], "is a file, so the output")
    assert_user_error(capsys, ["export", "-m", tmp_path / "nothing", "-o", tmp_path / "m.onnx"], "no such file")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert_user_error(capsys, ["export", "-m", folder, "-o", tmp_path / "m.onnx"], "pip install perceiver_io[onnx]")


# ---- released sizes ----


@pytest.mark.slow
@pytest.mark.parametrize("fmt", list(EXPORTERS))
@pytest.mark.parametrize(
    "name",
    # The two benchmarked architectures: the others' released-size checks (flow, multimodal at batch 3) would add
    # ≈ 10 min to CI's bounded slow step; every head exports at small size in the default suite.
    ["language-perceiver", "vision-perceiver-fourier"],
)
def test_released_sizes_export(name, fmt, tmp_path):
    """Random weights at the released geometry: the export's own check (batch 1 and 3) passes."""
    torch.manual_seed(0)
    config = perceiver_io.PerceiverConfig.released(name)
    model = getattr(perceiver_io, RELEASED[name].head)(config).eval()
    result = EXPORTERS[fmt](model, tmp_path / f"m.{fmt}")
    assert [c.batch for c in result.checks] == [1, 3]
