"""Achieved GFLOP/s per part of a model: preprocessing, cross-attention, latent self-attention, decoder.

Times each part with forward hooks (summed over a forward, median over ``--repeats`` forwards after a warm-up) and
counts its FLOPs once, on the default-path model, with ``torch.utils.flop_counter`` (a multiply-add is 2 FLOPs).
Each part's rate is compared with the GEMM peak of its dtype measured in the same run (``machine.measure_peaks``).

    .venv/bin/python benchmarks/parts.py [--model vision-perceiver-fourier] [--batches 1 8] [--dtypes fp32 bf16]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from common import RESULTS, VARIANT_HELP, cast_floats, flop_counter, forward, load_models, machine, write_json
from compare_transformers import DTYPES, Case, make_inputs
from machine import add_peak_arguments, cpu_description, markdown_header, peaks_for, percent_of_peak

from perceiver_io.released import RELEASED

VARIANTS = ["ours-torch", "ours"]


def parts(model: torch.nn.Module) -> dict[str, list[torch.nn.Module]]:
    """The modules that make up each part (the preprocessor and decoder include their post-processing)."""
    perceiver = model.perceiver
    out = {
        "input preprocessing": [perceiver.input_preprocessor],
        "cross-attention": [perceiver.encoder.cross_attn],
        "latent self-attention": list(perceiver.encoder.self_attns),
        "decoder": [perceiver.decoder],
    }
    if perceiver.output_postprocessor is not None:
        out["decoder"].append(perceiver.output_postprocessor)
    return out


class PartTimer:
    """Forward hooks that add each part's wall time to ``seconds[part]``."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.handles = []
        for part, modules in parts(model).items():
            for module in modules:
                self.handles.append(module.register_forward_pre_hook(self._start))
                self.handles.append(module.register_forward_hook(lambda m, i, o, part=part: self._stop(m, part)))

    def _start(self, module: torch.nn.Module, inputs: Any) -> None:
        module._part_started = time.perf_counter()

    def _stop(self, module: torch.nn.Module, part: str) -> None:
        self.seconds[part] += time.perf_counter() - module._part_started


def part_flops(model: torch.nn.Module, inputs: dict[str, Any]) -> dict[str, int]:
    """FLOPs per part of one forward of ``model``."""
    names = {id(m): n for n, m in model.named_modules()}
    with torch.no_grad(), flop_counter() as counter:
        model(**inputs)
    counts = counter.get_flop_counts()
    root = type(model).__name__
    out = {}
    for part, modules in parts(model).items():
        keys = [f"{root}.{names[id(m)]}" for m in modules]
        # A shared module (the self-attention block, applied num_blocks times) is counted for every application.
        out[part] = sum(sum(counts.get(k, {}).values()) for k in keys)
    return out


def measure(model_name: str, batch: int, dtype: str, repeats: int, peaks: dict[str, Any]) -> list[dict[str, Any]]:
    case = Case(model_name, "224x224", batch, dtype)
    inputs = make_inputs(case)
    reference = load_models(model_name, ["ours-torch"], torch.float32)["ours-torch"]
    flops = part_flops(reference, inputs)
    del reference
    rows = []
    for variant, model in load_models(model_name, VARIANTS, DTYPES[dtype]).items():
        cast = cast_floats(inputs, DTYPES[dtype])
        timer = PartTimer(model)
        samples = defaultdict(list)
        with torch.no_grad():
            forward(variant, model, cast)
            for _ in range(repeats):
                timer.seconds.clear()
                forward(variant, model, cast)
                for part, s in timer.seconds.items():
                    samples[part].append(s)
        for part, values in samples.items():
            seconds = statistics.median(values)
            gflops = flops[part] / seconds / 1e9
            rows.append(
                dict(
                    model=model_name,
                    batch=batch,
                    dtype=dtype,
                    variant=variant,
                    part=part,
                    gflop=flops[part] / 1e9,
                    seconds=seconds,
                    gflops=gflops,
                    percent_of_peak=percent_of_peak(flops[part], seconds, peaks, dtype),
                )
            )
    return rows


def _percent(p: float | None) -> str:
    return "–" if p is None else f"{p:.0f} %"


def markdown(rows: list[dict[str, Any]], machine_info: dict[str, Any], cpu: dict[str, Any], peaks: dict) -> str:
    lines = [
        "# Achieved GFLOP/s per part (median of forwards; FLOPs counted, 2 per multiply-add)",
        "",
        *markdown_header(cpu, peaks),
        *(f"- `{v}`: {VARIANT_HELP[v]}" for v in VARIANT_HELP if any(r["variant"] == v for r in rows)),
        "",
        "| model | batch | dtype | variant | part | GFLOP | seconds | GFLOP/s | % of peak |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['dtype']} | {r['variant']} | {r['part']} | {r['gflop']:.1f} | "
            f"{r['seconds']:.3f} | {r['gflops']:.0f} | {_percent(r['percent_of_peak'])} |"
        )
    lines += ["", f"Machine: `{machine_info}`", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vision-perceiver-fourier", choices=[m for m in RELEASED if "vision" in m])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for parts.json and parts.md")
    add_peak_arguments(parser)
    args = parser.parse_args()
    peaks, cpu = peaks_for(args), cpu_description()
    rows = []
    for batch in args.batches:
        for dtype in args.dtypes:
            new = measure(args.model, batch, dtype, args.repeats, peaks)
            rows += new
            for r in new:
                print(r["variant"], batch, dtype, r["part"], f"{r['gflops']:.0f} GFLOP/s", flush=True)
    machine_info = machine()
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "parts.json", {"rows": rows, "machine": machine_info, "cpu": cpu, "peaks": peaks})
    text = markdown(rows, machine_info, cpu, peaks)
    (args.out / "parts.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
