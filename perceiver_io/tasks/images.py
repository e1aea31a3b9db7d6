"""Reading image files as users have them: 8- and 16-bit, float, grey, palette and transparent images.

Every image becomes uint8 RGB ``[H, W, 3]``, the colab's input:

- 8-bit images (RGB, grey, palette, CMYK, …) are converted by Pillow;
- 16-bit images are scaled by 255/65535 and rounded (Pillow would clip them: a 16-bit grey PNG turns white);
- float images must hold values in [0, 1] (the range TIFF writers use for float pixels): they are scaled by
  255 and rounded; any other range is refused, since nothing in the file says what it means;
- transparent pixels (alpha channel, palette or grey transparency) are composited over white, as transformers'
  image processors do;
- 32-bit integer images are refused (their range is unknown);
- of a multi-frame file (GIF, multi-page TIFF), the first frame is read.

Pillow reads float TIFFs of one channel only; three-channel float or half-float TIFFs are read with
``tifffile`` when it is installed (scikit-image installs it).
"""

from __future__ import annotations

import os

import numpy as np
import PIL.Image

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
TRANSPARENT_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
TIFF_SUFFIXES = (".tif", ".tiff")


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as uint8 RGB ``[H, W, 3]`` (see the module docstring for the conversions).

    Raises:
        ValueError: the file does not exist, is not an image, or holds pixels whose range is unknown (floats
            outside [0, 1], non-finite values, 32-bit integers); the message names the file and the reason.
    """
    name = os.fspath(path)
    try:
        with PIL.Image.open(path) as image:
            image.load()
            return pil_to_rgb(image, name)
    except FileNotFoundError:
        raise ValueError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{name}: a folder, not an image file") from None
    except PIL.UnidentifiedImageError as err:
        if name.lower().endswith(TIFF_SUFFIXES):
            return _read_tiff(name, err)
        raise ValueError(f"{name}: not a readable image ({err})") from None
    except OSError as err:
        # PIL raises OSError for truncated or corrupt data; it means "not a usable image".
        raise ValueError(f"{name}: not a readable image ({err})") from None


def pil_to_rgb(image: PIL.Image.Image, name: str) -> np.ndarray:
    """A PIL image of any mode → uint8 RGB ``[H, W, 3]``; ``name`` (the file) is used in error messages."""
    mode = image.mode
    if mode in SIXTEEN_BIT_MODES:
        return _grey_to_rgb(_scale_integers(np.asarray(image), 16))
    if mode == "I":
        return _grey_to_rgb(_scale_integers(np.asarray(image), _integer_bits(image, name), name))
    if mode == "F":
        return _grey_to_rgb(_scale_floats(np.asarray(image), name))
    if mode in TRANSPARENT_MODES or "transparency" in image.info:
        return _over_white(np.asarray(image.convert("RGBA")))
    return np.asarray(image.convert("RGB"))


def _integer_bits(image: PIL.Image.Image, name: str) -> int:
    """Bits per sample of a mode-"I" image: PNG stores at most 16; a TIFF says so in its BitsPerSample tag."""
    if image.format == "PNG":
        return 16
    if image.format == "TIFF":
        bits = image.tag_v2.get(258, (32,))
        bits = bits[0] if isinstance(bits, tuple) else bits
        signed = image.tag_v2.get(339, (1,))
        signed = (signed[0] if isinstance(signed, tuple) else signed) == 2
        if bits <= 16 and not signed:
            return int(bits)
    raise ValueError(
        f"{name}: {image.format or 'an image'} of 32-bit or signed integer pixels, whose range is unknown; "
        "save it with 8- or 16-bit unsigned pixels, or as float in [0, 1]"
    )


def _scale_integers(pixels: np.ndarray, bits: int, name: str = "") -> np.ndarray:
    """Unsigned ``bits``-bit values → uint8, ``round(v · 255 / (2**bits − 1))``."""
    top = 2**bits - 1
    pixels = pixels.astype(np.int64)
    if pixels.min() < 0 or pixels.max() > top:
        raise ValueError(f"{name}: pixel values {pixels.min()}..{pixels.max()} do not fit {bits} bits")
    return np.rint(pixels * (255 / top)).astype(np.uint8)


def _scale_floats(pixels: np.ndarray, name: str) -> np.ndarray:
    """Float values in [0, 1] → uint8 ``round(v · 255)``; anything else is refused."""
    pixels = pixels.astype(np.float64)
    bad = int((~np.isfinite(pixels)).sum())
    if bad:
        raise ValueError(f"{name}: {bad} of {pixels.size} float pixel values are NaN or infinite")
    low, high = float(pixels.min()), float(pixels.max())
    if low < 0 or high > 1:
        raise ValueError(
            f"{name}: float pixels range over [{low:g}, {high:g}]; expected [0, 1] (a float image's range is "
            "not stored in the file, so only [0, 1] is read)"
        )
    return np.rint(pixels * 255).astype(np.uint8)


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=-1)


def _over_white(rgba: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W, 4]`` → uint8 RGB, each pixel blended with white by its alpha (rounded)."""
    alpha = rgba[..., 3:].astype(np.float64) / 255
    return np.rint(rgba[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)


def _read_tiff(name: str, pil_error: Exception) -> np.ndarray:
    """TIFFs Pillow cannot open (multi-channel float, half float), read with tifffile."""
    try:
        import tifffile
    except ImportError:
        raise ValueError(
            f"{name}: Pillow cannot read this TIFF ({pil_error}); `pip install tifffile` reads float and "
            "multi-channel TIFFs"
        ) from None
    try:
        pixels = tifffile.imread(name, key=0)  # the first page, as Pillow reads multi-page files
    except Exception as err:  # tifffile raises many types for damaged files; all mean "not readable"
        raise ValueError(f"{name}: not a readable TIFF ({type(err).__name__}: {err})") from None
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim != 3 or pixels.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"{name}: a TIFF of shape {pixels.shape}; expected one image of 1 to 4 channels")
    if np.issubdtype(pixels.dtype, np.floating):
        scaled = _scale_floats(pixels, name)
    elif pixels.dtype in (np.uint8, np.uint16):
        scaled = _scale_integers(pixels, 8 * pixels.dtype.itemsize, name)
    else:
        raise ValueError(f"{name}: TIFF pixels of type {pixels.dtype}, whose range is unknown")
    if scaled.shape[-1] in (1, 2):  # grey, grey + alpha
        scaled = np.concatenate([np.repeat(scaled[..., :1], 3, axis=-1), scaled[..., 1:]], axis=-1)
    return _over_white(scaled) if scaled.shape[-1] == 4 else scaled
