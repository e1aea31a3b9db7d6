"""Precision as a user choice: ``optimize_for_inference(model, "int8")`` against torch's own dynamic quantization of
transformers' model on the same weights, and ``perceiver COMMAND --precision bf16|int8`` against the same command in
fp32 on real inputs (scikit-image photos, the motorcycle stereo pair, the colab's sentence, Megamind.avi)."""

from __future__ import annotations

import copy
import re
import warnings
import wave

import numpy as np
import pytest
import torch
from conftest import SMALL_CONFIGS, assert_close_to_reference, randomize_, small_inputs
from PIL import Image
from skimage import data
from test_cli import opencv_data, run, save_small  # noqa: F401  (opencv_data: the fixture)
from torch import nn

import perceiver_io
from perceiver_io.cli import main
from perceiver_io.inference import optimize_for_inference
from perceiver_io.tasks.autoencode import psnr
from perceiver_io.tasks.flow_utils import read_flo, stereo_motorcycle_pair

COMMANDS = ("fill-mask", "classify", "flow", "autoencode")


def _logits(out) -> dict[str, torch.Tensor]:
    return out.logits if isinstance(out.logits, dict) else {"logits": out.logits}


def _rel_l2(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got.double() - ref.double()).norm() / ref.double().norm()).item()


# ---- optimize_for_inference(model, "int8") ----


def _torch_quantize_dynamic(model: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's deprecation notice for its eager quantization
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)


@pytest.mark.parametrize(
    "head",
    [
        "PerceiverForMaskedLM",
        "PerceiverForImageClassificationFourier",
        "PerceiverForOpticalFlow",
        "PerceiverForMultimodalAutoencoding",
    ],
)
@torch.no_grad()
def test_int8_quantizes_every_linear_as_torch_does(head):
    """Every linear of the float32 model (``nn.Linear`` and ``OneDNNLinear``) becomes, under the same name, exactly
    what torch's ``quantize_dynamic`` makes of a plain ``nn.Linear`` holding its weights: same int8 weights and
    scale, same output. Nothing else in the model is quantized, so its outputs stay within int8's error of fp32."""
    fp32 = randomize_(getattr(perceiver_io, head)(perceiver_io.PerceiverConfig(**SMALL_CONFIGS[head])))
    ours = optimize_for_inference(copy.deepcopy(fp32), "int8")
    linears = {name: m for name, m in fp32.named_modules() if isinstance(m, nn.Linear)}
    quantized = {name: m for name, m in ours.named_modules() if type(m) is torch.ao.nn.quantized.dynamic.Linear}
    assert linears and quantized.keys() == linears.keys()
    assert not any(isinstance(m, nn.Linear) for m in ours.modules())
    g = torch.Generator().manual_seed(0)
    for name, linear in linears.items():
        plain = nn.Linear(linear.in_features, linear.out_features, linear.bias is not None)
        plain.load_state_dict(linear.state_dict())
        expected = _torch_quantize_dynamic(nn.Sequential(plain))[0]
        got = quantized[name]
        assert torch.equal(got.weight().int_repr(), expected.weight().int_repr()), name
        assert got.weight().q_scale() == expected.weight().q_scale(), name
        x = torch.randn(3, linear.in_features, generator=g)
        assert torch.equal(got(x), expected(x)), name
    inputs = small_inputs(head)
    got, exact = _logits(ours(**inputs)), _logits(fp32(**inputs))
    for key in exact:
        assert got[key].dtype == torch.float32
        assert _rel_l2(got[key], exact[key]) < 0.15  # 1-7 % on these models


def test_int8_is_idempotent_and_refuses_to_mix_with_bf16():
    model = randomize_(
        perceiver_io.PerceiverForMaskedLM(perceiver_io.PerceiverConfig(**SMALL_CONFIGS["PerceiverForMaskedLM"]))
    )
    quantized = optimize_for_inference(copy.deepcopy(model), "int8")
    names = [type(m).__name__ for m in quantized.modules()]
    assert [type(m).__name__ for m in optimize_for_inference(quantized, "int8").modules()] == names
    with pytest.raises(
        ValueError, match=r"precision='int8' quantizes float32 linears; this model's are torch\.bfloat16"
    ):
        optimize_for_inference(model.to(torch.bfloat16), "int8")
    with pytest.raises(ValueError, match="precision='bf16' on a model quantized to int8"):
        optimize_for_inference(quantized, "bf16")


# ---- optimize_for_inference(model, compile=True) ----


@torch.no_grad()
def test_compile_matches_eager():
    """``compile=True``: the same logits as eager within the parity criterion, for two models of one
    configuration in turn (compiled graphs are not shared between them); the model's attributes pass through; a
    compiled model is refused a second ``optimize_for_inference`` (its weights are frozen). Whether freezing pays
    off is for benchmarks/default_path.py to show: it changes speed, not results."""
    from perceiver_io.inference import CompiledForInference

    head = "PerceiverForMaskedLM"
    inputs = small_inputs(head)
    for seed in (0, 1):
        model = randomize_(getattr(perceiver_io, head)(perceiver_io.PerceiverConfig(**SMALL_CONFIGS[head])), seed)
        expected = model.eval()(**inputs).logits
        compiled = optimize_for_inference(model, compile=True)
        assert isinstance(compiled, CompiledForInference) and compiled.model is model
        assert compiled.config is model.config and not compiled.training
        assert_close_to_reference(compiled(**inputs).logits, expected)
    with pytest.raises(ValueError, match="optimize_for_inference on a CompiledForInference"):
        optimize_for_inference(compiled, "bf16")


# ---- the commands ----


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("models")
    return {
        "mlm": save_small(root / "mlm", "PerceiverForMaskedLM", max_position_embeddings=64),
        "classifier": save_small(root / "classifier", "PerceiverForImageClassificationFourier", image_size=32),
        "flow": save_small(
            root / "flow", "PerceiverForOpticalFlow", train_size=[64, 96], cross_attention_shape_for_attention="q"
        ),
        "multimodal": save_small(
            root / "multimodal",
            "PerceiverForMultimodalAutoencoding",
            image_size=8,
            output_shape=[1, 2, 32, 32],
            audio_samples_per_frame=64,
        ),
    }


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("photos")
    for name in ("chelsea", "coffee", "camera"):
        Image.fromarray(getattr(data, name)()).save(folder / f"{name}.png")
    return sorted(str(p) for p in folder.iterdir())


# Largest differences from fp32 allowed per precision, about twice what these small random models show (measured in
# brackets): bf16 keeps 8 significant bits; int8 quantizes every linear's weights and inputs to 256 levels.
CLASS_BOUND = {"bf16": 0.01, "int8": 0.04}  # class probabilities, absolute (0.0035; 0.017)
BYTE_BOUND = {"bf16": 0.04, "int8": 0.12}  # byte probabilities, absolute, top-1 about 0.5 (0.018; 0.061)
FLOW_BOUND = {"bf16": 0.02, "int8": 0.06}  # end-point error ÷ the fp32 flow's mean magnitude (0.0083; 0.025)
PSNR_BOUND = {"bf16": 35.0, "int8": 24.0}  # dB, reconstructed video and audio against fp32's (42.1; 28.9)


def _classes(out: str) -> dict[str, dict[int, float]]:
    """``perceiver classify`` output → {image path: {class: probability}}."""
    result: dict[str, dict[int, float]] = {}
    path = ""
    for line in out.splitlines():
        rank = re.fullmatch(r"\s+\d\.\s+([\d.]+)%\s+(\d+)", line)
        if rank:
            result[path][int(rank[2])] = float(rank[1]) / 100
        else:
            path = line
            result[path] = {}
    return result


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_classify_agrees_with_fp32(capsys, models, photos, precision):
    argv = ["classify", "-m", models["classifier"], *photos, "--top-k", "5"]  # all 5 classes
    code, fp32, _ = run(capsys, *argv)
    assert code == 0
    code, other, _ = run(capsys, *argv, "--precision", precision)
    assert code == 0
    expected, got = _classes(fp32), _classes(other)
    assert got.keys() == expected.keys() and len(got) == 3
    for path, probs in expected.items():
        assert max(probs, key=probs.get) == max(got[path], key=got[path].get), path
        assert max(abs(got[path][c] - p) for c, p in probs.items()) <= CLASS_BOUND[precision]


def _byte_probabilities(out: str) -> dict[int, dict[str, float]]:
    """``perceiver fill-mask`` candidate lines → {position: {token: probability}}."""
    result = {}
    for line in out.splitlines():
        position = re.match(r"  \s*(\d+)  (.*)$", line)
        if position:
            candidates = re.findall(r"(.+?) (\d\.\d{3})(?:  |$)", position[2])
            result[int(position[1])] = {token: float(p) for token, p in candidates}
    return result


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_fill_mask_agrees_with_fp32(capsys, models, precision):
    argv = ["fill-mask", "-m", models["mlm"], "This is an incomplete sentence where some words are missing.",
            "--mask", "51:60", "--top-k", "262"]  # fmt: skip
    code, fp32, _ = run(capsys, *argv)
    assert code == 0
    code, other, _ = run(capsys, *argv, "--precision", precision)
    assert code == 0
    expected, got = _byte_probabilities(fp32), _byte_probabilities(other)
    assert list(expected) == list(range(51, 60)) and got.keys() == expected.keys()
    for position, probs in expected.items():
        assert len(probs) == 262 and got[position].keys() == probs.keys()
        assert max(abs(got[position][t] - p) for t, p in probs.items()) <= BYTE_BOUND[precision]
    if precision == "bf16":
        assert other.splitlines()[0] == fp32.splitlines()[0]  # "filled: …": the same predicted bytes


@pytest.fixture(scope="module")
def motorcycle_tile(tmp_path_factory) -> tuple[str, str]:
    """The centre 64×96 of the motorcycle stereo pair (one tile of the small flow model), as two PNG files."""
    folder = tmp_path_factory.mktemp("motorcycle")
    left, right, _ = stereo_motorcycle_pair()
    top, start = (left.shape[0] - 64) // 2, (left.shape[1] - 96) // 2
    paths = []
    for name, frame in (("left", left), ("right", right)):
        Image.fromarray(frame[top : top + 64, start : start + 96].astype(np.uint8)).save(folder / f"{name}.png")
        paths.append(str(folder / f"{name}.png"))
    return paths[0], paths[1]


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_flow_agrees_with_fp32(capsys, models, motorcycle_tile, tmp_path, precision):
    argv = ["flow", "-m", models["flow"], *motorcycle_tile]
    assert run(capsys, *argv, "-o", tmp_path / "fp32")[0] == 0
    assert run(capsys, *argv, "-o", tmp_path / precision, "--precision", precision)[0] == 0
    expected, got = read_flo(tmp_path / "fp32.flo"), read_flo(tmp_path / f"{precision}.flo")
    assert got.dtype == np.float32 and got.shape == expected.shape == (64, 96, 2)
    epe = np.linalg.norm(got - expected, axis=-1).mean()
    magnitude = np.linalg.norm(expected, axis=-1).mean()
    assert magnitude > 0 and epe <= FLOW_BOUND[precision] * magnitude, (epe, magnitude)


def _wav_samples(path) -> np.ndarray:
    with wave.open(str(path)) as wav:
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2") / 32768


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_autoencode_agrees_with_fp32(capsys, models, opencv_data, tmp_path, precision):  # noqa: F811
    pytest.importorskip("av")
    argv = ["autoencode", "-m", models["multimodal"], opencv_data / "Megamind.avi", "--max-windows", "1"]
    assert run(capsys, *argv, "-o", tmp_path / "fp32")[0] == 0
    assert run(capsys, *argv, "-o", tmp_path / precision, "--precision", precision)[0] == 0
    # The strip: input frames above the reconstructions; only the reconstructions differ.
    strips = [np.asarray(Image.open(tmp_path / p / "strip.png")) for p in ("fp32", precision)]
    expected, got = (s[(s.shape[0] + 2) // 2 :] / 255 for s in strips)
    assert psnr(expected, got) >= PSNR_BOUND[precision]
    sounds = [_wav_samples(tmp_path / p / "reconstruction.wav") for p in ("fp32", precision)]
    assert psnr(*sounds) >= PSNR_BOUND[precision]


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unknown_precision_is_refused(capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "-m", "M", "a", "b", "-o", "o", "--precision", "fp16"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --precision: invalid choice: 'fp16' (choose from 'fp32', 'bf16', 'int8')" in err, err
