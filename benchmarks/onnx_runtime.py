"""perceiver_io in eager mode vs ONNX Runtime running perceiver_io's own ONNX export: same weights, same inputs,
same number of threads, timed in one process (interleaved rounds, medians; speed-ups are medians of same-round
ratios and ratios of the fastest samples, ``common.speed_up``).

Contenders: ``ours`` (the model as loaded: attention and MLPs on oneDNN), ``ours+onednn``
(``optimize_for_inference``), ``ours+prepack`` (``optimize_for_inference(prepack=True)``: weights pre-packed, as
onnxruntime packs its own), ``ours+compile`` (``optimize_for_inference(compile=True)``) and ``onnxruntime``
(CPUExecutionProvider, all graph optimisations, intra_op_num_threads = --threads, sequential execution) on the
file ``perceiver_io.export.export_onnx`` writes (dynamic batch). The ONNX file is cached beside the random-weight
model folder (``$PERCEIVER_BENCH_CACHE``) and re-exported when the folder is newer; the export's time and size are
kept with it. Goal (issue 14): ours ≥ 1.3× onnxruntime.

    .venv/bin/python benchmarks/onnx_runtime.py          # vision-fourier 224² and language 2048 bytes, batch 1
    .venv/bin/python benchmarks/onnx_runtime.py --batches 1 8 --repeats 7
    .venv/bin/python benchmarks/onnx_runtime.py --smoke --out /tmp/onnx_smoke   # small configs, seconds
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
import workloads
from common import RESULTS, cast_floats, flop_counter, interleaved, machine, speed_up, write_json
from machine import achieved, add_peak_arguments, cpu_description, markdown_header, peaks_for, quick_peaks

import perceiver_io
from perceiver_io.export import export_onnx
from perceiver_io.inference import optimize_for_inference
from perceiver_io.released import RELEASED

VARIANTS = ["ours", "ours+onednn", "ours+prepack", "ours+compile", "onnxruntime"]
VARIANT_HELP = {
    "ours": "perceiver_io as loaded (attention and MLPs on oneDNN), under torch.inference_mode",
    "ours+onednn": "perceiver_io after optimize_for_inference (every linear on oneDNN)",
    "ours+prepack": "perceiver_io after optimize_for_inference(prepack=True): weights kept in oneDNN's blocked layout"
    " (opt-in; twice the weights' memory)",
    "ours+compile": "perceiver_io after optimize_for_inference(compile=True): inductor, weights frozen (opt-in;"
    " compiled in the warm-up)",
    "onnxruntime": "ONNX Runtime (CPUExecutionProvider, ORT_ENABLE_ALL) on perceiver_io's export_onnx file",
    "ours-bf16": "perceiver_io as loaded, model.to(torch.bfloat16) with bf16 inputs (--with-bf16; not the same"
    " precision: for context)",
}
MODELS = ("vision-perceiver-fourier", "language-perceiver", "vision-perceiver-learned", "vision-perceiver-conv")


def load(name: str, small: bool) -> torch.nn.Module:
    folder = workloads.folder(name, small)
    return getattr(perceiver_io, RELEASED[name].head).from_pretrained(folder).eval().requires_grad_(False)


def onnx_file(name: str, small: bool, model: torch.nn.Module) -> tuple[Path, dict[str, Any]]:
    """The cached ONNX export of the model folder (re-exported when the folder's weights are newer) and the
    export's {seconds, bytes} as measured when it was written."""
    folder = workloads.folder(name, small)
    path = folder.with_name(folder.name + ".onnx")
    info_path = path.with_suffix(".onnx.json")
    stale = not path.is_file() or path.stat().st_mtime < (folder / "model.safetensors").stat().st_mtime
    if stale or not info_path.is_file():
        result = export_onnx(model, path, check=False)  # outputs are compared below, in the timed setting
        info = {"seconds": round(result.seconds, 1), "bytes": result.size_bytes, "torch": torch.__version__}
        info_path.write_text(json.dumps(info))
    return path, json.loads(info_path.read_text())


def session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def inputs(model: torch.nn.Module, batch: int) -> dict[str, torch.Tensor]:
    """Keyword inputs in the export's layout: text padded to the window (int64 ids and mask), images at image_size."""
    g, c = torch.Generator().manual_seed(0), model.config
    if type(model).__name__ == "PerceiverForMaskedLM":
        n = c.max_position_embeddings
        return dict(inputs=torch.randint(6, 262, (batch, n), generator=g), attention_mask=torch.ones(batch, n).long())
    return dict(inputs=torch.randn(batch, 3, c.image_size, c.image_size, generator=g))


def case_name(model: torch.nn.Module) -> str:
    c = model.config
    if type(model).__name__ == "PerceiverForMaskedLM":
        return f"{c.max_position_embeddings} bytes"
    return f"{c.image_size}x{c.image_size}"


def time_case(name: str, batch: int, repeats: int, small: bool, threads: int, bf16: bool) -> dict[str, Any]:
    """Outputs compared with ours, FLOPs counted on ours, then the interleaved timing of the contenders."""
    ours = load(name, small)
    fast = optimize_for_inference(load(name, small))
    packed = optimize_for_inference(load(name, small), prepack=True)
    compiled = optimize_for_inference(load(name, small), compile=True)
    path, export_info = onnx_file(name, small, ours)
    sess = session(path, threads)
    kwargs = inputs(ours, batch)
    feeds = {k: v.numpy() for k, v in kwargs.items()}
    with torch.inference_mode():
        with flop_counter() as flops:
            ref = ours(**kwargs).logits.double()
        got = torch.from_numpy(sess.run(None, feeds)[0]).double()
        delta = (got - ref).abs()
        runs = {
            "ours": lambda: ours(**kwargs),
            "ours+onednn": lambda: fast(**kwargs),
            "ours+prepack": lambda: packed(**kwargs),
            "ours+compile": lambda: compiled(**kwargs),
            "onnxruntime": lambda: sess.run(None, feeds),
        }
        if bf16:
            half, half_inputs = load(name, small).to(torch.bfloat16), cast_floats(kwargs, torch.bfloat16)
            bf16_delta = (half(**half_inputs).logits.double() - ref).abs()
            runs["ours-bf16"] = lambda: half(**half_inputs)
        timing = interleaved(runs, repeats)
    return {
        "model": name,
        "small": small,
        "case": case_name(ours),
        "batch": batch,
        "threads": threads,
        "flops": flops.get_total_flops(),
        "onnxruntime_vs_ours": {
            "max_abs": delta.max().item(),
            "max_abs_ours": ref.abs().max().item(),
            "rel_l2": (delta.norm() / ref.norm().clamp_min(1e-30)).item(),
        },
        **({"ours_bf16_vs_ours": {"max_abs": bf16_delta.max().item()}} if bf16 else {}),
        "export": export_info,
        "variants": timing,
        "repeats": repeats,
        "machine": machine(),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _key(row: dict[str, Any]) -> str:
    return f"{row['model']}|{row['batch']}|{row['threads']}{'|small' if row['small'] else ''}"


def markdown(rows: list[dict[str, Any]], cpu: dict[str, Any], peaks: dict[str, Any]) -> str:
    lines = [
        "# perceiver_io eager vs ONNX Runtime on perceiver_io's ONNX export",
        "",
        *markdown_header(cpu, peaks),
        *(f"- `{v}`: {VARIANT_HELP[v]}" for v in VARIANTS),
        "",
        "Same weights (random, at the released size), same inputs, same thread count (torch.set_num_threads and"
        " intra_op_num_threads). Seconds: median per forward. Ratios (> 1: ours is faster) as *paired / best*"
        " (`common.speed_up`). Goal: ours ≥ 1.3× onnxruntime. max|Δ|: onnxruntime's output against ours.",
        "",
        "| model | case | batch | threads | " + " | ".join(f"{v} s" for v in VARIANTS) + " | onnxruntime ÷ ours |"
        " onnxruntime ÷ ours+onednn | onnxruntime ÷ ours+prepack | onnxruntime ÷ ours+compile | GFLOP/s (% of peak) "
        + " / ".join(VARIANTS)
        + " | max|Δ| (max|ours|) |"
        " export s, MB |",
        "|---|---|---|---|" + "---|" * (len(VARIANTS) + 7),
    ]
    for r in rows:
        v = r["variants"]
        seconds = {n: v[n]["seconds"] if n in v else None for n in VARIANTS}  # older rows lack newer variants
        diff = r["onnxruntime_vs_ours"]
        cells = [
            r["model"] + (" (small config)" if r["small"] else ""),
            r["case"],
            str(r["batch"]),
            str(r["threads"]),
            *("–" if t is None else f"{t:.3f}" for t in seconds.values()),
            speed_up(v["onnxruntime"], v["ours"]),
            speed_up(v["onnxruntime"], v["ours+onednn"]),
            speed_up(v["onnxruntime"], v.get("ours+prepack")),
            speed_up(v["onnxruntime"], v.get("ours+compile")),
            " / ".join(achieved(r["flops"], t, r.get("peaks"), "fp32") for t in seconds.values()),
            f"{diff['max_abs']:.2g} ({diff['max_abs_ours']:.3g})",
            f"{r['export']['seconds']:.0f}, {r['export']['bytes'] / 1e6:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    bf16_rows = [r for r in rows if "ours-bf16" in r["variants"]]
    if bf16_rows:
        lines += ["", "For context, ours in bf16 (`--with-bf16`; 8 significant bits, not the same computation):", ""]
        lines += [
            "| model | batch | ours-bf16 s | onnxruntime (fp32) ÷ ours-bf16 | GFLOP/s (% of bf16 peak)"
            " | max|Δ| vs ours |",
            "|---|---|---|---|---|---|",
        ]
        for r in bf16_rows:
            b = r["variants"]["ours-bf16"]
            rate = achieved(r["flops"], b["seconds"], r.get("peaks"), "bf16")
            lines.append(
                f"| {r['model']}{' (small config)' if r['small'] else ''} | {r['batch']} | {b['seconds']:.3f} | "
                f"{speed_up(r['variants']['onnxruntime'], b)} | "
                f"{rate} | {r['ours_bf16_vs_ours']['max_abs']:.2g} |"
            )
    lines += ["", "Load during each row (1/5/15-min load average; CPU pressure):", ""]
    lines += [f"- {r['model']} b{r['batch']}: {r['machine']['loadavg']}; {r['machine']['cpu_pressure']}" for r in rows]
    return "\n".join([*lines, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS[:2]), choices=MODELS)
    parser.add_argument("--batches", nargs="+", type=int, default=[1])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch threads and onnxruntime intra-op threads")
    parser.add_argument("--with-bf16", action="store_true", help="also time ours in bf16 (for context)")
    parser.add_argument("--smoke", action="store_true", help="small configurations, one repeat, quick peaks")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for onnx_runtime.json/.md")
    add_peak_arguments(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    peaks = quick_peaks() if args.smoke else peaks_for(args)
    cpu, json_path = cpu_description(), args.out / "onnx_runtime.json"
    rows = json.loads(json_path.read_text())["rows"] if json_path.is_file() else []  # a subset run keeps the rest
    for name in args.models:
        for batch in args.batches:
            print(f"{name} batch {batch} …", flush=True)
            repeats = 1 if args.smoke else args.repeats
            row = {**time_case(name, batch, repeats, args.smoke, args.threads, args.with_bf16), "peaks": peaks}
            rows = [r for r in rows if _key(r) != _key(row)] + [row]
            print("  " + ", ".join(f"{n} {t['seconds']:.3f}s" for n, t in row["variants"].items()), flush=True)
    write_json(json_path, {"rows": rows, "cpu": cpu, "peaks": peaks})
    text = markdown(rows, cpu, peaks)
    (args.out / "onnx_runtime.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
