"""The ``perceiver`` command: DeepMind's four Perceiver IO colabs, plus checkpoint conversion, inspection and export.

Each subcommand is two functions, ``<name>_arguments(parser)`` declaring its options and ``run_<name>(args)``
doing the work and returning None or an exit status (its docstring is the subcommand's ``--help`` text),
registered by one line in ``COMMANDS``.
Errors a user can fix (bad files, wrong model, bad arguments, missing extra) end with exit status 2 and one
line on stderr; ``--traceback`` shows the full traceback instead. A folder run that could not read some of its
files reports each on stderr, goes on with the rest and ends with exit status 1.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import PIL.Image
from torch import nn

from perceiver_io.allocator import keep_freed_memory
from perceiver_io.released import RELEASED
from perceiver_io.tasks.common import IMAGE_CLASSIFIERS, require_head

USER_ERRORS = (ValueError, TypeError, OSError, ImportError)
# Exit status of a run that finished but could not read some of its inputs (each reported on stderr).
SOME_INPUTS_FAILED = 1
# Files of a transformers model folder besides config.json and the weights, copied by `convert`.
SIDE_FILES = ("preprocessor_config.json", "tokenizer_config.json", "special_tokens_map.json")


# --------------------------------------------------------------------------------------------------------
# Shared helpers

# A Hugging Face hub id: owner/name, each starting with a letter or digit.
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
# Endings that mark a file name rather than a hub id.
DEEPMIND_SUFFIXES = (".pickle", ".pystate", ".pkl")
FILE_SUFFIXES = (*DEEPMIND_SUFFIXES, ".safetensors", ".bin", ".pt", ".pth", ".json")


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its usage errors on one line (``perceiver COMMAND: error: …``), exit status 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is less than {minimum}")
        return value

    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a positive finite number")
    return value


def _add_model_argument(parser: argparse.ArgumentParser, released: str) -> None:
    parser.add_argument(
        "-m",
        "--model",
        required=True,
        help="model folder (config.json + weights, as save_pretrained writes), DeepMind checkpoint file, or "
        f"Hugging Face hub id (needs network and perceiver_io[hub]); the released one is {RELEASED[released].hub_id}",
    )


def _add_precision_argument(parser: argparse.ArgumentParser) -> None:
    from perceiver_io.inference import PRECISIONS

    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="fp32 (default); bf16: weights in bfloat16 and the inputs cast to bfloat16 where they enter the model "
        "(outputs converted back to float32); int8: every linear dynamically quantized to int8 (torch's "
        "quantize_dynamic). Speed-up over fp32 on an AMX-BF16 CPU: bf16 2.5-4.0x, int8 1.1-1.8x; accuracy cost: "
        "benchmarks/results/precision.md",
    )


def check_model_source(source: str) -> None:
    """Refuse a model source that is neither an existing file or folder nor shaped like a hub id (owner/name).

    ``runs/modle`` is shaped like a hub id, but when ``runs`` is a folder here it is a mistyped path, and the
    user hears "no such file or folder" rather than a network error.
    """
    path = Path(source)
    if path.is_file() and path.suffix not in DEEPMIND_SUFFIXES:
        raise ValueError(
            f"{source} is a file; expected a model folder (config.json + weights) or a DeepMind checkpoint "
            f"({', '.join(DEEPMIND_SUFFIXES)})"
        )
    if path.exists():
        return
    owner = source.split("/", 1)[0]
    if not HUB_ID.fullmatch(source) or source.lower().endswith(FILE_SUFFIXES):
        raise FileNotFoundError(f"{source}: no such file or folder (nor a Hugging Face hub id, owner/name)")
    if Path(owner).is_dir():
        raise FileNotFoundError(f"{source}: no such file or folder ({owner}/ is a folder here, so it is not read "
                                "as a Hugging Face hub id)")  # fmt: skip


def load_checked(source: str) -> nn.Module:
    """`load_model` behind `check_model_source`; any failure becomes an error naming ``source``."""
    from perceiver_io.checkpoints.loading import load_model

    check_model_source(source)
    try:
        return load_model(source)
    except USER_ERRORS:
        raise
    except Exception as err:  # e.g. safetensors' or pickle's own errors on a damaged file: name the source
        raise ValueError(f"{source}: not a loadable model ({type(err).__name__}: {err})") from err


def _load(source: str, heads: tuple[str, ...], task: str, precision: str) -> nn.Module:
    """The model at ``source``, checked to be one of ``heads``, through ``optimize_for_inference(precision)``."""
    from perceiver_io.inference import optimize_for_inference

    model = load_checked(source)
    require_head(model, heads, task)
    return optimize_for_inference(model, precision)


def _read_labels(path: str | None) -> list[str] | None:
    """One class name per line (blank lines kept as names, so line n is class n)."""
    if path is None:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ValueError(f"{path}: no such labels file") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: a labels file must be UTF-8 text ({err.reason} at byte {err.start})") from None


def _output_prefix(output: str) -> Path:
    """``-o OUT``, ``OUT.flo`` or ``OUT.png`` → ``OUT``, with its folder created."""
    prefix = Path(output)
    if prefix.suffix in (".flo", ".png"):
        prefix = prefix.with_suffix("")
    _make_folder(prefix.parent)
    return prefix


def _make_folder(folder: Path) -> None:
    """Create ``folder`` (and its parents) unless it exists; a file in the way is named."""
    for part in (folder, *folder.parents):
        if part.exists() and not part.is_dir():
            raise ValueError(f"{part} is a file, so the output folder {folder} cannot be made")
    folder.mkdir(parents=True, exist_ok=True)


def _save_png(path: Path, image: np.ndarray) -> None:
    PIL.Image.fromarray(image).save(path)


def describe_io(model: nn.Module) -> str:
    """One paragraph on what ``model`` takes and returns, with the geometry from its config."""
    c = model.config
    head = type(model).__name__
    if head == "PerceiverForMaskedLM":
        return (
            f"text as UTF-8 bytes (token = byte + 6), up to {c.max_position_embeddings} bytes; returns byte logits "
            f"({c.max_position_embeddings}, {c.vocab_size}). Command: perceiver fill-mask"
        )
    if head == "PerceiverForSequenceClassification":
        return f"text as UTF-8 bytes, up to {c.max_position_embeddings} bytes; returns {c.num_labels} class logits"
    if head in IMAGE_CLASSIFIERS:
        return (
            f"RGB images cropped and resized to {c.image_size}x{c.image_size}, normalised with the ImageNet "
            f"mean/std; returns {c.num_labels} class logits. Command: perceiver classify"
        )
    if head == "PerceiverForOpticalFlow":
        th, tw = c.train_size
        return (
            f"two RGB frames of any size, seen in {th}x{tw} tiles as 3x3 patches (B, 2, 27, {th}, {tw}); "
            "returns flow (B, H, W, 2) in pixels / 20. Command: perceiver flow"
        )
    if head == "PerceiverForMultimodalAutoencoding":
        size, samples = 4 * c.image_size, c.num_frames * c.audio_samples_per_frame
        return (
            f"clips of {c.num_frames} RGB frames of {size}x{size} in [0, 1], {samples} mono audio samples "
            f"({c.audio_samples_per_frame} per frame) and {c.num_labels} label slots (masked); returns the "
            f"reconstructed video and audio and {c.num_labels} class logits. Command: perceiver autoencode"
        )
    return "unknown head"


# --------------------------------------------------------------------------------------------------------
# fill-mask


def _span(text: str) -> tuple[int, int]:
    start, sep, end = text.partition(":")
    if not sep or not start.isdigit() or not end.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a byte range START:END, e.g. 51:60")
    return int(start), int(end)


def _show_token(token: str) -> str:
    """Quote single characters so that spaces show; special tokens and ``\\xNN`` bytes read fine bare."""
    return repr(token) if len(token) == 1 else token


def fill_mask_arguments(parser: argparse.ArgumentParser) -> None:
    _add_model_argument(parser, "language-perceiver")
    _add_precision_argument(parser)
    parser.add_argument("text", help="the text, or - to read it from stdin (without its final newline)")
    parser.add_argument(
        "--mask",
        type=_span,
        action="append",
        default=[],
        metavar="START:END",
        help="byte range to mask (end exclusive), repeatable; the text is then taken literally",
    )
    parser.add_argument("--top-k", type=_at_least(1), default=5, help="candidates shown per masked byte (default 5)")


def run_fill_mask(args: argparse.Namespace) -> None:
    """Predict masked bytes of a text (DeepMind's masked-language-modelling colab).

    Input: a text and what to mask, either as byte ranges (--mask 51:60) or as markers in the text:
      [MASK:n]   n unknown bytes to predict
      [[text]]   mask the bytes of "text" and show them next to the prediction
    The text is UTF-8 encoded (token = byte + 6) without special tokens and padded to the model's window
    (2048 bytes); longer text is refused, not chunked.

    Output: the text with the masked bytes filled in, each span's prediction, and the top-k bytes with
    probabilities for every masked position.

    Example (the colab's sentence; DeepMind's weights predict " missing."):
      perceiver fill-mask -m deepmind/language-perceiver \\
          "This is an incomplete sentence where some words are missing." --mask 51:60
    """
    from perceiver_io.tasks.fill_mask import FILL_MASK_HEADS, fill_mask

    # The newline that ends piped input (echo, a file) is not part of the text.
    text = sys.stdin.read().removesuffix("\n") if args.text == "-" else args.text
    model = _load(args.model, FILL_MASK_HEADS, "fill-mask", args.precision)
    result = fill_mask(model, text, args.mask or None, top_k=args.top_k)
    print(f"filled: {result.text}")
    for (start, end), predicted, original in zip(result.spans, result.predictions, result.original, strict=True):
        was = "" if original is None else f"  (original {original!r})"
        print(f"bytes {start}:{end}: {predicted!r}{was}")
    for pos in result.positions:
        candidates = "  ".join(f"{_show_token(token)} {p:.3f}" for token, p in pos.top_k)
        print(f"  {pos.position:5d}  {candidates}")


# --------------------------------------------------------------------------------------------------------
# classify


def _image_paths(sources: Sequence[str]) -> list[Path]:
    """Files as given, folders expanded to their image files (by extension, sorted, not recursive)."""
    extensions = {ext for ext, _ in PIL.Image.registered_extensions().items()}
    paths: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            found = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in extensions)
            if not found:
                raise ValueError(f"{source}: no image files in this folder")
            paths.extend(found)
        else:
            paths.append(source)
    return paths


def classify_arguments(parser: argparse.ArgumentParser) -> None:
    _add_model_argument(parser, "vision-perceiver-conv")
    _add_precision_argument(parser)
    parser.add_argument("images", nargs="+", help="image files and/or folders of images")
    parser.add_argument("--top-k", type=_at_least(1), default=5, help="classes shown per image (default 5)")
    parser.add_argument(
        "--processor",
        choices=("original", "transformers"),
        default="original",
        help="original: DeepMind's colab (crop, cv2-style bicubic, uint8, normalise; default); transformers: "
        "PerceiverImageProcessor, equal to transformers' (the model folder's preprocessor_config.json if any)",
    )
    parser.add_argument("--labels", metavar="FILE", help="class names, one per line (default: the model's)")
    parser.add_argument("--batch-size", type=_at_least(1), default=8, help="images per forward pass (default 8)")


def run_classify(args: argparse.Namespace) -> int:
    """Classify images (DeepMind's ImageNet colab).

    Input: image files or folders of them (not recursive), any size: 8- and 16-bit, float TIFFs in [0, 1],
    grey, palette, transparent (composited over white). Each image is centre-cropped to 224/256 of its
    shorter side, resized to the model's image size (224) and normalised.

    Output: for each image, its path and the top-k classes with softmax probabilities, printed as each batch
    is done. Class names come from --labels, else the model's id2label, else the 1000 ImageNet names for a
    1000-class model. A progress bar is shown on stderr for more than one batch.

    A file that cannot be read is reported on stderr (one line) and the others are classified; the exit
    status is then 1 (0 when every image was classified, 2 on an error that stops the run).
    """
    from perceiver_io.tasks.classify import class_names, classify, transformers_processor
    from perceiver_io.tasks.common import progress_bar
    from perceiver_io.tasks.images import load_image

    paths = _image_paths(args.images)
    model = _load(args.model, IMAGE_CLASSIFIERS, "classify", args.precision)
    labels = class_names(model, _read_labels(args.labels))  # checked before any image is read
    processor = args.processor
    if processor == "transformers":
        folder = args.model if Path(args.model).is_dir() else None
        processor = transformers_processor(model.config.image_size, folder)
    failed = 0
    bar = progress_bar(len(paths), "image", len(paths) > args.batch_size)
    for start in range(0, len(paths), args.batch_size):
        # Read batch by batch, so a folder of thousands never sits in memory at once.
        batch: list[tuple[Path, np.ndarray]] = []
        for path in paths[start : start + args.batch_size]:
            try:
                batch.append((path, load_image(path)))
            except ValueError as err:
                failed += 1
                bar.write(f"perceiver classify: error: {one_line(str(err))}", file=sys.stderr)  # above the bar
        images = [image for _, image in batch]
        results = classify(model, images, args.top_k, processor, labels, len(images)) if images else []
        for (path, _), top in zip(batch, results, strict=True):
            print(path)
            for rank, (name, prob) in enumerate(top, 1):
                print(f"  {rank}. {prob:7.2%}  {name}")
        bar.update(min(args.batch_size, len(paths) - start))
    bar.close()
    if failed:
        print(
            f"perceiver classify: error: {failed} of {len(paths)} image(s) could not be read (see above); "
            f"{len(paths) - failed} classified",
            file=sys.stderr,
        )
        return SOME_INPUTS_FAILED
    return 0


# --------------------------------------------------------------------------------------------------------
# flow


def flow_arguments(parser: argparse.ArgumentParser) -> None:
    _add_model_argument(parser, "optical-flow-perceiver")
    _add_precision_argument(parser)
    parser.add_argument("frame1", help="first frame (image file)")
    parser.add_argument("frame2", help="second frame, same size as the first")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="output prefix: writes OUT.flo, OUT.png")
    parser.add_argument("--arrows", action="store_true", help="also write OUT_arrows.png: vectors over frame 1")
    parser.add_argument("--arrow-step", type=_at_least(1), default=16, help="arrow grid spacing in pixels (default 16)")
    parser.add_argument(
        "--arrow-scale",
        type=_positive_float,
        metavar="S",
        help="arrow length per pixel of flow (default: the longest arrow is 0.9 x --arrow-step)",
    )
    parser.add_argument("--gt", metavar="FILE.flo", help="ground-truth flow: print the end-point error against it")
    parser.add_argument("--show-gt", action="store_true", help="also write OUT_gt.png, the ground truth colour-coded")
    parser.add_argument(
        "--max-flow",
        type=_positive_float,
        metavar="PX",
        help="magnitude shown fully saturated (default: each field's maximum)",
    )
    parser.add_argument("--overlap", type=_at_least(0), help="minimum tile overlap in pixels (default 20)")


def run_flow(args: argparse.Namespace) -> None:
    """Optical flow from frame 1 to frame 2 (DeepMind's optical-flow colab).

    Input: two RGB frames of the same size, any size (image files as for classify): the model sees tiles of
    its training size (368x496) blended with pyramid weights; frames smaller than a tile are edge-padded.
    Pixel values are scaled to [-1, 1] and the output scaled by 20 to pixels, as in the colab.

    Output: OUT.flo (Middlebury format, float32 u, v in pixels, v down) and OUT.png (Middlebury colour code
    with a colour-wheel legend: hue = direction, saturation = magnitude); with --arrows, OUT_arrows.png, arrows
    scaled so the longest is 0.9 x --arrow-step unless --arrow-scale; with --gt FILE.flo, the mean end-point
    error over the pixels with ground truth (pixels holding NaN, inf or |value| > 1e9, the Middlebury "unknown",
    are left out and counted); with --show-gt, OUT_gt.png, the ground truth in the same colour code.
    """
    from perceiver_io.tasks.flow_utils import (
        arrow_scale,
        end_point_error,
        flow_arrows,
        flow_to_color_with_legend,
        known_flow,
        read_flo,
        visible_arrows,
        write_flo,
    )
    from perceiver_io.tasks.images import load_image
    from perceiver_io.tasks.optical_flow import FLOW_HEADS, optical_flow

    if args.show_gt and not args.gt:
        raise ValueError("--show-gt needs --gt FILE.flo")
    if args.arrow_scale is not None and not args.arrows:
        raise ValueError("--arrow-scale needs --arrows")
    frame1, frame2 = load_image(args.frame1), load_image(args.frame2)
    gt = None if args.gt is None else read_flo(args.gt)
    if gt is not None and gt.shape[:2] != frame1.shape[:2]:
        raise ValueError(
            f"--gt flow is {gt.shape[0]}x{gt.shape[1]} but the frames are {frame1.shape[0]}x{frame1.shape[1]}"
        )
    if gt is not None and not known_flow(gt).any():
        raise ValueError(f"--gt {args.gt}: no pixel has ground truth (all NaN, inf or |value| > 1e9)")
    model = _load(args.model, FLOW_HEADS, "flow", args.precision)
    tile = tuple(int(t) for t in model.config.train_size)
    if args.overlap is not None and args.overlap >= min(tile):
        raise ValueError(f"--overlap {args.overlap} must be less than {min(tile)}, the shorter side of the model's "
                         f"{tile[0]}x{tile[1]} tiles")  # fmt: skip
    prefix = _output_prefix(args.output)  # before the work: an output folder that cannot be made fails now
    flow = optical_flow(model, frame1, frame2, min_overlap=args.overlap, progress=True)

    written = [prefix.with_suffix(".flo"), prefix.with_suffix(".png")]
    write_flo(written[0], flow)
    _save_png(written[1], flow_to_color_with_legend(flow, args.max_flow))
    if args.arrows:
        scale = arrow_scale(flow, args.arrow_step) if args.arrow_scale is None else args.arrow_scale
        written.append(prefix.with_name(prefix.name + "_arrows.png"))
        _save_png(written[-1], flow_arrows(frame1, flow, step=args.arrow_step, scale=scale))
        drawn = visible_arrows(flow, args.arrow_step, scale)
        if scale == 0:
            print("arrows: none drawn, the flow is zero everywhere")
        else:
            print(f"arrows: {drawn} drawn, {scale:.4g} px per pixel of flow" + ("" if drawn else " (all under 1 px)"))
    if gt is not None:
        known = known_flow(gt)
        unknown = known.size - int(known.sum())
        print(
            f"end-point error: {end_point_error(flow, gt):.3f} px over {int(known.sum())} pixels with ground truth "
            f"({unknown} without: NaN, inf or |value| > 1e9)"
        )
        if args.show_gt:
            written.append(prefix.with_name(prefix.name + "_gt.png"))
            _save_png(written[-1], flow_to_color_with_legend(gt, args.max_flow))
    magnitude = np.hypot(flow[..., 0], flow[..., 1])
    print(f"flow {flow.shape[0]}x{flow.shape[1]}: mean {magnitude.mean():.3f} px, max {magnitude.max():.3f} px")
    print("wrote " + ", ".join(map(str, written)))


# --------------------------------------------------------------------------------------------------------
# autoencode


def autoencode_arguments(parser: argparse.ArgumentParser) -> None:
    _add_model_argument(parser, "multimodal-perceiver")
    _add_precision_argument(parser)
    parser.add_argument("video", help="video file with a soundtrack (anything FFmpeg reads; needs perceiver_io[video])")
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for the results")
    parser.add_argument(
        "--chunks", type=_at_least(1), default=128, help="decoding passes per clip (default 128, the colab's)"
    )
    parser.add_argument("--max-windows", type=_at_least(1), help="clips to process from the start (default: all)")
    parser.add_argument("--no-audio", action="store_true", help="use silence for a video without a soundtrack")
    parser.add_argument("--labels", metavar="FILE", help="class names, one per line (default: class indices)")
    parser.add_argument("--top-k", type=_at_least(1), default=5, help="classes shown (default 5)")
    parser.add_argument(
        "--sample-rate", type=_at_least(1), default=48_000, help="audio rate the model expects (default 48000)"
    )


def run_autoencode(args: argparse.Namespace) -> None:
    """Reconstruct and classify a video with its sound (DeepMind's video-autoencoding colab).

    Input: a video file. It is cut into clips of the model's frame count (16); frames are centre-cropped to
    a square and resized to the model's size (224x224); the soundtrack's first channel is resampled to 48 kHz
    and each clip gets the next frames x samples-per-frame samples (30,720), as in the colab. Each clip is
    decoded in --chunks passes (128).

    Frames after the last full clip are left out, and the command says how many (e.g. the last 14 of
    Megamind.avi's 270 frames with 16-frame clips).

    Output in OUTDIR: reconstruction.gif (all clips' frames at the video's frame rate, e.g. 23.976 fps as
    alternating 40 and 50 ms frames, since a GIF counts in hundredths of a second), reconstruction.wav
    (16-bit mono), strip.png (input frames above their reconstructions). Printed: video and audio PSNR
    (peak 1, over all clips) and the top-k classes of the clip probabilities averaged over clips, with
    names from --labels.
    """
    from perceiver_io.tasks.autoencode import (
        AUTOENCODE_HEADS,
        ClipGeometry,
        NoAudioTrackError,
        autoencode,
        psnr,
        read_clips,
        reconstruction_strip,
        write_gif,
        write_wav,
    )
    from perceiver_io.tasks.classify import class_names

    model = _load(args.model, AUTOENCODE_HEADS, "autoencode", args.precision)
    names = class_names(model, _read_labels(args.labels))
    geometry = ClipGeometry.from_config(model.config)
    try:
        clips = read_clips(args.video, geometry, args.max_windows, args.no_audio, args.sample_rate)
    except NoAudioTrackError:
        raise ValueError(f"{args.video} has no audio track; pass --no-audio to use silence") from None
    count = len(clips.video)
    out = Path(args.output)
    _make_folder(out)  # before the work: a folder that cannot be made fails now
    inputs = clips.video.astype(np.float32) / 255
    results = []
    for n in range(count):
        print(f"clip {n + 1}/{count}", file=sys.stderr)
        results.append(autoencode(model, inputs[n], clips.audio[n], args.chunks, progress=True))

    frames_in = inputs.reshape(-1, *inputs.shape[2:])
    frames_out = np.concatenate([r.video for r in results])
    audio_out = np.concatenate([r.audio for r in results])
    write_gif(out / "reconstruction.gif", frames_out, clips.fps)
    write_wav(out / "reconstruction.wav", audio_out, clips.sample_rate)
    _save_png(out / "strip.png", reconstruction_strip(frames_in, frames_out))

    print(
        f"{count} clip(s) of {geometry.num_frames} frames at {geometry.frame_size}x{geometry.frame_size} and "
        f"{geometry.audio_samples} audio samples, decoded in {results[0].chunks} chunks each"
    )
    if clips.dropped_frames:
        total = count * geometry.num_frames + clips.dropped_frames
        print(
            f"left out: the last {clips.dropped_frames} of {total} frames, too few for a clip of {geometry.num_frames}"
        )
    print(f"video PSNR: {psnr(frames_in, frames_out):.2f} dB")
    print(f"audio PSNR: {psnr(clips.audio.reshape(-1), audio_out):.2f} dB" + ("" if clips.has_audio else " (silence)"))
    logits = np.stack([r.label_logits for r in results]).astype(np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = (probs / probs.sum(axis=1, keepdims=True)).mean(axis=0)
    print(f"top-{min(args.top_k, len(probs))} classes (mean over clips):")
    for rank, index in enumerate(np.argsort(-probs, kind="stable")[: args.top_k], 1):
        name = "" if names[index] == str(index) else f"  {names[index]}"  # no names: the index alone
        print(f"  {rank}. {probs[index]:7.2%}  {index:4d}{name}")
    print(
        f"wrote {out / 'reconstruction.gif'} ({clips.fps:.5g} fps), {out / 'reconstruction.wav'}, {out / 'strip.png'}"
    )


# --------------------------------------------------------------------------------------------------------
# convert and info


def convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="DeepMind checkpoint file (.pickle/.pystate), transformers folder or hub id")
    parser.add_argument("dst", help="folder to write")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty DST")


def run_convert(args: argparse.Namespace) -> None:
    """Convert a checkpoint to a transformers model folder.

    Input: a DeepMind checkpoint file, a transformers-format folder or a hub id; the head is chosen from the
    checkpoint. Output: DST/config.json + DST/model.safetensors, loadable by perceiver_io and by transformers'
    from_pretrained; a source folder's preprocessor and tokenizer configs are copied along. Every file is
    written atomically (an interrupted convert leaves DST's previous files) with the user's umask.
    """
    from perceiver_io.checkpoints.files import write_bytes_atomic

    dst = Path(args.dst)
    if dst.is_file() or (dst.is_dir() and any(dst.iterdir()) and not args.overwrite):
        raise ValueError(f"{dst} exists and is not an empty folder; pass --overwrite to write into it")
    model = load_checked(args.src)
    model.save_pretrained(dst)
    src = Path(args.src)
    copied = [name for name in SIDE_FILES if src.is_dir() and (src / name).is_file()]
    for name in copied:
        write_bytes_atomic(dst / name, (src / name).read_bytes())
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {type(model).__name__} ({params:,} parameters) to {dst}" + "".join(f", {c}" for c in copied))


def info_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model folder, DeepMind checkpoint file or hub id")
    parser.add_argument("--full", action="store_true", help="also print the whole config (JSON)")


def summarize(model: nn.Module) -> list[str]:
    """The lines of `perceiver info`: head, parameters, latent array, input/output, labels."""
    from perceiver_io.tasks.classify import class_names

    c = model.config
    lines = [
        f"head: {type(model).__name__}",
        f"parameters: {sum(p.numel() for p in model.parameters()):,}",
        f"latents: {c.num_latents} x {c.d_latents}, {c.num_blocks} block(s) of {c.num_self_attends_per_block} "
        f"self-attention layers, {c.num_self_attention_heads} heads",
        f"input/output: {describe_io(model)}",
    ]
    if type(model).__name__ in (*IMAGE_CLASSIFIERS, "PerceiverForSequenceClassification",
                                "PerceiverForMultimodalAutoencoding"):  # fmt: skip
        names = class_names(model)
        shown = "; ".join(names[:3]) + ("; …" if len(names) > 3 else "")  # ImageNet names hold commas
        lines.append(f"labels: {c.num_labels} ({shown})")
    else:
        lines.append("labels: none (this head does not classify)")
    return lines


def run_info(args: argparse.Namespace) -> None:
    """Describe a model: its head, parameter count, latent array, expected input and output and its labels;
    with --full, also its whole config (JSON)."""
    model = load_checked(args.model)
    print("\n".join(summarize(model)))
    if args.full:
        print("config:")
        print(json.dumps(model.config.to_dict(), indent=2, sort_keys=True))
    else:
        print(f"config: perceiver info {args.model} --full")


def export_arguments(parser: argparse.ArgumentParser) -> None:
    from perceiver_io.export import FORMATS

    parser.add_argument(
        "-m", "--model", required=True, help="model folder, DeepMind checkpoint file or hub id (any head)"
    )
    parser.add_argument("-o", "--output", required=True, metavar="PATH", help="file to write: PATH.onnx or PATH.pt2")
    parser.add_argument("--format", choices=FORMATS, help="onnx or pt2 (default: from the suffix of PATH)")
    parser.add_argument(
        "--batch", type=_at_least(1), metavar="N", help="a graph for exactly N examples (default: any batch size)"
    )
    parser.add_argument(
        "--check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the written graph against the model before writing it (default: on)",
    )


def _export_format(output: Path, fmt: str | None) -> str:
    """--format, or the one PATH's suffix names; the suffix must agree with --format."""
    from perceiver_io.export import SUFFIXES

    by_suffix = {suffix: name for name, suffix in SUFFIXES.items()}
    named = by_suffix.get(output.suffix.lower())
    if fmt is None and named is None:
        raise ValueError(f"{output}: cannot tell the format; name the file .onnx or .pt2, or pass --format onnx|pt2")
    if fmt is not None and output.suffix.lower() != SUFFIXES[fmt]:
        raise ValueError(
            f"{output}: --format {fmt} writes a {SUFFIXES[fmt]} file; name it {output.stem}{SUFFIXES[fmt]}"
        )
    return fmt or named


def run_export(args: argparse.Namespace) -> None:
    """Export a model to ONNX or torch.export (.pt2) with a dynamic batch size, checked before it is written.

    ONNX is written by torch.onnx.export(dynamo=True) (needs perceiver_io[onnx]); .pt2 by torch.export.save,
    loaded back with torch.export.load(PATH).module(). The graph takes tensors only, with the geometry of the
    model's config: text padded to the window (inputs, attention_mask int64), images at image_size, flow
    tiles at train_size. The multimodal graph decodes one chunk per call: the clip (image, audio, label) and
    flat output indices image_points and audio_points, up to a chunk's worth (see perceiver_io.export).

    The check runs the written file (in onnxruntime, or as the loaded program) at batch 1 and 3 (at N with
    --batch N) and compares every output with the model's own; a difference over 1e-4 x max(1, max|output|)
    stops the export and nothing is written. The file is written atomically. Printed: the inputs and outputs,
    size, time and the largest difference found.

    Example:
      perceiver export -m deepmind/vision-perceiver-fourier -o fourier.onnx
    """
    from perceiver_io.export import export_onnx, export_program

    output = Path(args.output)
    fmt = _export_format(output, args.format)
    if output.is_dir():
        raise ValueError(f"{output} is a folder; expected the path of the file to write")
    model = load_checked(args.model)
    _make_folder(output.parent)
    result = (export_onnx if fmt == "onnx" else export_program)(model, output, batch=args.batch, check=args.check)
    batch = "any batch size" if result.batch is None else f"batch {result.batch}"
    print(f"wrote {result.path}: {result.head} as {fmt}, {batch}, {result.size_bytes / 1e6:.1f} MB, "
          f"{result.seconds:.1f} s")  # fmt: skip
    for kind, layouts in (("input", result.inputs), ("output", result.outputs)):
        for name, layout in layouts.items():
            print(f"  {kind} {name}: {layout}")
    if result.checks:
        where = "onnxruntime" if fmt == "onnx" else "the loaded program"
        diffs = ", ".join(f"batch {c.batch}: {c.max_abs_diff:.2g} (bound {c.bound:.2g})" for c in result.checks)
        print(f"check: {where} matches the model, max|difference| {diffs}")
    else:
        print("check: skipped (--no-check)")


def train_arguments(parser: argparse.ArgumentParser) -> None:
    from perceiver_io.training.cli import add_arguments

    add_arguments(parser)


def run_train(args: argparse.Namespace) -> int:
    """Train a Perceiver IO from a recipe (TOML; built in: mnist, mlm, imagenet, flow) with `--set` overrides.

    Writes OUT/checkpoint.pt (atomically, every train.checkpoint_every steps; `--resume` continues exactly),
    OUT/metrics.jsonl, OUT/curves.png and the final model folder OUT/model that every other command loads.
    Under `torchrun --nproc_per_node=N --no-python perceiver train ...` it trains with DDP (gloo on CPU, NCCL on
    GPU), one data shard per rank.
    """
    from perceiver_io.training.cli import run

    return run(args)


# --------------------------------------------------------------------------------------------------------
# Registry and entry point

AddArguments = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int | None]

COMMANDS: dict[str, tuple[AddArguments, Run]] = {
    "fill-mask": (fill_mask_arguments, run_fill_mask),
    "classify": (classify_arguments, run_classify),
    "flow": (flow_arguments, run_flow),
    "autoencode": (autoencode_arguments, run_autoencode),
    "convert": (convert_arguments, run_convert),
    "info": (info_arguments, run_info),
    "export": (export_arguments, run_export),
    "train": (train_arguments, run_train),
}


def version() -> str:
    """The installed perceiver_io's version ("unknown" when run from a source tree that is not installed)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed_version

    try:
        return installed_version("perceiver_io")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="perceiver",
        description="Perceiver IO tasks from DeepMind's colabs. Run `perceiver COMMAND --help` for each command.",
    )
    parser.add_argument("--version", action="version", version=f"perceiver_io {version()}")
    parser.add_argument("--traceback", action="store_true", help="show the full traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (add_arguments, run) in COMMANDS.items():
        doc = inspect.getdoc(run) or ""
        sub = commands.add_parser(
            name, help=doc.split("\n")[0], description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        add_arguments(sub)
        sub.set_defaults(run=run)
    return parser


def one_line(message: str) -> str:
    """A message's lines joined by spaces, so every error is one line on stderr."""
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def describe_error(err: BaseException) -> str:
    """``err`` as one line; an operating-system error as ``FILE: reason`` rather than ``[Errno 2] …``."""
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        return f"{err.filename}: {err.strerror[0].lower()}{err.strerror[1:]}"
    return one_line(str(err))


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``perceiver`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        code = args.run(args)
    except USER_ERRORS as err:
        if args.traceback:
            raise
        print(f"perceiver {args.command}: error: {describe_error(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code or 0


def entry() -> int:
    """The installed ``perceiver`` command: ``main`` in a process that keeps the memory it frees for reuse
    (``perceiver_io.allocator``): every clip, tile, batch and training step allocates the same large tensors again."""
    keep_freed_memory()
    return main()


if __name__ == "__main__":
    sys.exit(entry())
