"""Time and peak memory against input size: 10⁴ to 10⁶ Fourier-encoded pixels into a small-latent model.

The model is ``PerceiverForImageClassificationFourier`` with 256 latents of 512 channels and 2 self-attention
layers (random weights; both libraries load the same file), fed square images of n×n pixels, each pixel a
261-channel input (RGB + 2-d Fourier features). The cross-attention to the inputs dominates, so a library whose
time grows linearly and whose memory above the inputs stays flat scales; one that materialises the
(latents × inputs) score matrix does not. Each point runs in its own subprocess (time: the fastest of
``--repeats`` after a warm-up, since load from other work only ever adds time and the points of one curve run
minutes apart; memory: another subprocess, peak RSS above the pre-forward level). A library stops at its first
failure (out of memory) or when a forward exceeds ``--max-seconds``.

    .venv/bin/python benchmarks/scaling.py [--sides 100 178 316 562 1000] [--variants transformers ours]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from common import (
    MODEL_CACHE,
    RESULTS,
    VARIANT_HELP,
    flop_counter,
    forward,
    machine,
    peak_memory,
    return_freed_memory_to_os,
    write_json,
)
from machine import achieved, add_peak_arguments, cpu_description, markdown_header, peaks_for

import perceiver_io

CONFIG = dict(
    num_latents=256,
    d_latents=512,
    d_model=261,
    num_blocks=1,
    num_self_attends_per_block=2,
    num_self_attention_heads=8,
    num_cross_attention_heads=1,
    num_labels=10,
)
VARIANTS = ["transformers", "ours-torch", "ours"]
HEAD = "PerceiverForImageClassificationFourier"


def model_folder() -> Path:
    folder = MODEL_CACHE / "scaling-fourier-256x512"
    if not (folder / "model.safetensors").is_file():
        torch.manual_seed(0)
        getattr(perceiver_io, HEAD)(perceiver_io.PerceiverConfig.from_dict(CONFIG)).save_pretrained(folder)
    return folder


def load(variant: str) -> torch.nn.Module:
    if variant == "transformers":
        import transformers

        model = getattr(transformers, HEAD).from_pretrained(model_folder())
    else:
        model = getattr(perceiver_io, HEAD).from_pretrained(model_folder())
    return model.eval().requires_grad_(False)


def worker(mode: str, variant: str, side: int, repeats: int) -> dict[str, Any]:
    if mode == "memory":
        return_freed_memory_to_os()
    model = load(variant)
    inputs = {"inputs": torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(0))}
    with torch.no_grad():
        if mode == "memory":
            return {"peak_bytes": peak_memory(lambda: forward(variant, model, inputs), runs=1)}
        with flop_counter() as counter:  # the warm-up forward, counted
            forward(variant, model, inputs)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            forward(variant, model, inputs)
            times.append(time.perf_counter() - start)
    return {"seconds": min(times), "all_seconds": [round(t, 4) for t in times], "flops": counter.get_total_flops()}


def run_worker(mode: str, variant: str, side: int, repeats: int) -> tuple[dict | None, str | None]:
    job = json.dumps({"mode": mode, "variant": variant, "side": side, "repeats": repeats})
    proc = subprocess.run([sys.executable, __file__, "--worker", job], capture_output=True, text=True)
    if proc.returncode == 0:
        return json.loads(proc.stdout.strip().splitlines()[-1]), None
    if proc.returncode < 0 or proc.returncode == 137:
        return None, "killed (out of memory?)"
    return None, (proc.stderr.strip().splitlines() or ["failed"])[-1]


def plot(points: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
    for variant in VARIANTS:
        mine = [p for p in points if p["variant"] == variant and "seconds" in p]
        if not mine:
            continue
        n = [p["inputs"] for p in mine]
        ax_t.plot(n, [p["seconds"] for p in mine], "o-", label=variant)
        with_mem = [p for p in mine if p.get("peak_bytes")]
        ax_m.plot([p["inputs"] for p in with_mem], [p["peak_bytes"] / 2**20 for p in with_mem], "o-", label=variant)
    inputs = sorted({p["inputs"] for p in points})
    input_mib = [n * CONFIG["d_model"] * 4 / 2**20 for n in inputs]
    ax_m.plot(inputs, input_mib, "k:", label="the inputs themselves (n × 261 × fp32)")
    for ax, title, unit in ((ax_t, "time per forward", "seconds"), (ax_m, "peak memory above baseline", "MiB")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("input elements (pixels)")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("256×512 latents, Fourier-encoded pixels, batch 1, fp32, 2 CPU threads")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def markdown(points: list[dict[str, Any]], machine_info: dict[str, Any], cpu: dict[str, Any], peaks: dict) -> str:
    lines = [
        "# Scaling with input size (256×512 latents, fp32, batch 1)",
        "",
        *markdown_header(cpu, peaks),
        *(f"- `{v}`: {VARIANT_HELP[v]}" for v in VARIANTS if any(p["variant"] == v for p in points)),
        "",
        "| pixels | variant | seconds (fastest) | µs per pixel | GFLOP/s (% of peak) | peak MiB | peak ÷ input size |"
        " note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in sorted(points, key=lambda p: (p["inputs"], VARIANTS.index(p["variant"]))):
        n, sec, mem = p["inputs"], p.get("seconds"), p.get("peak_bytes")
        cells = [
            f"{n:,}",
            p["variant"],
            f"{sec:.2f}" if sec else "–",
            f"{sec / n * 1e6:.1f}" if sec else "–",
            achieved(p.get("flops"), sec, peaks, "fp32"),
            f"{mem / 2**20:,.0f}" if mem else "–",
            f"{mem / (n * CONFIG['d_model'] * 4):.1f}" if mem else "–",
            p.get("error", ""),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Machine (load at the end of the run): `{machine_info}`", "", "![scaling](scaling.png)", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sides", nargs="+", type=int, default=[100, 178, 316, 562, 1000])
    parser.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    add_peak_arguments(parser)
    args = parser.parse_args()
    if args.worker:
        job = json.loads(args.worker)
        print(json.dumps(worker(job["mode"], job["variant"], job["side"], job["repeats"])))
        return
    model_folder()
    peaks, cpu = peaks_for(args), cpu_description()
    points, stopped = [], set()
    for side in sorted(args.sides):
        for variant in args.variants:
            if variant in stopped:
                continue
            point: dict[str, Any] = {"variant": variant, "side": side, "inputs": side * side}
            timing, error = run_worker("time", variant, side, args.repeats)
            if timing is not None:
                point.update(timing)
                memory, error = run_worker("memory", variant, side, 1)
                point.update(memory or {})
            if error:
                point["error"] = error
            if error or point["seconds"] > args.max_seconds:
                stopped.add(variant)
            points.append(point)
            print(point, flush=True)
    machine_info = machine()
    write_json(
        RESULTS / "scaling.json",
        {"points": points, "config": CONFIG, "machine": machine_info, "cpu": cpu, "peaks": peaks},
    )
    plot(points, RESULTS / "scaling.png")
    text = markdown(points, machine_info, cpu, peaks)
    (RESULTS / "scaling.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
