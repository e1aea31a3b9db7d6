"""Optical-flow task machinery checked against independent references: the Middlebury file format and colour
code, DeepMind's colab tiling, and real images with exactly known flow."""

import os
import struct

import numpy as np
import pytest
from skimage.data import chelsea

from perceiver_io.tasks.flow_utils import (
    arrow_scale,
    color_wheel_legend,
    end_point_error,
    flow_arrows,
    flow_to_color,
    flow_to_color_with_legend,
    known_flow,
    pyramid_weights,
    read_flo,
    reverse_flow,
    stereo_motorcycle_pair,
    synthetic_flow_pair,
    tile_origins,
    tiled_flow,
    visible_arrows,
    write_flo,
)


def bilinear_sample(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Plain-numpy bilinear lookup of ``image`` [H, W, C] at float positions inside the image; [N, C]."""
    height, width = image.shape[:2]
    x0 = np.clip(np.floor(x).astype(int), 0, width - 2)
    y0 = np.clip(np.floor(y).astype(int), 0, height - 2)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = (1 - fx) * image[y0, x0] + fx * image[y0, x0 + 1]
    bottom = (1 - fx) * image[y0 + 1, x0] + fx * image[y0 + 1, x0 + 1]
    return (1 - fy) * top + fy * bottom


# ---------------------------------------------------------------------------------------------------------
# .flo


def test_flo_round_trip_is_lossless_and_leaves_no_temp_files(tmp_path):
    flow = np.random.default_rng(0).normal(scale=20, size=(7, 11, 2)).astype(np.float32)
    flow[3, 4] = np.nan
    path = tmp_path / "a.flo"
    write_flo(path, flow)
    back = read_flo(path)
    assert back.dtype == np.float32 and back.shape == (7, 11, 2)
    np.testing.assert_array_equal(back, flow)
    assert os.listdir(tmp_path) == ["a.flo"]
    write_flo(str(path), flow * 2)  # overwriting goes through the same rename
    np.testing.assert_array_equal(read_flo(str(path)), flow * 2)


def test_flo_byte_layout_matches_middlebury_spec(tmp_path):
    # Middlebury flow-code README: "PIEH" float 202021.25, int width, int height, then per row, per column,
    # u then v as float32, all little-endian.
    height, width = 2, 3
    values = {(y, x): (10 * y + x + 0.5, -(10 * y + x) - 0.25) for y in range(height) for x in range(width)}
    raw = struct.pack("<fii", 202021.25, width, height)
    raw += b"".join(struct.pack("<ff", *values[y, x]) for y in range(height) for x in range(width))
    assert raw[:4] == b"PIEH"
    path = tmp_path / "hand.flo"
    path.write_bytes(raw)
    flow = read_flo(path)
    assert flow.shape == (height, width, 2)
    for (y, x), (u, v) in values.items():
        assert flow[y, x, 0] == u and flow[y, x, 1] == v
    write_flo(tmp_path / "ours.flo", flow)
    assert (tmp_path / "ours.flo").read_bytes() == raw


def test_flo_errors_name_the_file_and_values(tmp_path):
    good = struct.pack("<fii", 202021.25, 2, 1) + struct.pack("<4f", 1, 2, 3, 4)
    cases = {
        "magic.flo": (struct.pack("<f", 1.5) + good[4:], "magic number 1.5"),
        "short.flo": (good[:-4], "truncated"),
        "long.flo": (good + b"\0" * 8, "trailing data"),
        "header.flo": (good[:6], "shorter than the 12-byte"),
        "size.flo": (struct.pack("<fii", 202021.25, 0, 1), "width 0"),
    }
    for name, (raw, message) in cases.items():
        (tmp_path / name).write_bytes(raw)
        with pytest.raises(ValueError, match=message) as info:
            read_flo(tmp_path / name)
        assert name in str(info.value)
    with pytest.raises(ValueError, match=r"bad\.flo.*\(4, 5, 3\)"):
        write_flo(tmp_path / "bad.flo", np.zeros((4, 5, 3)))
    assert not (tmp_path / "bad.flo").exists()


# ---------------------------------------------------------------------------------------------------------
# Colour coding


def published_wheel_colour(index: float) -> np.ndarray:
    """Colour at a (fractional) position on the Middlebury wheel, from its published description.

    Baker et al., "A Database and Evaluation Methodology for Optical Flow", IJCV 92(1) 2011, Fig. 1/§4 colour
    key, as implemented in the Middlebury flow-code (``colorcode.cpp``, ``computeColor.m``): 55 hues in six
    ramps red→yellow (15), yellow→green (6), green→cyan (4), cyan→blue (11), blue→magenta (13),
    magenta→red (6), each step ``floor(255·i/n)``; a flow (u, v), image y down, sits at
    ``(atan2(-v, -u)/π + 1)/2 · 54``. So right = red, down = yellow/orange, left = cyan, up = blue-violet.
    """
    keys = [(255, 0, 0), (255, 255, 0), (0, 255, 0), (0, 255, 255), (0, 0, 255), (255, 0, 255)]
    lengths = [15, 6, 4, 11, 13, 6]
    table = []
    for start, end, n in zip(keys, keys[1:] + keys[:1], lengths, strict=True):
        for i in range(n):
            step = np.floor(255 * i / n)
            table.append([s + np.sign(e - s) * step for s, e in zip(start, end, strict=True)])
    lo = int(np.floor(index))
    frac = index - lo
    return (1 - frac) * np.array(table[lo]) + frac * np.array(table[(lo + 1) % 55])


@pytest.mark.parametrize(
    ("direction", "wheel_position", "name"),
    [
        ((1.0, 0.0), 0.0, "red"),  # atan2(-0, -1) = -π
        ((-1.0, 0.0), 27.0, "cyan-blue"),
        ((0.0, 1.0), 13.5, "yellow-orange"),
        ((0.0, -1.0), 40.5, "blue-violet"),
        ((-1.0, 1.0), 20.25, "green"),  # down-left
    ],
)
def test_pure_directions_get_middlebury_hues(direction, wheel_position, name):
    expected = published_wheel_colour(wheel_position)
    for magnitude in (0.3, 7.0):
        flow = np.array([[direction]], dtype=np.float32) * magnitude
        colour = flow_to_color(flow)[0, 0].astype(int)
        np.testing.assert_allclose(colour, np.floor(expected), atol=1, err_msg=name)


def test_saturation_follows_magnitude_and_special_values():
    flow = np.array([[[4.0, 0.0], [2.0, 0.0], [0.0, 0.0], [np.nan, 1.0], [2e9, 0.0]]], dtype=np.float32)
    colour = flow_to_color(flow)
    assert tuple(colour[0, 0]) == (255, 0, 0)
    # Half the maximum: halfway from white to red, 1 - 0.5·(1 - c).
    assert tuple(colour[0, 1]) == (255, 127, 127)
    assert tuple(colour[0, 2]) == (255, 255, 255)
    assert tuple(colour[0, 3]) == tuple(colour[0, 4]) == (0, 0, 0)
    assert (flow_to_color(np.zeros((3, 4, 2))) == 255).all()
    # Beyond an explicit max_magnitude the reference darkens the hue to 75 %.
    assert tuple(flow_to_color(flow[:, :1], max_magnitude=2.0)[0, 0]) == (191, 0, 0)
    with pytest.raises(ValueError, match=r"\(2, 2, 3\)"):
        flow_to_color(np.zeros((2, 2, 3)))


def test_legend_disc_and_corner_placement():
    legend = color_wheel_legend(65)
    assert legend.shape == (65, 65, 3) and legend.dtype == np.uint8
    assert tuple(legend[32, 32]) == (255, 255, 255)  # centre: zero flow
    assert tuple(legend[0, 0]) == (255, 255, 255)  # outside the disc
    assert tuple(legend[32, 64]) == (255, 0, 0)  # rim, right
    np.testing.assert_allclose(legend[64, 32], np.floor(published_wheel_colour(13.5)), atol=1)  # rim, down

    flow = np.random.default_rng(1).normal(size=(120, 200, 2)).astype(np.float32)
    plain = flow_to_color(flow)
    with_legend = flow_to_color_with_legend(flow, legend_size=40)
    assert with_legend.shape == plain.shape and with_legend.dtype == np.uint8
    changed = np.argwhere((with_legend != plain).any(axis=-1))
    assert changed[:, 0].max() < 70 and changed[:, 1].min() > 200 - 70  # only the top-right corner
    assert flow_to_color_with_legend(flow[:5, :5]).shape == (5, 5, 3)  # too small for a legend


def test_flow_arrows_draw_along_the_flow():
    image = np.full((40, 60, 3), 255, dtype=np.uint8)
    flow = np.zeros((40, 60, 2), dtype=np.float32)
    assert (flow_arrows(image, flow, step=20) == image).all()
    flow[..., 0] = 8.0
    drawn = flow_arrows(image, flow, step=20)
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    assert (drawn[10, 10:18] == 0).all()  # shaft from the grid point (10, 10) to the right
    assert (drawn[10, 5:9] == 255).all()  # nothing behind it
    with pytest.raises(ValueError, match=r"\(40, 61, 3\)"):
        flow_arrows(np.zeros((40, 61, 3)), flow)


# ---------------------------------------------------------------------------------------------------------
# End-point error


def test_end_point_error_over_valid_pixels():
    gt = np.zeros((2, 2, 2), dtype=np.float32)
    pred = np.zeros_like(gt)
    pred[0, 0] = (3, 4)  # error 5
    pred[0, 1] = (1, 0)  # error 1
    pred[1, 1] = (100, 0)
    gt[1, 1, 0] = np.nan
    assert end_point_error(pred, gt) == pytest.approx(6 / 3)
    valid = np.array([[True, False], [True, True]])
    assert end_point_error(pred, gt, valid) == pytest.approx(5 / 2)
    with pytest.raises(ValueError, match="no valid pixel"):
        end_point_error(pred, gt, np.zeros((2, 2), dtype=bool))
    with pytest.raises(ValueError, match=r"\(2, 2, 2\).*\(2, 3, 2\)"):
        end_point_error(pred, np.zeros((2, 3, 2)))


@pytest.mark.parametrize("unknown", [np.nan, np.inf, -np.inf, 1e10, -2e9])
def test_unknown_ground_truth_is_left_out(unknown):
    """NaN, ±inf and the Middlebury convention (|value| > 1e9) all mean "no ground truth" for that pixel."""
    gt = np.zeros((2, 2, 2), dtype=np.float32)
    pred = np.zeros_like(gt)
    pred[0, 0] = (3, 4)  # error 5
    pred[0, 1] = (1, 0)  # error 1
    gt[1, 1, 1] = unknown
    gt[1, 0] = (1e9, -1e9)  # the threshold itself is known flow
    pred[1, 0] = (1e9, -1e9)
    np.testing.assert_array_equal(known_flow(gt), [[True, True], [True, False]])
    assert end_point_error(pred, gt) == pytest.approx(6 / 3)


def test_stereo_motorcycle_raw_disparities_give_a_finite_error():
    """scikit-image marks unknown disparities inf: the error over the others equals the NaN-marked pair's."""
    from skimage.data import stereo_motorcycle

    disparity = stereo_motorcycle()[2]
    raw = np.stack([-disparity, np.zeros_like(disparity)], axis=-1)
    assert np.isinf(raw).any()
    nan_marked = stereo_motorcycle_pair()[2]
    pred = np.zeros_like(raw)
    assert np.isfinite(end_point_error(pred, raw))
    assert end_point_error(pred, raw) == end_point_error(pred, nan_marked)
    assert known_flow(raw).sum() == np.isfinite(disparity).sum()


def test_arrow_scale_makes_the_longest_arrow_fill_the_grid_step():
    image = chelsea()[:64, :96]
    flow = np.zeros((64, 96, 2), dtype=np.float32)
    flow[..., 0] = np.linspace(0, 0.05, 96)  # a twentieth of a pixel at most: invisible at scale 1
    flow[0, 0] = np.inf  # unknown: not on the grid's measure
    assert visible_arrows(flow, 16, 1.0) == 0 and (flow_arrows(image, flow, 16) == image).all()
    scale = arrow_scale(flow, 16)
    grid = flow[8::16, 8::16, 0]
    assert scale == pytest.approx(0.9 * 16 / grid.max())
    assert visible_arrows(flow, 16, scale) == (grid * scale >= 1).sum() > 0
    assert (flow_arrows(image, flow, 16, scale) != image).any()
    assert arrow_scale(np.zeros((8, 8, 2)), 4) == 0.0
    with pytest.raises(ValueError, match="step must be >= 1"):
        arrow_scale(flow, 0)


# ---------------------------------------------------------------------------------------------------------
# Tiling


def position_frames(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames whose channels carry each pixel's own (x, y), so a tile knows where it came from."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    frame = np.stack([x, y, np.zeros_like(x)], axis=-1)
    return frame, frame.copy()


def global_field(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.stack([np.sin(x / 37) + 0.01 * y, np.cos(y / 23) - 0.002 * x], axis=-1).astype(np.float32)


def predict_global_field(f1_tile: np.ndarray, f2_tile: np.ndarray) -> np.ndarray:
    return global_field(f1_tile[..., 0], f1_tile[..., 1])


def test_tile_origins_match_the_colab():
    assert tile_origins(436, 1024) == [(y, x) for y in (0, 68) for x in (0, 476, 528)]
    # One tile: the colab's range(0, 368, 348) = [0, 348] becomes [0, 0], visited twice in each direction.
    assert tile_origins(368, 496) == [(0, 0)] * 4
    # The colab's rows would be [0, 348, 332], the tile at 348 ending past row 700: it is clamped.
    assert tile_origins(700, 496) == [(y, x) for y in (0, 332, 332) for x in (0, 0)]
    for height in range(368, 1500, 7):
        for width in (496, 700, 1024, 1441):
            assert all(0 <= y <= height - 368 and 0 <= x <= width - 496 for y, x in tile_origins(height, width))
    with pytest.raises(ValueError, match="min_overlap"):
        tile_origins(436, 1024, min_overlap=368)
    with pytest.raises(ValueError, match="300x1024 is smaller"):
        tile_origins(300, 1024)


def test_pyramid_weights_match_the_formula():
    th, tw = 5, 8
    weights = pyramid_weights(th, tw)
    assert weights.shape == (th, tw) and weights.dtype == np.float32
    for y in range(th):
        for x in range(tw):
            assert weights[y, x] == min(min(x + 1, tw - x), min(y + 1, th - y))
    assert weights.min() == 1 and weights[2, 3] == 3


def test_single_tile_is_the_direct_output():
    rng = np.random.default_rng(2)
    f1, f2 = rng.uniform(0, 255, size=(2, 368, 496, 3)).astype(np.float32)
    direct = rng.normal(size=(368, 496, 2)).astype(np.float32)
    calls = []

    def predict(t1, t2):
        calls.append(1)
        np.testing.assert_array_equal(t1, f1)
        np.testing.assert_array_equal(t2, f2)
        return direct

    np.testing.assert_array_equal(tiled_flow(predict, f1, f2), direct)
    assert len(calls) == 1


def test_globally_consistent_field_is_reproduced_exactly_over_a_sintel_frame():
    f1, f2 = position_frames(436, 1024)
    seen = []

    def predict(t1, t2):
        assert t1.shape == (368, 496, 3) and t1.dtype == np.float32
        seen.append((int(t1[0, 0, 1]), int(t1[0, 0, 0])))
        return predict_global_field(t1, t2)

    flow = tiled_flow(predict, f1, f2)
    assert seen == tile_origins(436, 1024)
    # Exact: every tile agrees, and float64 sums of integer-weighted float32 values divide back exactly.
    np.testing.assert_array_equal(flow, global_field(f1[..., 0], f1[..., 1]))

    constant = tiled_flow(lambda a, b: np.full((368, 496, 2), (1.25, -3.5), np.float32), f1, f2)
    assert (constant == np.array([1.25, -3.5], np.float32)).all()


def test_weights_cover_every_pixel_at_the_seams():
    height, width, (th, tw) = 436, 1024, (368, 496)
    total = np.zeros((height, width))
    for y, x in tile_origins(height, width):
        total[y : y + th, x : x + tw] += pyramid_weights(th, tw)
    assert total.min() >= 1
    # Inside the overlap of the first two columns of tiles, both contribute.
    assert total[200, 476:496].min() > pyramid_weights(th, tw)[200, 476:496].max()


def test_disagreeing_tiles_blend_with_the_colab_pyramid():
    f1, f2 = position_frames(436, 1024)
    th, tw = 368, 496

    def predict_tile_id(t1, t2):
        # Each tile answers a constant naming its origin, so the blend at a pixel exposes the weights used.
        y0, x0 = t1[0, 0, 1], t1[0, 0, 0]
        return np.broadcast_to(np.array([x0, y0], np.float32), (th, tw, 2))

    flow = tiled_flow(predict_tile_id, f1, f2)
    for py, px in [(200, 480), (50, 500), (400, 1000), (10, 10)]:
        num, den = np.zeros(2), 0.0
        for y0 in (0, 68):
            for x0 in (0, 476, 528):
                ly, lx = py - y0, px - x0
                if 0 <= ly < th and 0 <= lx < tw:
                    w = min(min(lx + 1, tw - lx), min(ly + 1, th - ly))
                    num += w * np.array([x0, y0])
                    den += w
        np.testing.assert_allclose(flow[py, px], num / den, rtol=1e-6)


@pytest.mark.parametrize("shape", [(100, 150), (200, 600), (400, 300)])
def test_small_frames_are_padded_and_cropped_back(shape):
    f1, f2 = position_frames(*shape)
    flow = tiled_flow(predict_global_field, f1, f2)
    assert flow.shape == (*shape, 2) and flow.dtype == np.float32
    # Edge padding repeats the border coordinates, so the crop sees the field of the original pixels.
    np.testing.assert_array_equal(flow, global_field(f1[..., 0], f1[..., 1]))


def test_tiled_flow_validates_inputs():
    frame = np.zeros((368, 496, 3), np.float32)
    with pytest.raises(ValueError, match=r"\(368, 496, 3\) and \(368, 497, 3\)"):
        tiled_flow(predict_global_field, frame, np.zeros((368, 496 + 1, 3)))
    with pytest.raises(ValueError, match=r"\(368, 496\)"):
        tiled_flow(predict_global_field, frame[..., 0], frame[..., 0])
    with pytest.raises(ValueError, match=r"predict returned shape \(2,\)"):
        tiled_flow(lambda a, b: np.zeros(2), frame, frame)


# ---------------------------------------------------------------------------------------------------------
# Data with known flow


@pytest.mark.parametrize("motion", ["smooth", "affine"])
def test_synthetic_pair_is_frame2_warped_by_the_flow(motion: str):
    image = chelsea()
    frame1, frame2, flow = synthetic_flow_pair(image, seed=3, max_disp=5.0, motion=motion)
    assert frame1.shape == frame2.shape == image.shape and flow.shape == (*image.shape[:2], 2)
    assert frame1.dtype == frame2.dtype == flow.dtype == np.float32
    np.testing.assert_array_equal(frame2, image)
    magnitude = np.hypot(flow[..., 0], flow[..., 1])
    assert magnitude.max() <= 5.0 + 1e-5
    if motion == "smooth":
        assert magnitude.max() == pytest.approx(5.0, rel=1e-6)
    assert magnitude.mean() > 1.0  # a real motion field, not a few outliers

    height, width = image.shape[:2]
    y, x = np.mgrid[0:height, 0:width]
    tx, ty = x + flow[..., 0].astype(np.float64), y + flow[..., 1].astype(np.float64)
    inside = (tx >= 0) & (tx <= width - 1) & (ty >= 0) & (ty <= height - 1)
    assert inside.mean() > 0.9
    expected = bilinear_sample(image.astype(np.float64), tx[inside], ty[inside])
    np.testing.assert_allclose(frame1[inside], expected, atol=2e-3)
    assert np.abs(frame1 - frame2).mean() > 5  # and the frames do differ

    zero_epe = end_point_error(np.zeros_like(flow), flow)
    assert zero_epe == pytest.approx(magnitude.mean(), rel=1e-6)

    again = synthetic_flow_pair(image, seed=3, max_disp=5.0, motion=motion)[2]
    np.testing.assert_array_equal(again, flow)
    assert not np.allclose(synthetic_flow_pair(image, seed=4, max_disp=5.0, motion=motion)[2], flow)


def test_affine_motion_is_one_translation_rotation_and_zoom():
    """Least squares over all pixels: the field is exactly u = a + z·x − r·y, v = b + r·x + z·y."""
    height, width = 40, 60
    image = chelsea()[:height, :width]
    translations = []
    for seed in range(5):
        flow = synthetic_flow_pair(image, seed=seed, max_disp=3.0, motion="affine")[2].astype(np.float64)
        y, x = np.mgrid[0:height, 0:width].astype(np.float64)
        ones, zeros = np.ones(x.size), np.zeros(x.size)
        # Unknowns (a, b, z, r); rows: u equations then v equations.
        design = np.block([[ones[:, None], zeros[:, None], x.ravel()[:, None], -y.ravel()[:, None]],
                           [zeros[:, None], ones[:, None], y.ravel()[:, None], x.ravel()[:, None]]])  # fmt: skip
        target = np.concatenate([flow[..., 0].ravel(), flow[..., 1].ravel()])
        params, *_ = np.linalg.lstsq(design, target, rcond=None)
        np.testing.assert_allclose(design @ params, target, atol=1e-5)
        assert np.hypot(flow[..., 0], flow[..., 1]).max() <= 3.0 + 1e-6
        translations.append(flow[height // 2, width // 2])
    assert np.ptp(np.array(translations), axis=0).min() > 0.5  # seeds draw different motions, not ~zero ones
    with pytest.raises(ValueError, match="motion must be 'smooth' or 'affine', got 'shear'"):
        synthetic_flow_pair(image, seed=0, motion="shear")


def test_reverse_flow_inverts_an_affine_motion_in_closed_form():
    """F(p) = A p + t (p = (x, y)) moves p to (I + A) p + t, so the reversed flow at q is (I + A)⁻¹(q − t) − q."""
    height, width = 30, 40
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    a = np.array([[0.03, -0.02], [0.025, -0.01]])  # rows: u, v; columns: x, y
    t = np.array([1.2, -0.7])
    flow = np.stack([a[0, 0] * x + a[0, 1] * y + t[0], a[1, 0] * x + a[1, 1] * y + t[1]], axis=-1)
    q = np.stack([x, y], axis=-1)
    expected = np.linalg.solve(np.eye(2) + a, (q - t)[..., None])[..., 0] - q
    reverse = reverse_flow(flow)
    inner = (slice(4, -4), slice(4, -4))  # where q + G(q) stays inside the sampled field
    np.testing.assert_allclose(reverse[inner], expected[inner], atol=1e-4)
    # A pure translation reverses exactly, border included.
    np.testing.assert_allclose(reverse_flow(np.broadcast_to(t, (5, 6, 2))), -np.broadcast_to(t, (5, 6, 2)), atol=1e-6)


def test_reverse_flow_refuses_a_folding_field():
    noise = np.random.default_rng(0).normal(size=(12, 12, 2))  # neighbours cross each other: no inverse exists
    with pytest.raises(ValueError, match="folds over"):
        reverse_flow(noise)


def test_stereo_motorcycle_ground_truth_is_leftward_horizontal_motion():
    frame1, frame2, flow = stereo_motorcycle_pair()
    assert frame1.shape == frame2.shape == (500, 741, 3) and flow.shape == (500, 741, 2)
    valid = ~np.isnan(flow).any(axis=-1)
    assert np.isnan(flow[~valid]).all()  # both components invalid together
    assert 0.8 < valid.mean() < 1.0
    u, v = flow[valid, 0], flow[valid, 1]
    assert (v == 0).all() and (u < 0).all() and u.min() > -80

    # The sign: warping frame 2 by the flow must explain frame 1 far better than zero or mirrored motion.
    y, x = np.nonzero(valid)
    tx = x + flow[y, x, 0].astype(np.float64)
    keep = tx >= 0
    y, x, tx = y[keep], x[keep], tx[keep]

    def photometric_error(sample_x):
        return np.abs(bilinear_sample(frame2, sample_x, y.astype(np.float64)) - frame1[y, x]).mean()

    with_flow = photometric_error(tx)
    assert with_flow < 0.5 * photometric_error(x.astype(np.float64))
    assert with_flow < 0.5 * photometric_error(np.clip(2 * x - tx, 0, 740))
