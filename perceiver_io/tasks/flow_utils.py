"""Model-independent optical-flow machinery: `.flo` I/O, visualisation, metrics, tiling and test data.

Conventions used throughout:
- a flow field is a float32 array ``[H, W, 2]`` holding ``(u, v)`` in pixels, ``u`` to the right and ``v``
  *down* (image rows), mapping each pixel of frame 1 to its position in frame 2;
- frames are ``[H, W, 3]`` arrays (RGB);
- a pixel without ground truth holds NaN, ±inf or a component of magnitude above 1e9 (the Middlebury tools'
  "unknown flow", e.g. 1e10); `known_flow` tells them apart.

The tiling (`tile_origins`, `pyramid_weights`, `tiled_flow`) reproduces DeepMind's Perceiver IO optical-flow
colab (`compute_grid_indices` / `compute_optical_flow`, after commit 8cc5c39) so that any per-tile predictor,
the Perceiver or otherwise, is blended exactly as there.
"""

from __future__ import annotations

import contextlib
import math
import os
import uuid
from collections import Counter
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

FLO_MAGIC = 202021.25
# The Middlebury tools treat components above this as "unknown flow".
_UNKNOWN_FLOW_THRESHOLD = 1e9

# Shorter arrows would render as noise, so `flow_arrows` leaves them out.
MIN_ARROW_LENGTH = 1.0

# Defaults of DeepMind's colab: the model's training size and the minimum overlap between tiles.
TRAIN_SIZE = (368, 496)
MIN_OVERLAP = 20


# --------------------------------------------------------------------------------------------------------
# Middlebury .flo files


def read_flo(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a Middlebury ``.flo`` file.

    Layout: float32 magic 202021.25, int32 width, int32 height, then ``H·W·2`` float32 values, row-major
    with ``u, v`` interleaved, all little-endian.

    Returns:
        float32 ``[H, W, 2]``.

    Raises:
        ValueError: wrong magic number, non-positive size, or a file shorter or longer than the header says.
    """
    with open(path, "rb") as fh:
        data = fh.read()
    if len(data) < 12:
        raise ValueError(f"{os.fspath(path)!r}: {len(data)} bytes, shorter than the 12-byte .flo header")
    magic = float(np.frombuffer(data, dtype="<f4", count=1)[0])
    if magic != FLO_MAGIC:
        raise ValueError(f"{os.fspath(path)!r}: magic number {magic!r}, expected {FLO_MAGIC} (not a .flo file)")
    width, height = (int(n) for n in np.frombuffer(data, dtype="<i4", count=2, offset=4))
    if width <= 0 or height <= 0:
        raise ValueError(f"{os.fspath(path)!r}: header gives width {width}, height {height}; both must be > 0")
    expected = 12 + height * width * 2 * 4
    if len(data) != expected:
        raise ValueError(
            f"{os.fspath(path)!r}: {len(data)} bytes, but a {height}x{width} flow needs {expected} "
            f"({'truncated' if len(data) < expected else 'trailing data'})"
        )
    flow = np.frombuffer(data, dtype="<f4", offset=12).reshape(height, width, 2)
    return flow.astype(np.float32)


def write_flo(path: str | os.PathLike[str], flow: np.ndarray) -> None:
    """Write ``flow`` (``[H, W, 2]``, any real dtype, stored as float32) as a Middlebury ``.flo`` file.

    The file is written to a temporary file in the same directory and renamed over ``path``, so a reader
    never sees a partial file.
    """
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2 or flow.shape[0] == 0 or flow.shape[1] == 0:
        raise ValueError(f"{os.fspath(path)!r}: flow must have shape [H, W, 2] with H, W > 0, got {flow.shape}")
    height, width = flow.shape[:2]
    header = np.array([FLO_MAGIC], dtype="<f4").tobytes() + np.array([width, height], dtype="<i4").tobytes()
    payload = np.ascontiguousarray(flow, dtype="<f4").tobytes()
    # A unique sibling name keeps the rename on one file system; open() rather than mkstemp so the file
    # gets the usual umask permissions instead of 0600.
    tmp = f"{os.fspath(path)}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "xb") as fh:
            fh.write(header)
            fh.write(payload)
        os.replace(tmp, path)
    except BaseException:
        # open() itself may have failed, leaving nothing to remove; keep the original error.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------------------------------------
# Visualisation


def _check_flow(flow: np.ndarray, name: str = "flow") -> np.ndarray:
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"{name} must have shape [H, W, 2], got {flow.shape}")
    return flow


def _known_components(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 ``u``, ``v`` ``[H, W]`` with unknown pixels zeroed, and the bool ``[H, W]`` unknown mask."""
    flow = _check_flow(flow).astype(np.float64)
    with np.errstate(invalid="ignore"):
        unknown = ~(np.abs(flow) <= _UNKNOWN_FLOW_THRESHOLD).all(axis=-1)
    flow[unknown] = 0.0
    return flow[..., 0], flow[..., 1], unknown


def _make_colorwheel() -> np.ndarray:
    """The 55-colour Middlebury wheel (Baker et al., IJCV 2011; ``colorcode.cpp``): float64 ``[55, 3]``.

    Hues run red → yellow → green → cyan → blue → magenta → red; the segment lengths (15, 6, 4, 11, 13, 6)
    give more steps where the eye separates more shades.
    """
    segments = [  # (length, channel that changes, rising?, constant channel at 255)
        (15, 1, True, 0),  # RY
        (6, 0, False, 1),  # YG
        (4, 2, True, 1),  # GC
        (11, 1, False, 2),  # CB
        (13, 0, True, 2),  # BM
        (6, 2, False, 0),  # MR
    ]
    rows = []
    for length, channel, rising, full in segments:
        ramp = np.floor(255 * np.arange(length) / length)
        block = np.zeros((length, 3))
        block[:, full] = 255
        block[:, channel] = ramp if rising else 255 - ramp
        rows.append(block)
    return np.concatenate(rows)


_COLORWHEEL = _make_colorwheel()


def flow_to_color(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """Colour-code a flow field with the Middlebury colour wheel (as ``flowToColor.m`` / ``colorcode.cpp``).

    Hue gives the direction (right = red, down = yellow, left = cyan, up = blue-violet, with image y
    pointing down); saturation grows with magnitude, so zero flow is white. Vectors are divided by
    ``max_magnitude`` (default: the largest valid magnitude in ``flow``); longer vectors, possible only with
    an explicit ``max_magnitude``, are darkened to 75 % as in the reference code. Unknown pixels (NaN, inf,
    or a component above 1e9) are black.

    Args:
        flow: ``[H, W, 2]`` ``(u, v)`` in pixels.
        max_magnitude: the magnitude shown fully saturated; > 0.

    Returns:
        uint8 ``[H, W, 3]`` RGB.
    """
    u, v, unknown = _known_components(flow)
    rad = np.hypot(u, v)
    if max_magnitude is None:
        max_magnitude = float(rad.max()) if rad.size else 0.0
    elif not max_magnitude > 0:
        raise ValueError(f"max_magnitude must be > 0, got {max_magnitude}")
    # The reference adds eps so an all-zero field divides cleanly (and stays white).
    scale = max_magnitude + np.finfo(np.float64).eps
    rad = rad / scale

    ncols = len(_COLORWHEEL)
    angle = np.arctan2(-v, -u) / np.pi
    # atan2 returns +1 or -1 for a rightward vector depending on the sign of a zero v; fold both to -1 so
    # that v = +0.0 and v = -0.0 colour alike (the reference's result for v = +0.0).
    angle[angle == 1.0] = -1.0
    fk = (angle + 1) / 2 * (ncols - 1)
    k0 = np.floor(fk).astype(np.int64)
    k1 = (k0 + 1) % ncols
    f = (fk - k0)[..., None]
    col = ((1 - f) * _COLORWHEEL[k0] + f * _COLORWHEEL[k1]) / 255
    inside = (rad <= 1)[..., None]
    col = np.where(inside, 1 - rad[..., None] * (1 - col), col * 0.75)
    image = np.floor(255 * col).astype(np.uint8)
    image[unknown] = 0
    return image


def color_wheel_legend(size: int = 64) -> np.ndarray:
    """A disc showing the colour of each flow direction at full magnitude at its rim; white outside.

    Returns:
        uint8 ``[size, size, 3]``; the pixel at offset ``(dx, dy)`` from the centre has the colour of flow
        ``(dx, dy)`` scaled so the disc's radius is the maximum magnitude.
    """
    if size < 3:
        raise ValueError(f"legend size must be >= 3, got {size}")
    centre = (size - 1) / 2
    coords = (np.arange(size, dtype=np.float64) - centre) / centre
    u, v = np.meshgrid(coords, coords)
    legend = flow_to_color(np.stack([u, v], axis=-1), max_magnitude=1.0)
    legend[np.hypot(u, v) > 1.0] = 255
    return legend


def flow_to_color_with_legend(
    flow: np.ndarray, max_magnitude: float | None = None, legend_size: int | None = None
) -> np.ndarray:
    """`flow_to_color` with a colour-wheel legend and the normalising magnitude in the top-right corner.

    Args:
        flow: ``[H, W, 2]``.
        max_magnitude: as in `flow_to_color`.
        legend_size: disc diameter in pixels; default a quarter of the shorter side, within 24..128. It is
            shrunk to fit the image; images too small for a 3-pixel disc get no legend.

    Returns:
        uint8 ``[H, W, 3]``.
    """
    image = flow_to_color(flow, max_magnitude)
    height, width = image.shape[:2]
    if max_magnitude is None:
        u, v, _ = _known_components(flow)
        max_magnitude = float(np.hypot(u, v).max()) if u.size else 0.0
    margin = 2
    if legend_size is None:
        legend_size = int(np.clip(min(height, width) // 4, 24, 128))
    legend_size = min(legend_size, height - 2 * margin - 2, width - 2 * margin - 2)
    if legend_size < 3:
        return image

    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    label = f"max {max_magnitude:.3g} px"
    left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
    text_w, text_h = right - left, bottom - top
    # The label goes under the disc only where the box stays inside the image.
    show_label = text_w <= width - 2 * margin - 2 and legend_size + text_h + 2 <= height - 2 * margin - 2
    box_w = max(legend_size, text_w if show_label else 0) + 2
    box_h = legend_size + 2 + (text_h + 2 if show_label else 0)
    x0, y0 = width - margin - box_w, margin
    draw.rectangle([x0, y0, x0 + box_w - 1, y0 + box_h - 1], fill=(255, 255, 255), outline=(128, 128, 128))
    disc_x = x0 + 1 + (box_w - 2 - legend_size) // 2
    canvas.paste(Image.fromarray(color_wheel_legend(legend_size)), (disc_x, y0 + 1))
    if show_label:
        draw.text((x0 + 1 - left, y0 + 1 + legend_size + 1 - top), label, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def arrow_scale(flow: np.ndarray, step: int = 16, fill: float = 0.9) -> float:
    """The ``scale`` for `flow_arrows` that draws the longest arrow on its grid ``fill · step`` pixels long, so
    arrows are visible on small flows and do not overlap on large ones; 0.0 if the grid holds no known motion.
    """
    flow = _check_flow(flow)
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    grid = flow[step // 2 :: step, step // 2 :: step].astype(np.float64)
    grid = grid[known_flow(grid)]
    longest = float(np.hypot(grid[:, 0], grid[:, 1]).max()) if len(grid) else 0.0
    return fill * step / longest if longest > 0 else 0.0


def visible_arrows(flow: np.ndarray, step: int = 16, scale: float = 1.0) -> int:
    """How many arrows `flow_arrows` draws with these ``step`` and ``scale`` (the others are under a pixel)."""
    grid = _check_flow(flow)[step // 2 :: step, step // 2 :: step].astype(np.float64) * scale
    with np.errstate(invalid="ignore"):
        return int((np.hypot(grid[..., 0], grid[..., 1]) >= MIN_ARROW_LENGTH).sum())


def flow_arrows(
    image: np.ndarray,
    flow: np.ndarray,
    step: int = 16,
    scale: float = 1.0,
    color: tuple[int, int, int] = (0, 0, 0),
) -> np.ndarray:
    """Draw flow vectors as arrows over ``image`` on a grid of spacing ``step`` (drawn with PIL).

    Args:
        image: ``[H, W, 3]`` or ``[H, W]``, uint8 or values in 0..255 (clipped).
        flow: ``[H, W, 2]``; pixels with non-finite flow get no arrow.
        step: grid spacing in pixels; the first arrow starts ``step // 2`` from the top-left corner.
        scale: arrow length per pixel of flow (`arrow_scale` chooses one that makes arrows visible); arrows
            shorter than a pixel are not drawn (`visible_arrows` counts the others).
        color: RGB arrow colour.

    Returns:
        uint8 ``[H, W, 3]``, a new array.
    """
    flow = _check_flow(flow)
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[:2] != flow.shape[:2]:
        raise ValueError(f"image must be [H, W, 3] or [H, W] matching flow {flow.shape}, got {image.shape}")
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    height, width = flow.shape[:2]
    for y in range(step // 2, height, step):
        for x in range(step // 2, width, step):
            u, v = (float(c) * scale for c in flow[y, x])
            length = math.hypot(u, v)
            if not math.isfinite(length) or length < MIN_ARROW_LENGTH:
                continue
            tip = (x + u, y + v)
            draw.line([(x, y), tip], fill=color, width=1)
            head = min(max(2.0, 0.3 * length), 6.0)
            angle = math.atan2(v, u)
            for side in (-1, 1):
                back = angle + math.pi - side * math.radians(25)
                draw.line([tip, (tip[0] + head * math.cos(back), tip[1] + head * math.sin(back))], fill=color)
    return np.asarray(canvas)


# --------------------------------------------------------------------------------------------------------
# Metrics


def known_flow(flow: np.ndarray) -> np.ndarray:
    """bool ``[H, W]``: True where both components are finite and at most 1e9 in magnitude (ground truth)."""
    flow = _check_flow(flow)
    with np.errstate(invalid="ignore"):
        return (np.abs(flow) <= _UNKNOWN_FLOW_THRESHOLD).all(axis=-1)


def end_point_error(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Mean end-point error ``‖pred − gt‖₂`` over valid pixels, in pixels.

    Args:
        pred: ``[H, W, 2]`` predicted flow.
        gt: ``[H, W, 2]`` ground truth; a pixel with NaN, ±inf or a component above 1e9 in magnitude (see
            `known_flow`) is invalid.
        valid: optional bool ``[H, W]``; pixels where it is False are left out as well.

    Raises:
        ValueError: mismatched shapes, or no valid pixel.
    """
    pred = _check_flow(pred, "pred")
    gt = _check_flow(gt, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} must have the same shape")
    mask = known_flow(gt)
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != gt.shape[:2]:
            raise ValueError(f"valid must have shape {gt.shape[:2]}, got {valid.shape}")
        mask &= valid
    if not mask.any():
        raise ValueError("no valid pixel to average the end-point error over")
    diff = pred[mask].astype(np.float64) - gt[mask].astype(np.float64)
    return float(np.hypot(diff[:, 0], diff[:, 1]).mean())


# --------------------------------------------------------------------------------------------------------
# Tiling, as in DeepMind's optical-flow colab


def _check_tile(tile: tuple[int, int], min_overlap: int) -> tuple[int, int]:
    th, tw = (int(t) for t in tile)
    if th <= 0 or tw <= 0:
        raise ValueError(f"tile must be positive, got {tile}")
    if not 0 <= min_overlap < min(th, tw):
        raise ValueError(f"min_overlap must be in [0, {min(th, tw)}) for tile {tile}, got {min_overlap}")
    return th, tw


def tile_origins(
    height: int, width: int, tile: tuple[int, int] = TRAIN_SIZE, min_overlap: int = MIN_OVERLAP
) -> list[tuple[int, int]]:
    """Top-left corners ``(y, x)`` of the tiles covering a ``height × width`` frame: the colab's
    ``compute_grid_indices``, with every origin kept inside the frame.

    The colab's origins are ``range(0, height, th - min_overlap)`` × ``range(0, width, tw - min_overlap)``, with
    the last of each moved flush to the bottom / right border; e.g. 436×1024 gives ys = [0, 68], xs = [0, 476,
    528]. When the last stride leaves fewer than ``min_overlap`` pixels, the colab's second-to-last origin lies
    past ``height - th`` (700 rows: ys = [0, 348, 332], a tile ending at row 716) and the colab fails; such an
    origin is clamped to ``height - th`` here (ys = [0, 332, 332]). Repeated origins are kept, as the colab
    visits them: `tiled_flow` counts such a tile's weight once per visit, so its blend is the colab's wherever
    the colab has one.

    Raises:
        ValueError: a frame smaller than the tile (`tiled_flow` pads those first) or a bad overlap.
    """
    th, tw = _check_tile(tile, min_overlap)
    if height < th or width < tw:
        raise ValueError(f"frame {height}x{width} is smaller than the tile {th}x{tw}; pad it (see tiled_flow)")
    ys = [min(y, height - th) for y in range(0, height, th - min_overlap)]
    xs = [min(x, width - tw) for x in range(0, width, tw - min_overlap)]
    ys[-1] = height - th
    xs[-1] = width - tw
    return [(y, x) for y in ys for x in xs]


def pyramid_weights(th: int, tw: int) -> np.ndarray:
    """The colab's blending weight of a tile: ``min(min(x+1, tw-x), min(y+1, th-y))``.

    It is 1 on the tile's border and grows by 1 per pixel inwards, so overlapping tiles hand over linearly.

    Returns:
        float32 ``[th, tw]``.
    """
    if th <= 0 or tw <= 0:
        raise ValueError(f"tile size must be positive, got {th}x{tw}")
    y = np.arange(th)[:, None]
    x = np.arange(tw)[None, :]
    return np.minimum(np.minimum(x + 1, tw - x), np.minimum(y + 1, th - y)).astype(np.float32)


def tiled_flow(
    predict: Callable[[np.ndarray, np.ndarray], np.ndarray],
    frame1: np.ndarray,
    frame2: np.ndarray,
    tile: tuple[int, int] = TRAIN_SIZE,
    min_overlap: int = MIN_OVERLAP,
) -> np.ndarray:
    """Flow of a frame pair of any size from a predictor that works on fixed-size tiles (the colab's
    ``compute_optical_flow``).

    Each distinct tile of `tile_origins` is passed to ``predict`` once; its flow is weighted by `pyramid_weights`,
    accumulated, and the sum divided by the accumulated weight. Frames smaller than the tile in either
    dimension are first padded, centred, by replicating their edge pixels (``np.pad`` mode ``"edge"``), and
    the result is cropped back; the colab refuses such frames.

    Args:
        predict: ``predict(f1_tile, f2_tile) -> flow_tile``; the tiles are float32 ``[th, tw, 3]`` copies in
            the frames' value range (no normalisation is applied), the result an array-like ``[th, tw, 2]``.
        frame1, frame2: ``[H, W, 3]`` of the same shape, any real dtype.
        tile: ``(th, tw)``; DeepMind's model was trained on 368×496.
        min_overlap: minimum overlap between neighbouring tiles in pixels.

    Returns:
        float32 ``[H, W, 2]``.
    """
    f1 = np.asarray(frame1)
    f2 = np.asarray(frame2)
    if f1.ndim != 3 or f1.shape[2] != 3 or f2.ndim != 3 or f2.shape[2] != 3:
        raise ValueError(f"frames must be [H, W, 3], got {f1.shape} and {f2.shape}")
    if f1.shape != f2.shape:
        raise ValueError(f"frames must have the same shape, got {f1.shape} and {f2.shape}")
    th, tw = _check_tile(tile, min_overlap)
    height, width = f1.shape[:2]
    pad_y, pad_x = max(th - height, 0), max(tw - width, 0)
    top, left = pad_y // 2, pad_x // 2
    padding = ((top, pad_y - top), (left, pad_x - left), (0, 0))
    f1 = np.pad(f1.astype(np.float32), padding, mode="edge")
    f2 = np.pad(f2.astype(np.float32), padding, mode="edge")

    padded_h, padded_w = f1.shape[:2]
    # float64 accumulators keep a field that all tiles agree on unchanged by the blend.
    weights = pyramid_weights(th, tw).astype(np.float64)[..., None]
    flow_sum = np.zeros((padded_h, padded_w, 2))
    weight_sum = np.zeros((padded_h, padded_w, 1))
    # A repeated origin is predicted once and weighted once per visit (see tile_origins).
    for (y, x), visits in Counter(tile_origins(padded_h, padded_w, (th, tw), min_overlap)).items():
        window = np.s_[y : y + th, x : x + tw]
        out = np.asarray(predict(f1[window].copy(), f2[window].copy()))
        if out.shape != (th, tw, 2):
            raise ValueError(f"predict returned shape {out.shape} for the tile at ({y}, {x}); need {(th, tw, 2)}")
        flow_sum[window] += visits * weights * out
        weight_sum[window] += visits * weights
    flow = flow_sum / weight_sum
    return flow[top : top + height, left : left + width].astype(np.float32)


# --------------------------------------------------------------------------------------------------------
# Real data with known flow


def synthetic_flow_pair(
    image: np.ndarray, seed: int, max_disp: float = 4.0, motion: str = "smooth"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A frame pair with exactly known flow, made from one real image.

    ``image`` becomes frame 2. With ``motion="smooth"`` a smooth random field F (three low-frequency sinusoids
    per component, 0.5–2 cycles per image side, plus a small affine term) is scaled so its largest magnitude is
    ``max_disp``. With ``motion="affine"`` F is a global camera-like motion: a translation drawn uniformly from
    the disc of radius ``0.8 * max_disp`` plus a rotation and a zoom of at most ±``0.2 * max_disp`` pixels at
    the image's corners, scaled down if needed so its largest magnitude is at most ``max_disp``.
    Frame 1 is frame 2 backward-warped, ``frame1(p) = frame2(p + F(p))`` (bilinear ``grid_sample``, border
    padding, ``align_corners=True``), so the flow frame1 → frame2 is exactly F. Where ``p + F(p)`` leaves the
    image, frame 1 repeats the border and F is not the true motion of the content.

    Args:
        image: ``[H, W, 3]``, any real dtype (uint8 0..255 typical).
        seed: seeds the flow field.
        max_disp: largest flow magnitude in pixels, > 0.
        motion: ``"smooth"`` or ``"affine"``.

    Returns:
        ``(frame1, frame2, flow)``: float32 ``[H, W, 3]`` frames in the image's value range (not rounded, so
        the flow stays exact) and float32 ``[H, W, 2]`` flow.
    """
    frame2 = np.asarray(image)
    if frame2.ndim != 3 or frame2.shape[2] != 3 or min(frame2.shape[:2]) < 2:
        raise ValueError(f"image must be [H, W, 3] with H, W >= 2, got {frame2.shape}")
    if not max_disp > 0:
        raise ValueError(f"max_disp must be > 0, got {max_disp}")
    if motion not in ("smooth", "affine"):
        raise ValueError(f"motion must be 'smooth' or 'affine', got {motion!r}")
    height, width = frame2.shape[:2]
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    yn, xn = y / (height - 1) - 0.5, x / (width - 1) - 0.5
    if motion == "affine":
        flow = _affine_flow(rng, x - (width - 1) / 2, y - (height - 1) / 2, max_disp)
        return _backward_warp(frame2, flow, x, y)
    components = []
    for _ in range(2):
        field = np.zeros((height, width))
        for _ in range(3):
            fx, fy = rng.uniform(0.5, 2.0, size=2) * rng.choice([-1, 1], size=2)
            amplitude, phase = rng.uniform(0.5, 1.0), rng.uniform(0, 2 * np.pi)
            field += amplitude * np.sin(2 * np.pi * (fx * xn + fy * yn) + phase)
        # The affine part adds a global translation, rotation and zoom, like camera motion.
        a, b, c = rng.uniform(-1.0, 1.0, size=3)
        field += a * xn + b * yn + c
        components.append(field)
    flow = np.stack(components, axis=-1)
    flow *= max_disp / np.hypot(flow[..., 0], flow[..., 1]).max()
    return _backward_warp(frame2, flow, x, y)


def _affine_flow(rng: np.random.Generator, xc: np.ndarray, yc: np.ndarray, max_disp: float) -> np.ndarray:
    """float64 ``[H, W, 2]``: translation + rotation + zoom about the centre (``xc``, ``yc``: centred pixel
    coordinates), at most ``max_disp`` pixels anywhere (see `synthetic_flow_pair`)."""
    radius, angle = 0.8 * max_disp * np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
    corner = max(float(np.hypot(xc, yc).max()), 1.0)
    rotation, zoom = rng.uniform(-0.2, 0.2, size=2) * max_disp / corner  # per pixel from the centre
    u = radius * np.cos(angle) + zoom * xc - rotation * yc
    v = radius * np.sin(angle) + zoom * yc + rotation * xc
    flow = np.stack([u, v], axis=-1)
    return flow * min(1.0, max_disp / np.hypot(u, v).max())


def _sample(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear float64 ``image[y, x]`` (``image`` [H, W, C], ``x``/``y`` [h, w] pixel coordinates), the border
    repeated outside: [h, w, C]."""
    height, width = image.shape[:2]
    # align_corners=True maps pixel centres 0 and W-1 to -1 and +1.
    grid = np.stack([2 * x / max(width - 1, 1) - 1, 2 * y / max(height - 1, 1) - 1], -1)
    source = torch.from_numpy(image.astype(np.float64)).permute(2, 0, 1)[None]
    sampled = F.grid_sample(
        source, torch.from_numpy(grid)[None], mode="bilinear", padding_mode="border", align_corners=True
    )
    return sampled[0].permute(1, 2, 0).numpy()


def _backward_warp(
    frame2: np.ndarray, flow: np.ndarray, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``frame1(p) = frame2(p + flow(p))``; returns float32 ``(frame1, frame2, flow)``."""
    frame1 = _sample(frame2, x + flow[..., 0], y + flow[..., 1])
    return frame1.astype(np.float32), frame2.astype(np.float32), flow.astype(np.float32)


def reverse_flow(flow: np.ndarray, iterations: int = 30) -> np.ndarray:
    """The flow of the reversed pair (frame 2 → frame 1) of a smooth, occlusion-free flow F: ``[H, W, 2]``.

    It is the G with ``G(q) = −F(q + G(q))`` (q + G(q) is the pixel of frame 1 that moved to q), found by
    fixed-point iteration, which converges when F's largest spatial derivative is below 1 (no fold-over).
    F is sampled bilinearly, exact for the affine fields of `synthetic_flow_pair`; near the border, where
    q + G(q) leaves the field, F's edge values stand in.

    Raises:
        ValueError: the iteration did not settle to 1e-4 px (F folds over, so no reversed flow exists).
    """
    flow = _check_flow(flow).astype(np.float64)
    height, width = flow.shape[:2]
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    reverse = -flow
    for _ in range(iterations):
        previous, reverse = reverse, -_sample(flow, x + reverse[..., 0], y + reverse[..., 1])
    change = float(np.abs(reverse - previous).max())
    if change > 1e-4:
        raise ValueError(f"reverse_flow did not converge (last change {change:.3g} px): the flow folds over")
    return reverse.astype(np.float32)


def stereo_motorcycle_pair() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """scikit-image's Middlebury 2014 "motorcycle" stereo pair as a flow problem with real ground truth.

    The left image is frame 1 and the right image frame 2. A left pixel at column x appears in the right
    image at column ``x - disparity``, so the flow is ``u = -disparity``, ``v = 0``. Pixels without ground
    truth (skimage marks them inf, its docstring says NaN) are NaN in both components.

    Returns:
        ``(frame1, frame2, flow)``: float32 ``[500, 741, 3]`` frames in 0..255 and float32 ``[500, 741, 2]``.
    """
    # skimage is a test/demo dependency only, so it is imported where it is needed.
    from skimage.data import stereo_motorcycle

    left, right, disparity = stereo_motorcycle()
    disparity = np.where(np.isfinite(disparity), disparity, np.nan).astype(np.float32)
    flow = np.stack([-disparity, np.where(np.isnan(disparity), np.nan, 0.0).astype(np.float32)], axis=-1)
    return left.astype(np.float32), right.astype(np.float32), flow
