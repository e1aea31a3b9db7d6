"""The ``perceiver`` command: DeepMind's four Perceiver IO colabs, plus checkpoint conversion and inspection.

Each subcommand is two functions, ``<name>_arguments(parser)`` declaring its options and ``run_<name>(args)``
doing the work and returning None or an exit status (its docstring is the subcommand's ``--help`` text),
registered by one line in ``COMMANDS``.
Errors a user can fix (bad files, wrong model, missing extra) end with exit code 2 and a one-line message;
``--traceback`` shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import inspect
import json
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import PIL.Image
from torch import nn

from perceiver_io.released import RELEASED
from perceiver_io.tasks.common import IMAGE_CLASSIFIERS, require_head

USER_ERRORS = (ValueError, TypeError, OSError, ImportError)
# Files of a transformers model folder besides config.json and the weights, copied by `convert`.
SIDE_FILES = ("preprocessor_config.json", "tokenizer_config.json", "special_tokens_map.json")


# --------------------------------------------------------------------------------------------------------
# Shared helpers


def _add_model_argument(parser: argparse.ArgumentParser, released: str) -> None:
    parser.add_argument(
        "-m",
        "--model",
        required=True,
        help="model folder (config.json + weights, as save_pretrained writes), DeepMind checkpoint file, or "
        f"Hugging Face hub id (needs network and perceiver_io[hub]); the released one is {RELEASED[released].hub_id}",
    )


def _load(source: str, heads: tuple[str, ...], task: str) -> nn.Module:
    from perceiver_io.checkpoints.loading import load_model

    model = load_model(source)
    require_head(model, heads, task)
    return model


def _read_labels(path: str | None) -> list[str] | None:
    """One class name per line (blank lines kept as names, so line n is class n)."""
    if path is None:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ValueError(f"{path}: no such labels file") from None


def _output_prefix(output: str) -> Path:
    """``-o OUT``, ``OUT.flo`` or ``OUT.png`` → ``OUT``, with its folder created."""
    prefix = Path(output)
    if prefix.suffix in (".flo", ".png"):
        prefix = prefix.with_suffix("")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    return prefix


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
    parser.add_argument("text", help="the text, or - to read it from stdin (without its final newline)")
    parser.add_argument(
        "--mask",
        type=_span,
        action="append",
        default=[],
        metavar="START:END",
        help="byte range to mask (end exclusive), repeatable; the text is then taken literally",
    )
    parser.add_argument("--top-k", type=int, default=5, help="candidates shown per masked byte (default 5)")


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
    model = _load(args.model, FILL_MASK_HEADS, "fill-mask")
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
    parser.add_argument("images", nargs="+", help="image files and/or folders of images")
    parser.add_argument("--top-k", type=int, default=5, help="classes shown per image (default 5)")
    parser.add_argument(
        "--processor",
        choices=("original", "transformers"),
        default="original",
        help="original: DeepMind's colab (crop, cv2-style bicubic, uint8, normalise; default); transformers: "
        "PerceiverImageProcessor, equal to transformers' (the model folder's preprocessor_config.json if any)",
    )
    parser.add_argument("--labels", metavar="FILE", help="class names, one per line (default: the model's)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")


def run_classify(args: argparse.Namespace) -> None:
    """Classify images (DeepMind's ImageNet colab).

    Input: image files (anything Pillow reads) or folders of them, any size. Each image is centre-cropped
    to 224/256 of its shorter side, resized to the model's image size (224) and normalised.

    Output: for each image, its path and the top-k classes with softmax probabilities. Class names come
    from --labels, else the model's id2label, else the 1000 ImageNet names for a 1000-class model.
    A progress bar is shown on stderr for more than one batch.
    """
    from perceiver_io.tasks.classify import classify, transformers_processor

    paths = _image_paths(args.images)
    model = _load(args.model, IMAGE_CLASSIFIERS, "classify")
    processor = args.processor
    if processor == "transformers":
        folder = args.model if Path(args.model).is_dir() else None
        processor = transformers_processor(model.config.image_size, folder)
    results = classify(
        model,
        paths,
        top_k=args.top_k,
        processor=processor,
        labels=_read_labels(args.labels),
        batch_size=args.batch_size,
        progress=len(paths) > args.batch_size,
    )
    for path, top in zip(paths, results, strict=True):
        print(path)
        for rank, (name, prob) in enumerate(top, 1):
            print(f"  {rank}. {prob:7.2%}  {name}")


# --------------------------------------------------------------------------------------------------------
# flow


def flow_arguments(parser: argparse.ArgumentParser) -> None:
    _add_model_argument(parser, "optical-flow-perceiver")
    parser.add_argument("frame1", help="first frame (image file)")
    parser.add_argument("frame2", help="second frame, same size as the first")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="output prefix: writes OUT.flo, OUT.png")
    parser.add_argument("--arrows", action="store_true", help="also write OUT_arrows.png: vectors over frame 1")
    parser.add_argument("--arrow-step", type=int, default=16, help="arrow grid spacing in pixels (default 16)")
    parser.add_argument("--gt", metavar="FILE.flo", help="ground-truth flow: print the end-point error against it")
    parser.add_argument("--show-gt", action="store_true", help="also write OUT_gt.png, the ground truth colour-coded")
    parser.add_argument(
        "--max-flow", type=float, metavar="PX", help="magnitude shown fully saturated (default: each field's maximum)"
    )
    parser.add_argument("--overlap", type=int, help="minimum tile overlap in pixels (default 20)")


def run_flow(args: argparse.Namespace) -> None:
    """Optical flow from frame 1 to frame 2 (DeepMind's optical-flow colab).

    Input: two RGB frames of the same size, any size: the model sees tiles of its training size (368x496)
    blended with pyramid weights; frames smaller than a tile are edge-padded. Pixel values are scaled to
    [-1, 1] and the output scaled by 20 to pixels, as in the colab.

    Output: OUT.flo (Middlebury format, float32 u, v in pixels, v down) and OUT.png (Middlebury colour code
    with a colour-wheel legend: hue = direction, saturation = magnitude); with --arrows, OUT_arrows.png; with
    --gt FILE.flo, the mean end-point error (pixels with NaN ground truth are left out); with --show-gt,
    OUT_gt.png, the ground truth in the same colour code.
    """
    from perceiver_io.tasks.common import load_image
    from perceiver_io.tasks.flow_utils import (
        end_point_error,
        flow_arrows,
        flow_to_color_with_legend,
        read_flo,
        write_flo,
    )
    from perceiver_io.tasks.optical_flow import FLOW_HEADS, optical_flow

    if args.show_gt and not args.gt:
        raise ValueError("--show-gt needs --gt FILE.flo")
    frame1, frame2 = load_image(args.frame1), load_image(args.frame2)
    gt = None if args.gt is None else read_flo(args.gt)
    if gt is not None and gt.shape[:2] != frame1.shape[:2]:
        raise ValueError(
            f"--gt flow is {gt.shape[0]}x{gt.shape[1]} but the frames are {frame1.shape[0]}x{frame1.shape[1]}"
        )
    model = _load(args.model, FLOW_HEADS, "flow")
    flow = optical_flow(model, frame1, frame2, min_overlap=args.overlap, progress=True)

    prefix = _output_prefix(args.output)
    written = [prefix.with_suffix(".flo"), prefix.with_suffix(".png")]
    write_flo(written[0], flow)
    _save_png(written[1], flow_to_color_with_legend(flow, args.max_flow))
    if args.arrows:
        written.append(prefix.with_name(prefix.name + "_arrows.png"))
        _save_png(written[-1], flow_arrows(frame1, flow, step=args.arrow_step))
    if gt is not None:
        valid = int((~np.isnan(gt).any(axis=-1)).sum())
        print(f"end-point error: {end_point_error(flow, gt):.3f} px over {valid} pixels with ground truth")
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
    parser.add_argument("video", help="video file with a soundtrack (anything FFmpeg reads; needs perceiver_io[video])")
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for the results")
    parser.add_argument("--chunks", type=int, default=128, help="decoding passes per clip (default 128, the colab's)")
    parser.add_argument("--max-windows", type=int, help="clips to process from the start (default: all)")
    parser.add_argument("--no-audio", action="store_true", help="use silence for a video without a soundtrack")
    parser.add_argument("--labels", metavar="FILE", help="class names, one per line (default: class indices)")
    parser.add_argument("--top-k", type=int, default=5, help="classes shown (default 5)")
    parser.add_argument("--sample-rate", type=int, default=48_000, help="audio rate the model expects (default 48000)")


def run_autoencode(args: argparse.Namespace) -> None:
    """Reconstruct and classify a video with its sound (DeepMind's video-autoencoding colab).

    Input: a video file. It is cut into clips of the model's frame count (16); frames are centre-cropped to
    a square and resized to the model's size (224x224); the soundtrack's first channel is resampled to 48 kHz
    and each clip gets the next frames x samples-per-frame samples (30,720), as in the colab. Each clip is
    decoded in --chunks passes (128).

    Output in OUTDIR: reconstruction.gif (all clips' frames at the video's frame rate), reconstruction.wav
    (16-bit mono), strip.png (input frames above their reconstructions). Printed: video and audio PSNR
    (peak 1, over all clips) and the top-k classes of the clip probabilities averaged over clips, with
    names from --labels.
    """
    from perceiver_io.tasks.autoencode import (
        AUTOENCODE_HEADS,
        ClipGeometry,
        autoencode,
        psnr,
        read_clips,
        reconstruction_strip,
        write_gif,
        write_wav,
    )
    from perceiver_io.tasks.classify import class_names

    model = _load(args.model, AUTOENCODE_HEADS, "autoencode")
    names = class_names(model, _read_labels(args.labels))
    geometry = ClipGeometry.from_config(model.config)
    clips = read_clips(args.video, geometry, args.max_windows, args.no_audio, args.sample_rate)
    count = len(clips.video)
    inputs = clips.video.astype(np.float32) / 255
    results = []
    for n in range(count):
        print(f"clip {n + 1}/{count}", file=sys.stderr)
        results.append(autoencode(model, inputs[n], clips.audio[n], args.chunks, progress=True))

    frames_in = inputs.reshape(-1, *inputs.shape[2:])
    frames_out = np.concatenate([r.video for r in results])
    audio_out = np.concatenate([r.audio for r in results])
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    write_gif(out / "reconstruction.gif", frames_out, clips.fps)
    write_wav(out / "reconstruction.wav", audio_out, clips.sample_rate)
    _save_png(out / "strip.png", reconstruction_strip(frames_in, frames_out))

    print(
        f"{count} clip(s) of {geometry.num_frames} frames at {geometry.frame_size}x{geometry.frame_size} and "
        f"{geometry.audio_samples} audio samples, decoded in {results[0].chunks} chunks each"
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
    print(f"wrote {out / 'reconstruction.gif'}, {out / 'reconstruction.wav'}, {out / 'strip.png'}")


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
    from_pretrained; a source folder's preprocessor and tokenizer configs are copied along.
    """
    from perceiver_io.checkpoints.loading import load_model

    dst = Path(args.dst)
    if dst.is_file() or (dst.is_dir() and any(dst.iterdir()) and not args.overwrite):
        raise ValueError(f"{dst} exists and is not an empty folder; pass --overwrite to write into it")
    model = load_model(args.src)
    model.save_pretrained(dst)
    src = Path(args.src)
    copied = [name for name in SIDE_FILES if src.is_dir() and (src / name).is_file()]
    for name in copied:
        shutil.copyfile(src / name, dst / name)
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {type(model).__name__} ({params:,} parameters) to {dst}" + "".join(f", {c}" for c in copied))


def info_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model folder, DeepMind checkpoint file or hub id")


def run_info(args: argparse.Namespace) -> None:
    """Describe a model: its head, parameter count, expected input and output, and its full config (JSON)."""
    from perceiver_io.checkpoints.loading import load_model

    model = load_model(args.model)
    print(f"head: {type(model).__name__}")
    print(f"parameters: {sum(p.numel() for p in model.parameters()):,}")
    print(f"input/output: {describe_io(model)}")
    print("config:")
    print(json.dumps(model.config.to_dict(), indent=2, sort_keys=True))


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
    "train": (train_arguments, run_train),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perceiver",
        description="Perceiver IO tasks from DeepMind's colabs. Run `perceiver COMMAND --help` for each command.",
    )
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``perceiver`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        code = args.run(args)
    except USER_ERRORS as err:
        if args.traceback:
            raise
        print(f"perceiver {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
