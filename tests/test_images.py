"""Image files as users have them: scikit-image's photos saved as 16-bit PNG, float32 TIFF, palette, grey and
transparent images, read back by `load_image` and compared with the 8-bit originals."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL_CONFIGS, randomize_
from PIL import Image
from skimage import data

from perceiver_io import PerceiverConfig, PerceiverForImageClassificationFourier
from perceiver_io.tasks import classify
from perceiver_io.tasks.common import as_rgb_array
from perceiver_io.tasks.images import load_image

tifffile = pytest.importorskip("tifffile")

PHOTOS = ("astronaut", "camera", "chelsea")


def photo(name: str) -> np.ndarray:
    """The photo as uint8 RGB (camera is grey: replicated)."""
    image = getattr(data, name)()
    return np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image


def to_16_bit(image: np.ndarray, seed: int = 0) -> np.ndarray:
    """8-bit values spread over the 16-bit range as a scanner would: v·257 plus noise under half an 8-bit step."""
    noise = np.random.default_rng(seed).integers(-120, 121, image.shape)
    return np.clip(image.astype(np.int64) * 257 + noise, 0, 65535).astype(np.uint16)


def write_png_16(path: Path, pixels: np.ndarray) -> None:
    """A 16-bit grey or RGB PNG written byte by byte from the spec (Pillow cannot write 16-bit RGB)."""
    height, width = pixels.shape[:2]
    colour_type = 0 if pixels.ndim == 2 else 2
    rows = pixels.astype(">u2").reshape(height, -1).view(np.uint8).reshape(height, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)  # filter type 0 per row

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def assert_within_one_grey_level(read: np.ndarray, original: np.ndarray) -> None:
    assert read.dtype == np.uint8 and read.shape == original.shape
    assert np.abs(read.astype(int) - original.astype(int)).max() <= 1


@pytest.mark.parametrize("name", PHOTOS)
def test_16_bit_png(tmp_path, name):
    """A 16-bit PNG was read as all white (mean 255); now within one grey level of the 8-bit photo."""
    sixteen = to_16_bit(getattr(data, name)())
    write_png_16(tmp_path / "p.png", sixteen)
    with Image.open(tmp_path / "p.png") as check:  # the file really is 16-bit
        assert check.mode in ("I;16", "I", "RGB") and (check.mode != "RGB" or sixteen.ndim == 3)
    assert_within_one_grey_level(load_image(tmp_path / "p.png"), photo(name))


def test_16_bit_grey_png_written_by_pillow(tmp_path):
    Image.fromarray(to_16_bit(data.camera())).save(tmp_path / "camera.png")
    read = load_image(tmp_path / "camera.png")
    assert_within_one_grey_level(read, photo("camera"))
    assert abs(read.mean() - data.camera().mean()) < 0.5


@pytest.mark.parametrize("name", PHOTOS)
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_float_tiff_in_0_1(tmp_path, name, dtype):
    """A float TIFF was read as all black; values in [0, 1] are now scaled by 255 (Pillow reads one-channel
    float32, tifffile the rest)."""
    pixels = (getattr(data, name)() / 255).astype(dtype)
    tifffile.imwrite(tmp_path / "p.tif", pixels, photometric="rgb" if pixels.ndim == 3 else "minisblack")
    assert_within_one_grey_level(load_image(tmp_path / "p.tif"), photo(name))


@pytest.mark.parametrize("name", PHOTOS)
def test_16_bit_tiff(tmp_path, name):
    pixels = to_16_bit(getattr(data, name)())
    tifffile.imwrite(tmp_path / "p.tif", pixels, photometric="rgb" if pixels.ndim == 3 else "minisblack")
    assert_within_one_grey_level(load_image(tmp_path / "p.tif"), photo(name))


def test_images_whose_range_is_unknown_are_refused_with_the_reason(tmp_path):
    tifffile.imwrite(tmp_path / "scaled.tif", data.camera().astype(np.float32))  # 0..255 as float
    with pytest.raises(ValueError, match=r"scaled\.tif: float pixels range over \[0, 255\]; expected \[0, 1\]"):
        load_image(tmp_path / "scaled.tif")
    rgb = (data.chelsea() / 255).astype(np.float32)
    rgb[:2, :5] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", rgb, photometric="rgb")
    with pytest.raises(ValueError, match=r"nan\.tif: 30 of 405900 float pixel values are NaN or infinite"):
        load_image(tmp_path / "nan.tif")
    tifffile.imwrite(tmp_path / "int32.tif", data.camera().astype(np.int32))
    with pytest.raises(
        ValueError, match=r"int32\.tif: TIFF of 32-bit or signed integer pixels, whose range is unknown"
    ):
        load_image(tmp_path / "int32.tif")
    tifffile.imwrite(tmp_path / "five.tif", np.zeros((4, 4, 5), np.float32), photometric="minisblack",
                     planarconfig="contig")  # fmt: skip
    with pytest.raises(ValueError, match=r"five\.tif: a TIFF of shape \(4, 4, 5\); expected one image of 1 to 4"):
        load_image(tmp_path / "five.tif")


def test_the_first_page_of_a_multi_page_tiff_is_read(tmp_path):
    pages = np.stack([data.chelsea() / 255, 1 - data.chelsea() / 255]).astype(np.float32)
    tifffile.imwrite(tmp_path / "pages.tif", pages, photometric="rgb")
    assert_within_one_grey_level(load_image(tmp_path / "pages.tif"), data.chelsea())


def test_palette_and_grey_images(tmp_path):
    chelsea = Image.fromarray(data.chelsea()).quantize(64)
    chelsea.save(tmp_path / "palette.png")
    palette = np.array(chelsea.getpalette()[: 3 * 64], dtype=np.uint8).reshape(64, 3)
    np.testing.assert_array_equal(load_image(tmp_path / "palette.png"), palette[np.asarray(chelsea)])
    Image.fromarray(data.camera()).save(tmp_path / "grey.png")
    np.testing.assert_array_equal(load_image(tmp_path / "grey.png"), photo("camera"))
    Image.fromarray(data.camera() > 128).save(tmp_path / "bilevel.png")
    np.testing.assert_array_equal(load_image(tmp_path / "bilevel.png"), np.where(photo("camera") > 128, 255, 0))


def alpha_ramp(shape: tuple[int, int]) -> np.ndarray:
    """Alpha from 0 (left) to 255 (right)."""
    return np.broadcast_to(np.linspace(0, 255, shape[1]).round().astype(np.uint8), shape).copy()


def test_transparent_pixels_are_composited_over_white(tmp_path, transformers_module):
    """Against the closed form ``a·rgb + (1 − a)·255`` and against transformers' ``convert_to_rgb``."""
    from transformers.image_transforms import convert_to_rgb

    astronaut = data.astronaut()
    alpha = alpha_ramp(astronaut.shape[:2])
    cases = {
        "rgba.png": Image.fromarray(np.dstack([astronaut, alpha])),
        "la.png": Image.fromarray(np.dstack([data.camera(), alpha_ramp(data.camera().shape)]), mode="LA"),
    }
    palette = Image.fromarray(data.chelsea()).quantize(16)
    palette.info["transparency"] = 3  # palette entry 3 is fully transparent
    cases["palette_transparent.png"] = palette
    for name, image in cases.items():
        image.save(tmp_path / name)
        with Image.open(tmp_path / name) as reopened:
            rgba = np.asarray(reopened.convert("RGBA")).astype(np.float64)
            reference = np.asarray(convert_to_rgb(reopened, return_numpy=True))
        expected = rgba[..., :3] * rgba[..., 3:] / 255 + 255 * (1 - rgba[..., 3:] / 255)
        read = load_image(tmp_path / name)
        assert np.abs(read - expected).max() <= 0.5 + 1e-9, name
        assert np.abs(read.astype(int) - reference.astype(int)).max() <= 1, name
    assert (load_image(tmp_path / "rgba.png")[:, 0] == 255).all()  # alpha 0: white, whatever the RGB underneath


def test_a_16_bit_photo_classifies_as_its_8_bit_original(tmp_path):
    """End to end: the same top-5 classes and probabilities as the 8-bit PNG (the image was all white before).

    The three images share one batch; a GEMM's rounding may differ by row position (MKL and oneDNN, mixed per layer
    shape by the kernel timing), so probabilities agree within float32 rounding, not bit for bit."""
    config = PerceiverConfig.from_dict({**SMALL_CONFIGS["PerceiverForImageClassificationFourier"], "image_size": 32})
    model = randomize_(PerceiverForImageClassificationFourier(config))
    Image.fromarray(data.camera()).save(tmp_path / "camera8.png")
    Image.fromarray(data.camera().astype(np.uint16) * 257).save(tmp_path / "camera16.png")
    tifffile.imwrite(tmp_path / "camera.tif", (data.camera() / 255).astype(np.float32))
    with torch.no_grad():
        eight, sixteen, floating = classify(model, [tmp_path / "camera8.png", tmp_path / "camera16.png",
                                                    tmp_path / "camera.tif"])  # fmt: skip
    for other in (sixteen, floating):
        assert [label for label, _ in other] == [label for label, _ in eight]
        np.testing.assert_allclose([p for _, p in other], [p for _, p in eight], rtol=1e-6, atol=1e-7)


def test_arrays_outside_0_255_are_refused_not_clipped():
    assert as_rgb_array(np.full((2, 3), 254.6)).tolist() == [[[255] * 3] * 3] * 2
    with pytest.raises(ValueError, match=r"image 4: 1 of 6 values are outside 0\.\.255 or not finite"):
        as_rgb_array(np.array([[0, 1, 2], [3, 4, 256.0]]), 4)
    with pytest.raises(ValueError, match=r"1 of 6 values are outside"):
        as_rgb_array(np.array([[0, 1, 2], [3, 4, np.nan]]))
    with pytest.raises(ValueError, match=r"real numbers in 0\.\.255, got dtype complex128"):
        as_rgb_array(np.zeros((2, 2), complex))
    sixteen = Image.fromarray(data.camera().astype(np.uint16) * 257)  # a PIL image, not a file
    np.testing.assert_array_equal(as_rgb_array(sixteen), photo("camera"))
