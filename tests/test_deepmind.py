"""DeepMind's Haiku checkpoints: every array lands where the table says, and where transformers' converter puts it."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import perceiver_io
from perceiver_io.adapters.image import patches_for_flow
from perceiver_io.checkpoints.deepmind import convert_deepmind, expand, load_deepmind, module_table
from perceiver_io.checkpoints.haiku_trees import random_params_from_tree, read_param_tree, write_haiku_pickle
from perceiver_io.checkpoints.loading import load_model, read_weights
from perceiver_io.released import RELEASED
from perceiver_io.tasks.optical_flow import predict_tile

TREES = Path(__file__).resolve().parent / "data" / "deepmind-param-trees"
COMPARE_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_with_deepmind.py"
TREE_FILES = {
    "language-perceiver": "mlm_language_perceiver_io_bytes.tsv",
    "vision-perceiver-learned": "imagenet_learned_position_encoding.tsv",
    "vision-perceiver-fourier": "imagenet_fourier_position_encoding.tsv",
    "vision-perceiver-conv": "imagenet_conv_preprocessing.tsv",
    "optical-flow-perceiver": "optical_flow.tsv",
    "multimodal-perceiver": "video_autoencoding.tsv",
}
BIG = {"language-perceiver", "vision-perceiver-learned"}  # 800 MB and 250 MB of float32: slow suite only
IMAGENET = {"vision-perceiver-learned", "vision-perceiver-fourier", "vision-perceiver-conv"}


# Default suite: every model with one self-attention layer (the tables are built per config); slow suite: full trees.
CASES = [pytest.param(name, 1, id=f"{name}-1layer") for name in TREE_FILES if name not in BIG] + [
    pytest.param(name, None, id=name, marks=pytest.mark.slow) for name in TREE_FILES
]


@pytest.fixture(scope="module")
def trees_available():
    if not TREES.is_dir():
        pytest.skip(f"parameter trees not found at {TREES}")


def _write(name: str, path: Path, flatmapping: bool, seed: int = 0, layers: int | None = None):
    """Random arrays for the tree, keeping the first ``layers`` self-attention layers (all when None)."""
    rows = read_param_tree(TREES / TREE_FILES[name])
    if layers is not None:
        rows = [r for r in rows if int((re.findall(r"self_attention_(\d+)/", r[1]) or ["0"])[0]) < layers]
    params, state = random_params_from_tree(rows, seed)
    write_haiku_pickle(path, params, state if name in IMAGENET else None, flatmapping=flatmapping)
    return {**params, **state}


def _hf_name(haiku: str, name: str) -> str:
    """transformers' converter (convert_perceiver_haiku_to_pytorch.py), re-implemented from its documented string
    rules (shared/reference/deepmind-original.md §2.4) — an independent spelling of the same mapping."""
    k = haiku.replace("/~/", "/").replace("/~", "/")
    head_is_mlm = name == "language-perceiver"
    rules = [
        (r"^(perceiver_)?encoder/trainable_position_encoding/pos_embs$", "embeddings.latents"),
        (r"^(perceiver_)?encoder/cross_attention/", "encoder.cross_attention/"),
        (r"^(perceiver_)?encoder/self_attention_(\d+)/", r"encoder.self_attends.\2/"),
        (r"^(perceiver_)?encoder/self_attention/", "encoder.self_attends.0/"),
        (r"^embed/embeddings$", "input_preprocessor.embeddings.weight"),
        (r"^trainable_position_encoding/pos_embs$", "input_preprocessor.position_embeddings.weight"),
        (r"^embedding_decoder/bias$", "EMB.embedding_decoder.bias"),
        (
            r"^basic_decoder/trainable_position_encoding/pos_embs$",
            "decoder.output_position_encodings.position_embeddings",
        ),
        (r"^basic_decoder/cross_attention/", "decoder.decoding_cross_attention/"),
        (
            r"^classification_decoder/basic_decoder/trainable_position_encoding/pos_embs$",
            "decoder.modalities.label.decoder.output_position_encodings.position_embeddings"
            if name == "multimodal-perceiver"
            else "decoder.decoder.output_position_encodings.position_embeddings",
        ),
        (
            r"^(classification|flow|multimodal)_decoder/basic_decoder/cross_attention/",
            "decoder.decoder.decoding_cross_attention/",
        ),
        (r"^(classification|flow|multimodal)_decoder/basic_decoder/output/", "decoder.decoder.final_layer/"),
        (r"^multimodal_decoder/decoder_query/(\w+)_padding/pos_embs$", r"decoder.padding.\1"),
        (r"^multimodal_preprocessor/(\w+)_padding/pos_embs$", r"input_preprocessor.padding.\1"),
        (r"^multimodal_preprocessor/(\w+)_mask_token/pos_embs$", r"input_preprocessor.mask.\1"),
        (r"^image_preprocessor/conv2_d/", "input_preprocessor.convnet_1x1/"),
        (
            r"^image_preprocessor/_build_network_inputs/trainable_position_encoding/pos_embs$",
            "input_preprocessor.position_embeddings.position_embeddings",
        ),
        (
            r"^image_preprocessor/_build_network_inputs/position_encoding_projector/linear/",
            "input_preprocessor.positions_projection/",
        ),
        (r"^image_preprocessor/conv2_d_downsample/conv/", "input_preprocessor.convnet.conv/"),
        (
            r"^image_preprocessor/conv2_d_downsample/batchnorm/mean_ema/average$",
            "input_preprocessor.convnet.batchnorm.running_mean",
        ),
        (
            r"^image_preprocessor/conv2_d_downsample/batchnorm/var_ema/average$",
            "input_preprocessor.convnet.batchnorm.running_var",
        ),
        (r"^image_preprocessor/conv2_d_downsample/batchnorm/", "input_preprocessor.convnet.batchnorm/"),
        (r"^image_preprocessor/patches_linear/", "input_preprocessor.conv_after_patches/"),
        (r"^projection_postprocessor/linear/", "output_postprocessor.modalities.image.classifier/"),
        (r"^classification_postprocessor/linear/", "output_postprocessor.modalities.label.classifier/"),
        (r"^audio_postprocessor/linear/", "output_postprocessor.modalities.audio.classifier/"),
    ]
    for pattern, repl in rules:
        k = re.sub(pattern, repl, k)
    cross = "cross_attention" in k
    layer = [
        ("/layer_norm_2/", "/layernorm/") if cross else (None, None),
        ("/layer_norm_1/", "/attention/self/layernorm2/" if cross else "/layernorm/"),
        ("/layer_norm/", "/attention/self/layernorm1/"),
        ("/attention/linear_3/", "/attention/output/dense/"),
        ("/attention/linear_2/", "/attention/self/value/"),
        ("/attention/linear_1/", "/attention/self/key/"),
        ("/attention/linear/", "/attention/self/query/"),
        ("/mlp/linear_1/", "/mlp/dense2/"),
        ("/mlp/linear/", "/mlp/dense1/"),
    ]
    for a, b in layer:
        if a:
            k = k.replace(a, b)
    k = re.sub(r"/(w|scale)$", ".weight", k)
    k = re.sub(r"/(b|offset)$", ".bias", k)
    k = k.replace("/", ".")
    if k.startswith("EMB."):
        return k[4:]
    del head_is_mlm
    return "perceiver." + k


def _overrides(layers: int | None) -> dict:
    return {} if layers is None else {"num_self_attends_per_block": layers}


@pytest.mark.parametrize(("name", "layers"), CASES)
def test_every_array_lands_where_the_table_says(name, layers, trees_available, tmp_path):
    arrays = _write(name, tmp_path / "ckpt.pystate", flatmapping=True, layers=layers)
    model = getattr(perceiver_io, RELEASED[name].head).from_pretrained(tmp_path / "ckpt.pystate", **_overrides(layers))
    state = model.state_dict()
    table = expand(module_table(name, model.config))
    mapped = {k for k in arrays if not k.endswith(("/hidden", "/counter"))}
    assert mapped == set(table)
    for haiku, (key, layout) in table.items():
        np.testing.assert_array_equal(state[key].numpy(), layout(arrays[haiku]), err_msg=haiku)
    assert model.config.hidden_act == "gelu_pytorch_tanh" and model.config.wipe_fully_masked_rows


@pytest.mark.parametrize(("name", "layers"), CASES)
def test_converted_folder_matches_transformers_converter_rules(name, layers, trees_available, tmp_path):
    """Our DeepMind → transformers folder puts every array under the name transformers' converter would, with the
    kernel layout PyTorch expects (conv HWIO → OIHW; transformers' full axis reversal would swap kh and kw)."""
    arrays = _write(name, tmp_path / "ckpt.pickle", flatmapping=False, seed=1, layers=layers)
    convert_deepmind(tmp_path / "ckpt.pickle", tmp_path / "out", **_overrides(layers))
    saved = read_weights(tmp_path / "out")
    for haiku, value in arrays.items():
        if haiku.endswith(("/hidden", "/counter")):
            continue
        hf = _hf_name(haiku, name)
        assert hf in saved, (haiku, hf)
        if value.ndim == 4 and value.shape[0] == value.shape[1] and value.shape[0] > 1:
            expected = value.transpose(3, 2, 0, 1)  # conv kernel HWIO → OIHW
        elif value.ndim == 4:
            expected = value.reshape(-1) if value.shape[:3] == (1, 1, 1) else value.transpose(3, 2, 0, 1)
        elif hf.endswith("weight") and "embeddings" not in hf and value.ndim == 2:
            expected = value.T
        else:
            expected = value
        np.testing.assert_array_equal(saved[hf].numpy(), expected, err_msg=f"{haiku} → {hf}")
    assert len(saved) == len([k for k in arrays if not k.endswith(("/hidden", "/counter"))]) + (
        1 if name == "vision-perceiver-conv" else 0  # num_batches_tracked
    )
    assert type(load_model(tmp_path / "out")).__name__ == RELEASED[name].head


def test_wrong_head_for_deepmind_file(trees_available, tmp_path):
    _write("optical-flow-perceiver", tmp_path / "flow.pystate", flatmapping=True, layers=1)
    with pytest.raises(ValueError, match=r"holds DeepMind's optical-flow-perceiver .*PerceiverForMaskedLM"):
        perceiver_io.PerceiverForMaskedLM.from_pretrained(tmp_path / "flow.pystate")


def test_missing_array_is_reported(trees_available, tmp_path):
    arrays = _write("optical-flow-perceiver", tmp_path / "flow.pystate", flatmapping=True, layers=1)
    del arrays["flow_decoder/~/basic_decoder/output/b"]
    write_haiku_pickle(tmp_path / "flow.pystate", arrays, None)
    with pytest.raises(ValueError, match=r"missing Haiku arrays: flow_decoder/~/basic_decoder/output/b"):
        load_deepmind(None, tmp_path / "flow.pystate", num_self_attends_per_block=1)


@torch.no_grad()
def test_deepmind_model_runs(trees_available, tmp_path):
    _write("vision-perceiver-conv", tmp_path / "conv.pystate", flatmapping=True, layers=1)
    model = load_model(tmp_path / "conv.pystate", num_self_attends_per_block=1)
    assert model.perceiver.input_preprocessor.convnet(torch.zeros(1, 3, 224, 224)).shape[-2:] == (56, 56)


def _compare_script():
    """scripts/compare_with_deepmind.py as a module (scripts/ is not a package, so it is loaded by path)."""
    spec = importlib.util.spec_from_file_location("compare_with_deepmind", COMPARE_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@torch.no_grad()
def test_flow_output_units_match_deepmind(trees_available, tmp_path):
    """Closed form, no JAX: with the output layer's weights zeroed every query decodes to its bias b, so DeepMind's
    ``FlowDecoder`` returns b / rescale_factor = b / 100 at every pixel, and the colab reports that × 20 pixels.

    Our logits must be the former, and both the parity script (whose reference outputs are colab pixels) and the
    flow task must report the latter; the parity script once compared the logits with pixels (relative error
    1 − 1/20 = 0.95) and blamed the model.
    """
    arrays = _write("optical-flow-perceiver", tmp_path / "flow.pystate", flatmapping=True, layers=1)
    arrays["flow_decoder/~/basic_decoder/output/w"] = np.zeros_like(arrays["flow_decoder/~/basic_decoder/output/w"])
    b = np.array([3.0, -7.0], dtype=np.float32)
    arrays["flow_decoder/~/basic_decoder/output/b"] = b
    write_haiku_pickle(tmp_path / "flow.pystate", arrays, None)
    model = load_deepmind(None, tmp_path / "flow.pystate", num_self_attends_per_block=1)
    h, w = 6, 8  # any frame size works: positions are Fourier features relative to train_size
    frames = torch.rand(1, 2, 3, h, w, generator=torch.Generator().manual_seed(0)) * 2 - 1  # (B, 2, C, H, W)
    logits = model(inputs=patches_for_flow(frames)).logits  # (1, H, W, 2)
    decoder_output = torch.from_numpy(b / 100).expand(1, h, w, 2)
    torch.testing.assert_close(logits, decoder_output)
    pixels = _compare_script().in_reference_units("o", logits)["out"]
    torch.testing.assert_close(pixels, decoder_output * 20)
    frame1, frame2 = (np.random.default_rng(i).uniform(0, 255, (h, w, 3)).astype(np.float32) for i in (1, 2))
    np.testing.assert_allclose(predict_tile(model, frame1, frame2), decoder_output[0].numpy() * 20, rtol=1e-6)
