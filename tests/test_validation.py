"""Bad input is refused at the boundary by our own checks, naming the value and what was expected; where
transformers defines the rule (tokenizer truncation, the conv stem's smallest image) it is the reference."""

from __future__ import annotations

import json
import warnings
import zipfile

import numpy as np
import pytest
import torch
from conftest import SMALL_CONFIGS, randomize_

import perceiver_io
from perceiver_io import PerceiverConfig
from perceiver_io.checkpoints.safe_pickle import CheckpointFormatError

# ---------------------------------------------------------------------------------------------------------
# Config fields
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "error", "match"),
    [
        ("d_model", True, TypeError, "d_model=True must be an integer"),
        ("num_blocks", "2", TypeError, "num_blocks='2' must be an integer"),
        ("num_latents", 0, ValueError, r"num_latents=0 must be an integer in \[1, "),
        ("d_latents", 10**12, ValueError, "d_latents=1000000000000 must be an integer in"),
        ("num_self_attention_heads", 3, ValueError, "d_latents=1280 is not divisible by num_self_attention_heads=3"),
        ("qk_channels", 12, ValueError, "qk_channels=12 is not divisible by num_self_attention_heads=8"),
        ("attention_probs_dropout_prob", -1, ValueError, r"attention_probs_dropout_prob=-1 must be a finite"),
        ("initializer_range", float("nan"), ValueError, "initializer_range=nan must be a finite"),
        ("use_query_residual", 1, TypeError, "use_query_residual=1 must be True or False"),
        ("hidden_act", None, ValueError, "hidden_act=None is not supported"),
        ("train_size", 368, TypeError, "train_size=368 must be a list or tuple"),
        ("output_shape", [1, 16, 224], ValueError, r"output_shape=\[1, 16, 224\] must be"),
        ("id2label", [1, 2], TypeError, "id2label must be a dict"),
        ("id2label", {}, ValueError, "id2label={} names no label"),
        ("id2label", {"one": "a"}, ValueError, "id2label key 'one' is not a class index"),
    ],
)
def test_config_refuses_a_bad_field(field, value, error, match):
    with pytest.raises(error, match=match):
        PerceiverConfig(**{field: value})


def test_a_bad_config_json_is_named(tmp_path):
    PerceiverConfig(**SMALL_CONFIGS["PerceiverForSequenceClassification"]).save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "d_model": "32"}))
    for load in (PerceiverConfig.from_pretrained, PerceiverConfig.load):
        with pytest.raises(TypeError, match="d_model='32' must be an integer") as info:
            load(tmp_path)
        assert str(path) in str(info.value)


# ---------------------------------------------------------------------------------------------------------
# Weight files
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def saved_classifier(transformers_module, tmp_path):
    head = "PerceiverForSequenceClassification"
    ref = getattr(transformers_module, head)(transformers_module.PerceiverConfig(**SMALL_CONFIGS[head]))
    randomize_(ref, seed=3).save_pretrained(tmp_path)
    return tmp_path


def test_a_corrupted_bin_is_refused_not_loaded(saved_classifier):
    """torch.load does not check the zip CRCs: without our check one flipped data byte loads as a wrong weight."""
    folder = saved_classifier
    state = perceiver_io.PerceiverForSequenceClassification.from_pretrained(folder).state_dict()
    (folder / "model.safetensors").unlink()
    bin_path = folder / "pytorch_model.bin"
    original = {f"perceiver.{k}": v for k, v in state.items()}
    torch.save(original, bin_path)
    with zipfile.ZipFile(bin_path) as archive:
        member = next(i for i in archive.infolist() if "/data/" in i.filename and i.file_size > 64)
    data = bytearray(bin_path.read_bytes())
    # A stored (uncompressed) member's bytes follow its 30-byte local header, name and extra field.
    header = member.header_offset
    name_len = int.from_bytes(data[header + 26 : header + 28], "little")
    extra_len = int.from_bytes(data[header + 28 : header + 30], "little")
    data[header + 30 + name_len + extra_len + 5] ^= 0x40
    bin_path.write_bytes(bytes(data))
    loaded = torch.load(bin_path, weights_only=True)  # no error: the flip goes unnoticed by torch
    assert any(not torch.equal(loaded[k], v) for k, v in original.items())
    with pytest.raises(CheckpointFormatError, match="fails its CRC check") as info:
        perceiver_io.PerceiverForSequenceClassification.from_pretrained(folder)
    assert str(bin_path) in str(info.value)


def test_an_absurd_width_is_refused_before_allocating(saved_classifier):
    """d_model = 2**30 would ask for a 262 × 2**30 float embedding (1 TiB): the shapes are compared first."""
    path = saved_classifier / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "d_model": 2**30}))
    with pytest.raises(ValueError, match="the checkpoint does not fit this config") as info:
        perceiver_io.PerceiverForSequenceClassification.from_pretrained(saved_classifier)
    assert str(saved_classifier) in str(info.value) and "1073741824" in str(info.value)


# ---------------------------------------------------------------------------------------------------------
# Processors
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(padding="do_not_pad", max_length=5),
        dict(padding=False, max_length=5),
        dict(max_length=5),
        dict(padding="do_not_pad", max_length=5, truncation=True),
        dict(padding="longest", max_length=5, truncation=None),
    ],
)
def test_tokenizer_truncates_as_transformers(transformers_module, kwargs):
    texts = ["hello world", "hi"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = transformers_module.PerceiverTokenizer()(texts, **kwargs)["input_ids"]
        got = perceiver_io.PerceiverTokenizer()(texts, **kwargs)["input_ids"]
    assert got == expected


def test_image_values_are_checked_before_the_crop():
    """A bad pixel in the border that the centre crop drops is still a bad image, resized or not."""
    processor = perceiver_io.PerceiverImageProcessor(size=16, crop_size=18)
    image = np.full((3, 20, 20), 0.5, dtype=np.float32)
    image[:, 0, 0] = np.nan
    for do_resize in (True, False):
        with pytest.raises(ValueError, match="image 0 has 3 non-finite values"):
            processor(image, do_resize=do_resize)
    image[:, 0, 0] = 7.5
    with pytest.raises(ValueError, match=r"image 0 has float values in \[0.5, 7.5\]"):
        processor(image, do_resize=False)
    with pytest.raises(ValueError, match=r"images is an empty batch of shape \(0, 3, 20, 20\)"):
        processor(np.zeros((0, 3, 20, 20), dtype=np.float32))


# ---------------------------------------------------------------------------------------------------------
# Model inputs
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def conv_models(transformers_module):
    head = "PerceiverForImageClassificationConvProcessing"
    ref = randomize_(getattr(transformers_module, head)(transformers_module.PerceiverConfig(**SMALL_CONFIGS[head])))
    ours = getattr(perceiver_io, head)(PerceiverConfig(**SMALL_CONFIGS[head]))
    ours.load_state_dict(ref.state_dict(), strict=False)
    return ref.eval(), ours.eval()


def test_conv_stem_minimum_size_is_transformers(conv_models):
    """transformers' stem (7×7/2 conv padded by 3, unpadded 3×3/2 max pool) takes 5×5 and fails on 4×4."""
    ref, ours = conv_models
    with torch.no_grad():
        ref(inputs=torch.rand(1, 3, 5, 5))
        ours(inputs=torch.rand(1, 3, 5, 5))
        with pytest.raises(RuntimeError):
            ref(inputs=torch.rand(1, 3, 4, 9))
        with pytest.raises(ValueError, match=r"image inputs of shape \(1, 3, 4, 9\) are too small for the conv stem"):
            ours(inputs=torch.rand(1, 3, 4, 9))


@pytest.mark.parametrize(
    ("inputs", "error", "match"),
    [
        (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), TypeError, "scale integer pixels .* PerceiverImageProcessor"),
        (torch.zeros(1, 3, 8, 8, dtype=torch.float64), TypeError, "the model's parameters are torch.float32"),
        (torch.zeros(0, 3, 8, 8), ValueError, r"image inputs: shape \(0, 3, 8, 8\) has a zero size"),
        (torch.zeros(1, 1, 3, 8, 8), ValueError, r"image inputs: shape \(1, 1, 3, 8, 8\); expected images"),
        (
            torch.zeros(1, 3, 8, 8).index_fill_(2, torch.tensor([1]), float("nan")),
            ValueError,
            r"image inputs: 24 non-finite values \(NaN or inf\)",
        ),
    ],
)
def test_bad_images_are_refused(conv_models, inputs, error, match):
    with torch.no_grad(), pytest.raises(error, match=match):
        conv_models[1](inputs=inputs)


def test_bad_token_ids_are_refused():
    model = perceiver_io.PerceiverForMaskedLM(PerceiverConfig(**SMALL_CONFIGS["PerceiverForMaskedLM"])).eval()
    with pytest.raises(
        TypeError, match=r"token ids \(inputs\): dtype torch.int16; expected torch.int64 or torch.int32"
    ):
        model(inputs=torch.zeros(1, 4, dtype=torch.int16))
    with pytest.raises(ValueError, match=r"token ids \(inputs\): shape \(1, 0\) has a zero size"):
        model(inputs=torch.zeros(1, 0, dtype=torch.long))


def test_bad_subsampled_points_are_refused():
    config = PerceiverConfig(**SMALL_CONFIGS["PerceiverForMultimodalAutoencoding"])
    model = perceiver_io.PerceiverForMultimodalAutoencoding(config).eval()
    b, side = 1, 4 * config.image_size
    inputs = {
        "image": torch.zeros(b, config.num_frames, 3, side, side),
        "audio": torch.zeros(b, config.num_frames * config.audio_samples_per_frame, 1),
        "label": torch.zeros(b, config.num_labels),
    }
    n_image = config.output_shape[1] * config.output_shape[2] * config.output_shape[3]
    ok = {"image": torch.arange(3), "audio": torch.arange(2)}
    cases = [
        ({**ok, "image": torch.arange(3.0)}, TypeError, r"subsampled_output_points\['image'\]: dtype torch.float32"),
        ({**ok, "audio": torch.arange(4)[None]}, ValueError, r"subsampled_output_points\['audio'\]: shape \(1, 4\)"),
        ({**ok, "image": torch.tensor([n_image])}, ValueError, rf"grid has indices \[0, {n_image}\)"),
        (
            {"image": ok["image"]},
            ValueError,
            r"has keys \['image'\]; expected indices for each of \['audio', 'image'\]",
        ),
    ]
    with torch.no_grad():
        model(inputs=inputs, subsampled_output_points=ok)
        for points, error, match in cases:
            with pytest.raises(error, match=match):
                model(inputs=inputs, subsampled_output_points=points)


# ---------------------------------------------------------------------------------------------------------
# Label checks (perceiver_io.checks), called by the heads' losses
# ---------------------------------------------------------------------------------------------------------

LOGITS = torch.zeros(2, 3)


@pytest.mark.parametrize(
    ("labels", "problem_type", "error", "match"),
    [
        (torch.tensor([0, 2]), None, None, None),
        (torch.rand(2, 3), None, None, None),
        (torch.tensor([0, 3]), None, ValueError, r"labels: values range over \[0, 3\]; expected \[0, 3\)"),
        (torch.tensor([0, 1], dtype=torch.int32), None, TypeError, "labels: dtype torch.int32; expected torch.int64"),
        (torch.tensor([[0], [1]]), None, ValueError, r"labels: shape \(2, 1\); expected class indices \(2,\)"),
        (torch.tensor([0.0, 1.0]), None, ValueError, r"labels: shape \(2,\); expected multi-label targets \(2, 3\)"),
        (torch.full((2, 3), float("nan")), None, ValueError, "labels: 6 non-finite values"),
        (torch.full((2, 3), 2.0), None, ValueError, r"multi-label targets range over \[2.0, 2.0\]; expected \[0, 1\]"),
        (torch.rand(2, 3).double(), None, TypeError, "labels: dtype torch.float64; the model's parameters are"),
        (torch.rand(2, 3), "regression", None, None),
        (torch.rand(2, 2), "regression", ValueError, r"expected regression targets \(2, 3\)"),
        ([0, 1], None, TypeError, "labels must be a torch.Tensor; got list"),
    ],
)
def test_class_labels_are_checked(labels, problem_type, error, match):
    from perceiver_io.checks import check_class_labels

    if error is None:
        check_class_labels(labels, LOGITS, problem_type)
    else:
        with pytest.raises(error, match=match):
            check_class_labels(labels, LOGITS, problem_type)


def test_token_labels_are_checked():
    from perceiver_io.checks import check_token_labels

    ok = torch.tensor([[5, -100, 7]])
    check_token_labels(ok, 1, 4, vocab_size=8)
    with pytest.raises(ValueError, match=r"labels: token ids range over \[5, 8\]; expected \[0, 8\) or -100"):
        check_token_labels(torch.tensor([[5, -100, 8]]), 1, 4, vocab_size=8)
    with pytest.raises(ValueError, match=r"labels: shape \(1, 5\); expected \(1, L\) with 1 <= L <= 4"):
        check_token_labels(torch.zeros(1, 5, dtype=torch.long), 1, 4, vocab_size=8)
    with pytest.raises(TypeError, match=r"labels: dtype torch\.float32; expected torch\.int64"):
        check_token_labels(ok.float(), 1, 4, vocab_size=8)


def test_finite_check_is_skipped_while_compiling():
    """A value check inside torch.compile would break the graph (fullgraph=True refuses a graph break)."""
    from perceiver_io.checks import check_finite

    def f(x):
        check_finite("x", x)
        return x * 2

    x = torch.tensor([1.0, float("nan")])
    with pytest.raises(ValueError, match="x: 1 non-finite values"):
        f(x)
    compiled = torch.compile(f, fullgraph=True, backend="eager")
    assert torch.equal(compiled(torch.ones(2)), torch.full((2,), 2.0))
