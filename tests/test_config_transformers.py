"""PerceiverConfig against transformers' PerceiverConfig: same keywords, same dict, files that load both ways."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from conftest import SMALL_CONFIGS

import perceiver_io
from perceiver_io import PerceiverConfig
from perceiver_io.released import RELEASED

# Our numerics switches: keys transformers' config does not have (it stores them as plain attributes).
OURS_ONLY = {"conv_stem_padding", "mask_decoder_queries", "wipe_fully_masked_rows", "decoder_query_residual"}

KWARG_SETS = [
    {},
    dict(num_labels=3, pad_token_id=0, tie_word_embeddings=False),
    dict(id2label={0: "neg", 1: "neutral", 2: "pos"}, problem_type="single_label_classification"),
    dict(dtype="bfloat16", output_hidden_states=True, return_dict=False, architectures=["PerceiverForMaskedLM"]),
    dict(torch_dtype="float16", chunk_size_feed_forward=4, tokenizer_class="PerceiverTokenizer", bos_token_id=4),
    dict(SMALL_CONFIGS["PerceiverForMultimodalAutoencoding"], name_or_path="somewhere/model"),
]


def _without(d: dict, keys: set) -> dict:
    return {k: v for k, v in d.items() if k not in keys}


def _derived(theirs: dict) -> dict:
    """transformers 5 leaves ``label2id`` None when only ``id2label`` is given; we derive it from ``id2label``."""
    if theirs.get("label2id") is None:
        theirs = {**theirs, "label2id": {v: k for k, v in theirs["id2label"].items()}}
    return theirs


@pytest.mark.parametrize("kwargs", KWARG_SETS)
def test_to_dict_matches_transformers(kwargs, transformers_module):
    ours = PerceiverConfig(**kwargs).to_dict()
    theirs = transformers_module.PerceiverConfig(**kwargs).to_dict()
    assert _without(ours, OURS_ONLY) == _derived(_without(theirs, {"transformers_version"}))
    assert set(ours) & OURS_ONLY == OURS_ONLY


@pytest.mark.parametrize("kwargs", KWARG_SETS)
def test_ours_saved_loads_in_transformers(kwargs, transformers_module, tmp_path):
    ours = PerceiverConfig(**kwargs)
    ours.save_pretrained(tmp_path)
    theirs = transformers_module.PerceiverConfig.from_pretrained(tmp_path).to_dict()
    expected = _derived(_without(transformers_module.PerceiverConfig(**kwargs).to_dict(), {"_name_or_path"}))
    assert _without(theirs, OURS_ONLY | {"_name_or_path"}) == expected
    assert {k: theirs[k] for k in OURS_ONLY} == {k: getattr(ours, k) for k in OURS_ONLY}


@pytest.mark.parametrize("kwargs", KWARG_SETS)
def test_transformers_saved_loads_in_ours(kwargs, transformers_module, tmp_path):
    theirs = transformers_module.PerceiverConfig(**kwargs)
    theirs.save_pretrained(tmp_path)  # a diff against transformers' defaults, with transformers_version
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every key transformers writes is known to us
        ours = PerceiverConfig.from_pretrained(tmp_path)
    assert ours.name_or_path == transformers_module.PerceiverConfig.from_pretrained(tmp_path).name_or_path == ""
    loaded = _without(ours.to_dict(), OURS_ONLY | {"_name_or_path"})
    assert loaded == _derived(_without(theirs.to_dict(), {"_name_or_path"}))
    # and back: what we write from it, transformers reads as it wrote it
    ours.save_pretrained(tmp_path / "again")
    again = transformers_module.PerceiverConfig.from_pretrained(tmp_path / "again")
    assert _without(again.to_dict(), OURS_ONLY | {"_name_or_path"}) == _derived(
        _without(theirs.to_dict(), {"_name_or_path"})
    )


@pytest.mark.parametrize("kwargs", KWARG_SETS)
def test_diff_json_rebuilds_the_same_config(kwargs, transformers_module):
    ours = PerceiverConfig(**kwargs)
    diff = json.loads(ours.to_json_string(use_diff=True))
    assert "_name_or_path" not in diff and diff["model_type"] == "perceiver"
    assert _without(PerceiverConfig(**diff).to_dict(), {"_name_or_path"}) == _without(ours.to_dict(), {"_name_or_path"})
    full = json.loads(ours.to_json_string(use_diff=False))
    theirs = transformers_module.PerceiverConfig(**_without(full, OURS_ONLY))
    assert _without(ours.to_dict(), OURS_ONLY) == _derived(_without(theirs.to_dict(), {"transformers_version"}))


def test_json_file_round_trip(tmp_path):
    ours = PerceiverConfig(num_labels=4, d_latents=64)
    ours.to_json_file(tmp_path / "c.json", use_diff=False)
    assert PerceiverConfig.from_json_file(tmp_path / "c.json") == ours
    ours.to_json_file(tmp_path / "d.json")  # the diff
    assert PerceiverConfig.from_json_file(tmp_path / "d.json") == ours
    assert PerceiverConfig.from_pretrained(tmp_path / "d.json").num_labels == 4


def test_unknown_key_is_stored_with_a_warning(transformers_module, tmp_path):
    with pytest.warns(UserWarning, match=r"does not know the key\(s\) \['mystery_width'\]"):
        config = PerceiverConfig(mystery_width=7, pad_token_id=1)  # pad_token_id: transformers' own, no warning
    assert config.mystery_width == 7 and config.pad_token_id == 1
    theirs = transformers_module.PerceiverConfig(mystery_width=7, pad_token_id=1)  # transformers stores it too
    assert _without(config.to_dict(), OURS_ONLY) == _without(theirs.to_dict(), {"transformers_version"})
    config.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="mystery_width"):
        assert PerceiverConfig.from_pretrained(tmp_path).mystery_width == 7
    with pytest.raises(ValueError, match=r"would replace PerceiverConfig\.to_dict"):
        PerceiverConfig(to_dict=1)


def test_labels_derive_from_each_other(transformers_module):
    config = PerceiverConfig(id2label={"0": "neg", "1": "pos"})  # JSON keys are strings; ids become ints
    theirs = transformers_module.PerceiverConfig(id2label={"0": "neg", "1": "pos"})
    assert config.id2label == theirs.id2label == {0: "neg", 1: "pos"}
    assert config.label2id == {"neg": 0, "pos": 1}  # transformers 5 leaves it None here
    assert config.num_labels == theirs.num_labels == 2

    config = PerceiverConfig(label2id={"cat": 1, "dog": 0})
    assert config.id2label == {0: "dog", 1: "cat"} and config.num_labels == 2

    config.num_labels = 3
    theirs.num_labels = 3
    assert config.id2label == theirs.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    assert config.label2id == theirs.label2id

    config.id2label = {0: "a", 1: "b", 2: "c", 3: "d"}
    assert config.num_labels == 4 and config.label2id == {"a": 0, "b": 1, "c": 2, "d": 3}
    config.label2id = {"x": 0, "y": 1}
    assert config.id2label == {0: "x", 1: "y"} and config.num_labels == 2

    assert PerceiverConfig(num_labels=5).id2label == transformers_module.PerceiverConfig(num_labels=5).id2label
    with pytest.raises(ValueError, match="num_labels=3 contradicts the 2 labels"):
        PerceiverConfig(id2label={0: "a", 1: "b"}, num_labels=3)
    with pytest.raises(ValueError, match="must name the same labels"):
        PerceiverConfig(id2label={0: "a", 1: "b"}, label2id={"a": 0, "c": 1})
    with pytest.raises(ValueError, match="num_labels=0"):
        PerceiverConfig(num_labels=0)


def test_problem_type_is_validated(transformers_module):
    for value in ("regression", "single_label_classification", "multi_label_classification"):
        assert PerceiverConfig(problem_type=value).problem_type == value
    config = PerceiverConfig()
    config.problem_type = "regression"
    with pytest.raises(ValueError, match=r"problem_type='softmax'; expected None or one of"):
        config.problem_type = "softmax"
    with pytest.raises(ValueError, match=r"problem_type='softmax'"):
        PerceiverConfig(problem_type="softmax")
    # transformers refuses single-label classification with one label too
    with pytest.raises(ValueError):
        transformers_module.PerceiverConfig(problem_type="single_label_classification", num_labels=1)
    with pytest.raises(ValueError, match="needs num_labels >= 2"):
        PerceiverConfig(problem_type="single_label_classification", num_labels=1)


def test_dtype_and_output_options():
    config = PerceiverConfig(torch_dtype="float16")
    assert config.dtype is torch.float16 and config.torch_dtype is torch.float16
    assert config.to_dict()["dtype"] == "float16" and "torch_dtype" not in config.to_dict()
    config.torch_dtype = torch.bfloat16
    assert config.dtype is torch.bfloat16
    for bad in ("auto", "int8", "float64x", torch.int32):
        with pytest.raises(ValueError, match="is not a floating torch dtype"):
            PerceiverConfig(dtype=bad)
    with pytest.raises(ValueError, match="disagree"):
        PerceiverConfig(dtype="float16", torch_dtype="bfloat16")
    config = PerceiverConfig(return_dict=False, output_attentions=True)
    assert config.use_return_dict is False and config.output_attentions is True
    config.return_dict = True
    assert config.use_return_dict is True


def test_from_pretrained_overrides_and_unused_kwargs(transformers_module, tmp_path):
    PerceiverConfig(id2label={0: "a", 1: "b", 2: "c", 3: "d", 4: "e"}, d_latents=64).save_pretrained(tmp_path)
    ours, unused = PerceiverConfig.from_pretrained(tmp_path, num_labels=3, foo=1, return_unused_kwargs=True)
    theirs, their_unused = transformers_module.PerceiverConfig.from_pretrained(
        tmp_path, num_labels=3, foo=1, return_unused_kwargs=True
    )
    assert unused == their_unused == {"foo": 1}
    assert ours.id2label == theirs.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    assert ours.d_latents == theirs.d_latents == 64
    overridden = PerceiverConfig.from_pretrained(tmp_path, d_latents=32, output_attentions=True, dtype="auto")
    assert (overridden.d_latents, overridden.output_attentions, overridden.num_labels) == (32, True, 5)
    with pytest.raises(TypeError, match=r"\['foo'\] are not PerceiverConfig keys"):
        PerceiverConfig.from_pretrained(tmp_path, foo=1)
    with pytest.raises(ValueError, match="local path; revision apply only to hub ids"):
        PerceiverConfig.from_pretrained(tmp_path, revision="v1")
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        PerceiverConfig.from_pretrained(tmp_path / "absent")
    with pytest.raises(ValueError, match="model_type='bert'"):
        PerceiverConfig.from_dict({"model_type": "bert"})


def test_existing_helpers_keep_working(tmp_path):
    config = PerceiverConfig.from_dict(SMALL_CONFIGS["PerceiverForMaskedLM"])
    config.save(tmp_path)
    assert PerceiverConfig.load(tmp_path, num_blocks=3).num_blocks == 3
    deepmind = config.with_deepmind_numerics()
    assert (deepmind.hidden_act, deepmind.conv_stem_padding, config.hidden_act) == (
        "gelu_pytorch_tanh",
        "tf_same",
        "gelu",
    )
    assert PerceiverConfig.released("deepmind/vision-perceiver-fourier").architectures == [
        "PerceiverForImageClassificationFourier"
    ]


# Small overrides of each released model, and inputs that fit them.
SMALL = dict(num_latents=8, d_latents=32, num_self_attends_per_block=1, num_self_attention_heads=4)
RELEASED_SMALL = {
    "language-perceiver": (dict(SMALL, d_model=32, max_position_embeddings=16), lambda: torch.randint(0, 262, (2, 16))),
    "vision-perceiver-learned": (dict(SMALL, image_size=8, num_labels=3), lambda: torch.randn(2, 3, 8, 8)),
    "vision-perceiver-fourier": (dict(SMALL, num_labels=3), lambda: torch.randn(2, 3, 12, 10)),
    "vision-perceiver-conv": (dict(SMALL, num_labels=3), lambda: torch.randn(2, 3, 32, 32)),
    "optical-flow-perceiver": (dict(SMALL, train_size=(8, 12)), lambda: torch.randn(2, 2, 27, 8, 12)),
    "multimodal-perceiver": (
        dict(
            SMALL,
            num_frames=2,
            image_size=4,
            audio_samples_per_frame=32,
            num_labels=5,
            output_num_channels=16,
            label_trainable_num_channels=8,
        ),
        lambda: {"image": torch.randn(2, 2, 3, 16, 16), "audio": torch.randn(2, 64, 1), "label": torch.zeros(2, 5)},
    ),
}


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_released_with_small_overrides_builds_and_runs(name):
    overrides, inputs = RELEASED_SMALL[name]
    config = PerceiverConfig.released(name, **overrides)
    for key, value in overrides.items():
        assert getattr(config, key) == (tuple(value) if isinstance(value, tuple) else value), key
    model = getattr(perceiver_io, RELEASED[name].head)(config).eval()
    kwargs = {}
    if name == "multimodal-perceiver":
        kwargs["subsampled_output_points"] = {"image": torch.arange(0, 64), "audio": torch.arange(0, 4)}
    with torch.no_grad():
        out = model(inputs=inputs(), **kwargs)
    logits = out.logits if torch.is_tensor(out.logits) else out.logits["label"]
    assert torch.isfinite(logits).all()
    if "num_labels" in overrides:
        assert logits.shape[-1] == overrides["num_labels"]


def test_released_widths_follow_overrides():
    language = PerceiverConfig.released("language-perceiver")
    assert (language.d_latents, language.qk_channels, language.v_channels) == (1280, 256, 1280)
    small = PerceiverConfig.released("language-perceiver", d_latents=64)
    assert (small.qk_channels, small.v_channels) == (16, 64)  # 64 / 5 = 12.8 → nearest multiple of 8 heads
    explicit = PerceiverConfig.released("language-perceiver", d_latents=64, qk_channels=32, v_channels=48)
    assert (explicit.qk_channels, explicit.v_channels) == (32, 48)
    video = PerceiverConfig.released("multimodal-perceiver", num_frames=4, image_size=8)
    assert video.output_shape == (1, 4, 32, 32)
    assert PerceiverConfig.released("multimodal-perceiver").output_shape == (1, 16, 224, 224)
    assert PerceiverConfig.released("vision-perceiver-conv").num_labels == 1000
    assert PerceiverConfig.released("vision-perceiver-conv", num_labels=10).num_labels == 10
    with pytest.raises(ValueError, match="unknown released model 'vision'"):
        PerceiverConfig.released("vision")


def test_attributes_set_later_are_saved(tmp_path, transformers_module):
    config = PerceiverConfig()
    config.pad_token_id = 0  # transformers users set keys on a built config too
    config.save_pretrained(tmp_path)
    assert PerceiverConfig.from_pretrained(tmp_path).pad_token_id == 0
    assert transformers_module.PerceiverConfig.from_pretrained(tmp_path).pad_token_id == 0
