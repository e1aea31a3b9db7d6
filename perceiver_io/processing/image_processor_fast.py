"""Batched torch image preprocessing for Perceiver IO, following transformers' torchvision backend.

transformers 5 calls its torchvision-backed Perceiver processor ``PerceiverImageProcessor`` (4.x called it
``PerceiverImageProcessorFast``); this is the same pipeline written with plain torch ops, so it needs no
torchvision: images of one size are stacked and cropped, resized, rescaled and normalised as one batch, on
whatever device they are on.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

from .image_processor import (
    BaseImageProcessor,
    BatchFeature,
    ImageInput,
    PerceiverImageProcessorKwargs,
    SizeInput,
    _flatten,
    _pil_to_rgb,
)

# PIL filter -> torch interpolate mode, as transformers maps PIL filters to torchvision modes. torch has no
# box, Hamming or Lanczos kernel for tensors.
_TORCH_MODES = {
    int(PIL.Image.Resampling.NEAREST): "nearest-exact",
    int(PIL.Image.Resampling.BILINEAR): "bilinear",
    int(PIL.Image.Resampling.BICUBIC): "bicubic",
}
_INPUT_DATA_FORMATS = (None, "channels_first", "channels_last")
_WIDE_UNSIGNED = (torch.uint16, torch.uint32, torch.uint64)


class PerceiverImageProcessorFastKwargs(PerceiverImageProcessorKwargs, total=False):
    """``PerceiverImageProcessorKwargs`` plus the call keywords of the batched-torch processor."""

    device: str | torch.device | None
    input_data_format: Literal["channels_first", "channels_last"] | None
    disable_grouping: bool


class PerceiverImageProcessorFast(BaseImageProcessor):
    """Preprocess images for Perceiver IO with batched torch ops, like transformers' torchvision backend.

    Same settings, defaults and ``preprocessor_config.json`` as ``PerceiverImageProcessor``; the steps are
    those of transformers' torchvision-backed Perceiver processor:

    1. centre crop to ``(size.h / crop_size.h * min(H, W), size.w / crop_size.w * min(H, W))`` (0.875 of the
       shorter side by default), zero-padding first where that exceeds the image (torchvision's split: the
       smaller half of the padding on the top/left);
    2. resize to ``size`` with ``torch.nn.functional.interpolate`` as ``torchvision.transforms.v2.functional
       .resize(..., antialias=True)`` does: ``resample`` 3 is antialiased bicubic (PIL's a = -0.5 kernel),
       2 antialiased bilinear, 0 nearest-exact. uint8 batches use torch's native uint8 kernel on the CPU
       where torchvision does (bicubic always, bilinear with AVX2), elsewhere they are resized in float32,
       clamped, rounded and cast back to uint8. An image already of the target size is not resampled;
    3. ``(x - image_mean / rescale_factor) / (image_std / rescale_factor)`` in float32, which is rescaling
       then normalising fused into one step as transformers does (either step can be switched off).

    Inputs: PIL RGB images, numpy arrays or torch tensors of shape ``(3, H, W)`` or ``(H, W, 3)`` (channels
    first wins when both ends are 3, or say which with ``input_data_format``), a list/tuple of them, or a
    4-D ``(B, 3, H, W)`` / ``(B, H, W, 3)`` array or tensor. Images of different sizes are grouped by size
    and each group is processed as one batch. Tensors are processed on their own device unless ``device``
    is given; numpy and PIL inputs start on the CPU.

    Pixel values, consistent with ``PerceiverImageProcessor``:

    - integer images hold 8-bit pixels: any integer dtype is accepted if its values lie in [0, 255] and is
      then processed exactly as uint8 (the same output for int64 as for uint8). Larger values, e.g. a
      16-bit image, raise ``ValueError`` rather than being clipped or guessed at: pass it as a float image
      with a matching ``rescale_factor`` (``1 / 65535``) instead;
    - float images are processed in floating point at their own scale (float64 stays float64 through the
      resize; float16/bfloat16 are resized in float32). Unlike ``PerceiverImageProcessor``, which follows
      transformers' PIL backend in quantising floats to uint8 for the resize, nothing is quantised here, so
      any finite range works. ``do_rescale`` applies whatever the dtype; a float image in [0, 1] with
      ``do_rescale=True`` warns, as in ``PerceiverImageProcessor``. NaN or infinite values raise.

    ``do_convert_rgb=True`` converts PIL images (compositing transparency onto white); arrays and tensors
    must already have 3 channels.

    Output ``pixel_values``: float32 ``(batch, 3, size.h, size.w)``, or the images' own dtype (uint8 for
    integer images) if neither ``do_rescale`` nor ``do_normalize``.

    Against the PIL-based ``PerceiverImageProcessor`` (transformers' other backend): on photos at the
    default settings at most 1 grey level apart on under 1% of pixels; at some scales torch's uint8 kernel
    rounds more pixels differently (up to 3 grey levels measured); on a GPU, where uint8 is resized in float
    with no rounding between the row and column passes, a few grey levels. Where the crop needs an odd
    amount of zero padding the two backends split it differently, so the image shifts by one pixel.
    """

    _filters: ClassVar[dict[int, str]] = dict(_TORCH_MODES)
    valid_kwargs: ClassVar[type] = PerceiverImageProcessorFastKwargs

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
        device: str | torch.device | None = None,
        input_data_format: Literal["channels_first", "channels_last"] | None = None,
        disable_grouping: bool = False,
    ) -> BatchFeature:
        """Preprocess one image or a batch; any setting given here overrides the processor's for this call.

        Args:
            device: where to process (and return) the images; by default a tensor's own device, the CPU
                for numpy and PIL inputs.
            input_data_format: ``"channels_first"`` or ``"channels_last"`` for arrays and tensors whose
                layout is ambiguous; inferred when ``None``.
            disable_grouping: process each image on its own instead of batching images of equal size (the
                result is the same).

        Returns:
            ``BatchFeature`` with ``pixel_values``: a ``(batch, 3, size.h, size.w)`` ``torch.Tensor``
            (``"pt"``) or ``np.ndarray`` (``"np"``), or with ``return_tensors=None`` a list of ``(3, h, w)``
            tensors (a single image also gives a list of one).

        Raises:
            TypeError: an image of an unsupported type or dtype, or a setting of the wrong type.
            ValueError: an empty batch, an image of the wrong rank or channel count, too small to crop or
                with pixel values out of range, a bad setting, or outputs of different shapes (or devices)
                stacked into one tensor.
        """
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors must be None, 'pt' or 'np', got {return_tensors!r}")
        if input_data_format not in _INPUT_DATA_FORMATS:
            raise ValueError(
                f"input_data_format must be None, 'channels_first' or 'channels_last', got {input_data_format!r}"
            )
        if not isinstance(disable_grouping, bool):
            raise TypeError(f"disable_grouping must be a bool, got {disable_grouping!r}")
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
        if device is not None:
            try:
                device = torch.device(device)
            except (RuntimeError, TypeError) as error:
                raise ValueError(f"device must be a torch device or its name, got {device!r}") from error

        chw = [
            _to_chw_tensor(image, index, settings.do_convert_rgb, input_data_format, device)
            for index, image in enumerate(_flatten(images))
        ]
        if not chw:
            raise ValueError("images is an empty batch; pass at least one image")
        cropped = _map_grouped(chw, settings._check_and_crop, disable_grouping)
        pixel_values = _map_grouped(cropped, settings._resize_and_normalize, disable_grouping)
        if return_tensors is None:
            return BatchFeature(pixel_values=pixel_values)
        shapes = sorted({tuple(p.shape) for p in pixel_values})
        if len(shapes) > 1:
            raise ValueError(f"cannot stack images of different shapes {shapes} into one tensor")
        devices = sorted({str(p.device) for p in pixel_values})
        if len(devices) > 1:
            raise ValueError(f"cannot stack images on different devices {devices}; pass device=")
        stacked = torch.stack(pixel_values)
        return BatchFeature(pixel_values=stacked if return_tensors == "pt" else stacked.cpu().numpy())

    preprocess = __call__

    def _check_and_crop(self, batch: torch.Tensor, indices: list[int]) -> torch.Tensor:
        """Check pixel values, make integer images uint8, centre crop. ``(B, 3, H, W)`` in, ``(B, 3, h, w)`` out."""
        if batch.dtype != torch.uint8:
            batch = self._checked_values(batch, indices)
        if not self.do_center_crop:
            return batch
        min_dim = min(batch.shape[-2:])
        # Same float expression as transformers, so int() truncates identically.
        crop_h = int((self.size["height"] / self.crop_size["height"]) * min_dim)
        crop_w = int((self.size["width"] / self.crop_size["width"]) * min_dim)
        if crop_h == 0 or crop_w == 0:
            which = f"image {indices[0]}" if len(indices) == 1 else f"images {indices}"
            raise ValueError(f"{which} of size {tuple(batch.shape[-2:])} is too small: its centre crop would be empty")
        return _center_crop(batch, crop_h, crop_w)

    def _checked_values(self, batch: torch.Tensor, indices: list[int]) -> torch.Tensor:
        """Range checks in one device sync per group; integer batches come back as uint8."""
        low, high = (values.tolist() for values in batch.flatten(1).aminmax(dim=1))
        is_float = batch.is_floating_point()
        for index, lo, hi in zip(indices, low, high, strict=True):
            if is_float and not (math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError(f"image {index} has non-finite values (range [{lo}, {hi}]); expected finite floats")
            if not is_float and (lo < 0 or hi > 255):
                raise ValueError(
                    f"image {index} has integer values in [{lo}, {hi}]; expected 8-bit pixels in [0, 255] "
                    "(pass a 16-bit image as floats with rescale_factor=1/65535)"
                )
            if is_float and self.do_rescale and lo >= 0 and hi <= 1:
                # transformers rescales silently; the result is then ~255x too small, almost surely a mistake.
                warnings.warn(
                    f"image {index} is a float image in [0, 1] and do_rescale=True scales it by "
                    f"{self.rescale_factor} again; pass do_rescale=False if it is already rescaled",
                    stacklevel=5,
                )
        if not is_float:
            return batch.to(torch.uint8)
        return batch if batch.dtype in (torch.float32, torch.float64) else batch.float()

    def _resize_and_normalize(self, batch: torch.Tensor, indices: list[int]) -> torch.Tensor:
        """``(B, 3, h, w)`` -> ``(B, 3, size.h, size.w)``, rescaled and normalised."""
        if self.do_resize:
            mode = _TORCH_MODES[self.resample]
            native = _native_uint8(mode, batch.device)
            batch = _resize(batch, self.size["height"], self.size["width"], mode, native_uint8=native)
        if self.do_rescale and self.do_normalize:
            # transformers folds the rescale into mean and std, computed in float32 exactly so.
            mean = torch.tensor(self.image_mean, device=batch.device) * (1.0 / self.rescale_factor)
            std = torch.tensor(self.image_std, device=batch.device) * (1.0 / self.rescale_factor)
            return (batch.float() - mean[:, None, None]) / std[:, None, None]
        if self.do_normalize:
            mean = torch.tensor(self.image_mean, device=batch.device)
            std = torch.tensor(self.image_std, device=batch.device)
            return (batch.float() - mean[:, None, None]) / std[:, None, None]
        if self.do_rescale:
            return batch.float() * self.rescale_factor
        return batch


def _to_chw_tensor(
    image: Any, index: int, do_convert_rgb: bool, input_data_format: str | None, device: torch.device | None
) -> torch.Tensor:
    """One image as a contiguous ``(3, H, W)`` tensor in its own dtype (uint8 for PIL images)."""
    where = f"image {index}"
    if isinstance(image, PIL.Image.Image):
        if do_convert_rgb and image.mode != "RGB":
            image = _pil_to_rgb(image)
        if image.mode != "RGB":
            raise ValueError(
                f"{where} is a PIL image in mode {image.mode!r}, expected mode 'RGB'; "
                "pass do_convert_rgb=True or convert it with image.convert('RGB')"
            )
        # np.array copies: torch.from_numpy needs a writable buffer. PIL arrays are always (H, W, 3).
        tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1)
        input_data_format = "channels_first"
    elif isinstance(image, np.ndarray):
        if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
            raise TypeError(f"{where} has dtype {image.dtype}; expected an integer or floating dtype")
        tensor = torch.from_numpy(np.ascontiguousarray(image) if image.flags.writeable else image.copy())
    elif isinstance(image, torch.Tensor):
        if image.dtype == torch.bool or image.is_complex():
            raise TypeError(f"{where} has dtype {image.dtype}; expected an integer or floating dtype")
        tensor = image.detach()
    else:
        raise TypeError(
            f"{where} has type {type(image).__name__}; expected a PIL.Image.Image, numpy.ndarray or torch.Tensor"
        )
    shape = tuple(tensor.shape)
    if tensor.ndim != 3:
        raise ValueError(f"{where} has shape {shape}; expected (3, H, W) or (H, W, 3)")
    if input_data_format is None:
        # Same rule as transformers' channel inference: channels first wins when both ends have 3 entries.
        input_data_format = "channels_first" if shape[0] == 3 else "channels_last"
    if input_data_format == "channels_last":
        tensor = tensor.permute(2, 0, 1)
    if tensor.shape[0] != 3:
        layout = "(3, H, W)" if input_data_format == "channels_first" else "(H, W, 3)"
        raise ValueError(f"{where} has shape {shape}; expected 3 colour channels, as {layout}")
    if tensor.shape[1] == 0 or tensor.shape[2] == 0:
        raise ValueError(f"{where} has shape {shape}; height and width must be positive")
    if tensor.dtype in _WIDE_UNSIGNED:
        # torch has few kernels for these; any 8-bit image is exact in int64 (others fail the range check).
        tensor = tensor.to(torch.int64)
    if device is not None:
        tensor = tensor.to(device)
    return tensor.contiguous()


def _map_grouped(
    images: list[torch.Tensor],
    fn: Callable[[torch.Tensor, list[int]], torch.Tensor],
    disable_grouping: bool,
) -> list[torch.Tensor]:
    """Apply a batched ``fn(batch, indices)`` to each group of images of equal shape, dtype and device.

    Returns the per-image results in the input order.
    """
    groups: dict[Any, list[int]] = {}
    for index, image in enumerate(images):
        key = index if disable_grouping else (tuple(image.shape), image.dtype, image.device)
        groups.setdefault(key, []).append(index)
    results: list[torch.Tensor | None] = [None] * len(images)
    for indices in groups.values():
        batch = fn(torch.stack([images[i] for i in indices]), indices)
        for index, result in zip(indices, batch.unbind(0), strict=True):
            results[index] = result
    return results


def _center_crop(batch: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Centre crop ``(B, C, H, W)`` to ``(B, C, height, width)``, zero-padding a side that is too short.

    As torchvision's ``center_crop``: padding puts the smaller half on the top/left, crop offsets round down.
    """
    orig_h, orig_w = batch.shape[-2:]
    if height > orig_h or width > orig_w:
        pad_h, pad_w = max(height - orig_h, 0), max(width - orig_w, 0)
        batch = F.pad(batch, (pad_w // 2, (pad_w + 1) // 2, pad_h // 2, (pad_h + 1) // 2))
        orig_h, orig_w = batch.shape[-2:]
    top, left = (orig_h - height) // 2, (orig_w - width) // 2
    return batch[..., top : top + height, left : left + width]


def _resize(batch: torch.Tensor, height: int, width: int, mode: str, native_uint8: bool) -> torch.Tensor:
    """Resize ``(B, C, h, w)`` to ``(B, C, height, width)`` with torchvision's dtype handling.

    float32/float64 are interpolated as they are. uint8 goes through torch's native uint8 kernel if
    ``native_uint8`` (it resamples rows, then columns, rounding in between, like PIL), otherwise through
    float32, then clamp (bicubic overshoots), round and back to uint8.
    """
    if tuple(batch.shape[-2:]) == (height, width):
        return batch
    antialias = mode != "nearest-exact"
    align_corners = False if antialias else None
    cast = batch.dtype == torch.uint8 and not native_uint8
    resized = F.interpolate(
        batch.float() if cast else batch,
        size=(height, width),
        mode=mode,
        align_corners=align_corners,
        antialias=antialias,
    )
    if not cast:
        return resized
    if mode == "bicubic":
        resized = resized.clamp_(0, 255)
    return resized.round_().to(torch.uint8)


def _native_uint8(mode: str, device: torch.device) -> bool:
    """Whether torchvision resizes a uint8 batch on ``device`` with torch's uint8 kernel."""
    if mode == "nearest-exact":
        return True
    if device.type != "cpu":
        return False
    # torchvision's rule: its benchmarks favour the float path for bilinear on CPUs without AVX2.
    return mode == "bicubic" or "AVX2" in torch.backends.cpu.get_cpu_capability()
