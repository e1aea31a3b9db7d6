"""What each precision of ``optimize_for_inference`` (fp32, bf16, int8) costs in accuracy and gains in speed, on real
inputs through the task helpers that the ``perceiver`` commands run.

The models are the released architectures with random seeded weights (no pretrained Perceiver weights can be had
here), so agreement with fp32 measures numeric fidelity, not task accuracy. Each task, in every precision, on the
same model and inputs:

- classify (vision-perceiver-fourier; with ``--full`` also vision-perceiver-conv): the six scikit-image photos
  (chelsea, astronaut, coffee, rocket, camera, hubble_deep_field) with the colab's preprocessing: top-1 agreement,
  same top-5 set, mean top-5 overlap with fp32, and fp32's median top-1 − top-2 probability margin for scale;
- flow (optical-flow-perceiver): one 368×496 tile from the centre of scikit-image's stereo_motorcycle pair:
  end-point error against the fp32 flow, beside the fp32 flow's mean magnitude;
- fill-mask (language-perceiver): a real text (the colab's sentence and Genesis 1:1–2, King James), 15 % of its
  bytes masked (seeded): agreement of the predicted byte and of the top-5 set with fp32;
- autoencode (multimodal-perceiver at the released geometry but 2 frames per clip instead of 16: 2 × 224² frames,
  3,840 audio samples, decoded in 16 chunks): the first clip of Megamind.avi; PSNR of the reconstructed video and
  audio against the fp32 reconstruction, and the top-1 label agreement.

Speed: seconds per task call on those inputs (classify: one photo; flow: one tile; fill-mask: the text;
autoencode: the clip), the precisions interleaved in one process (``common.interleaved``).

    .venv/bin/python benchmarks/precision.py [--tasks flow ...] [--full] [--repeats 3] [--video PATH/Megamind.avi]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import RESULTS, interleaved, machine, model_folder, speed_up, write_json
from machine import add_peak_arguments, cpu_description, markdown_header, peaks_for

import perceiver_io
from perceiver_io import PerceiverConfig
from perceiver_io.checkpoints.files import write_bytes_atomic
from perceiver_io.inference import PRECISIONS, optimize_for_inference
from perceiver_io.released import RELEASED
from perceiver_io.tasks.autoencode import ClipGeometry, autoencode, psnr, read_clips
from perceiver_io.tasks.classify import classify
from perceiver_io.tasks.fill_mask import fill_mask
from perceiver_io.tasks.flow_utils import stereo_motorcycle_pair
from perceiver_io.tasks.optical_flow import predict_tile

PHOTOS = ("chelsea", "astronaut", "coffee", "rocket", "camera", "hubble_deep_field")
TEXT = (
    "This is an incomplete sentence where some words are missing. In the beginning God created the heaven and the "
    "earth. And the earth was without form, and void; and darkness was upon the face of the deep."
)
MASK_RATE = 0.15
# The multimodal model: the released geometry with 2 frames per clip instead of 16 (an eighth of the work).
AUTOENCODE_FRAMES = 2
AUTOENCODE_CHUNKS = 16
DEFAULT_VIDEO = (
    Path(os.environ.get("PERCEIVER_TEST_CACHE", Path.home() / ".cache" / "perceiver_io-tests"))
    / "opencv-doc"
    / "Megamind.avi"
)


def variants(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """``model`` (float32) through ``optimize_for_inference`` in every precision, each on its own copy."""
    return {p: optimize_for_inference(copy.deepcopy(model), p) for p in PRECISIONS}


def released(name: str) -> torch.nn.Module:
    """Released architecture ``name`` with the benchmarks' seeded random weights (``common.model_folder``)."""
    return getattr(perceiver_io, RELEASED[name].head).from_pretrained(model_folder(name))


def timed(runs: dict[str, Any], repeats: int) -> dict[str, Any]:
    times = interleaved(runs, repeats)
    return {p: {**t, "speed_up_vs_fp32": speed_up(times["fp32"], t)} for p, t in times.items()}


def bench_classify(name: str, repeats: int) -> dict[str, Any]:
    """Top-k agreement with fp32 over the scikit-image photos, and seconds per photo."""
    from skimage import data

    photos = [getattr(data, p)() for p in PHOTOS]
    models = variants(released(name))
    indices = [str(i) for i in range(models["fp32"].config.num_labels)]  # ImageNet names repeat ("crane")
    tops = {p: classify(m, photos, top_k=5, labels=indices, batch_size=len(photos)) for p, m in models.items()}
    margins = [top[0][1] - top[1][1] for top in tops["fp32"]]
    metrics = {}
    for p, top in tops.items():
        ref = [[c for c, _ in t] for t in tops["fp32"]]
        got = [[c for c, _ in t] for t in top]
        metrics[p] = {
            "top1_agreement": float(np.mean([g[0] == r[0] for g, r in zip(got, ref, strict=True)])),
            "top5_same_set": float(np.mean([set(g) == set(r) for g, r in zip(got, ref, strict=True)])),
            "top5_overlap": float(np.mean([len(set(g) & set(r)) / 5 for g, r in zip(got, ref, strict=True)])),
        }
    runs = {p: (lambda m=m: classify(m, photos[:1], top_k=5)) for p, m in models.items()}
    return {
        "task": "classify",
        "model": name,
        "input": f"{len(photos)} scikit-image photos ({', '.join(PHOTOS)}); speed: chelsea alone",
        "fp32_median_top1_margin": statistics.median(margins),
        "metrics": metrics,
        "seconds": timed(runs, repeats),
    }


def bench_flow(repeats: int) -> dict[str, Any]:
    """End-point error against fp32 on one tile of the motorcycle pair, and seconds per tile."""
    models = variants(released("optical-flow-perceiver"))
    h, w = (int(s) for s in models["fp32"].config.train_size)
    left, right, _ = stereo_motorcycle_pair()
    top, start = (left.shape[0] - h) // 2, (left.shape[1] - w) // 2
    f1, f2 = left[top : top + h, start : start + w], right[top : top + h, start : start + w]
    flows = {p: predict_tile(m, f1, f2) for p, m in models.items()}
    ref = flows["fp32"].astype(np.float64)
    metrics = {p: {"epe_vs_fp32_px": float(np.linalg.norm(f - ref, axis=-1).mean())} for p, f in flows.items()}
    runs = {p: (lambda m=m: predict_tile(m, f1, f2)) for p, m in models.items()}
    return {
        "task": "flow",
        "model": "optical-flow-perceiver",
        "input": f"stereo_motorcycle, the centre {h}×{w} tile (rows {top}–{top + h}, columns {start}–{start + w})",
        "fp32_mean_flow_px": float(np.linalg.norm(ref, axis=-1).mean()),
        "metrics": metrics,
        "seconds": timed(runs, repeats),
    }


def bench_fill_mask(repeats: int) -> dict[str, Any]:
    """Agreement with fp32 of the predicted bytes (argmax and top-5 set) at 15 % masked bytes of a real text."""
    models = variants(released("language-perceiver"))
    size = len(TEXT.encode("utf-8"))
    rng = np.random.default_rng(0)
    positions = sorted(rng.choice(size, size=round(MASK_RATE * size), replace=False).tolist())
    spans = [(p, p + 1) for p in positions]
    results = {p: fill_mask(m, TEXT, spans, top_k=5) for p, m in models.items()}
    ref = results["fp32"]
    margins = [pos.top_k[0][1] - pos.top_k[1][1] for pos in ref.positions]
    metrics = {}
    for p, r in results.items():
        same_top5 = [
            {t for t, _ in a.top_k} == {t for t, _ in b.top_k} for a, b in zip(r.positions, ref.positions, strict=True)
        ]
        metrics[p] = {
            "byte_agreement": float(np.mean(np.array(r.predicted_ids) == np.array(ref.predicted_ids))),
            "top5_same_set": float(np.mean(same_top5)),
        }
    runs = {p: (lambda m=m: fill_mask(m, TEXT, spans)) for p, m in models.items()}
    return {
        "task": "fill-mask",
        "model": "language-perceiver",
        "input": f"{size} bytes of real text (the colab's sentence, Genesis 1:1-2), {len(positions)} bytes masked",
        "fp32_median_top1_margin": statistics.median(margins),
        "metrics": metrics,
        "seconds": timed(runs, repeats),
    }


def bench_autoencode(video: Path, repeats: int) -> dict[str, Any]:
    """Reconstruction PSNR against fp32 on the first clip of ``video``, and seconds per clip."""
    config = PerceiverConfig.released(
        "multimodal-perceiver", num_frames=AUTOENCODE_FRAMES, output_shape=[1, AUTOENCODE_FRAMES, 224, 224]
    )
    torch.manual_seed(0)
    models = variants(perceiver_io.PerceiverForMultimodalAutoencoding(config))
    clips = read_clips(video, ClipGeometry.from_config(config), max_windows=1)
    frames, audio = clips.video[0].astype(np.float32) / 255, clips.audio[0]
    results = {p: autoencode(m, frames, audio, AUTOENCODE_CHUNKS) for p, m in models.items()}
    ref = results["fp32"]
    metrics = {
        p: {
            "video_psnr_vs_fp32_db": psnr(ref.video, r.video),
            "audio_psnr_vs_fp32_db": psnr(ref.audio, r.audio),
            "label_top1_agreement": float(r.top_k[0][0] == ref.top_k[0][0]),
        }
        for p, r in results.items()
    }
    runs = {p: (lambda m=m: autoencode(m, frames, audio, AUTOENCODE_CHUNKS)) for p, m in models.items()}
    return {
        "task": "autoencode",
        "model": f"multimodal-perceiver, {AUTOENCODE_FRAMES} frames per clip (released: 16)",
        "input": f"{video.name}, first clip: {AUTOENCODE_FRAMES} frames of 224², {len(audio)} audio samples, "
        f"{AUTOENCODE_CHUNKS} chunks",
        "fp32_video_psnr_vs_input_db": ref.video_psnr,
        "metrics": metrics,
        "seconds": timed(runs, repeats),
    }


def _cell(value: float, kind: str) -> str:
    if kind == "dB":
        return "identical" if value == float("inf") else f"{value:.1f} dB"
    if kind == "px":
        return f"{value:.3g} px"
    return f"{100 * value:.0f} %"


METRICS = {
    "top1_agreement": ("top-1 agreement", "%"),
    "top5_same_set": ("same top-5 set", "%"),
    "top5_overlap": ("top-5 overlap", "%"),
    "epe_vs_fp32_px": ("EPE vs fp32", "px"),
    "byte_agreement": ("predicted byte agreement", "%"),
    "video_psnr_vs_fp32_db": ("video PSNR vs fp32", "dB"),
    "audio_psnr_vs_fp32_db": ("audio PSNR vs fp32", "dB"),
    "label_top1_agreement": ("label top-1 agreement", "%"),
}


def _context(row: dict[str, Any]) -> str:
    if "fp32_median_top1_margin" in row:
        return f"median top-1 − top-2 probability {row['fp32_median_top1_margin']:.2g}"
    if "fp32_mean_flow_px" in row:
        return f"mean flow {row['fp32_mean_flow_px']:.3g} px"
    if "fp32_video_psnr_vs_input_db" in row:
        return f"video PSNR vs the input {row['fp32_video_psnr_vs_input_db']:.1f} dB"
    return ""


def markdown(rows: list[dict[str, Any]], machine_info: dict[str, Any], cpu: dict[str, Any], peaks: dict) -> str:
    others = [p for p in PRECISIONS if p != "fp32"]
    lines = [
        "# Precision: accuracy cost and speed of fp32, bf16 and int8 on real inputs",
        "",
        *markdown_header(cpu, peaks),
        "Models: the released architectures with **random seeded weights** (no pretrained weights exist here), so "
        "agreement with fp32 measures numeric fidelity, not task accuracy; random models are nearly undecided "
        "(the fp32 margins below), which makes rankings fragile. Each precision is "
        "`optimize_for_inference(model, precision)` on the same float32 model; the task helpers cast inputs to "
        "the model's dtype and outputs back to float32. int8: torch's dynamic quantization of every linear "
        "(`torch.ao.quantization.quantize_dynamic`, qint8).",
        "",
        "Inputs:",
        "",
        *(f"- {row['task']} ({row['model']}): {row['input']}" for row in rows),
        "",
        "| task, model | measure against fp32 | " + " | ".join(others) + " | fp32 for scale |",
        "|---|---|" + "---|" * (len(others) + 1),
    ]
    for row in rows:
        for key in row["metrics"]["fp32"]:
            label, kind = METRICS[key]
            cells = [_cell(row["metrics"][p][key], kind) for p in others]
            lines.append(f"| {row['task']}, {row['model']} | {label} | " + " | ".join(cells) + f" | {_context(row)} |")
    lines += [
        "",
        "Speed: seconds per task call (median of interleaved rounds after a warm-up); speed-up over fp32 as *paired "
        "/ best* (median of same-round ratios / ratio of the fastest samples).",
        "",
        "| task, model | " + " | ".join(f"{p} s" for p in PRECISIONS) + " | "
        + " | ".join(f"{p} speed-up" for p in others) + " |",
        "|---|" + "---|" * (len(PRECISIONS) + len(others)),
    ]  # fmt: skip
    for row in rows:
        s = row["seconds"]
        cells = [f"{s[p]['seconds']:.3g}" for p in PRECISIONS] + [s[p]["speed_up_vs_fp32"] for p in others]
        lines.append(f"| {row['task']}, {row['model']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Load (1/5/15-min load average) at the end of each row: "
        + "; ".join(f"{r['task']} ({r['model']}) {r.get('loadavg')}" for r in rows)
        + f"; at the end of this run {machine_info['loadavg']}, {machine_info['cpu_pressure']}.",
        "",
        "Reproduce: `.venv/bin/python benchmarks/precision.py` (`--full` adds vision-perceiver-conv; `--tasks flow` "
        "reruns one task and keeps the other rows).",
        "",
    ]
    return "\n".join(lines)


TASKS = ("classify", "flow", "fill-mask", "autoencode")
JSON_PATH = RESULTS / "precision.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS), help="tasks to run (default all)")
    parser.add_argument("--full", action="store_true", help="classify: also vision-perceiver-conv")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per task (after one warm-up)")
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO, help="Megamind.avi (Debian's opencv-doc)")
    add_peak_arguments(parser)
    args = parser.parse_args()
    if "autoencode" in args.tasks and not args.video.is_file():
        parser.error(f"{args.video}: no such file; `apt-get download opencv-doc`, extract Megamind.avi, pass --video")
    peaks = peaks_for(args)
    classifiers = ["vision-perceiver-fourier"] + (["vision-perceiver-conv"] if args.full else [])
    benches = {
        "classify": [lambda n=n: bench_classify(n, args.repeats) for n in classifiers],
        "flow": [lambda: bench_flow(args.repeats)],
        "fill-mask": [lambda: bench_fill_mask(args.repeats)],
        "autoencode": [lambda: bench_autoencode(args.video, args.repeats)],
    }
    # Rows accumulate across runs: a run of some tasks replaces only their rows (each keeps its own load figures).
    rows = json.loads(JSON_PATH.read_text())["rows"] if JSON_PATH.is_file() else []
    for task in args.tasks:
        for bench in benches[task]:
            row = {**bench(), "loadavg": machine()["loadavg"]}
            rows = [r for r in rows if (r["task"], r["model"]) != (row["task"], row["model"])] + [row]
            print(json.dumps({k: row[k] for k in ("task", "model", "metrics")}), flush=True)
    rows.sort(key=lambda r: TASKS.index(r["task"]))
    cpu, machine_info = cpu_description(), machine()
    write_json(JSON_PATH, {"rows": rows, "machine": machine_info, "cpu": cpu, "peaks": peaks})
    text = markdown(rows, machine_info, cpu, peaks)
    write_bytes_atomic(RESULTS / "precision.md", text.encode("utf-8"))
    print(text)


if __name__ == "__main__":
    main()
