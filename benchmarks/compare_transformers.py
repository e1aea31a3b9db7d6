"""perceiver_io vs transformers' Perceiver: time per forward, peak memory and output agreement, same weights.

For each released configuration (random weights, written once by our ``save_pretrained`` and read by both
libraries' ``from_pretrained``), each case runs in its own subprocess (a clean memory baseline; an out-of-memory
kill is reported, not fatal): one warm-up per variant, then ``--repeats`` rounds alternating the variants
(ABC, CBA, …), medians reported. Variants (``common.VARIANT_HELP``): ``transformers``, ``ours-torch`` (oneDNN
switched off: torch's kernels) and ``ours+onednn`` (``optimize_for_inference``: every linear on oneDNN; the
default model runs its attention and MLPs on oneDNN already, ``default_path.py``). bf16 runs every model with
``.to(torch.bfloat16)`` and bf16 inputs; its error is measured against our float32 output, and transformers in
float32 is timed alongside (bf16 is what a user would switch to from float32).

Results accumulate in ``benchmarks/results/compare_transformers.json`` (a subset run updates its rows) and the
whole table is rewritten to ``compare_transformers.md``. Full run (hours on 2 cores):

    .venv/bin/python benchmarks/compare_transformers.py
Subset:
    .venv/bin/python benchmarks/compare_transformers.py --models vision-perceiver-fourier --batches 1 --dtypes fp32
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from common import (
    RESULTS,
    cast_floats,
    flop_counter,
    forward,
    interleaved,
    load_models,
    machine,
    peak_memory,
    return_freed_memory_to_os,
    speed_up,
    write_json,
)
from machine import achieved, add_peak_arguments, cpu_description, describe_peaks, markdown_header, peaks_for

from perceiver_io.released import RELEASED

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
VARIANTS = ["transformers", "ours-torch", "ours+onednn"]
FP32_BASELINE = "transformers-fp32"  # timed in bf16 rows only
JSON_PATH = RESULTS / "compare_transformers.json"
MD_PATH = RESULTS / "compare_transformers.md"
MULTIMODAL_CHUNKS = 128  # DeepMind's colab decodes a clip in 128 chunks


@dataclass(frozen=True)
class Case:
    model: str
    case: str
    batch: int
    dtype: str

    @property
    def key(self) -> str:
        return f"{self.model}|{self.case}|b{self.batch}|{self.dtype}"


def cases(models: list[str], batches: list[int], dtypes: list[str], only: list[str] | None) -> list[Case]:
    """Language and image models at every batch; one flow tile and the multimodal decodes at batch 1."""
    out = []
    for model in models:
        if model == "optical-flow-perceiver":
            kinds = [("tile 368x496", 1)]
        elif model == "multimodal-perceiver":
            kinds = [(f"decode 1/{MULTIMODAL_CHUNKS}", 1), ("full decode", 1)]
        elif model == "language-perceiver":
            kinds = [("2048 bytes", b) for b in batches]
        else:
            kinds = [("224x224", b) for b in batches]
        for kind, batch in kinds:
            if batch not in batches or (only and not any(o in kind for o in only)):
                continue
            out.extend(Case(model, kind, batch, dtype) for dtype in dtypes)
    return out


def make_inputs(case: Case) -> dict[str, Any]:
    """Keyword arguments of one forward (same call convention in both libraries)."""
    g = torch.Generator().manual_seed(0)
    b = case.batch
    if case.model == "language-perceiver":
        return dict(inputs=torch.randint(0, 262, (b, 2048), generator=g), attention_mask=torch.ones(b, 2048))
    if case.model.startswith("vision"):
        return dict(inputs=torch.randn(b, 3, 224, 224, generator=g))
    if case.model == "optical-flow-perceiver":
        return dict(inputs=torch.randn(b, 2, 27, 368, 496, generator=g))
    inputs = {
        "image": torch.randn(b, 16, 3, 224, 224, generator=g),
        "audio": torch.randn(b, 30720, 1, generator=g),
        "label": torch.zeros(b, 700),
    }
    if case.case == "full decode":
        return dict(inputs=inputs)
    image_chunk, audio_chunk = 16 * 224 * 224 // MULTIMODAL_CHUNKS, 30720 // 16 // MULTIMODAL_CHUNKS
    points = {"image": torch.arange(image_chunk), "audio": torch.arange(audio_chunk)}
    return dict(inputs=inputs, subsampled_output_points=points)


def _flat(logits: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
    if isinstance(logits, dict):
        return torch.cat([logits[k].reshape(logits[k].shape[0], -1) for k in sorted(logits)], dim=1).double()
    return logits.double()


def _difference(got: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    delta = (got - ref).abs()
    return {
        "max_abs": delta.max().item(),
        "max_abs_ref": ref.abs().max().item(),
        "rel_l2": (delta.norm() / ref.norm().clamp_min(1e-30)).item(),
    }


def time_case(case: Case, variants: list[str], repeats: int) -> dict[str, Any]:
    """Outputs compared, FLOPs counted, then the interleaved timing of all variants in this process."""
    torch.manual_seed(0)
    dtype = DTYPES[case.dtype]
    inputs = make_inputs(case)
    with torch.no_grad():
        # The reference: transformers in float32 for the fp32 rows; our float32 output (which matches it) for bf16.
        ref_variant = "transformers" if case.dtype == "fp32" and "transformers" in variants else "ours-torch"
        ref_model = load_models(case.model, [ref_variant], torch.float32)[ref_variant]
        with flop_counter() as flops:
            ref = _flat(forward(ref_variant, ref_model, inputs).logits)
        del ref_model
        gc.collect()
        runs = {}
        if case.dtype == "bf16" and "transformers" in variants:
            fp32_model = load_models(case.model, ["transformers"], torch.float32)["transformers"]
            runs[FP32_BASELINE] = lambda m=fp32_model, x=inputs: m(**x)
        models = load_models(case.model, variants, dtype)
        inputs = cast_floats(inputs, dtype)
        diffs = {v: _difference(_flat(forward(v, m, inputs).logits), ref) for v, m in models.items()}
        del ref
        runs.update({v: (lambda v=v, m=m: forward(v, m, inputs)) for v, m in models.items()})
        timing = interleaved(runs, repeats)
    return {
        **asdict(case),
        "flops": flops.get_total_flops(),
        "reference": f"{ref_variant} fp32",
        "variants": {v: {**timing[v], "vs_reference": diffs[v]} for v in variants},
        **({FP32_BASELINE: timing[FP32_BASELINE]} if FP32_BASELINE in timing else {}),
        "repeats": repeats,
        "machine": machine(),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def memory_case(case: Case, variant: str) -> dict[str, Any]:
    """Peak memory of one variant's forward, alone in this process (after a warm-up)."""
    return_freed_memory_to_os()
    dtype = DTYPES[case.dtype]
    model = load_models(case.model, [variant], dtype)[variant]
    inputs = cast_floats(make_inputs(case), dtype)
    with torch.no_grad():
        return {"peak_bytes": peak_memory(lambda: forward(variant, model, inputs))}


def _worker(job: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """Run one job in a subprocess → (its JSON result, None) or (None, why it failed)."""
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], capture_output=True, text=True)
    if proc.returncode == 0:
        return json.loads(proc.stdout.strip().splitlines()[-1]), None
    if proc.returncode < 0 or proc.returncode == 137:
        return None, f"killed by signal {-proc.returncode if proc.returncode < 0 else 9} (out of memory?)"
    return None, (proc.stderr.strip().splitlines() or ["failed"])[-1]


def run_case(case: Case, variants: list[str], repeats: int) -> dict[str, Any]:
    """Timing (all variants, one process), then each variant's peak memory (one process each). Where transformers
    fails (out of memory, or a case its code cannot run), its error is recorded and ours are measured alone."""
    row, error = _worker({"mode": "time", "case": asdict(case), "variants": variants, "repeats": repeats})
    ours = [v for v in variants if v != "transformers"]
    if row is None and ours != variants and ours:
        row, _ = _worker({"mode": "time", "case": asdict(case), "variants": ours, "repeats": repeats})
        if row is not None:
            row["transformers_error"] = error
    if row is None:
        return {**asdict(case), "error": error, "machine": machine()}
    for variant in row["variants"]:
        mem, error = _worker({"mode": "memory", "case": asdict(case), "variant": variant})
        row["variants"][variant]["peak_bytes"] = None if mem is None else mem["peak_bytes"]
        if error:
            row["variants"][variant]["memory_error"] = error
    return row


# ---- report ----


def _fmt_mib(b: float | None) -> str:
    return "–" if b is None else f"{b / 2**20:,.0f}"


def _agreement(row: dict[str, Any], variant: str) -> str:
    d = row["variants"][variant]["vs_reference"]
    if row["dtype"] == "fp32":
        ok = d["max_abs"] <= 1e-4 * max(1.0, d["max_abs_ref"]) and d["rel_l2"] <= 1e-5
        return f"{d['max_abs']:.1e} {'✓' if ok else '✗'}"
    return f"{d['rel_l2']:.1e}"


def _bf16_table(rows: list[dict[str, Any]]) -> list[str]:
    """bf16 rows against transformers in float32, timed in the same run."""
    rows = [r for r in rows if FP32_BASELINE in r]
    if not rows:
        return []
    lines = [
        "",
        "## bf16 against transformers in float32 (same run)",
        "",
        "| model | case | batch | transformers fp32 s | transformers bf16 s | ours+oneDNN bf16 s | speed-up vs tf fp32"
        " (paired / best) | speed-up vs tf bf16 (paired / best) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base, v = r[FP32_BASELINE], r["variants"]
        tf, fast = v.get("transformers"), v.get("ours+onednn")
        cells = [
            r["model"],
            r["case"],
            str(r["batch"]),
            *(f"{x['seconds']:.2f}" if x else "–" for x in (base, tf, fast)),
            speed_up(base, fast),
            speed_up(tf, fast),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(results: dict[str, dict[str, Any]]) -> str:
    rows = sorted(results.values(), key=lambda r: (r["model"], r["case"], r["dtype"], r["batch"]))
    latest = max((r for r in rows if "peaks" in r), key=lambda r: r.get("finished", ""), default=None)
    lines = [
        "# perceiver_io vs transformers (same random weights, CPU)",
        "",
        *(markdown_header(latest["cpu_description"], latest["peaks"]) if latest else []),
        "Rows from other runs are compared with their own run's peaks (listed under Machine(s)).",
        "",
        "Time: median seconds per forward (interleaved repeats after a warm-up). Speed-up: transformers' time ÷"
        " ours as *paired / best*: the median over rounds of same-round ratios, and the ratio of the fastest samples"
        " (both robust to bursts of load from other work; see the load during each row below)."
        " Peak: resident memory above the level before the forward (MiB). Agreement: fp32 rows give max|Δ| to"
        " transformers (to ours-torch where transformers fails) and ✓ when within the parity criterion"
        " (max|Δ| ≤ 1e-4·max(1,|ref|), rel L2 ≤ 1e-5); bf16"
        " rows give the relative L2 error to our float32 output. GFLOP/s: counted FLOPs ÷ time, and its % of the"
        " GEMM peak of the row's dtype measured by the run that produced the row.",
        "",
        "Variants: *torch* = perceiver_io with oneDNN switched off (torch's kernels: the default before oneDNN became"
        " it); *oneDNN* = after `optimize_for_inference` (every linear on oneDNN: what the task helpers run; the"
        " default model, attention and MLPs on oneDNN, times within a few % of it: `default_path.md`).",
        "",
        "| model | case | batch | dtype | transformers s | torch s | oneDNN s | speed-up torch | speed-up"
        " oneDNN | GFLOP/s (% of peak) tf / oneDNN | peak MiB tf / torch / oneDNN | memory ratio oneDNN/tf |"
        " agreement torch | agreement oneDNN |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['case']} | {r['batch']} | {r['dtype']} | {r['error']} |" + " |" * 10)
            continue
        v = r["variants"]

        def get(name: str, key: str, v: dict = v) -> float | None:
            return v[name][key] if name in v else None

        t_tf, t_ours, t_fast = (get(n, "seconds") for n in VARIANTS)
        m_tf, m_ours, m_fast = (get(n, "peak_bytes") for n in VARIANTS)
        cells = [
            r["model"],
            r["case"],
            str(r["batch"]),
            r["dtype"],
            f"fails: {r['transformers_error']}" if "transformers_error" in r else f"{t_tf:.2f}" if t_tf else "–",
            *(f"{t:.2f}" if t else "–" for t in (t_ours, t_fast)),
            speed_up(v.get("transformers"), v.get("ours-torch")),
            speed_up(v.get("transformers"), v.get("ours+onednn")),
            " / ".join(achieved(r["flops"], t, r.get("peaks"), r["dtype"]) for t in (t_tf, t_fast)),
            " / ".join(_fmt_mib(m) for m in (m_tf, m_ours, m_fast)),
            f"{m_fast / m_tf:.2f}" if m_tf and m_fast else "–",
            _agreement(r, "ours-torch") if "ours-torch" in v else "–",
            _agreement(r, "ours+onednn") if "ours+onednn" in v else "–",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += _bf16_table(rows)
    machines = {
        json.dumps({k: m[k] for k in m if k not in ("loadavg", "cpu_pressure")}, sort_keys=True)
        for m in (r["machine"] for r in rows)
    }
    lines += ["", "Machine(s):", ""]
    lines += [f"- `{m}`" for m in sorted(machines)]
    runs = {describe_peaks(r["peaks"]) for r in rows if "peaks" in r}
    lines += ["", "Peaks measured by the runs behind these rows:", "", *(f"- {p}" for p in sorted(runs))]
    lines += ["", "Load during each row (1/5/15-min load average; CPU pressure):", ""]
    lines += [
        f"- {r['model']} {r['case']} b{r['batch']} {r['dtype']}: {r['machine']['loadavg']};"
        f" {r['machine']['cpu_pressure']}"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(RELEASED), choices=list(RELEASED))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    parser.add_argument("--cases", nargs="+", help="only cases whose name contains one of these (e.g. 'full')")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    add_peak_arguments(parser)
    args = parser.parse_args()
    if args.worker:
        job = json.loads(args.worker)
        case = Case(**job["case"])
        if job["mode"] == "time":
            print(json.dumps(time_case(case, job["variants"], job["repeats"])))
        else:
            print(json.dumps(memory_case(case, job["variant"])))
        return
    results = json.loads(JSON_PATH.read_text()) if JSON_PATH.is_file() else {}
    # The machine's limits, measured once per run in this process (the workers' rows are compared with them).
    peaks, cpu = peaks_for(args), cpu_description()
    print(describe_peaks(peaks), flush=True)
    for case in cases(args.models, args.batches, args.dtypes, args.cases):
        print(f"{case.key} …", flush=True)
        row = {**run_case(case, args.variants, args.repeats), "peaks": peaks, "cpu_description": cpu}
        results[case.key] = row
        write_json(JSON_PATH, results)
        MD_PATH.write_text(markdown(results))
        if "error" in row:
            print(f"  {row['error']}", flush=True)
        else:
            print("  " + ", ".join(f"{v} {r['seconds']:.2f}s" for v, r in row["variants"].items()), flush=True)
    print(MD_PATH.read_text())


if __name__ == "__main__":
    main()
