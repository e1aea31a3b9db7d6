"""PerceiverImageProcessorFast: batched torch preprocessing, checked against independent references.

transformers' own fast (torchvision) processor cannot run here (no torchvision), so the references are:
the PIL-based PerceiverImageProcessor on real photos (PIL's and torch's antialiased bicubic kernels are the
same a = -0.5 kernel, both resampling rows then columns with uint8 rounding in between; measured on these
photos: at most 1 grey level apart on at most 0.6% of pixels), PIL's float ("F" mode) resize for the float
path (what a GPU runs; measured ≤ 0.007 grey levels), and closed forms for crop geometry, normalisation
and resampling of constant and linear images.
"""

from __future__ import annotations

import json
import math
import warnings
from typing import Any

import numpy as np
import PIL.Image
import pytest
import torch
from skimage import data as skdata

from perceiver_io.processing import (
    PerceiverFeatureExtractor,
    PerceiverImageProcessor,
    PerceiverImageProcessorFast,
)
from perceiver_io.processing.image_processor_fast import _resize

MEAN = np.array([0.485, 0.456, 0.406])[:, None, None]
STD = np.array([0.229, 0.224, 0.225])[:, None, None]
RAW = {"do_rescale": False, "do_normalize": False}  # keep pixel values as they are


def photos() -> dict[str, np.ndarray]:
    """Real photos, HWC uint8: landscape, wide, square, and a portrait crop with an odd height."""
    return {
        "chelsea": skdata.chelsea(),  # (300, 451, 3)
        "coffee": skdata.coffee(),  # (400, 600, 3)
        "astronaut": skdata.astronaut(),  # (512, 512, 3)
        "portrait": skdata.astronaut()[:455, 100:401],  # (455, 301, 3)
    }


def grey_levels(a: Any, b: Any) -> np.ndarray:
    """|a - b| of normalised pixel values, in 8-bit grey levels of the input."""
    delta = np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))
    return delta * STD * 255


def pil_float_resize(image_chw: np.ndarray, height: int, width: int, resample: int) -> np.ndarray:
    """Per-channel PIL resize in 32-bit float mode: PIL's kernels with no rounding anywhere."""
    channels = [PIL.Image.fromarray(c.astype(np.float32), mode="F") for c in image_chw]
    return np.stack([np.asarray(c.resize((width, height), resample=resample)) for c in channels])


def coordinates(height: int, width: int) -> np.ndarray:
    """A float64 ``(3, height, width)`` image whose every pixel value encodes its channel, row and column."""
    c, r, k = np.meshgrid(np.arange(3), np.arange(height), np.arange(width), indexing="ij")
    return (1 + c * 1_000_000 + r * 1000 + k).astype(np.float64)


# --- reference (a): the PIL-based processor on real photos -------------------------------------------------


@pytest.mark.parametrize("name", list(photos()))
def test_photos_match_pil_processor_within_one_grey_level(name):
    photo = photos()[name]
    fast = PerceiverImageProcessorFast()(photo, return_tensors="pt")["pixel_values"]
    pil = PerceiverImageProcessor()(photo, return_tensors="pt")["pixel_values"]
    assert fast.shape == pil.shape == (1, 3, 224, 224)
    assert fast.dtype == pil.dtype == torch.float32
    delta = grey_levels(fast[0], pil[0])
    assert delta.max() <= 1 + 1e-3, delta.max()
    assert (delta > 1e-3).mean() <= 0.01, (delta > 1e-3).mean()


def test_batch_matches_pil_processor_with_custom_settings():
    # At these scales (240x230 -> 160x192 for chelsea) torch's uint8 kernel, which torchvision uses too,
    # rounds ~24% of pixels differently from PIL's (measured: at most 3 grey levels, mean 0.25); the
    # float path below agrees with PIL's float resize, so the gap is the uint8 kernels' fixed-point rounding.
    settings = {"size": {"height": 160, "width": 192}, "crop_size": {"height": 200, "width": 250}}
    batch = [photos()["chelsea"], photos()["portrait"], photos()["coffee"]]
    fast = PerceiverImageProcessorFast(**settings)(batch, return_tensors="np")["pixel_values"]
    pil = PerceiverImageProcessor(**settings)(batch, return_tensors="np")["pixel_values"]
    assert fast.shape == pil.shape == (3, 3, 160, 192)
    delta = grey_levels(fast, pil)
    assert delta.max() <= 3 + 1e-3 and delta.mean() <= 0.3, (delta.max(), delta.mean())


# --- the float path (GPU path of uint8 images): PIL float mode -----------------------------------------------


@pytest.mark.parametrize("resample", [PIL.Image.Resampling.BICUBIC, PIL.Image.Resampling.BILINEAR])
@pytest.mark.parametrize("size", [(224, 224), (150, 333), (500, 700)], ids=["square", "squash", "upsample"])
def test_float_resize_matches_pil_float_mode(resample, size):
    photo = photos()["coffee"].transpose(2, 0, 1).astype(np.float32)
    processor = PerceiverImageProcessorFast(do_center_crop=False, resample=resample, **RAW)
    ours = processor(photo, size={"height": size[0], "width": size[1]}, return_tensors="np")["pixel_values"][0]
    reference = pil_float_resize(photo, *size, resample)
    assert ours.dtype == np.float32
    assert np.abs(ours - reference).max() <= 0.01  # grey levels; float32 accumulation differs


def test_uint8_float_path_is_rounded_clamped_float_resize():
    # Off the CPU torchvision resizes uint8 in float32, then clamps and rounds: check that branch here.
    photo = photos()["chelsea"].transpose(2, 0, 1)
    ours = _resize(torch.from_numpy(photo)[None], 200, 300, "bicubic", native_uint8=False)[0].numpy()
    reference = np.clip(np.round(pil_float_resize(photo, 200, 300, PIL.Image.Resampling.BICUBIC)), 0, 255)
    assert ours.dtype == np.uint8
    delta = np.abs(ours.astype(np.float64) - reference)
    # Only float32 rounding exactly at .5 can flip a value.
    assert delta.max() <= 1 and (delta > 0).mean() <= 1e-3


# --- reference (b): closed forms -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "settings"),
    [
        ((3, 300, 451), {}),
        ((3, 455, 301), {}),
        ((3, 37, 64), {"size": {"height": 160, "width": 192}, "crop_size": {"height": 200, "width": 250}}),
        ((3, 10, 7), {"size": 300, "crop_size": 256}),  # crop 8x8: wider than the image, padded
        ((3, 9, 9), {"size": 14, "crop_size": 10}),  # crop 12x12: padded on both axes, odd padding
    ],
    ids=["landscape", "portrait_odd", "rectangular_ratio", "pad_width", "pad_both"],
)
def test_crop_geometry_closed_form(shape, settings):
    image = coordinates(*shape[1:])
    out = PerceiverImageProcessorFast(do_resize=False, **RAW, **settings)(image, return_tensors="np")
    out = out["pixel_values"][0]
    size = PerceiverImageProcessorFast(**settings).size
    crop = PerceiverImageProcessorFast(**settings).crop_size
    height, width = shape[1:]
    crop_h = math.floor(size["height"] / crop["height"] * min(height, width))
    crop_w = math.floor(size["width"] / crop["width"] * min(height, width))
    # torchvision's centre: offset (H - h) / 2 truncated toward zero, so padding puts its smaller half first.
    top, left = int((height - crop_h) / 2), int((width - crop_w) / 2)
    expected = np.zeros((3, crop_h, crop_w))
    for i in range(crop_h):
        for j in range(crop_w):
            if 0 <= i + top < height and 0 <= j + left < width:
                expected[:, i, j] = image[:, i + top, j + left]
    assert out.shape == expected.shape
    np.testing.assert_array_equal(out, expected)


def test_rescale_and_normalise_closed_form():
    image = np.random.default_rng(0).integers(0, 256, size=(3, 5, 6), dtype=np.uint8)
    plain = {"do_center_crop": False, "do_resize": False}
    cases = {
        (True, True): (image / 255 - MEAN) / STD,
        (True, False): image / 255,
        (False, True): (image - MEAN) / STD,
    }
    for (do_rescale, do_normalize), expected in cases.items():
        processor = PerceiverImageProcessorFast(do_rescale=do_rescale, do_normalize=do_normalize, **plain)
        out = processor(image, return_tensors="np")["pixel_values"][0]
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, expected, rtol=0, atol=2e-6 * max(1, np.abs(expected).max()))
    untouched = PerceiverImageProcessorFast(**RAW, **plain)(image, return_tensors="np")["pixel_values"][0]
    assert untouched.dtype == np.uint8
    np.testing.assert_array_equal(untouched, image)


@pytest.mark.parametrize("dtype", [np.uint8, np.float64])
def test_constant_image_stays_constant(dtype):
    image = np.full((13, 29, 3), 77, dtype=dtype)
    for resample in (0, 2, 3):
        out = PerceiverImageProcessorFast(do_center_crop=False, resample=resample, size=(11, 40), **RAW)(
            image, return_tensors="np"
        )["pixel_values"]
        np.testing.assert_allclose(out, 77, rtol=0, atol=1e-9)


@pytest.mark.parametrize("resample", [PIL.Image.Resampling.BICUBIC, PIL.Image.Resampling.BILINEAR])
@pytest.mark.parametrize(("source", "target"), [(64, 16), (16, 40)], ids=["down4", "up2.5"])
def test_linear_ramp_is_reproduced_at_half_pixel_centres(resample, source, target):
    # Normalised symmetric kernels reproduce linear functions; output pixel j samples the input at
    # (j + 0.5) * source / target - 0.5 (pixel centres), wherever the kernel support lies inside the image.
    ramp = np.broadcast_to(np.arange(source, dtype=np.float64), (3, 8, source)).copy()
    processor = PerceiverImageProcessorFast(do_center_crop=False, resample=resample, **RAW)
    out = processor(ramp, size={"height": 8, "width": target}, return_tensors="np")["pixel_values"][0]
    scale = source / target
    support = (2 if resample == PIL.Image.Resampling.BICUBIC else 1) * max(scale, 1)
    centres = (np.arange(target) + 0.5) * scale - 0.5
    inside = (centres - support >= 0) & (centres + support <= source - 1)
    assert inside.sum() >= target // 2
    np.testing.assert_allclose(out[:, :, inside], np.broadcast_to(centres[inside], (3, 8, inside.sum())), atol=1e-9)


# --- reference (c): a batch equals its images one by one ----------------------------------------------------


def test_mixed_size_batch_equals_per_image_processing():
    processor = PerceiverImageProcessorFast()
    images = [photos()["chelsea"], photos()["astronaut"], photos()["portrait"], photos()["chelsea"][::-1]]
    batched = processor(images, return_tensors="pt")["pixel_values"]
    one_by_one = torch.cat([processor(image, return_tensors="pt")["pixel_values"] for image in images])
    ungrouped = processor(images, return_tensors="pt", disable_grouping=True)["pixel_values"]
    assert batched.shape == (4, 3, 224, 224)
    assert torch.equal(batched, one_by_one) and torch.equal(batched, ungrouped)


def test_4d_inputs_and_return_types():
    photo = photos()["astronaut"]
    nhwc = np.stack([photo, photo[:, ::-1]])
    nchw = torch.from_numpy(nhwc).permute(0, 3, 1, 2)
    processor = PerceiverImageProcessorFast()
    expected = processor(list(nhwc), return_tensors="pt")["pixel_values"]
    assert torch.equal(processor(nhwc, return_tensors="pt")["pixel_values"], expected)
    assert torch.equal(processor(nchw, return_tensors="pt")["pixel_values"], expected)
    as_np = processor(nchw, return_tensors="np").pixel_values
    assert isinstance(as_np, np.ndarray) and as_np.dtype == np.float32
    np.testing.assert_array_equal(as_np, expected.numpy())
    as_list = processor(nchw).pixel_values
    assert isinstance(as_list, list) and all(torch.equal(a, b) for a, b in zip(as_list, expected, strict=True))


# --- reference (d): input layouts and dtypes ------------------------------------------------------------------


def test_layouts_and_integer_dtypes_give_identical_results():
    photo = photos()["portrait"]
    processor = PerceiverImageProcessorFast()
    expected = processor(photo, return_tensors="pt")["pixel_values"]
    inputs = {
        "pil": PIL.Image.fromarray(photo),
        "chw_tensor": torch.from_numpy(photo).permute(2, 0, 1),
        "non_contiguous": torch.from_numpy(np.ascontiguousarray(photo.transpose(2, 0, 1))).permute(1, 2, 0),
        "read_only": np.lib.stride_tricks.as_strided(photo, writeable=False),
        "int64": photo.astype(np.int64),
        "int16_tensor": torch.from_numpy(photo.astype(np.int16)),
        "uint16": photo.astype(np.uint16),
    }
    for name, image in inputs.items():
        assert torch.equal(processor(image, return_tensors="pt")["pixel_values"], expected), name


def test_float_inputs_match_uint8_where_no_resampling_rounds():
    photo = photos()["chelsea"]
    no_resize = PerceiverImageProcessorFast(do_resize=False)
    expected = no_resize(photo, return_tensors="pt")["pixel_values"]
    for dtype in (np.float64, np.float32, np.float16):
        assert torch.equal(no_resize(photo.astype(dtype), return_tensors="pt")["pixel_values"], expected), dtype
    # With the resize, floats are interpolated without uint8 rounding: float64 and float32 agree closely.
    resized = PerceiverImageProcessorFast()
    a = resized(photo.astype(np.float64), return_tensors="np")["pixel_values"]
    b = resized(photo.astype(np.float32), return_tensors="np")["pixel_values"]
    assert grey_levels(a[0], b[0]).max() <= 0.01


def test_channels_format_can_be_forced():
    # (3, 5, 3): channels first by inference; as channels-last it is a 3x5 image.
    image = np.arange(45, dtype=np.float64).reshape(3, 5, 3)
    processor = PerceiverImageProcessorFast(do_center_crop=False, do_resize=False, **RAW)
    first = processor(image, return_tensors="np")["pixel_values"][0]
    last = processor(image, input_data_format="channels_last", return_tensors="np")["pixel_values"][0]
    np.testing.assert_array_equal(first, image)
    np.testing.assert_array_equal(last, image.transpose(2, 0, 1))


def test_float_images_in_unit_range_warn_like_the_pil_processor():
    unit = photos()["chelsea"].astype(np.float32) / 255
    with pytest.warns(UserWarning, match="do_rescale=False"):
        PerceiverImageProcessorFast()(unit)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PerceiverImageProcessorFast(do_rescale=False)(unit)


def test_16_bit_image_as_float_with_its_rescale_factor():
    photo = photos()["coffee"]
    sixteen_bit = photo.astype(np.float64) * 257  # 0..255 -> 0..65535
    processor = PerceiverImageProcessorFast(do_resize=False)
    ours = processor(sixteen_bit, rescale_factor=1 / 65535, return_tensors="np")["pixel_values"]
    expected = processor(photo, return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5)


def test_device_argument_and_cuda():
    photo = torch.from_numpy(photos()["chelsea"]).permute(2, 0, 1)
    processor = PerceiverImageProcessorFast()
    on_cpu = processor(photo, device="cpu", return_tensors="pt")["pixel_values"]
    assert on_cpu.device.type == "cpu"
    if not torch.cuda.is_available():
        return
    on_gpu = processor(photo.cuda(), return_tensors="pt")["pixel_values"]
    assert on_gpu.device.type == "cuda"
    # The GPU resizes uint8 in float32, with no uint8 rounding between the row and column passes: that
    # branch run on the CPU (native_uint8=False) is 2 grey levels from the CPU result on this photo; one
    # more for float rounding on the GPU.
    assert grey_levels(on_gpu.cpu()[0], on_cpu[0]).max() <= 3 + 1e-3
    moved = processor(photo, device="cuda", return_tensors="pt")["pixel_values"]
    assert torch.equal(moved, on_gpu)


# --- settings, overrides, serialisation ---------------------------------------------------------------------


def test_call_overrides_equal_constructor_settings_and_do_not_stick():
    photo = photos()["portrait"]
    processor = PerceiverImageProcessorFast()
    before = processor.to_dict()
    overrides = {"size": 160, "crop_size": {"height": 200, "width": 220}, "resample": 2, "image_std": 0.5}
    ours = processor(photo, return_tensors="pt", **overrides)["pixel_values"]
    expected = PerceiverImageProcessorFast(**overrides)(photo, return_tensors="pt")["pixel_values"]
    assert torch.equal(ours, expected)
    assert processor.to_dict() == before


def test_config_matches_pil_processor_and_round_trips(tmp_path):
    settings = {"size": 192, "crop_size": {"height": 200, "width": 210}, "do_normalize": False}
    fast = PerceiverImageProcessorFast(**settings)
    assert fast.to_dict() == PerceiverImageProcessor(**settings).to_dict()
    (path,) = fast.save_pretrained(tmp_path)
    assert json.loads(open(path).read())["image_processor_type"] == "PerceiverImageProcessor"
    assert PerceiverImageProcessorFast.from_pretrained(tmp_path).to_dict() == fast.to_dict()
    assert PerceiverImageProcessor.from_pretrained(tmp_path).to_dict() == fast.to_dict()
    assert PerceiverImageProcessorFast.from_pretrained(tmp_path, size=100).size == {"height": 100, "width": 100}


def test_loads_a_transformers_config(tmp_path):
    transformers = pytest.importorskip("transformers")
    hf_cls = getattr(transformers, "PerceiverImageProcessorPil", None) or transformers.PerceiverImageProcessor
    hf_cls(size={"height": 160, "width": 160}, resample=2).save_pretrained(tmp_path)
    loaded = PerceiverImageProcessorFast.from_pretrained(tmp_path)
    assert loaded.to_dict() == PerceiverImageProcessor(size=160, resample=2).to_dict()


# --- PerceiverFeatureExtractor --------------------------------------------------------------------------------


def test_feature_extractor_is_a_deprecated_alias(tmp_path):
    with pytest.warns(FutureWarning, match="use PerceiverImageProcessor"):
        extractor = PerceiverFeatureExtractor(size=200)
    assert isinstance(extractor, PerceiverImageProcessor)
    photo = photos()["chelsea"]
    expected = PerceiverImageProcessor(size=200)(photo, return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(extractor(photo, return_tensors="np")["pixel_values"], expected)
    extractor.save_pretrained(tmp_path)
    with pytest.warns(FutureWarning):
        assert PerceiverFeatureExtractor.from_pretrained(tmp_path).to_dict() == extractor.to_dict()


# --- bad input ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (np.zeros((32, 32), np.uint8), r"image 0 has shape \(32, 32\); expected \(3, H, W\) or \(H, W, 3\)"),
        (np.zeros((32, 32, 4), np.uint8), r"shape \(32, 32, 4\); expected 3 colour channels"),
        (torch.zeros(1, 32, 32, dtype=torch.uint8), r"shape \(1, 32, 32\); expected 3 colour channels"),
        (np.zeros((2, 3, 4, 5, 6), np.uint8), r"shape \(2, 3, 4, 5, 6\)"),
        (np.zeros((3, 0, 8), np.uint8), "height and width must be positive"),
        (PIL.Image.new("L", (32, 32)), "mode 'L', expected mode 'RGB'"),
        ([], "empty list"),
        (torch.zeros(0, 3, 8, 8), "empty batch"),
        (np.zeros((1, 1, 3), np.uint8), r"size \(1, 1\) is too small"),
        (
            [np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 65535, np.uint16)],
            r"image 1 has integer values in \[65535, 65535\]",
        ),
        (np.full((8, 8, 3), -1, np.int32), r"integer values in \[-1, -1\]"),
        (np.full((8, 8, 3), np.nan), "non-finite"),
    ],
    ids=[
        "2d",
        "4_channels",
        "1_channel",
        "5d",
        "zero_height",
        "grey_pil",
        "empty_list",
        "empty_4d",
        "too_small",
        "16_bit",
        "negative",
        "nan",
    ],
)
def test_bad_images_raise_value_error(images, match):
    with pytest.raises(ValueError, match=match):
        PerceiverImageProcessorFast()(images)


@pytest.mark.parametrize(
    ("images", "match"),
    [
        ("cat.png", "image 0 has type str"),
        ([photos()["chelsea"], 7], "image 1 has type int"),
        ([[photos()["chelsea"]]], "image 0 has type list"),
        (np.zeros((8, 8, 3), dtype=bool), "dtype bool"),
        (torch.zeros(3, 8, 8, dtype=torch.complex64), "dtype torch.complex64"),
    ],
    ids=["path", "int_in_list", "nested_list", "bool", "complex"],
)
def test_non_images_raise_type_error(images, match):
    with pytest.raises(TypeError, match=match):
        PerceiverImageProcessorFast()(images)


def test_bad_settings_raise():
    photo = photos()["chelsea"]
    processor = PerceiverImageProcessorFast()
    with pytest.raises(ValueError, match=r"size.*-3"):
        PerceiverImageProcessorFast(size=-3)
    with pytest.raises(ValueError, match=r"crop_size.*\{'height': 0"):
        processor(photo, crop_size={"height": 0, "width": 5})
    choices = r"0 \(nearest-exact\), 2 \(bilinear\), 3 \(bicubic\)"
    with pytest.raises(ValueError, match=rf"resample must be one of {choices}, got <Resampling.LANCZOS: 1>"):
        PerceiverImageProcessorFast(resample=PIL.Image.Resampling.LANCZOS)
    with pytest.raises(ValueError, match="rescale_factor must be a finite number, got inf"):
        processor(photo, rescale_factor=float("inf"))
    with pytest.raises(TypeError, match="do_resize must be a bool, got 'yes'"):
        processor(photo, do_resize="yes")
    with pytest.raises(ValueError, match="return_tensors must be None, 'pt' or 'np', got 'tf'"):
        processor(photo, return_tensors="tf")
    with pytest.raises(ValueError, match=r"input_data_format .* got 'hwc'"):
        processor(photo, input_data_format="hwc")
    with pytest.raises(ValueError, match="device must be a torch device or its name, got 'gpu0'"):
        processor(photo, device="gpu0")
    with pytest.raises(TypeError, match="unexpected keyword argument 'data_format'"):
        processor(photo, data_format="channels_first")
    with pytest.raises(ValueError, match=r"different shapes \[\(3, 262, 262\), \(3, 448, 448\)\]"):
        processor([photo, photos()["astronaut"]], do_resize=False, return_tensors="pt")
