"""The four colab tasks as functions (perceiver_io.tasks), checked against independent computations of what the
colabs do: byte encoding and argmax for fill-mask, crop/cubic-resize/normalise for classification, tiling and
blending for optical flow, chunked decoding for video autoencoding. Small random models; real photos."""

from __future__ import annotations

import math

import numpy as np
import PIL.Image
import PIL.ImageSequence
import pytest
import torch
from conftest import SMALL_CONFIGS, randomize_
from skimage import data

import perceiver_io
from perceiver_io import PerceiverConfig
from perceiver_io.adapters.image import patches_for_flow
from perceiver_io.processing import PerceiverImageProcessor
from perceiver_io.tasks import autoencode, classify, fill_mask, optical_flow
from perceiver_io.tasks.autoencode import (
    ClipGeometry,
    NoAudioTrackError,
    center_square_resize,
    gif_durations,
    psnr,
    read_clips,
    write_gif,
)
from perceiver_io.tasks.classify import class_names, imagenet_class_names, original_processor

COLAB_TEXT = "This is an incomplete sentence where some words are missing."


def small_model(head: str, seed: int = 0, **overrides) -> torch.nn.Module:
    config = PerceiverConfig.from_dict({**SMALL_CONFIGS[head], **overrides})
    return randomize_(getattr(perceiver_io, head)(config), seed=seed)


@pytest.fixture(scope="module")
def mlm():
    return small_model("PerceiverForMaskedLM", max_position_embeddings=64)


@pytest.fixture(scope="module")
def flow_model():
    return small_model("PerceiverForOpticalFlow")  # tiles of 8x12, overlap 4


# ---------------------------------------------------------------------------------------------------------
# fill-mask


def _recorded_inputs(model, call):
    """Run ``call()`` and return the (inputs, attention_mask) the model was called with."""
    seen = {}

    def hook(module, args, kwargs):
        seen.update(kwargs)

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        result = call()
    finally:
        handle.remove()
    return result, seen["inputs"], seen["attention_mask"]


def test_fill_mask_feeds_the_colab_encoding_and_takes_the_argmax(mlm):
    result, ids, mask = _recorded_inputs(mlm, lambda: fill_mask(mlm, COLAB_TEXT, [(51, 60)], top_k=3))
    # Independently: bytes + 6, no BOS/EOS, bytes 51:60 set to MASK=3, PAD=0 up to the window, mask 0 there.
    expected = [b + 6 for b in COLAB_TEXT.encode()] + [0] * (64 - 60)
    expected[51:60] = [3] * 9
    assert ids.tolist() == [expected]
    assert mask.tolist() == [[1] * 60 + [0] * 4]

    with torch.no_grad():
        logits = mlm(inputs=ids, attention_mask=mask).logits[0, 51:60]
    assert result.predicted_ids == logits.argmax(-1).tolist()
    probs = logits.softmax(-1)
    top = [p.top_k[0][1] for p in result.positions]
    np.testing.assert_allclose(top, probs.max(-1).values.numpy(), rtol=1e-5)
    predicted = bytes(i - 6 for i in result.predicted_ids if i >= 6).decode("utf-8", errors="replace")
    assert result.predictions == [predicted]
    assert result.text == COLAB_TEXT[:51] + predicted
    assert result.original == [" missing."]
    assert [p.position for p in result.positions] == list(range(51, 60))
    assert all(len(p.top_k) == 3 for p in result.positions)


def test_fill_mask_markers_equal_byte_ranges(mlm):
    by_range = fill_mask(mlm, COLAB_TEXT, [(51, 60)])
    by_marker = fill_mask(mlm, "This is an incomplete sentence where some words are[[ missing.]]")
    assert by_marker.predicted_ids == by_range.predicted_ids
    assert by_marker.spans == [(51, 60)] and by_marker.original == [" missing."]

    # [MASK:n] counts bytes, and earlier multi-byte characters shift the byte positions.
    result, ids, _ = _recorded_inputs(mlm, lambda: fill_mask(mlm, "naïve [MASK:3] end"))
    assert result.spans == [(7, 10)] and result.original == [None]
    assert ids[0, 7:10].tolist() == [3, 3, 3]
    assert ids[0, 10:14].tolist() == [b + 6 for b in b" end"]
    assert all(p.original is None for p in result.positions)


@pytest.mark.parametrize(
    "text, spans, match",
    [
        ("x" * 65, [(0, 1)], "65 UTF-8 bytes but the model reads at most 64"),
        ("no markers here", None, "nothing to fill"),
        ("short", [(3, 9)], "not a non-empty byte range"),
        ("short", [(3, 3)], "not a non-empty byte range"),
        ("empty [[]] marker", None, "empty mask marker"),
    ],
)
def test_fill_mask_rejects_bad_requests(mlm, text, spans, match):
    with pytest.raises(ValueError, match=match):
        fill_mask(mlm, text, spans)


def test_task_functions_reject_the_wrong_head(mlm, flow_model):
    with pytest.raises(TypeError, match="needs a PerceiverForMaskedLM model; got a PerceiverForOpticalFlow"):
        fill_mask(flow_model, "a [MASK:1]")
    with pytest.raises(TypeError, match="classify needs"):
        classify(mlm, [data.chelsea()])
    with pytest.raises(TypeError, match="optical flow needs"):
        optical_flow(mlm, data.chelsea(), data.chelsea())
    with pytest.raises(TypeError, match="autoencode needs"):
        autoencode(flow_model, np.zeros((2, 16, 16, 3)), np.zeros(64))


# ---------------------------------------------------------------------------------------------------------
# classify


def keys_cubic_matrix(n_in: int, n_out: int, a: float = -0.75) -> np.ndarray:
    """(n_out, n_in) resampling matrix of OpenCV's INTER_CUBIC: Keys kernel, half-pixel centres, clamped edges."""
    matrix = np.zeros((n_out, n_in))
    scale = n_in / n_out
    for i in range(n_out):
        x = (i + 0.5) * scale - 0.5
        x0 = math.floor(x)
        for k in range(x0 - 1, x0 + 3):
            d = abs(x - k)
            w = (a + 2) * d**3 - (a + 3) * d**2 + 1 if d <= 1 else a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a
            matrix[i, min(max(k, 0), n_in - 1)] += w
    return matrix


def colab_preprocess(image: np.ndarray, size: int = 224) -> np.ndarray:
    """DeepMind's ``resize_and_center_crop`` + ``normalize``, in plain numpy: uint8 [H, W, 3] → [3, size, size]."""
    h, w = image.shape[:2]
    crop = int((224 / (224 + 32)) * np.float32(min(h, w)))
    top, left = ((h - crop) + 1) // 2, ((w - crop) + 1) // 2
    window = image[top : top + crop, left : left + crop].astype(np.float64)
    rows, cols = keys_cubic_matrix(crop, size), keys_cubic_matrix(crop, size)
    resized = np.einsum("ij,jkc->ikc", rows, window)
    resized = np.einsum("ikc,lk->ilc", resized, cols)
    resized = np.clip(np.rint(resized), 0, 255)  # cv2 returns uint8 for uint8 input
    mean = np.array([0.485, 0.456, 0.406]) * 255
    std = np.array([0.229, 0.224, 0.225]) * 255
    return ((resized - mean) / std).transpose(2, 0, 1)


@pytest.mark.parametrize("name", ["chelsea", "coffee"])
def test_original_preprocessing_matches_the_colab(name):
    image = getattr(data, name)()  # 300x451 (odd crop offset) and 400x600
    ours = original_processor(224)([image])[0].numpy()
    reference = colab_preprocess(image)
    # Equal up to the rounding of a value sitting at .5 of a grey level (1 level = 1/57 after normalising).
    delta = np.abs(ours - reference)
    assert delta.max() <= 1 / (0.224 * 255) + 1e-6
    assert (delta > 1e-5).mean() < 1e-3


def test_classify_returns_top_k_of_the_model_on_preprocessed_images():
    model = small_model("PerceiverForImageClassificationFourier", image_size=32)
    images = [data.chelsea(), data.astronaut(), data.camera()]  # camera is grey: converted to RGB
    rgb = [images[0], images[1], np.repeat(images[2][..., None], 3, axis=-1)]
    results = classify(model, images, top_k=3, batch_size=2)

    with torch.no_grad():
        probs = model(inputs=torch.from_numpy(np.stack([colab_preprocess(im, 32) for im in rgb])).float())
    probs = probs.logits.softmax(-1)
    assert len(results) == 3
    for row, p in zip(results, probs, strict=True):
        top_p, top_i = p.topk(3)
        assert [name for name, _ in row] == [str(i) for i in top_i.tolist()]
        np.testing.assert_allclose([q for _, q in row], top_p.numpy(), atol=2e-3)


def test_classify_with_the_transformers_processor():
    model = small_model("PerceiverForImageClassificationConvProcessing")  # image_size 56
    image = data.chelsea()
    processor = PerceiverImageProcessor(size=56, crop_size=64)
    with torch.no_grad():
        probs = model(inputs=processor([image], return_tensors="pt")["pixel_values"]).logits.softmax(-1)[0]
    result = classify(model, [image], top_k=2, processor="transformers")[0]
    np.testing.assert_allclose([p for _, p in result], probs.topk(2).values.numpy(), rtol=1e-5)


def test_class_names():
    model = small_model("PerceiverForImageClassificationLearned")  # 5 placeholder labels
    assert class_names(model) == ["0", "1", "2", "3", "4"]
    assert class_names(model, list("abcde")) == list("abcde")
    with pytest.raises(ValueError, match="3 label names given but the model has 5 classes"):
        class_names(model, list("abc"))
    model.config.id2label = {i: f"class {i}" for i in range(5)}
    assert class_names(model)[4] == "class 4"
    model.config.num_labels = 1000
    names = class_names(model)
    assert names == imagenet_class_names() and len(names) == 1000 and names[281] == "tabby, tabby cat"


def test_classify_rejects_unreadable_images(tmp_path):
    model = small_model("PerceiverForImageClassificationLearned")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ValueError, match=r"notes\.png: not a readable image"):
        classify(model, [tmp_path / "notes.png"])
    with pytest.raises(ValueError, match=r"missing\.png: no such file"):
        classify(model, [tmp_path / "missing.png"])
    with pytest.raises(ValueError, match=r"image 0 has shape \(4, 4, 2\)"):
        classify(model, [np.zeros((4, 4, 2))])


@pytest.mark.parametrize("value", [0, -1, 2.0, True])
def test_counts_must_be_positive_integers(mlm, flow_model, value):
    """top_k 0 used to return empty lists without a word."""
    classifier = small_model("PerceiverForImageClassificationLearned")
    with pytest.raises(ValueError, match=rf"top_k must be an integer >= 1, got {value!r}"):
        classify(classifier, [data.chelsea()], top_k=value)
    with pytest.raises(ValueError, match=rf"batch_size must be an integer >= 1, got {value!r}"):
        classify(classifier, [data.chelsea()], batch_size=value)
    with pytest.raises(ValueError, match=rf"top_k must be an integer >= 1, got {value!r}"):
        fill_mask(mlm, "a [MASK:1]", top_k=value)


def test_flow_frames_outside_0_255_are_refused(flow_model):
    frame = data.astronaut()[:8, :12].astype(np.float32)
    bad = frame.copy()
    bad[0, 0, 0] = np.nan
    bad[1, 1, 1] = 300
    with pytest.raises(ValueError, match=r"a frame holds 2 values outside 0\.\.255 or not finite"):
        optical_flow(flow_model, frame, bad)
    with pytest.raises(ValueError, match=r"\[H, W, 3\] RGB with H, W > 0, got shape \(0, 12, 3\)"):
        optical_flow(flow_model, frame[:0], frame[:0])


# ---------------------------------------------------------------------------------------------------------
# optical flow


def direct_flow(model, frame1: np.ndarray, frame2: np.ndarray) -> np.ndarray:
    """One untiled forward pass as the colab's ``compute_optical_flow`` does per tile, in pixels."""
    frames = torch.from_numpy(np.stack([frame1, frame2]).astype(np.float32)) / 255 * 2 - 1
    inputs = patches_for_flow(frames.permute(0, 3, 1, 2)[None])
    with torch.no_grad():
        return model(inputs=inputs).logits[0].numpy() * 20


def colab_blend(model, frame1, frame2, tile=(8, 12), overlap=4) -> np.ndarray:
    """The colab's tiling written out: origins every tile-overlap pixels, the last flush with the border, each
    tile weighted by min(min(x+1, W-x), min(y+1, H-y)) once per visit; an origin past the border (where the
    colab fails) is moved back inside."""
    (h, w), (th, tw) = frame1.shape[:2], tile
    ys = [min(v, h - th) for v in range(0, h, th - overlap)]
    xs = [min(v, w - tw) for v in range(0, w, tw - overlap)]
    ys[-1], xs[-1] = h - th, w - tw
    y, x = np.mgrid[0:th, 0:tw]
    weight = np.minimum(np.minimum(x + 1, tw - x), np.minimum(y + 1, th - y))[..., None].astype(np.float64)
    total, weights = np.zeros((h, w, 2)), np.zeros((h, w, 1))
    for oy in ys:
        for ox in xs:
            window = np.s_[oy : oy + th, ox : ox + tw]
            total[window] += weight * direct_flow(model, frame1[window], frame2[window])
            weights[window] += weight
    return total / weights


@pytest.fixture(scope="module")
def frames():
    """Two real frames: chelsea and a copy shifted by 2 pixels (uint8)."""
    image = data.chelsea()[100:140, 150:200]
    return image, np.roll(image, 2, axis=1)


def test_a_frame_of_one_tile_gives_the_untiled_result(flow_model, frames):
    f1, f2 = frames[0][:8, :12], frames[1][:8, :12]
    np.testing.assert_allclose(optical_flow(flow_model, f1, f2), direct_flow(flow_model, f1, f2), atol=1e-5)


@pytest.mark.parametrize(
    "size",
    [
        (15, 23),  # overlap 2: rows 0, 6, 7; columns 0, 10, 11 - each visited once, as in the colab
        (15, 22),  # columns 0, 10, 10: the colab visits column 10 twice, and so its weight counts twice
        (19, 33),  # rows 0, 6, 12, 11: the colab's tile at row 12 would leave the frame; it is clamped to 11
    ],
)
def test_a_large_frame_is_blended_from_tiles_as_in_the_colab(flow_model, frames, size):
    f1, f2 = frames[0][: size[0], : size[1]], frames[1][: size[0], : size[1]]
    flow = optical_flow(flow_model, f1, f2, min_overlap=2)
    assert flow.shape == (*size, 2) and flow.dtype == np.float32
    np.testing.assert_allclose(flow, colab_blend(flow_model, f1, f2, overlap=2), atol=1e-5)
    assert np.abs(flow).max() > 0.1  # a random model: the comparison is not trivially between zeros


def test_small_frames_are_edge_padded_to_one_tile(flow_model, frames):
    f1, f2 = frames[0][:5, :9], frames[1][:5, :9]
    padding = ((1, 2), (1, 2), (0, 0))  # centred, the extra pixel after
    padded = direct_flow(flow_model, np.pad(f1, padding, mode="edge"), np.pad(f2, padding, mode="edge"))
    np.testing.assert_allclose(optical_flow(flow_model, f1, f2), padded[1:6, 1:10], atol=1e-5)


def test_optical_flow_rejects_frames_of_different_sizes(flow_model, frames):
    with pytest.raises(ValueError, match="the frames differ in size"):
        optical_flow(flow_model, frames[0], frames[1][:-1])


# ---------------------------------------------------------------------------------------------------------
# autoencode

MM_CONFIG = dict(image_size=4, output_shape=[1, 2, 16, 16], audio_samples_per_frame=32)  # 2 frames 16², 64 samples


@pytest.fixture(scope="module")
def mm_model():
    return small_model("PerceiverForMultimodalAutoencoding", **MM_CONFIG)


@pytest.fixture(scope="module")
def clip():
    """Two real 16x16 frames in [0, 1] and a 64-sample chirp in [-1, 1]."""
    video = np.stack([data.astronaut()[::32, ::32][:16, :16], data.coffee()[::25, ::25][:16, 8:24]]) / 255
    t = np.arange(64) / 64
    return video.astype(np.float32), (0.8 * np.sin(2 * np.pi * (3 + 10 * t) * t)).astype(np.float32)


def test_released_geometry_gives_the_colab_chunks():
    geometry = ClipGeometry.from_config(PerceiverConfig.released("multimodal-perceiver"))
    assert (geometry.num_frames, geometry.frame_size, geometry.audio_samples) == (16, 224, 30720)
    image_chunks = torch.arange(geometry.pixels).tensor_split(128)
    audio_chunks = torch.arange(geometry.audio_patches).tensor_split(128)
    assert {len(c) for c in image_chunks} == {6272} and {len(c) for c in audio_chunks} == {15}
    assert image_chunks[1][0] == 6272 and audio_chunks[1][0] == 15


def test_autoencode_reassembles_the_chunks(mm_model, clip):
    video, audio = clip
    result = autoencode(mm_model, video, audio, chunks=3, top_k=2)
    # Decoder queries attend independently, so one pass over every point gives the same numbers.
    inputs = {
        "image": torch.from_numpy(video).permute(0, 3, 1, 2)[None],
        "audio": torch.from_numpy(audio)[None, :, None],
        "label": torch.zeros(1, 5),
    }
    points = {"image": torch.arange(2 * 16 * 16), "audio": torch.arange(4), "label": None}
    with torch.no_grad():
        out = mm_model(inputs=inputs, subsampled_output_points=points).logits
    expected_video = out["image"][0].reshape(2, 16, 16, 3).clamp(0, 1).numpy()
    np.testing.assert_allclose(result.video, expected_video, atol=1e-5)
    np.testing.assert_allclose(result.audio, out["audio"][0].clamp(-1, 1).numpy(), atol=1e-5)
    np.testing.assert_allclose(result.label_logits, out["label"][0].numpy(), atol=1e-5)
    probs = out["label"][0].softmax(-1)
    assert [i for i, _ in result.top_k] == probs.topk(2).indices.tolist()
    assert result.chunks == 3
    mse = np.mean((video.astype(np.float64) - expected_video) ** 2)
    assert result.video_psnr == pytest.approx(10 * np.log10(1 / mse), rel=1e-4)
    assert math.isfinite(result.audio_psnr)


def test_autoencode_chunks_are_capped_and_shapes_checked(mm_model, clip):
    video, audio = clip
    assert autoencode(mm_model, video, audio, chunks=128).chunks == 4  # only 4 audio patches of 16 samples
    with pytest.raises(ValueError, match=r"video must be .* \(2, 16, 16, 3\)"):
        autoencode(mm_model, video[:1], audio)
    with pytest.raises(ValueError, match="audio must hold 64 samples"):
        autoencode(mm_model, video, audio[:60])
    with pytest.raises(ValueError, match="chunks must be >= 1"):
        autoencode(mm_model, video, audio, chunks=0)


def test_psnr():
    assert psnr(np.zeros(4), np.full(4, 0.1)) == pytest.approx(20.0)
    assert psnr(np.ones(3), np.ones(3)) == math.inf


def test_center_square_resize_crops_like_the_colab():
    frame = np.random.default_rng(0).integers(0, 256, (5, 9, 3), dtype=np.uint8)
    # crop_center_square: start_x = 9 // 2 - 5 // 2 = 2; at the same size the bilinear resize is the identity.
    np.testing.assert_array_equal(center_square_resize(frame, 5), frame[:, 2:7])
    assert center_square_resize(frame, 3).shape == (3, 3, 3)


def write_test_video(path, frames: np.ndarray, stereo: np.ndarray | None = None, fps: int = 25) -> None:
    """A lossless clip: ffv1 RGB video of ``frames`` (N, H, W, 3) uint8 and, if given, ``stereo`` (S, 2) in [-1, 1]
    as 48 kHz 16-bit PCM."""
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as container:
        video = container.add_stream("ffv1", rate=fps)
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "bgr0"
        # Every stream must exist before the first packet is muxed.
        audio = None if stereo is None else container.add_stream("pcm_s16le", rate=48000, layout="stereo")
        for image in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(video.encode())
        if audio is not None:
            pcm = (stereo * 32767).astype("<i2").reshape(1, -1)  # packed: left, right, left, ...
            samples = av.AudioFrame.from_ndarray(pcm, format="s16", layout="stereo")
            samples.sample_rate = 48000
            container.mux(audio.encode(samples))
            container.mux(audio.encode())


def test_read_clips_cuts_windows_and_takes_channel_0(tmp_path):
    geometry = ClipGeometry.from_config(
        PerceiverConfig.from_dict({**SMALL_CONFIGS["PerceiverForMultimodalAutoencoding"], **MM_CONFIG})
    )
    frames = np.stack([np.roll(data.astronaut()[::16, ::8][:24, :32], k, axis=1) for k in range(5)])  # 24x32
    t = np.arange(200) / 48000
    left, right = 0.5 * np.sin(2 * np.pi * 440 * t), np.full(200, -0.25)
    write_test_video(tmp_path / "clip.mkv", frames, np.stack([left, right], axis=1))

    clips = read_clips(tmp_path / "clip.mkv", geometry)
    assert clips.video.shape == (2, 2, 16, 16, 3)  # 5 frames → 2 windows of 2; the fifth is dropped
    assert clips.has_audio and clips.fps == 25 and clips.sample_rate == 48000
    expected = np.stack([center_square_resize(f, 16) for f in frames[:4]]).reshape(2, 2, 16, 16, 3)
    np.testing.assert_array_equal(clips.video, expected)
    # Channel 0 (left), window n holding samples [64n, 64n + 64), quantised to 16 bits.
    np.testing.assert_allclose(clips.audio.reshape(-1), left[:128], atol=1 / 16384)

    assert read_clips(tmp_path / "clip.mkv", geometry, max_windows=1).video.shape == (1, 2, 16, 16, 3)


def test_read_clips_errors(tmp_path):
    geometry = ClipGeometry.from_config(
        PerceiverConfig.from_dict({**SMALL_CONFIGS["PerceiverForMultimodalAutoencoding"], **MM_CONFIG})
    )
    frames = np.zeros((3, 16, 16, 3), dtype=np.uint8)
    write_test_video(tmp_path / "silent.mkv", frames)
    with pytest.raises(NoAudioTrackError, match="has no audio track; allow_silence=True uses silence"):
        read_clips(tmp_path / "silent.mkv", geometry)
    clips = read_clips(tmp_path / "silent.mkv", geometry, allow_silence=True)
    assert not clips.has_audio and clips.audio.shape == (1, 64) and not clips.audio.any()

    write_test_video(tmp_path / "one.mkv", frames[:1], np.zeros((64, 2)))
    with pytest.raises(ValueError, match="has 1 decodable frames; the model needs 2 per clip"):
        read_clips(tmp_path / "one.mkv", geometry)
    (tmp_path / "text.mkv").write_text("not a video")
    with pytest.raises(ValueError, match="not a readable video"):
        read_clips(tmp_path / "text.mkv", geometry)
    with pytest.raises(ValueError, match="no such file"):
        read_clips(tmp_path / "missing.mkv", geometry)
    PIL.Image.fromarray(data.chelsea()).save(tmp_path / "still.jpg")
    with pytest.raises(ValueError, match=r"still\.jpg is a still image, not a video"):
        read_clips(tmp_path / "still.jpg", geometry, allow_silence=True)
    with pytest.raises(ValueError, match="max_windows must be >= 1"):
        read_clips(tmp_path / "silent.mkv", geometry, max_windows=0)


def test_read_clips_counts_the_frames_it_leaves_out(tmp_path):
    geometry = ClipGeometry.from_config(
        PerceiverConfig.from_dict({**SMALL_CONFIGS["PerceiverForMultimodalAutoencoding"], **MM_CONFIG})
    )
    frames = np.stack([np.roll(data.astronaut()[::16, ::16], k, axis=1) for k in range(7)])
    write_test_video(tmp_path / "seven.mkv", frames, fps=30)
    clips = read_clips(tmp_path / "seven.mkv", geometry, allow_silence=True)
    assert clips.video.shape[0] == 3 and clips.dropped_frames == 1 and clips.fps == 30
    # Reading stopped by max_windows leaves nothing out "at the end": the rest was not asked for.
    assert read_clips(tmp_path / "seven.mkv", geometry, max_windows=2, allow_silence=True).dropped_frames == 0
    assert read_clips(tmp_path / "seven.mkv", geometry, max_windows=5, allow_silence=True).dropped_frames == 1


@pytest.mark.parametrize("fps", [23.976, 25.0, 29.97, 30.0, 12.5])
def test_gif_durations_keep_the_frame_rate(tmp_path, fps):
    """Each frame lasts whole hundredths (the GIF unit), and n frames last n/fps to within 5 ms, written and read
    back by Pillow."""
    durations = gif_durations(50, fps)
    assert all(d % 10 == 0 for d in durations)
    for n in range(1, 51):
        assert abs(sum(durations[:n]) - 1000 * n / fps) <= 5
    frames = np.stack([np.full((4, 4, 3), n / 50) for n in range(50)])
    write_gif(tmp_path / "a.gif", frames, fps)
    with PIL.Image.open(tmp_path / "a.gif") as gif:
        assert [gif.info["duration"] for _ in PIL.ImageSequence.Iterator(gif)] == durations
