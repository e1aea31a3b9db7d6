"""Image preprocessing for Perceiver IO image classification, equal in output to transformers'.

The pipeline is transformers' ``PerceiverImageProcessorPil`` (the backend transformers uses when
torchvision is absent): a centred square crop of ``size / crop_size`` (224/256) of the shorter side, a PIL
bicubic resize to 224x224, rescaling by 1/255 and ImageNet mean/std normalisation. Only PIL, numpy and
torch are needed.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypedDict

import numpy as np
import PIL.Image
import torch

from .tokenizer import BatchEncoding, _hub_file, _read_json

if TYPE_CHECKING:
    from typing import Self  # Python 3.11+; annotations are not evaluated at run time

PREPROCESSOR_CONFIG_FILE = "preprocessor_config.json"
IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)

ImageInput = PIL.Image.Image | np.ndarray | torch.Tensor
SizeInput = int | Sequence[int] | dict[str, int]


class BatchFeature(BatchEncoding):
    """Dict holding ``pixel_values`` with attribute access, like transformers' ``BatchFeature``."""


def _size_dict(size: SizeInput, name: str) -> dict[str, int]:
    """Turn an int (square), ``(height, width)`` or ``{"height", "width"}`` into a dict of positive ints."""
    if isinstance(size, dict):
        if set(size) != {"height", "width"}:
            raise ValueError(f"{name} must have exactly the keys 'height' and 'width', got {sorted(size)}")
        height, width = size["height"], size["width"]
    elif isinstance(size, int):
        height = width = size
    elif isinstance(size, Sequence) and len(size) == 2:
        height, width = size
    else:
        raise ValueError(f"{name} must be an int, a (height, width) pair or a dict, got {size!r}")
    for value in (height, width):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must hold positive ints, got {size!r}")
    return {"height": height, "width": width}


def _to_chw(image: Any, index: int, do_convert_rgb: bool) -> np.ndarray:
    """One image as a numpy ``(3, H, W)`` array in its own dtype (uint8 for PIL images)."""
    where = f"image {index}"
    if isinstance(image, PIL.Image.Image):
        if do_convert_rgb and image.mode != "RGB":
            image = _pil_to_rgb(image)
        if image.mode != "RGB":
            raise ValueError(
                f"{where} is a PIL image in mode {image.mode!r}, expected mode 'RGB'; "
                "pass do_convert_rgb=True or convert it with image.convert('RGB')"
            )
        return np.asarray(image).transpose(2, 0, 1)
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    elif not isinstance(image, np.ndarray):
        raise TypeError(
            f"{where} has type {type(image).__name__}; expected a PIL.Image.Image, numpy.ndarray or torch.Tensor"
        )
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise TypeError(f"{where} has dtype {image.dtype}; expected an integer or floating dtype")
    if image.ndim != 3:
        raise ValueError(f"{where} has shape {tuple(image.shape)}; expected (3, H, W) or (H, W, 3)")
    # Same rule as transformers' channel inference: channels first wins when both ends have 3 entries.
    if image.shape[0] == 3:
        chw = image
    elif image.shape[-1] == 3:
        chw = image.transpose(2, 0, 1)
    else:
        raise ValueError(
            f"{where} has shape {tuple(image.shape)}; expected 3 colour channels, as (3, H, W) or (H, W, 3)"
        )
    if chw.shape[1] == 0 or chw.shape[2] == 0:
        raise ValueError(f"{where} has shape {tuple(image.shape)}; height and width must be positive")
    return chw


def _pil_to_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    """Convert to RGB, compositing transparency onto white as transformers' ``convert_to_rgb`` does."""
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        white = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return PIL.Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _center_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Centre crop of a ``(C, H, W)`` array to ``(C, height, width)``, zero-padding a smaller image.

    Offsets round down on odd differences and padding rounds up, exactly like transformers' ``center_crop``.
    """
    orig_h, orig_w = image.shape[-2:]
    top, left = (orig_h - height) // 2, (orig_w - width) // 2
    if top >= 0 and left >= 0:
        return image[:, top : top + height, left : left + width]
    new_h, new_w = max(height, orig_h), max(width, orig_w)
    pad_top, pad_left = math.ceil((new_h - orig_h) / 2), math.ceil((new_w - orig_w) / 2)
    canvas = np.zeros((image.shape[0], new_h, new_w), dtype=image.dtype)
    canvas[:, pad_top : pad_top + orig_h, pad_left : pad_left + orig_w] = image
    top, left = top + pad_top, left + pad_left
    return canvas[:, max(0, top) : min(new_h, top + height), max(0, left) : min(new_w, left + width)]


def _rescale(image: np.ndarray, factor: float) -> np.ndarray:
    # Multiplying in float64 and casting once keeps the float32 result bit-identical to transformers'.
    return (image.astype(np.float64) * factor).astype(np.float32)


def _integral(image: np.ndarray) -> bool:
    """Whether pixels count as 8-bit levels; transformers' test, tolerance included."""
    return bool(np.issubdtype(image.dtype, np.integer) or np.allclose(image, image.astype(int)))


def _check_values(image: np.ndarray, index: int) -> None:
    """Pixel values as transformers' PIL conversion reads them: uint8 anything; integers and integer-valued floats
    in [0, 255]; other floats in [0, 1]. NaN and infinities are none of these."""
    if image.dtype == np.uint8 or image.size == 0:
        return
    if np.issubdtype(image.dtype, np.floating):
        bad = int(np.size(image) - np.count_nonzero(np.isfinite(image)))
        if bad:
            raise ValueError(f"image {index} has {bad} non-finite values (NaN or inf); expected finite pixels")
    low, high = float(image.min()), float(image.max())
    if _integral(image):
        if low < 0 or high > 255:
            raise ValueError(f"image {index} has integer values in [{low}, {high}]; expected them in [0, 255]")
    elif low < 0 or high > 1:
        raise ValueError(f"image {index} has float values in [{low}, {high}]; expected [0, 1] or integers in [0, 255]")


def _pil_resize(image: np.ndarray, height: int, width: int, resample: int) -> np.ndarray:
    """Resize a ``(3, H, W)`` array with PIL, going through uint8 exactly as transformers does.

    uint8 and integer-valued images in [0, 255] are resized as they are; float images in [0, 1] are scaled to
    [0, 255], truncated to uint8 (transformers' behaviour, which quantises them) and scaled back afterwards.
    """
    scaled_back = False
    if image.dtype != np.uint8 and not _integral(image):  # in [0, 1]: checked by _check_values
        image, scaled_back = _rescale(image, 255), True
    pil = PIL.Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0)).astype(np.uint8))
    resized = np.asarray(pil.resize((width, height), resample=resample)).transpose(2, 0, 1)
    return _rescale(resized, 1 / 255) if scaled_back else resized


class PerceiverImageProcessorKwargs(TypedDict, total=False):
    """The keywords the image processors take, at construction and per call (transformers' ``valid_kwargs``)."""

    do_center_crop: bool
    crop_size: SizeInput
    do_resize: bool
    size: SizeInput
    resample: int
    do_rescale: bool
    rescale_factor: float
    do_normalize: bool
    image_mean: float | Sequence[float]
    image_std: float | Sequence[float]
    do_convert_rgb: bool
    return_tensors: Literal["pt", "np"] | None


class BaseImageProcessor:
    """Settings shared by the Perceiver image processors, under transformers' ``preprocessor_config.json`` keys.

    Holds the validated options and their (de)serialisation; subclasses implement ``__call__``.
    """

    model_input_names = ("pixel_values",)
    valid_kwargs: ClassVar[type] = PerceiverImageProcessorKwargs
    # The ``resample`` values a subclass can apply, PIL filter number -> name.
    _filters: ClassVar[dict[int, str]] = {int(f): f.name.lower() for f in sorted(PIL.Image.Resampling)}

    def __init__(
        self,
        do_center_crop: bool = True,
        crop_size: SizeInput = 256,
        do_resize: bool = True,
        size: SizeInput = 224,
        resample: int = PIL.Image.Resampling.BICUBIC,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean: float | Sequence[float] = IMAGENET_DEFAULT_MEAN,
        image_std: float | Sequence[float] = IMAGENET_DEFAULT_STD,
        do_convert_rgb: bool = False,
    ) -> None:
        flags = {
            "do_center_crop": do_center_crop,
            "do_resize": do_resize,
            "do_rescale": do_rescale,
            "do_normalize": do_normalize,
            "do_convert_rgb": do_convert_rgb,
        }
        for name, flag in flags.items():
            if not isinstance(flag, (bool, np.bool_)):
                raise TypeError(f"{name} must be a bool, got {flag!r}")
        if isinstance(resample, bool) or not isinstance(resample, (int, np.integer)) or resample not in self._filters:
            choices = ", ".join(f"{value} ({name})" for value, name in self._filters.items())
            raise ValueError(f"resample must be one of {choices}, got {resample!r}")
        if (
            isinstance(rescale_factor, bool)
            or not isinstance(rescale_factor, (int, float, np.number))
            or not math.isfinite(rescale_factor)
        ):
            raise ValueError(f"rescale_factor must be a finite number, got {rescale_factor!r}")
        self.do_center_crop = bool(do_center_crop)
        self.crop_size = _size_dict(crop_size, "crop_size")
        self.do_resize = bool(do_resize)
        self.size = _size_dict(size, "size")
        self.resample = int(resample)
        self.do_rescale = bool(do_rescale)
        self.rescale_factor = float(rescale_factor)
        self.do_normalize = bool(do_normalize)
        self.image_mean = _per_channel(image_mean, "image_mean")
        self.image_std = _per_channel(image_std, "image_std")
        if any(s == 0 for s in self.image_std):
            raise ValueError(f"image_std must not contain 0, got {self.image_std}")
        self.do_convert_rgb = bool(do_convert_rgb)

    def _settings(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this processor."""
        settings = self.to_dict()
        del settings["image_processor_type"]
        return settings

    def _overridden(self, **overrides: Any) -> Self:
        """This processor with the settings that are not ``None`` in ``overrides`` replaced, validated anew."""
        overrides = {key: value for key, value in overrides.items() if value is not None}
        if not overrides:
            return self
        changed = copy.copy(self)
        # The base initialiser only validates and stores; subclasses' (the deprecated alias's) also warn.
        BaseImageProcessor.__init__(changed, **{**self._settings(), **overrides})
        return changed

    def to_dict(self) -> dict[str, Any]:
        """Settings under transformers' ``preprocessor_config.json`` keys."""
        return {
            "crop_size": dict(self.crop_size),
            "do_center_crop": self.do_center_crop,
            "do_convert_rgb": self.do_convert_rgb,
            "do_normalize": self.do_normalize,
            "do_rescale": self.do_rescale,
            "do_resize": self.do_resize,
            "image_mean": list(self.image_mean),
            "image_processor_type": "PerceiverImageProcessor",
            "image_std": list(self.image_std),
            "resample": self.resample,
            "rescale_factor": self.rescale_factor,
            "size": dict(self.size),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({json.dumps(self.to_dict(), sort_keys=True)})"

    def save_pretrained(self, save_directory: str | Path) -> list[str]:
        """Write ``preprocessor_config.json`` (loadable by transformers too); return ``[its path]``."""
        directory = Path(save_directory)
        if directory.is_file():
            raise ValueError(f"save_directory {str(directory)!r} is a file, expected a directory")
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / PREPROCESSOR_CONFIG_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return [str(path)]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs: Any) -> Self:
        """Load from a directory written by this class or transformers, or from a Hub repo id.

        Keyword arguments override the stored settings. Keys this processor has no use for
        (``image_processor_type`` ...) are ignored; ``None`` values keep the defaults.
        """
        source = Path(pretrained_model_name_or_path)
        if source.is_dir():
            config = _read_json(source / PREPROCESSOR_CONFIG_FILE)
        else:
            config = _read_json(_hub_file(str(pretrained_model_name_or_path), PREPROCESSOR_CONFIG_FILE))
        # The base signature: subclasses (the deprecated alias) may take *args, **kwargs.
        known = inspect.signature(BaseImageProcessor).parameters
        settings = {key: value for key, value in config.items() if key in known and value is not None}
        settings.update(kwargs)
        return cls(**settings)

    def to_json_string(self) -> str:
        """``to_dict()`` as the JSON text ``save_pretrained`` writes (sorted keys, 2-space indent)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file_path: str | Path) -> None:
        """Write ``to_json_string()`` to ``json_file_path`` (a file path, not a directory)."""
        path = Path(json_file_path)
        if path.is_dir():
            raise ValueError(f"json_file_path {str(path)!r} is a directory, expected a file path")
        path.write_text(self.to_json_string(), encoding="utf-8")

    @classmethod
    def from_dict(cls, image_processor_dict: dict[str, Any], **kwargs: Any) -> Self:
        """Build from a ``to_dict()`` / ``preprocessor_config.json`` mapping; ``kwargs`` override its values.

        As in ``from_pretrained``, keys this processor has no use for (``image_processor_type`` ...) are ignored
        and ``None`` values keep the defaults; an unknown keyword in ``kwargs`` raises ``TypeError``.
        """
        if not isinstance(image_processor_dict, dict):
            raise TypeError(f"image_processor_dict must be a dict, got {type(image_processor_dict).__name__}")
        known = inspect.signature(BaseImageProcessor).parameters
        settings = {key: value for key, value in image_processor_dict.items() if key in known and value is not None}
        settings.update(kwargs)
        return cls(**settings)

    @classmethod
    def from_json_file(cls, json_file_path: str | Path) -> Self:
        """Build from a JSON file written by ``to_json_file`` (or a transformers ``preprocessor_config.json``)."""
        return cls.from_dict(_read_json(Path(json_file_path)))


class PerceiverImageProcessor(BaseImageProcessor):
    """Preprocess images for Perceiver IO, drop-in for transformers' ``PerceiverImageProcessor``.

    Steps, each switchable: centre crop to ``(size.h / crop_size.h, size.w / crop_size.w) * min(H, W)``
    (a square of 0.875 of the shorter side by default), resize to ``size`` with PIL ``resample``
    (3 = bicubic), multiply by ``rescale_factor``, then ``(x - image_mean) / image_std`` per channel.

    Images may be PIL RGB images, numpy arrays or torch tensors of shape ``(H, W, 3)`` or ``(3, H, W)``
    (channels first wins if both ends are 3), or a list/tuple of them; a 4-D array or tensor is a batch.
    uint8 pixels are expected in [0, 255]. Other dtypes follow transformers: integer values in [0, 255] are
    used as they are, floats in [0, 1] are quantised to uint8 for the resize, and ``do_rescale`` applies
    whatever the dtype (pass ``do_rescale=False`` for images already in [0, 1]).

    Any setting can also be given to a call, overriding the processor's for that call only.

    Parity: this is transformers' PIL backend, which it uses when torchvision is not installed. Its
    torchvision backend (``PerceiverImageProcessorFast`` here) resizes with torch's bicubic kernel instead,
    which differs slightly from PIL's.
    """

    def __call__(
        self,
        images: ImageInput | Sequence[ImageInput],
        *,
        do_center_crop: bool | None = None,
        crop_size: SizeInput | None = None,
        do_resize: bool | None = None,
        size: SizeInput | None = None,
        resample: int | None = None,
        do_rescale: bool | None = None,
        rescale_factor: float | None = None,
        do_normalize: bool | None = None,
        image_mean: float | Sequence[float] | None = None,
        image_std: float | Sequence[float] | None = None,
        do_convert_rgb: bool | None = None,
        return_tensors: Literal["pt", "np"] | None = None,
    ) -> BatchFeature:
        """Preprocess one image or a batch; any setting given here overrides the processor's for this call.

        Returns:
            ``BatchFeature`` with ``pixel_values``: a ``(batch, 3, size.h, size.w)`` float32 ``torch.Tensor``
            (``"pt"``) or ``np.ndarray`` (``"np"``), or with ``return_tensors=None`` a list of ``(3, h, w)``
            float32 arrays (a single image also gives a list of one).

        Raises:
            TypeError: an image of an unsupported type or dtype, or a setting of the wrong type.
            ValueError: an image of the wrong rank or channel count, pixel values out of range, a bad setting,
                or images of different output sizes stacked into one tensor.
        """
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors must be None, 'pt' or 'np', got {return_tensors!r}")
        settings = self._overridden(
            do_center_crop=do_center_crop,
            crop_size=crop_size,
            do_resize=do_resize,
            size=size,
            resample=resample,
            do_rescale=do_rescale,
            rescale_factor=rescale_factor,
            do_normalize=do_normalize,
            image_mean=image_mean,
            image_std=image_std,
            do_convert_rgb=do_convert_rgb,
        )
        processed = []
        for index, image in enumerate(_flatten(images)):
            processed.append(settings._preprocess_one(image, index))
        if return_tensors is None:
            return BatchFeature(pixel_values=processed)
        shapes = sorted({p.shape for p in processed})
        if len(shapes) > 1:
            raise ValueError(f"cannot stack images of different shapes {shapes} into one tensor")
        stacked = np.stack(processed)
        return BatchFeature(pixel_values=torch.from_numpy(stacked) if return_tensors == "pt" else stacked)

    preprocess = __call__

    def _preprocess_one(self, image: Any, index: int) -> np.ndarray:
        chw = _to_chw(image, index, self.do_convert_rgb)
        # On the whole image, before the crop drops its border, and whether or not it is resized.
        _check_values(chw, index)
        if self.do_rescale and np.issubdtype(chw.dtype, np.floating) and chw.min() >= 0 and chw.max() <= 1:
            # transformers rescales silently; the result is then ~255x too small, almost surely a mistake.
            warnings.warn(
                f"image {index} is a float image in [0, 1] and do_rescale=True scales it by "
                f"{self.rescale_factor} again; pass do_rescale=False if it is already rescaled",
                stacklevel=3,
            )
        if self.do_center_crop:
            min_dim = min(chw.shape[1:])
            # Same float expression as transformers, so int() truncates identically.
            crop_h = int((self.size["height"] / self.crop_size["height"]) * min_dim)
            crop_w = int((self.size["width"] / self.crop_size["width"]) * min_dim)
            if crop_h == 0 or crop_w == 0:
                raise ValueError(
                    f"image {index} of size {tuple(chw.shape[1:])} is too small: its centre crop would be empty"
                )
            chw = _center_crop(chw, crop_h, crop_w)
        if self.do_resize:
            chw = _pil_resize(chw, self.size["height"], self.size["width"], self.resample)
        if self.do_rescale:
            chw = _rescale(chw, self.rescale_factor)
        if self.do_normalize:
            if not np.issubdtype(chw.dtype, np.floating):
                chw = chw.astype(np.float32)
            mean = np.asarray(self.image_mean, dtype=chw.dtype)[:, None, None]
            std = np.asarray(self.image_std, dtype=chw.dtype)[:, None, None]
            chw = (chw - mean) / std
        return chw


def _per_channel(value: float | Sequence[float], name: str) -> tuple[float, ...]:
    values = (value,) * 3 if np.ndim(value) == 0 else tuple(value)
    if len(values) != 3:
        raise ValueError(f"{name} must be a float or 3 floats (one per RGB channel), got {value!r}")
    return tuple(float(v) for v in values)


def _flatten(images: Any) -> list[Any]:
    """A flat list of single images from one image, a list/tuple of images, or a 4-D batch array/tensor."""
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("images is an empty list; pass at least one image")
        return list(images)
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        if images.shape[0] == 0:
            raise ValueError(f"images is an empty batch of shape {tuple(images.shape)}; pass at least one image")
        return list(images)
    return [images]
