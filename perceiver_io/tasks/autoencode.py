"""Video + audio autoencoding and classification, as in DeepMind's video-autoencoding colab.

One clip is ``num_frames`` (16) RGB frames of ``4·image_size`` (224) pixels in [0, 1] plus
``num_frames·audio_samples_per_frame`` (30,720) mono samples in [-1, 1] (48 kHz, 1920 per frame: 25 fps). The
label input is always replaced by the model's mask token, so the label output classifies the clip. The output
is decoded in ``chunks`` parts (128 in the colab), each asking for one slice of the pixels and audio patches; the
colab re-runs the whole model per chunk, here the encoder runs once and only the decoder per chunk (the same
result: the encoder does not see the output queries). The label logits come from the last chunk. All geometry
comes from the model's config.

Reading videos (`read_clips`) needs PyAV: ``pip install perceiver_io[video]``.
"""

from __future__ import annotations

import itertools
import math
import os
import wave
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from torch import nn

from perceiver_io.tasks.common import evaluating, progress_bar, require_head, to_model

AUTOENCODE_HEADS = ("PerceiverForMultimodalAutoencoding",)
SAMPLE_RATE = 48_000  # the colab's audio rate: 1920 samples per frame at 25 fps


@dataclass(frozen=True)
class ClipGeometry:
    """Shapes of one clip, read from a multimodal config.

    ``frame_size``: input (and output) frames are ``frame_size²`` (4·image_size, since the model cuts 4×4
    patches); ``audio_samples``: mono samples per clip; ``samples_per_patch``: samples per audio token.
    """

    num_frames: int
    frame_size: int
    audio_samples: int
    samples_per_patch: int
    num_labels: int

    @classmethod
    def from_config(cls, config) -> ClipGeometry:
        geometry = cls(
            num_frames=config.num_frames,
            frame_size=4 * config.image_size,
            audio_samples=config.num_frames * config.audio_samples_per_frame,
            samples_per_patch=config.samples_per_patch,
            num_labels=config.num_labels,
        )
        output = tuple(config.output_shape[1:4])
        if output != (geometry.num_frames, geometry.frame_size, geometry.frame_size):
            raise ValueError(
                f"autoencode needs output_shape[1:] == (num_frames, 4·image_size, 4·image_size) = "
                f"{(geometry.num_frames, geometry.frame_size, geometry.frame_size)}; the config has {output}"
            )
        return geometry

    @property
    def pixels(self) -> int:
        return self.num_frames * self.frame_size**2

    @property
    def audio_patches(self) -> int:
        return self.audio_samples // self.samples_per_patch


@dataclass
class AutoencodeResult:
    """``video``: (T, S, S, 3) in [0, 1] (clipped); ``audio``: (A,) in [-1, 1] (clipped); ``label_logits``:
    (K,); ``top_k``: (class index, softmax probability) pairs; ``chunks``: decoding passes actually made."""

    video: np.ndarray
    audio: np.ndarray
    label_logits: np.ndarray
    video_psnr: float
    audio_psnr: float
    top_k: list[tuple[int, float]]
    chunks: int


def psnr(reference: np.ndarray, estimate: np.ndarray, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio ``10·log10(peak² / MSE)`` in dB (inf for identical signals)."""
    mse = float(np.mean((np.asarray(reference, np.float64) - np.asarray(estimate, np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def autoencode(
    model: nn.Module,
    video: np.ndarray,
    audio: np.ndarray,
    chunks: int = 128,
    top_k: int = 5,
    progress: bool = False,
) -> AutoencodeResult:
    """Reconstruct one clip and classify it.

    Args:
        model: a ``PerceiverForMultimodalAutoencoding``. A bf16 model gets the clip cast to bf16 (`to_model`);
            the reconstruction and logits are converted to float32 before clamping, PSNR and softmax.
        video: (T, S, S, 3) floats in [0, 1], T and S from the config (16 and 224 for the released model).
        audio: (A,) or (A, 1) floats in [-1, 1], A = T·audio_samples_per_frame (30,720).
        chunks: decoding passes; more passes, less memory each. It is reduced to the number of audio patches
            (or pixels) when that is smaller, since every pass must decode at least one of each.
        top_k: classes reported.
        progress: show a tqdm bar over the chunks.

    Returns:
        `AutoencodeResult`; PSNRs use peak 1 for video in [0, 1] and for audio in [-1, 1].

    Raises:
        TypeError: ``model`` is not the multimodal autoencoder.
        ValueError: a clip of the wrong shape, or ``chunks`` < 1.
    """
    require_head(model, AUTOENCODE_HEADS, "autoencode")
    geometry = ClipGeometry.from_config(model.config)
    video = np.asarray(video, dtype=np.float32)
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    t, s = geometry.num_frames, geometry.frame_size
    if video.shape != (t, s, s, 3):
        raise ValueError(f"video must be (frames, height, width, 3) = {(t, s, s, 3)} for this model; got {video.shape}")
    if audio.shape != (geometry.audio_samples,):
        raise ValueError(f"audio must hold {geometry.audio_samples} samples for this model; got {audio.shape[0]}")
    if chunks < 1:
        raise ValueError(f"chunks must be >= 1, got {chunks}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    for name, values in (("video", video), ("audio", audio)):
        bad = int((~np.isfinite(values)).sum())
        if bad:
            raise ValueError(f"{name} holds {bad} NaN or infinite values")
    chunks = min(chunks, geometry.audio_patches, geometry.pixels)

    inputs = {
        "image": to_model(torch.from_numpy(video).permute(0, 3, 1, 2)[None], model),  # (1, T, 3, S, S)
        "audio": to_model(torch.from_numpy(audio)[None, :, None], model),  # (1, A, 1)
        "label": to_model(torch.zeros(1, geometry.num_labels), model),  # replaced by the mask token anyway
    }
    image_parts = torch.arange(geometry.pixels).tensor_split(chunks)
    audio_parts = torch.arange(geometry.audio_patches).tensor_split(chunks)
    images, sounds = [], []
    bar = progress_bar(chunks, "chunk", progress)
    with evaluating(model):
        encoded = model.perceiver.encode(inputs)  # once: every chunk decodes from the same latents
        for image_idx, audio_idx in zip(image_parts, audio_parts, strict=True):
            points = {"image": to_model(image_idx, model), "audio": to_model(audio_idx, model), "label": None}
            logits = model.perceiver.decode(encoded, points).logits
            images.append(logits["image"][0].float().cpu())  # (n_pixels, 3)
            sounds.append(logits["audio"][0].float().cpu())  # (n_patches · samples_per_patch,)
            bar.update()
    bar.close()
    label_logits = logits["label"][0].float().cpu()  # the colab keeps the last chunk's

    recon_video = torch.cat(images).reshape(t, s, s, 3).clamp(0, 1).numpy()
    recon_audio = torch.cat(sounds).clamp(-1, 1).numpy()
    probs = label_logits.softmax(dim=-1)
    top_p, top_i = probs.topk(min(top_k, probs.shape[0]))
    return AutoencodeResult(
        video=recon_video,
        audio=recon_audio,
        label_logits=label_logits.numpy(),
        video_psnr=psnr(video, recon_video),
        audio_psnr=psnr(audio, recon_audio),
        top_k=list(zip(top_i.tolist(), top_p.tolist(), strict=True)),
        chunks=chunks,
    )


# --------------------------------------------------------------------------------------------------------
# Reading clips from a video file (PyAV)


@dataclass
class Clips:
    """``video``: uint8 (N, T, S, S, 3) windows of consecutive frames; ``audio``: float32 (N, A) channel 0 of
    the soundtrack resampled to ``sample_rate``, window n holding samples ``[n·A, (n+1)·A)``, zero-padded
    past the end (all zeros without a soundtrack); ``fps``: the video's frame rate; ``dropped_frames``: frames
    at the end of the video too few to fill a window, left out (0 when ``max_windows`` stopped the reading)."""

    video: np.ndarray
    audio: np.ndarray
    fps: float
    sample_rate: int
    has_audio: bool
    dropped_frames: int = 0


class NoAudioTrackError(ValueError):
    """The video has no soundtrack and silence was not allowed (``read_clips(..., allow_silence=True)``)."""


def center_square_resize(frame: np.ndarray, size: int) -> np.ndarray:
    """The colab's frame preparation: centre square crop (offset ``W//2 - min//2``), then
    ``cv2.resize(..., (size, size))`` (bilinear, no antialiasing); uint8 ``[H, W, 3]`` → ``[size, size, 3]``."""
    height, width = frame.shape[:2]
    side = min(height, width)
    top, left = height // 2 - side // 2, width // 2 - side // 2
    square = torch.from_numpy(np.ascontiguousarray(frame[top : top + side, left : left + side]))
    resized = F.interpolate(square.permute(2, 0, 1)[None].float(), size=(size, size), mode="bilinear")
    return resized.round().clamp(0, 255)[0].permute(1, 2, 0).numpy().astype(np.uint8)


def _import_av():
    try:
        import av
    except ImportError:
        raise ImportError("reading video needs PyAV: pip install perceiver_io[video]") from None
    return av


def read_clips(
    path: str | os.PathLike[str],
    geometry: ClipGeometry,
    max_windows: int | None = None,
    allow_silence: bool = False,
    sample_rate: int = SAMPLE_RATE,
) -> Clips:
    """Cut a video file into the model's clips: every full window of ``num_frames`` frames (at most
    ``max_windows``), frames prepared by `center_square_resize`, and the matching audio.

    As in the colab, audio is assigned by sample count (``audio_samples`` per window from the start), not by
    time stamps: it stays in sync only for 25 fps video at 48 kHz. Undecodable packets are skipped.

    Frames after the last full window are left out; `Clips.dropped_frames` says how many.

    Raises:
        ImportError: PyAV is missing.
        ValueError: not a readable video (a still image included), fewer frames than one window.
        NoAudioTrackError: no soundtrack, and ``allow_silence`` is False.
    """
    if max_windows is not None and max_windows < 1:
        raise ValueError(f"max_windows must be >= 1 (or None for all), got {max_windows}")
    if sample_rate < 1:
        raise ValueError(f"sample_rate must be >= 1, got {sample_rate}")
    av = _import_av()
    if not os.path.isfile(path):
        raise ValueError(f"{os.fspath(path)}: no such file")
    try:
        container = av.open(os.fspath(path))
    except av.FFmpegError as err:
        raise ValueError(f"{os.fspath(path)}: not a readable video ({err})") from None
    with container:
        if not container.streams.video:
            raise ValueError(f"{os.fspath(path)} has no video stream")
        # FFmpeg opens a PNG or JPEG as a one-frame video ("png_pipe"); it is not what the user meant.
        if container.format.name.endswith("_pipe") or container.format.name == "image2":
            raise ValueError(f"{os.fspath(path)} is a still image, not a video")
        if not container.streams.audio and not allow_silence:
            raise NoAudioTrackError(f"{os.fspath(path)} has no audio track; allow_silence=True uses silence")
        has_audio = bool(container.streams.audio)
        frames, audio, fps = _decode(av, container, geometry, max_windows, sample_rate)
    windows = len(frames) // geometry.num_frames
    if windows == 0:
        raise ValueError(
            f"{os.fspath(path)} has {len(frames)} decodable frames; the model needs {geometry.num_frames} per clip"
        )
    stopped_early = max_windows is not None and windows >= max_windows
    dropped = 0 if stopped_early else len(frames) - windows * geometry.num_frames
    video = np.stack(frames[: windows * geometry.num_frames])
    video = video.reshape(windows, geometry.num_frames, *video.shape[1:])
    samples = np.zeros(windows * geometry.audio_samples, dtype=np.float32)
    used = min(len(audio), len(samples))
    samples[:used] = audio[:used]
    return Clips(
        video=video,
        audio=samples.reshape(windows, geometry.audio_samples),
        fps=fps,
        sample_rate=sample_rate,
        has_audio=has_audio,
        dropped_frames=dropped,
    )


def _decode(av, container, geometry: ClipGeometry, max_windows: int | None, sample_rate: int):
    """Demux once; returns (list of uint8 frames, float32 channel-0 samples, fps). Stops early once
    ``max_windows`` windows of frames and of audio are in."""
    video_stream = container.streams.video[0]
    audio_stream = container.streams.audio[0] if container.streams.audio else None
    want_frames = None if max_windows is None else max_windows * geometry.num_frames
    want_samples = None if max_windows is None else max_windows * geometry.audio_samples
    resampler = av.AudioResampler(format="fltp", rate=sample_rate)
    frames: list[np.ndarray] = []
    pieces: list[np.ndarray] = []
    have_samples = 0
    streams = [video_stream] if audio_stream is None else [video_stream, audio_stream]
    for packet in container.demux(*streams):
        try:
            decoded = packet.decode()
        except av.InvalidDataError:  # a corrupt packet (Megamind.avi has one): skip it, as ffmpeg does
            continue
        for frame in decoded:
            if packet.stream.type == "video":
                if want_frames is None or len(frames) < want_frames:
                    frames.append(center_square_resize(frame.to_ndarray(format="rgb24"), geometry.frame_size))
            else:
                for chunk in resampler.resample(frame):
                    pieces.append(chunk.to_ndarray()[0])  # planar float: row 0 is channel 0
                    have_samples += pieces[-1].shape[0]
        if want_frames is not None and len(frames) >= want_frames:
            if audio_stream is None or have_samples >= want_samples:
                break
    if audio_stream is not None and (want_samples is None or have_samples < want_samples):
        pieces.extend(chunk.to_ndarray()[0] for chunk in resampler.resample(None))
    audio = np.concatenate(pieces).astype(np.float32) if pieces else np.zeros(0, np.float32)
    fps = float(video_stream.average_rate) if video_stream.average_rate else 25.0
    return frames, audio, fps


# --------------------------------------------------------------------------------------------------------
# Writing results


def gif_durations(count: int, fps: float) -> list[int]:
    """Display times in milliseconds of ``count`` frames at ``fps``, each a whole number of hundredths (all a
    GIF stores): frame n ends at ``round(100·(n+1)/fps)`` hundredths, so the GIF keeps the video's rate on
    average (23.976 fps alternates 40 and 50 ms) instead of rounding every frame the same way (25 fps)."""
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    ends = [round(100 * n / fps) for n in range(count + 1)]
    return [10 * max(1, end - start) for start, end in itertools.pairwise(ends)]


def write_gif(path: str | os.PathLike[str], frames: np.ndarray, fps: float) -> None:
    """Frames (N, H, W, 3) in [0, 1] → an endlessly looping GIF at ``fps`` on average (`gif_durations`)."""
    images = [PIL.Image.fromarray(np.rint(f * 255).astype(np.uint8)) for f in np.clip(frames, 0, 1)]
    durations = gif_durations(len(images), fps)
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0)


def write_wav(path: str | os.PathLike[str], samples: np.ndarray, sample_rate: int) -> None:
    """Mono samples in [-1, 1] → a 16-bit PCM WAV file (stdlib ``wave``)."""
    pcm = np.rint(np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(os.fspath(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())


def reconstruction_strip(
    inputs: np.ndarray, outputs: np.ndarray, max_frames: int = 8, min_height: int = 96
) -> np.ndarray:
    """Input frames above their reconstructions: (N, H, W, 3) in [0, 1] each → uint8 image.

    Up to ``max_frames`` frames evenly spaced over N; small frames are enlarged by an integer factor
    (nearest neighbour) to at least ``min_height`` pixels, with a 2-pixel white gap between frames.
    """
    picks = np.unique(np.linspace(0, len(inputs) - 1, min(max_frames, len(inputs))).round().astype(int))
    scale = max(1, math.ceil(min_height / inputs.shape[1]))
    rows = []
    for frames in (inputs, outputs):
        tiles = [np.rint(np.clip(frames[i], 0, 1) * 255).astype(np.uint8) for i in picks]
        tiles = [t.repeat(scale, axis=0).repeat(scale, axis=1) for t in tiles]
        rows.append(_join(tiles, axis=1))
    return _join(rows, axis=0)


def _join(images: Sequence[np.ndarray], axis: int, gap: int = 2) -> np.ndarray:
    shape = list(images[0].shape)
    shape[axis] = gap
    spacer = np.full(shape, 255, dtype=np.uint8)
    parts = [p for image in images for p in (image, spacer)][:-1]
    return np.concatenate(parts, axis=axis)
