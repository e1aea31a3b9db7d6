"""Parity of ``perceiver_io.processing`` with transformers' Perceiver tokenizer and image processor.

transformers is imported only here, as the reference. Every parity check is exact for the tokenizer; for
images the measured difference is 0.0 and the tests allow 1e-6 so a float-order change in transformers does
not break them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import numpy as np
import PIL.Image
import pytest
import torch
from skimage import data as skdata

from perceiver_io.processing import PerceiverImageProcessor, PerceiverTokenizer

IMAGE_ATOL = 1e-6
# The long text exceeds model_max_length on purpose; the warning it gets is checked in test_tokenizer_api.py.
pytestmark = pytest.mark.filterwarnings("ignore:a sequence has .* more than model_max_length")

TEXTS = {
    "ascii": "This is an incomplete sentence where some words are missing.",
    "non_ascii": "Grüße, 東京 🚀",
    "empty": "",
    "special_literal": "a [MASK] b[SEP]c",
    "long": "Perceiver IO " * 300,
}


@pytest.fixture(scope="module")
def hf_tokenizer() -> Any:
    transformers = pytest.importorskip("transformers")
    return transformers.PerceiverTokenizer()


@pytest.fixture(scope="module")
def hf_image_processor_cls() -> Any:
    transformers = pytest.importorskip("transformers")
    # transformers 5 names its PIL backend ...Pil; in 4.x the PIL implementation is the plain class.
    return getattr(transformers, "PerceiverImageProcessorPil", None) or transformers.PerceiverImageProcessor


@pytest.fixture(scope="module")
def tokenizer() -> PerceiverTokenizer:
    return PerceiverTokenizer()


def assert_same_encoding(ours: dict, theirs: dict) -> None:
    assert set(ours) == set(theirs)
    for key, expected in theirs.items():
        actual = ours[key]
        assert type(actual) is type(expected), key
        if isinstance(expected, torch.Tensor):
            assert actual.dtype == expected.dtype and torch.equal(actual, expected), key
        elif isinstance(expected, np.ndarray):
            assert actual.dtype == expected.dtype, key
            np.testing.assert_array_equal(actual, expected)
        else:
            assert actual == expected, key


# --- tokenizer: parity ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(TEXTS))
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"add_special_tokens": False},
        {"return_tensors": "pt"},
        {"return_tensors": "np"},
        {"max_length": 16},
        {"truncation": True},
        {"truncation": True, "max_length": 9, "add_special_tokens": False},
        {"padding": "max_length", "truncation": True, "max_length": 64, "return_tensors": "pt"},
        {"split_special_tokens": True},
        {"return_attention_mask": False},
    ],
    ids=repr,
)
def test_single_text_matches_transformers(tokenizer, hf_tokenizer, name, kwargs):
    assert_same_encoding(tokenizer(TEXTS[name], **kwargs), hf_tokenizer(TEXTS[name], **kwargs))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"padding": True},
        {"padding": "longest", "return_tensors": "pt"},
        {"padding": "max_length", "max_length": 48, "truncation": True},
        {"padding": "max_length", "max_length": 48, "truncation": True, "return_tensors": "np"},
        {"padding": "max_length", "truncation": True, "add_special_tokens": False, "return_tensors": "pt"},
        {"truncation": True, "max_length": 10},
    ],
    ids=repr,
)
def test_batch_matches_transformers(tokenizer, hf_tokenizer, kwargs):
    batch = list(TEXTS.values())
    assert_same_encoding(tokenizer(batch, **kwargs), hf_tokenizer(batch, **kwargs))


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_and_truncation_side_match_transformers(side):
    transformers = pytest.importorskip("transformers")
    kwargs = {"padding_side": side, "truncation_side": side}
    ours, theirs = PerceiverTokenizer(**kwargs), transformers.PerceiverTokenizer(**kwargs)
    batch = [TEXTS["non_ascii"], TEXTS["ascii"]]
    call = {"padding": "max_length", "truncation": True, "max_length": 24, "return_tensors": "pt"}
    assert_same_encoding(ours(batch, **call), theirs(batch, **call))


def test_special_tokens_on_and_off(tokenizer):
    text = TEXTS["non_ascii"]
    raw = list(text.encode("utf-8"))
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == [b + 6 for b in raw]
    assert tokenizer(text)["input_ids"] == [
        tokenizer.cls_token_id,
        *(b + 6 for b in raw),
        tokenizer.sep_token_id,
    ]


def test_ids_and_sizes_match_transformers(tokenizer, hf_tokenizer):
    for name in ("pad", "bos", "eos", "mask", "cls", "sep"):
        assert getattr(tokenizer, f"{name}_token_id") == getattr(hf_tokenizer, f"{name}_token_id"), name
        assert getattr(tokenizer, f"{name}_token") == str(getattr(hf_tokenizer, f"{name}_token")), name
    assert tokenizer.model_max_length == hf_tokenizer.model_max_length == 2048
    # transformers' vocab_size is the 256 bytes only; its len() and ours count all 262 ids.
    assert tokenizer.vocab_size == len(tokenizer) == len(hf_tokenizer) == 262
    assert sorted(tokenizer.all_special_ids) == sorted(hf_tokenizer.all_special_ids)


@pytest.mark.parametrize("name", list(TEXTS))
@pytest.mark.parametrize("skip_special_tokens", [False, True])
def test_decode_round_trip_matches_transformers(tokenizer, hf_tokenizer, name, skip_special_tokens):
    ids = tokenizer(TEXTS[name])["input_ids"]
    decoded = tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
    assert decoded == hf_tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
    if skip_special_tokens and name != "special_literal":
        assert decoded == TEXTS[name]
    assert tokenizer.convert_ids_to_tokens(ids, skip_special_tokens=skip_special_tokens) == (
        hf_tokenizer.convert_ids_to_tokens(ids, skip_special_tokens=skip_special_tokens)
    )


def test_decode_invalid_utf8_and_batches_match_transformers(tokenizer, hf_tokenizer):
    # A lone UTF-8 lead byte (0xF0) followed by [SEP] must become U+FFFD, not raise.
    broken = [4, 0xF0 + 6, 5]
    assert tokenizer.decode(broken) == hf_tokenizer.decode(broken)
    batch = tokenizer([TEXTS["ascii"], TEXTS["non_ascii"]], padding=True, return_tensors="pt")["input_ids"]
    expected = hf_tokenizer.batch_decode(batch, skip_special_tokens=True)
    assert tokenizer.batch_decode(batch, skip_special_tokens=True) == expected
    assert tokenizer.decode(batch.numpy(), skip_special_tokens=True) == expected
    assert expected == [TEXTS["ascii"], TEXTS["non_ascii"]]


def test_encode_matches_transformers(tokenizer, hf_tokenizer):
    text = TEXTS["non_ascii"]
    assert tokenizer.encode(text) == hf_tokenizer.encode(text)
    assert torch.equal(tokenizer.encode(text, return_tensors="pt"), hf_tokenizer.encode(text, return_tensors="pt"))


def test_save_load_round_trip_through_transformers(tmp_path, hf_tokenizer):
    transformers = pytest.importorskip("transformers")
    ours = PerceiverTokenizer(model_max_length=512, padding_side="left")
    ours.save_pretrained(tmp_path / "ours")
    batch = [TEXTS["ascii"], TEXTS["non_ascii"]]
    for loader in (transformers.PerceiverTokenizer, transformers.AutoTokenizer):
        loaded = loader.from_pretrained(tmp_path / "ours")
        assert loaded.model_max_length == 512 and loaded.padding_side == "left"
        assert_same_encoding(ours(batch, padding=True), loaded(batch, padding=True))

    hf_tokenizer.save_pretrained(tmp_path / "theirs")
    reloaded = PerceiverTokenizer.from_pretrained(tmp_path / "theirs")
    assert reloaded.model_max_length == 2048 and reloaded.padding_side == "right"
    assert_same_encoding(reloaded(batch, padding=True), hf_tokenizer(batch, padding=True))
    assert PerceiverTokenizer.from_pretrained(tmp_path / "ours", model_max_length=64).model_max_length == 64


def test_loads_legacy_added_token_dicts(tmp_path):
    token = {"__type": "AddedToken", "content": "[MASK]", "lstrip": False, "rstrip": False}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"mask_token": token, "model_max_length": 99}))
    loaded = PerceiverTokenizer.from_pretrained(tmp_path)
    assert loaded.mask_token == "[MASK]" and loaded.model_max_length == 99


def _add_same_tokens(tokenizer: Any, added_token_cls: Any) -> list[int]:
    """The same add_tokens / add_special_tokens calls on ours or transformers'; returns their counts."""
    return [
        tokenizer.add_tokens(["bim", "bambam", "a", "[CLS]"]),
        tokenizer.add_tokens(added_token_cls("zz", lstrip=True, rstrip=True)),
        tokenizer.add_special_tokens({"additional_special_tokens": ["<new>", "bim"]}),
    ]


ADDED_TEXT = " He is very happy, UNwant\u00e9d,running bim bambam  zz  x<new>xbimx [CLS]"


def test_added_tokens_match_transformers():
    transformers = pytest.importorskip("transformers")
    ours, theirs = PerceiverTokenizer(), transformers.PerceiverTokenizer()
    assert _add_same_tokens(ours, transformers.AddedToken) == _add_same_tokens(theirs, transformers.AddedToken)
    assert len(ours) == len(theirs) == 266 and ours.vocab_size == 262
    for kwargs in ({}, {"add_special_tokens": False}, {"split_special_tokens": True}):
        assert_same_encoding(ours(ADDED_TEXT, **kwargs), theirs(ADDED_TEXT, **kwargs))
    tokens = ["bim", "bambam", "zz", "<new>", "[SEP]", "q"]
    assert ours.convert_tokens_to_ids(tokens) == theirs.convert_tokens_to_ids(tokens)
    ids = ours.encode(ADDED_TEXT)
    assert ours.convert_ids_to_tokens(ids) == theirs.convert_ids_to_tokens(ids)
    for skip in (False, True):
        assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip)
    assert set(ours.all_special_ids) == set(theirs.all_special_ids)
    assert ours.additional_special_tokens == theirs.extra_special_tokens == ["<new>", "bim"]
    # transformers records the byte "a" it was asked to add as an added token with its byte id 103; same ids.
    assert {**ours.added_tokens_encoder, "a": 103} == theirs.added_tokens_encoder
    assert ours.get_vocab() == theirs.get_vocab()
    assert {i: str(t) for i, t in ours.added_tokens_decoder.items()} == {
        i: str(t) for i, t in theirs.added_tokens_decoder.items() if i != 103
    }


def test_added_tokens_save_load_through_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    ours, theirs = PerceiverTokenizer(model_max_length=42), transformers.PerceiverTokenizer(model_max_length=42)
    _add_same_tokens(ours, transformers.AddedToken)
    _add_same_tokens(theirs, transformers.AddedToken)
    ours.save_pretrained(tmp_path / "ours")
    theirs.save_pretrained(tmp_path / "theirs")
    expected = theirs(ADDED_TEXT)
    for loaded in (
        PerceiverTokenizer.from_pretrained(tmp_path / "ours"),
        PerceiverTokenizer.from_pretrained(tmp_path / "theirs"),
        transformers.PerceiverTokenizer.from_pretrained(tmp_path / "ours"),
    ):
        assert_same_encoding(loaded(ADDED_TEXT), expected)
        assert len(loaded) == 266 and loaded.model_max_length == 42
        assert set(loaded.all_special_ids) == set(theirs.all_special_ids)
    assert json.loads((tmp_path / "ours" / "added_tokens.json").read_text()) == json.loads(
        (tmp_path / "theirs" / "added_tokens.json").read_text()
    )


def test_additional_special_tokens_keyword_and_stored_list(tmp_path):
    transformers = pytest.importorskip("transformers")
    extra = ["<a>", transformers.AddedToken("<b>", lstrip=True)]
    ours = PerceiverTokenizer(additional_special_tokens=extra)
    # transformers' constructor keyword drops lstrip (5.25); its add_special_tokens keeps it, as ours does.
    theirs = transformers.PerceiverTokenizer()
    theirs.add_special_tokens({"additional_special_tokens": extra})
    text = "x <b>y<a> [SEP]"
    assert_same_encoding(ours(text), theirs(text))
    assert ours.additional_special_tokens == ["<a>", "<b>"]
    # An older-transformers config listing additional_special_tokens (no added_tokens_decoder) gets new ids.
    PerceiverTokenizer().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config["additional_special_tokens"] = ["<c>", "<d>"]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    loaded = PerceiverTokenizer.from_pretrained(tmp_path)
    assert loaded.additional_special_tokens == ["<c>", "<d>"] and loaded.convert_tokens_to_ids("<d>") == 263
    overridden = PerceiverTokenizer.from_pretrained(tmp_path, additional_special_tokens=["<e>"])
    assert overridden.additional_special_tokens == ["<e>"] and overridden.encode("<e>") == [4, 262, 5]


@pytest.mark.parametrize("replace", [True, False])
def test_add_special_tokens_replace_keyword_matches_transformers(replace):
    """transformers 5's ``replace_extra_special_tokens`` (and its 4.x name) replaces or extends the stored list."""
    transformers = pytest.importorskip("transformers")
    ours, theirs = PerceiverTokenizer(), transformers.PerceiverTokenizer()
    for tokenizer in (ours, theirs):
        tokenizer.add_special_tokens({"additional_special_tokens": ["<a>"]})
        tokenizer.add_special_tokens({"additional_special_tokens": ["<b>"]}, replace_extra_special_tokens=replace)
    assert ours.additional_special_tokens == theirs.extra_special_tokens  # transformers 5's name for the list
    assert_same_encoding(ours("x<a>y<b>"), theirs("x<a>y<b>"))
    older = PerceiverTokenizer()
    older.add_special_tokens({"additional_special_tokens": ["<a>"]})
    older.add_special_tokens({"additional_special_tokens": ["<b>"]}, replace_additional_special_tokens=replace)
    assert older.additional_special_tokens == ours.additional_special_tokens


def test_text_target_matches_transformers(tokenizer, hf_tokenizer):
    targets = ["Summary of the text.", "Another summary."]
    kwargs = {"max_length": 32, "padding": "max_length", "truncation": True, "return_tensors": "pt"}
    assert_same_encoding(tokenizer(text_target=targets, **kwargs), hf_tokenizer(text_target=targets, **kwargs))
    sources = [TEXTS["ascii"], TEXTS["non_ascii"]]
    for kw in (kwargs, {"padding": True}):
        assert_same_encoding(
            tokenizer(sources, text_target=targets, **kw), hf_tokenizer(sources, text_target=targets, **kw)
        )
    assert_same_encoding(tokenizer("ab", text_target="cd e"), hf_tokenizer("ab", text_target="cd e"))


def test_convert_tokens_to_string_matches_transformers(tokenizer, hf_tokenizer):
    tokens = ["[CLS]", "t", "h", "i", "s", " ", "\xc3", "\xa9", "\xe2", "[SEP]"]
    assert tokenizer.convert_tokens_to_string(tokens) == hf_tokenizer.convert_tokens_to_string(tokens)
    ids = tokenizer.encode(TEXTS["non_ascii"])
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokenizer.convert_tokens_to_string(tokens) == hf_tokenizer.convert_tokens_to_string(tokens)


# --- tokenizer: departures from transformers and bad input --------------------------------------------------


def test_max_length_padding_without_truncation_raises(tokenizer, hf_tokenizer):
    # transformers silently returns the 62-token sequence unpadded; a fixed-size model would break later.
    assert len(hf_tokenizer(TEXTS["ascii"], padding="max_length", max_length=16)["input_ids"]) == 62
    with pytest.raises(ValueError, match=r"62 tokens.*max_length=16"):
        tokenizer(TEXTS["ascii"], padding="max_length", max_length=16, truncation=False)


@pytest.mark.parametrize("bad", [5, None, b"bytes", 3.0])
def test_non_str_text_raises_type_error(tokenizer, bad):
    with pytest.raises(TypeError, match=type(bad).__name__):
        tokenizer(bad)


def test_non_str_in_batch_names_index_and_type(tokenizer):
    with pytest.raises(TypeError, match=r"text\[1\].*int"):
        tokenizer(["fine", 7])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"padding": "sideways"}, "sideways"),
        ({"truncation": "only_second"}, "only_second"),
        ({"max_length": 0, "truncation": True}, "max_length must be a positive int.*0"),
        ({"max_length": 1, "truncation": True}, "max_length=1 cannot hold the 2 special tokens"),
        ({"return_tensors": "tf"}, "'tf'"),
    ],
    ids=repr,
)
def test_bad_options_raise_value_error(tokenizer, kwargs, match):
    with pytest.raises(ValueError, match=match):
        tokenizer(TEXTS["ascii"], **kwargs)


def test_ragged_batch_to_tensor_names_lengths(tokenizer):
    with pytest.raises(ValueError, match=r"\[3, 4\].*padding=True"):
        tokenizer(["a", "ab"], return_tensors="pt")


def test_empty_batch_raises(tokenizer):
    with pytest.raises(ValueError, match="empty batch"):
        tokenizer([])


@pytest.mark.parametrize("bad_id", [262, -1, 10_000])
def test_decode_out_of_vocabulary_raises(tokenizer, bad_id):
    with pytest.raises(ValueError, match=str(bad_id)):
        tokenizer.decode([4, bad_id])


def test_bad_constructor_arguments_raise(tmp_path):
    with pytest.raises(ValueError, match="'middle'"):
        PerceiverTokenizer(padding_side="middle")
    with pytest.raises(ValueError, match="distinct"):
        PerceiverTokenizer(mask_token="[PAD]")
    with pytest.raises(FileNotFoundError, match=r"tokenizer_config\.json"):
        PerceiverTokenizer.from_pretrained(tmp_path)


def test_do_lower_case_lowercases_text_but_not_tokens(tmp_path, hf_tokenizer):
    # transformers 5.25 stores do_lower_case but encodes "ABC" unchanged; ours lowercases, so the reference is
    # transformers on the lowercased text. Special and added tokens are matched before lowercasing.
    ours = PerceiverTokenizer(do_lower_case=True, additional_special_tokens=["<UP>"])
    text = "ABC [CLS] ÜBER <UP>"
    expected = [*hf_tokenizer.encode("abc [CLS] über ", add_special_tokens=False), 262]
    assert ours.encode(text, add_special_tokens=False) == expected
    ours.save_pretrained(tmp_path)
    assert PerceiverTokenizer.from_pretrained(tmp_path).encode(text, add_special_tokens=False) == expected
    assert PerceiverTokenizer.from_pretrained(tmp_path, do_lower_case=False).encode("A") == [4, 71, 5]


def test_added_token_bad_input_raises(tmp_path):
    transformers = pytest.importorskip("transformers")
    tokenizer = PerceiverTokenizer()
    with pytest.raises(ValueError, match="pad_token"):
        tokenizer.add_special_tokens({"pad_token": "<p>"})
    with pytest.raises(ValueError, match="single_word"):
        tokenizer.add_tokens(transformers.AddedToken("w", single_word=True))
    with pytest.raises(TypeError, match="int"):
        tokenizer.add_tokens(5)
    with pytest.raises(ValueError, match="non-empty"):
        tokenizer.add_tokens("")
    with pytest.raises(TypeError, match="text_target"):
        tokenizer()
    with pytest.raises(TypeError, match="do_lower_case"):
        PerceiverTokenizer(do_lower_case="yes")
    with pytest.raises(TypeError, match="unknown_option"):
        PerceiverTokenizer(unknown_option=1)
    with pytest.raises(TypeError, match="unknown_option"):
        tokenizer("x", unknown_option=1)
    PerceiverTokenizer().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config["added_tokens_decoder"]["300"] = {"content": "gap", "special": False}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"'gap'.*id 300"):
        PerceiverTokenizer.from_pretrained(tmp_path)


# --- image processor: parity --------------------------------------------------------------------------------


def photos() -> dict[str, np.ndarray]:
    """Real photos, HWC uint8: landscape, square, and a portrait crop with an odd height."""
    return {
        "chelsea": skdata.chelsea(),  # (300, 451, 3)
        "astronaut": skdata.astronaut(),  # (512, 512, 3)
        "portrait": skdata.astronaut()[:455, 100:401],  # (455, 301, 3)
    }


def as_input(image: np.ndarray, kind: str) -> Any:
    if kind == "pil":
        return PIL.Image.fromarray(image)
    if kind == "torch_chw":
        return torch.from_numpy(image).permute(2, 0, 1)
    return image


def max_abs_diff(ours: Any, theirs: Any) -> float:
    return float(np.abs(np.asarray(ours, dtype=np.float64) - np.asarray(theirs, dtype=np.float64)).max())


@pytest.mark.parametrize("name", ["chelsea", "astronaut", "portrait"])
@pytest.mark.parametrize("kind", ["numpy_hwc", "pil", "torch_chw"])
def test_photo_matches_transformers(hf_image_processor_cls, name, kind):
    image = as_input(photos()[name], kind)
    ours = PerceiverImageProcessor()(image, return_tensors="pt")["pixel_values"]
    theirs = hf_image_processor_cls()(image, return_tensors="pt")["pixel_values"]
    assert ours.shape == theirs.shape == (1, 3, 224, 224)
    assert ours.dtype == theirs.dtype == torch.float32
    assert max_abs_diff(ours, theirs) <= IMAGE_ATOL


@pytest.mark.parametrize("return_tensors", [None, "np", "pt"])
def test_batch_of_mixed_sizes_matches_transformers(hf_image_processor_cls, return_tensors):
    batch = list(photos().values())
    ours = PerceiverImageProcessor()(batch, return_tensors=return_tensors)["pixel_values"]
    theirs = hf_image_processor_cls()(batch, return_tensors=return_tensors)["pixel_values"]
    assert type(ours) is type(theirs)
    assert len(ours) == len(theirs) == 3
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape == (3, 224, 224) and a.dtype == b.dtype
        assert max_abs_diff(a, b) <= IMAGE_ATOL


@pytest.mark.parametrize(
    "kwargs",
    [
        {"do_resize": False},  # float crops of each photo's own size
        {"do_rescale": False, "do_normalize": False},  # uint8 out
        {"size": 300, "crop_size": 256},  # crop larger than the image: zero padding
        {"size": {"height": 160, "width": 192}, "crop_size": {"height": 200, "width": 250}},
        {"resample": PIL.Image.Resampling.BILINEAR, "image_mean": 0.5, "image_std": 0.5},
    ],
    ids=repr,
)
def test_options_match_transformers(hf_image_processor_cls, kwargs):
    theirs_kwargs = dict(kwargs)
    for key in ("size", "crop_size"):
        if isinstance(kwargs.get(key), int):
            theirs_kwargs[key] = {"height": kwargs[key], "width": kwargs[key]}
    images = [photos()["chelsea"], photos()["portrait"]]
    ours = PerceiverImageProcessor(**kwargs)(images)["pixel_values"]
    theirs = hf_image_processor_cls(**theirs_kwargs)(images)["pixel_values"]
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert max_abs_diff(a, b) <= IMAGE_ATOL


def test_float_images_match_transformers(hf_image_processor_cls):
    photo = photos()["chelsea"]
    integer_valued = photo.astype(np.float64)
    ours = PerceiverImageProcessor()(integer_valued, return_tensors="np")["pixel_values"]
    theirs = hf_image_processor_cls()(integer_valued, return_tensors="np")["pixel_values"]
    assert max_abs_diff(ours, theirs) <= IMAGE_ATOL

    unit_range = photo.astype(np.float32) / 255
    ours = PerceiverImageProcessor(do_rescale=False)(unit_range, return_tensors="np")["pixel_values"]
    theirs = hf_image_processor_cls(do_rescale=False)(unit_range, return_tensors="np")["pixel_values"]
    assert max_abs_diff(ours, theirs) <= IMAGE_ATOL
    with pytest.warns(UserWarning, match="do_rescale=False"):
        PerceiverImageProcessor()(unit_range)


def test_rgba_conversion_matches_transformers(hf_image_processor_cls):
    rgba = PIL.Image.fromarray(photos()["chelsea"]).convert("RGBA")
    rgba.putalpha(PIL.Image.linear_gradient("L").resize(rgba.size))
    ours = PerceiverImageProcessor(do_convert_rgb=True)(rgba, return_tensors="np")["pixel_values"]
    theirs = hf_image_processor_cls(do_convert_rgb=True)(rgba, return_tensors="np")["pixel_values"]
    assert max_abs_diff(ours, theirs) <= IMAGE_ATOL


def test_image_processor_config_round_trip_through_transformers(tmp_path, hf_image_processor_cls):
    transformers = pytest.importorskip("transformers")
    ours = PerceiverImageProcessor(size=192, crop_size={"height": 200, "width": 210})
    ours.save_pretrained(tmp_path / "ours")
    photo = photos()["portrait"]
    for loader in (hf_image_processor_cls, transformers.AutoImageProcessor):
        loaded = loader.from_pretrained(tmp_path / "ours")
        theirs = loaded(photo, return_tensors="np")["pixel_values"]
        assert max_abs_diff(ours(photo, return_tensors="np")["pixel_values"], theirs) <= IMAGE_ATOL

    hf_image_processor_cls(do_normalize=False).save_pretrained(tmp_path / "theirs")
    reloaded = PerceiverImageProcessor.from_pretrained(tmp_path / "theirs")
    assert reloaded.to_dict() == PerceiverImageProcessor(do_normalize=False).to_dict()


def test_image_processor_json_matches_transformers(tmp_path, hf_image_processor_cls):
    settings = {"size": {"height": 192, "width": 200}, "do_normalize": False, "image_mean": [0.1, 0.2, 0.3]}
    ours, theirs = PerceiverImageProcessor(**settings), hf_image_processor_cls(**settings)
    ours_dict, theirs_dict = json.loads(ours.to_json_string()), json.loads(theirs.to_json_string())
    assert ours_dict == ours.to_dict()
    # transformers 5 keeps do_convert_rgb out of the PIL processor's JSON; every key it writes must agree.
    shared = set(theirs_dict) - {"image_processor_type"}
    assert shared <= set(ours_dict) and {k: ours_dict[k] for k in shared} == {k: theirs_dict[k] for k in shared}
    photo = photos()["chelsea"]
    expected = theirs(photo, return_tensors="np")["pixel_values"]
    ours.to_json_file(tmp_path / "ours.json")
    theirs.to_json_file(tmp_path / "theirs.json")
    for loaded in (
        PerceiverImageProcessor.from_json_file(tmp_path / "ours.json"),
        PerceiverImageProcessor.from_json_file(tmp_path / "theirs.json"),
        hf_image_processor_cls.from_json_file(tmp_path / "ours.json"),
    ):
        assert max_abs_diff(loaded(photo, return_tensors="np")["pixel_values"], expected) <= IMAGE_ATOL
    rebuilt = PerceiverImageProcessor.from_dict(ours.to_dict(), do_normalize=True)
    assert rebuilt.to_dict() == {**ours.to_dict(), "do_normalize": True}
    with pytest.raises(TypeError, match="dict"):
        PerceiverImageProcessor.from_dict([("size", 3)])
    with pytest.raises(TypeError, match="bogus"):
        PerceiverImageProcessor.from_dict({}, bogus=1)
    with pytest.raises(ValueError, match="directory"):
        ours.to_json_file(tmp_path)


def test_loads_legacy_int_sizes(tmp_path):
    legacy = {
        "crop_size": 256,
        "size": 224,
        "resample": 3,
        "feature_extractor_type": "PerceiverFeatureExtractor",
    }
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(legacy))
    loaded = PerceiverImageProcessor.from_pretrained(tmp_path)
    assert loaded.to_dict() == PerceiverImageProcessor().to_dict()


def test_4d_batches_follow_their_layout():
    photo = photos()["astronaut"]
    expected = PerceiverImageProcessor()([photo, photo], return_tensors="pt")["pixel_values"]
    nhwc = np.stack([photo, photo])
    nchw = torch.from_numpy(nhwc).permute(0, 3, 1, 2)
    for batch in (nhwc, nchw):
        assert torch.equal(PerceiverImageProcessor()(batch, return_tensors="pt")["pixel_values"], expected)


# --- image processor: bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((32, 32), np.uint8), r"shape \(32, 32\); expected \(3, H, W\) or \(H, W, 3\)"),
        (np.zeros((32, 32, 4), np.uint8), r"shape \(32, 32, 4\); expected 3 colour channels"),
        (torch.zeros(1, 32, 32, dtype=torch.uint8), r"shape \(1, 32, 32\); expected 3 colour channels"),
        (np.zeros((2, 3, 4, 5, 6), np.uint8), r"shape \(2, 3, 4, 5, 6\)"),
        (PIL.Image.new("L", (32, 32)), "mode 'L', expected mode 'RGB'"),
        (np.full((32, 32, 3), 2.5), r"values in \[2.5, 2.5\]"),
        (np.zeros((1, 1, 3), np.uint8), r"size \(1, 1\) is too small"),
    ],
    ids=["2d", "4_channels", "1_channel_torch", "5d", "grayscale_pil", "float_out_of_range", "too_small"],
)
def test_bad_images_raise_value_error(image, match):
    with pytest.raises(ValueError, match=match):
        PerceiverImageProcessor()(image)


@pytest.mark.parametrize(
    ("images", "match"),
    [
        ("cat.png", "type str"),
        ([photos()["chelsea"], 7], "image 1 has type int"),
        (np.zeros((8, 8, 3), dtype=bool), "dtype bool"),
    ],
    ids=["path", "int_in_list", "bool_dtype"],
)
def test_unsupported_types_raise_type_error(images, match):
    with pytest.raises(TypeError, match=match):
        PerceiverImageProcessor()(images)


def test_bad_processor_options_raise_value_error():
    with pytest.raises(ValueError, match="'tf'"):
        PerceiverImageProcessor()(photos()["chelsea"], return_tensors="tf")
    with pytest.raises(ValueError, match=r"different shapes \[\(3, 262, 262\), \(3, 448, 448\)\]"):
        PerceiverImageProcessor(do_resize=False)([photos()["chelsea"], photos()["astronaut"]], return_tensors="pt")
    with pytest.raises(ValueError, match=r"image_mean.*\(0.5, 0.5\)"):
        PerceiverImageProcessor(image_mean=(0.5, 0.5))
    with pytest.raises(ValueError, match=r"size.*-3"):
        PerceiverImageProcessor(size=-3)
    with pytest.raises(ValueError, match="empty list"):
        PerceiverImageProcessor()([])


def test_outputs_allow_attribute_access_and_to(tokenizer):
    encoding = tokenizer(["ab", "c"], padding=True, return_tensors="pt").to("cpu")
    assert torch.equal(encoding.input_ids, encoding["input_ids"])
    assert encoding.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    pixels = PerceiverImageProcessor()(photos()["chelsea"], return_tensors="pt").pixel_values
    assert pixels.shape == (1, 3, 224, 224)
    with pytest.raises(AttributeError, match="token_type_ids"):
        _ = encoding.token_type_ids


def test_padding_true_with_max_length_warns_like_transformers(tokenizer, hf_tokenizer):
    with pytest.warns(UserWarning, match="max_length"):
        hf_tokenizer(["a", "abc"], padding=True, max_length=2)
    with pytest.warns(UserWarning, match="max_length=2 is ignored"):
        ours = tokenizer(["a", "abc"], padding=True, max_length=2)
    assert ours["input_ids"] == [[4, 103, 5, 0, 0], [4, 103, 104, 105, 5]]


def test_runtime_does_not_import_transformers():
    code = "import sys, perceiver_io.processing; print('transformers' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


# --- image processor: per-call settings and setting types ----------------------------------------------------


def test_call_settings_match_transformers_and_do_not_stick(hf_image_processor_cls):
    photo = photos()["portrait"]
    processor = PerceiverImageProcessor()
    before = processor.to_dict()
    overrides = {"size": {"height": 160, "width": 176}, "crop_size": {"height": 200, "width": 200}, "resample": 2}
    ours = processor(photo, return_tensors="np", **overrides)["pixel_values"]
    theirs = hf_image_processor_cls()(photo, return_tensors="np", **overrides)["pixel_values"]
    assert ours.shape == (1, 3, 160, 176)
    assert max_abs_diff(ours, theirs) <= IMAGE_ATOL
    assert processor.to_dict() == before


def test_setting_types_are_checked():
    with pytest.raises(TypeError, match="do_normalize must be a bool, got 1"):
        PerceiverImageProcessor(do_normalize=1)
    with pytest.raises(ValueError, match=r"resample must be one of 0 \(nearest\), 1 \(lanczos\), .*got -1"):
        PerceiverImageProcessor(resample=-1)
    with pytest.raises(ValueError, match="rescale_factor must be a finite number, got '1/255'"):
        PerceiverImageProcessor()(photos()["chelsea"], rescale_factor="1/255")
    with pytest.raises(TypeError, match="unexpected keyword argument 'device'"):
        PerceiverImageProcessor()(photos()["chelsea"], device="cpu")
