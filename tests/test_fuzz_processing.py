"""Fuzzing PerceiverTokenizer and PerceiverImageProcessor against transformers' (see tests/fuzzing.py)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from fuzzing import Case, Tally, assert_no_failures, examples, fuzz, run_case
from hypothesis import strategies as st
from PIL import Image

import perceiver_io

SPECIALS = ("[CLS]", "[SEP]", "[PAD]", "[MASK]", "[BOS]", "[EOS]")
TEXTS = st.one_of(
    st.text(max_size=12),
    st.lists(st.sampled_from(["ab", "é", "日本", " ", *SPECIALS]), max_size=4).map("".join),
)

TOKENIZER_PLAN = st.fixed_dictionaries(
    {
        "text": st.one_of(
            TEXTS,
            st.lists(TEXTS, min_size=1, max_size=3),
            st.sampled_from([None, b"bytes", 7, [], ["ok", 3], [b"x"], ("a", "bc")]),
        ),
        "padding": st.sampled_from([False, True, "longest", "max_length", "do_not_pad", "bogus", 1, None]),
        "truncation": st.sampled_from(
            [None, True, False, "longest_first", "only_first", "do_not_truncate", "only_second", 1]
        ),
        "max_length": st.sampled_from([None, None, 1, 2, 5, 9, 0, -1, 2.5, True, "5"]),
        "return_tensors": st.sampled_from([None, None, "pt", "np", "tf"]),
        "add_special_tokens": st.booleans(),
    }
)


def tokenizer_problems(plan: dict) -> list[tuple[str, tuple[str, ...]]]:
    """The documented contract (PerceiverTokenizer.__call__): a str or a non-empty list/tuple of str; padding in
    {False, True, "longest", "max_length", "do_not_pad"}; truncation in {None, bools, "longest_first",
    "only_first", "do_not_truncate"}; max_length None or an int ≥ 1; return_tensors None/"pt"/"np". Truncating
    to fewer than the 2 special tokens, padding="max_length" below a sequence's length without truncation,
    and tensors of unequal lengths are refused."""
    text = plan["text"]
    texts = [text] if isinstance(text, str) else text
    if not isinstance(texts, list | tuple) or not texts or not all(isinstance(t, str) for t in texts):
        return [("text not str / list of str", ("text",))]
    padding, truncation, max_length = plan["padding"], plan["truncation"], plan["max_length"]
    if isinstance(padding, bool) is False and padding not in ("longest", "max_length", "do_not_pad"):
        return [("padding value", ("padding",))]
    if (
        truncation is not None
        and not isinstance(truncation, bool)
        and truncation not in ("longest_first", "only_first", "do_not_truncate")
    ):
        return [("truncation value", ("truncation",))]
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1):
        return [("max_length value", ("max_length",))]
    if plan["return_tensors"] not in (None, "pt", "np"):
        return [("return_tensors value", ("return_tensors",))]
    pad_to = "max_length" if padding == "max_length" else ("longest" if padding in (True, "longest") else None)
    truncate = (
        (max_length is not None and pad_to is None)
        if truncation is None
        else truncation in (True, "longest_first", "only_first")
    )
    limit = max_length if max_length is not None else 2048
    specials = 2 if plan["add_special_tokens"] else 0
    if truncate and limit < specials:
        return [("max_length below the special tokens", ("max_length",))]
    lengths = [len(t.encode("utf-8")) - sum(t.count(s) * (len(s) - 1) for s in SPECIALS) + specials for t in texts]
    if truncate:
        lengths = [min(n, limit) for n in lengths]
    if pad_to == "max_length" and max(lengths) > limit:
        return [("sequence longer than max_length without truncation", ("max_length", "truncation"))]
    if plan["return_tensors"] and pad_to is None and len(set(lengths)) > 1:
        return [("tensors of unequal lengths", ("length", "padding"))]
    return []


@pytest.fixture(scope="module")
def tokenizers(transformers_module):
    return perceiver_io.PerceiverTokenizer(), transformers_module.PerceiverTokenizer()


@pytest.mark.parametrize("slow", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["ci", "slow"])
def test_fuzz_tokenizer(slow, tokenizers, tmp_path_factory):
    ours, ref = tokenizers
    tally = Tally("PerceiverTokenizer.__call__")
    keys = ("padding", "truncation", "max_length", "return_tensors", "add_special_tokens")

    def one(plan: dict) -> None:
        problems = tokenizer_problems(plan)
        kwargs = {k: plan[k] for k in keys}
        case = Case(
            problems[0][0] if problems else "valid input", not problems, problems[0][1] if problems else (), repr(plan)
        )

        def check(got) -> str | None:
            texts = [plan["text"]] if isinstance(plan["text"], str) else plan["text"]
            if plan["padding"] == "max_length" and "" in texts and not plan["add_special_tokens"]:
                # transformers leaves an empty sequence unpadded; the closed form is max_length pads and zeros.
                n = plan["max_length"] or 2048
                rows = [[0] * n for _ in texts]
                a = got["input_ids"].tolist() if hasattr(got["input_ids"], "tolist") else got["input_ids"]
                a = [a] if isinstance(plan["text"], str) and plan["return_tensors"] is None else a
                if not all(len(row) <= n for row in a):
                    return "a row longer than max_length"
                empty = [i for i, t in enumerate(texts) if not t]
                return None if all(a[i] == rows[i] for i in empty) else f"empty text not padded: {a}"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                expected = ref(plan["text"], **kwargs)
            for key in ("input_ids", "attention_mask"):
                a, b = got[key], expected[key]
                a = a.tolist() if hasattr(a, "tolist") else a
                b = b.tolist() if hasattr(b, "tolist") else b
                if a != b:
                    return f"{key} {a} vs {b}"
            return None

        def call():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the documented "max_length is ignored" warning
                return ours(plan["text"], **kwargs)

        run_case(tally, case, call, check)

    fuzz(tally, TOKENIZER_PLAN, one, examples(200, slow), tmp_path_factory.getbasetemp())
    assert_no_failures(tally)


# ---------------------------------------------------------------------------------------------------------
# Image processor
# ---------------------------------------------------------------------------------------------------------

IMAGE_PLAN = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**16),
        "kind": st.sampled_from(["array", "array", "tensor", "pil"]),
        "layout": st.sampled_from(["hwc", "hwc", "chw", "hw", "hw4", "4d", "1hw3"]),
        "height": st.sampled_from([20, 17, 9, 1, 0]),
        "width": st.sampled_from([20, 13, 2, 0]),
        "dtype": st.sampled_from(
            ["uint8", "uint8", "float32", "float64", "int32", "uint16", "float16", "bool", "complex64"]
        ),
        "values": st.sampled_from(["natural", "natural", "negative", "above 255", "nan", "inf"]),
        "mode": st.sampled_from(["RGB", "RGB", "L", "RGBA", "P", "I;16", "I", "F", "1", "CMYK", "LA"]),
    }
)
PROCESSOR_ARGS = dict(size=16, crop_size=18)


def build_image(plan: dict):
    rng = np.random.default_rng(plan["seed"])
    h, w = plan["height"], plan["width"]
    if plan["kind"] == "pil":
        h, w = max(h, 1), max(w, 1)
        base = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
        return base if plan["mode"] == "RGB" else base.convert(plan["mode"])
    shape = {
        "hwc": (h, w, 3),
        "chw": (3, h, w),
        "hw": (h, w),
        "hw4": (h, w, 4),
        "4d": (1, h, w, 3),
        "1hw3": (h, w, 3, 1),
    }[plan["layout"]]
    dtype = np.dtype(plan["dtype"])
    if dtype.kind in "fc":
        x = rng.random(shape).astype(dtype)
    elif dtype.kind == "b":
        x = rng.random(shape) > 0.5
    else:
        x = rng.integers(0, 256, shape).astype(dtype)
    if x.size and plan["values"] != "natural" and dtype.kind != "b":
        flat = x.reshape(-1)
        special = {"negative": -3, "above 255": 300, "nan": np.nan, "inf": np.inf}[plan["values"]]
        if dtype.kind in "fc" or special in (-3, 300):
            with np.errstate(all="ignore"):
                flat[0] = (
                    np.array(special).astype(dtype)
                    if dtype.kind in "fc"
                    else np.array(special).astype(np.int64).astype(dtype)
                )
    if plan["kind"] == "tensor":
        if dtype.name == "uint16":
            return x  # torch has no general uint16 tensor
        return torch.from_numpy(x)
    return x


def image_problems(image) -> list[tuple[str, tuple[str, ...]]]:
    """The documented contract (PerceiverImageProcessor): a PIL RGB image, or an array/tensor (H, W, 3) or
    (3, H, W) (a 4-D one is a batch) of an integer or floating dtype, H, W ≥ 1 and large enough that the
    224/256 centre crop is not empty; uint8 any value, other integers and integer-valued floats in [0, 255],
    other floats in [0, 1] (non-finite values in neither)."""
    names = ("image",)
    if isinstance(image, Image.Image):
        if image.mode != "RGB":
            return [("PIL mode", (*names, "mode"))]
        return [] if int(16 / 18 * min(image.size)) else [("image too small or empty", (*names, "size", "small"))]
    x = image.numpy() if isinstance(image, torch.Tensor) else image
    if x.dtype.kind not in "uif":
        return [("image dtype", (*names, "dtype"))]
    if x.ndim == 4:
        if x.shape[0] == 0:
            return [("empty batch", names)]
        x = x[0]
    if x.ndim != 3 or (x.shape[0] != 3 and x.shape[-1] != 3):
        return [("image shape", (*names, "shape"))]
    hw = x.shape[1:] if x.shape[0] == 3 else x.shape[:2]
    if min(hw) == 0 or int(16 / 18 * min(hw)) == 0:
        return [("image too small or empty", (*names, "size", "shape"))]
    if x.dtype == np.uint8:
        return []
    if not np.isfinite(x).all():
        return [("image not finite", (*names, "nan", "values"))]
    integral = np.array_equal(x, np.round(x))
    if integral and (x.min() < 0 or x.max() > 255):
        return [("image integers outside [0, 255]", (*names, "values", "range"))]
    if not integral and (x.min() < 0 or x.max() > 1):
        return [("image floats outside [0, 1]", (*names, "values", "range"))]
    return []


@pytest.mark.parametrize("slow", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["ci", "slow"])
def test_fuzz_image_processor(slow, transformers_module, tmp_path_factory):
    ours = perceiver_io.PerceiverImageProcessor(**PROCESSOR_ARGS)
    ref = transformers_module.PerceiverImageProcessor(**PROCESSOR_ARGS)
    tally = Tally("PerceiverImageProcessor.__call__")

    def one(plan: dict) -> None:
        image = build_image(plan)
        problems = image_problems(image)
        size = tuple(getattr(image, "shape", getattr(image, "size", ())))
        desc = f"{type(image).__name__} {getattr(image, 'mode', '')}{getattr(image, 'dtype', '')}{size}"
        case = Case(
            problems[0][0] if problems else "valid input", not problems, problems[0][1] if problems else (), desc
        )

        def check(got) -> str | None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                expected = ref(image, return_tensors="pt")["pixel_values"]
            a = got["pixel_values"]
            if a.shape != expected.shape:
                return f"shape {tuple(a.shape)} vs {tuple(expected.shape)}"
            err = (a - expected).abs().max().item()
            return None if err <= 1e-5 else f"max|Δ|={err:.3g}"

        def call():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the documented "already rescaled?" warning
                return ours(image, return_tensors="pt")

        run_case(tally, case, call, check)

    fuzz(tally, IMAGE_PLAN, one, examples(200, slow), tmp_path_factory.getbasetemp())
    assert_no_failures(tally)
