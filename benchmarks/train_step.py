"""One training step — forward, loss, backward, AdamW step — of the six released architectures: perceiver_io
against transformers on the same weights, float32 and bfloat16 autocast.

Both libraries load the same random-weight folder, see the same batch and go through the same loss
(``workloads.loss``: masked-LM cross-entropy, image cross-entropy, flow end-point error, the multimodal
autoencoding loss) and the same optimizer (``torch.optim.AdamW``, torch's default foreach implementation; our
training recipes use LAMB, which transformers does not ship — like is compared with like). bf16 rows run forward
and loss under ``torch.autocast("cpu", torch.bfloat16)`` with float32 weights, as mixed-precision training does.

Per case, one process times the contenders interleaved (after a warm-up step, taken in eval mode so that dropout
is off and both libraries' first loss and gradient norm can be compared: they agree to float32 rounding), and
one process per contender measures the peak resident memory of a step. ``ours+checkpointing`` is perceiver_io
with activation checkpointing of every encoder layer (``set_gradient_checkpointing``); transformers refuses
gradient checkpointing for Perceiver (its refusal is recorded). FLOPs of a step (forward + backward) are counted
once with ``torch.utils.flop_counter`` on transformers' model (plain matmuls; ours where transformers fails), and
each rate is compared with the GEMM peak of the row's dtype measured in the same run (``machine.py``).

    .venv/bin/python benchmarks/train_step.py                                   # everything (hours on 2 cores)
    .venv/bin/python benchmarks/train_step.py --models vision-perceiver-fourier --dtypes fp32 --batch 8
    .venv/bin/python benchmarks/train_step.py --smoke --out /tmp/train_smoke    # small configs, seconds
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import workloads
from common import RESULTS, flop_counter, interleaved, machine, peak_memory, return_freed_memory_to_os, write_json
from common import speed_up as ratio
from machine import (
    achieved,
    add_peak_arguments,
    cpu_description,
    describe_peaks,
    markdown_header,
    peaks_for,
    percent_of_peak,
)

from perceiver_io.released import RELEASED

VARIANTS = ["transformers", "ours", "ours+checkpointing"]
DTYPES = ["fp32", "bf16"]
LEARNING_RATE = 1e-5  # small: the timed steps must not drive the random-weight models into overflow


def load_variant(variant: str, name: str, small: bool) -> torch.nn.Module:
    """``variant``'s model (``VARIANTS``), float32, train mode."""
    model = workloads.load("transformers" if variant == "transformers" else "perceiver_io", name, small)
    if variant == "ours+checkpointing":
        model.set_gradient_checkpointing(True)
    return model


def make_step(
    model: torch.nn.Module, name: str, batch: int, dtype: str, small: bool, device: str = "cpu"
) -> Callable[[], torch.Tensor]:
    """A callable that runs one training step of ``model`` (already on ``device``) with its own AdamW and returns
    the loss. ``dtype`` 'bf16' runs forward and loss under autocast."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
    inputs, targets = workloads.to_device(workloads.batch(name, batch, small), device)

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        autocast = torch.autocast(device, dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()
        with autocast:
            loss = workloads.loss(name, model(**inputs).logits, inputs, targets)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def grad_norm(model: torch.nn.Module) -> float:
    norms = [p.grad.norm() for p in model.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms)).item()


def checkpointing_refusal(model: torch.nn.Module) -> str | None:
    """transformers' answer to enabling activation (gradient) checkpointing: None if accepted, else its error."""
    # transformers 5 renamed gradient_checkpointing_enable (deprecated) to activation_checkpointing_enable.
    name = "activation" if hasattr(model, "activation_checkpointing_enable") else "gradient"
    try:
        getattr(model, f"{name}_checkpointing_enable")()
    except Exception as error:  # recorded, whatever transformers raises
        return f"{type(error).__name__}: {error}".splitlines()[0]
    getattr(model, f"{name}_checkpointing_disable")()
    return None


def time_case(name: str, batch: int, dtype: str, variants: list[str], repeats: int, small: bool) -> dict[str, Any]:
    """Warm-up step of each variant in eval mode (first loss, gradient norm and FLOPs recorded), then the
    interleaved timing of train-mode steps."""
    torch.manual_seed(0)
    steps, first, flops = {}, {}, {}
    refusal = None
    for variant in variants:
        model = load_variant(variant, name, small)
        step = make_step(model, name, batch, dtype, small)
        if variant == "transformers":
            refusal = checkpointing_refusal(model)
        model.eval()  # dropout off: the first step's loss and gradients are comparable across libraries
        with flop_counter() as counter:
            loss = step()
        first[variant] = {"loss": loss.item(), "grad_norm": grad_norm(model)}
        flops[variant] = counter.get_total_flops()
        model.train()
        steps[variant] = step
    timing = interleaved(steps, repeats)
    reference = "transformers" if "transformers" in variants else variants[0]
    agreement = {
        v: {
            key: abs(first[v][key] - first[reference][key]) / max(abs(first[reference][key]), 1e-30)
            for key in ("loss", "grad_norm")
        }
        for v in variants
    }
    return {
        "model": name,
        "batch": batch,
        "dtype": dtype,
        "small": small,
        "flops": flops[reference],
        "flops_counted_on": reference,
        "variants": {v: {**timing[v], "first_step": first[v], "vs_reference": agreement[v]} for v in variants},
        "transformers_checkpointing": refusal,
        "repeats": repeats,
        "machine": machine(),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def memory_case(name: str, batch: int, dtype: str, variant: str, small: bool) -> dict[str, Any]:
    """Peak resident memory of one training step of ``variant`` (after a warm-up step)."""
    return_freed_memory_to_os()
    step = make_step(load_variant(variant, name, small), name, batch, dtype, small)
    return {"peak_bytes": peak_memory(step, runs=1)}


def _worker(job: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """Run one job in a subprocess → (its JSON result, None) or (None, why it failed)."""
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], capture_output=True, text=True)
    if proc.returncode == 0:
        return json.loads(proc.stdout.strip().splitlines()[-1]), None
    if proc.returncode < 0 or proc.returncode == 137:
        return None, f"killed by signal {-proc.returncode if proc.returncode < 0 else 9} (out of memory?)"
    return None, (proc.stderr.strip().splitlines() or ["failed"])[-1]


def _run_job(job: dict[str, Any], in_process: bool) -> tuple[dict[str, Any] | None, str | None]:
    if not in_process:
        return _worker(job)
    try:
        return _dispatch(job), None
    except Exception as error:
        return None, f"{type(error).__name__}: {error}"


def _dispatch(job: dict[str, Any]) -> dict[str, Any]:
    if job["mode"] == "time":
        return time_case(job["model"], job["batch"], job["dtype"], job["variants"], job["repeats"], job["small"])
    return memory_case(job["model"], job["batch"], job["dtype"], job["variant"], job["small"])


def run_case(
    name: str, batch: int, dtype: str, variants: list[str], repeats: int, small: bool, in_process: bool
) -> dict[str, Any]:
    """Timing (all variants, one process), then each variant's peak memory (one process each). Where transformers
    fails (out of memory), its error is recorded and ours are measured alone."""
    case = {"model": name, "batch": batch, "dtype": dtype, "small": small}
    row, error = _run_job({"mode": "time", **case, "variants": variants, "repeats": repeats}, in_process)
    ours = [v for v in variants if v != "transformers"]
    if row is None and ours != variants and ours:
        row, _ = _run_job({"mode": "time", **case, "variants": ours, "repeats": repeats}, in_process)
        if row is not None:
            row["transformers_error"] = error
    if row is None:
        return {**case, "error": error, "machine": machine()}
    for variant in row["variants"]:
        mem, error = _run_job({"mode": "memory", **case, "variant": variant}, in_process)
        row["variants"][variant]["peak_bytes"] = None if mem is None else mem["peak_bytes"]
        if error:
            row["variants"][variant]["memory_error"] = error
    gc.collect()
    return row


def key(row: dict[str, Any]) -> str:
    return f"{row['model']}|b{row['batch']}|{row['dtype']}{'|small' if row.get('small') else ''}"


# ---- report ----


def _mib(b: float | None) -> str:
    return "–" if b is None else f"{b / 2**20:,.0f}"


def markdown(results: dict[str, dict[str, Any]], cpu: dict[str, Any], peaks: dict[str, Any]) -> str:
    rows = sorted(results.values(), key=lambda r: (r["model"], r["dtype"], r["batch"]))
    lines = [
        "# One training step: perceiver_io vs transformers (same random weights, CPU)",
        "",
        *markdown_header(cpu, peaks),
        "A step: forward, the model's training loss, backward, `torch.optim.AdamW` step; bf16 = autocast with float32"
        " weights. Seconds: median per step (interleaved rounds after a warm-up). Speed-up: transformers ÷ ours as"
        " *paired / best* (`common.speed_up`). GFLOP/s: counted forward + backward FLOPs ÷ time, with % of the"
        " measured GEMM peak of the row's dtype. Peak: resident memory of a step above the level before it (MiB),"
        " one process per contender. Δ first step: relative difference of ours' first loss / gradient norm to"
        " transformers' (eval mode, same batch). Ceiling: transformers' time ÷ the step's FLOPs at the GEMM peak —"
        " the speed-up of an implementation whose every FLOP ran at the peak and everything else took no time.",
        "",
        "| model | batch | dtype | transformers s | ours s | ours+ckpt s | speed-up ours | speed-up ours+ckpt |"
        " ceiling | GFLOP/s (% of peak) tf / ours | peak MiB tf / ours / ours+ckpt | Δ first step loss / grad norm |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        label = r["model"] + (" (small config)" if r.get("small") else "")
        if "error" in r:
            lines.append(f"| {label} | {r['batch']} | {r['dtype']} | {r['error']} |" + " |" * 9)
            continue
        v = r["variants"]
        t = {n: v[n]["seconds"] if n in v else None for n in VARIANTS}
        m = {n: v[n].get("peak_bytes") if n in v else None for n in VARIANTS}
        ours = v.get("ours", {}).get("vs_reference")
        tf_time = f"fails: {r['transformers_error']}" if "transformers_error" in r else _seconds(t["transformers"])
        cells = [
            label,
            str(r["batch"]),
            r["dtype"],
            tf_time,
            _seconds(t["ours"]),
            _seconds(t["ours+checkpointing"]),
            ratio(v.get("transformers"), v.get("ours")),
            ratio(v.get("transformers"), v.get("ours+checkpointing")),
            _ceiling(r["flops"], t["transformers"], r.get("peaks"), r["dtype"]),
            " / ".join(achieved(r["flops"], t[n], r.get("peaks"), r["dtype"]) for n in ("transformers", "ours")),
            " / ".join(_mib(m[n]) for n in VARIANTS),
            f"{ours['loss']:.1e} / {ours['grad_norm']:.1e}" if ours and "transformers" in v else "–",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    refusals = {r["transformers_checkpointing"] for r in rows if r.get("transformers_checkpointing")}
    lines += ["", "transformers' gradient checkpointing for Perceiver: " + ("; ".join(sorted(refusals)) or "–")]
    runs = {describe_peaks(r["peaks"]) for r in rows if "peaks" in r}
    lines += ["", "Peaks measured by the runs behind these rows:", "", *(f"- {p}" for p in sorted(runs))]
    lines += ["", "Load during each row (1/5/15-min load average; CPU pressure):", ""]
    lines += [f"- {key(r)}: {r['machine']['loadavg']}; {r['machine']['cpu_pressure']}" for r in rows if "machine" in r]
    return "\n".join(lines) + "\n"


def _ceiling(flops: float | None, seconds: float | None, peaks: dict[str, Any] | None, dtype: str) -> str:
    """transformers' step time ÷ the time its FLOPs take at the measured GEMM peak (the largest speed-up any
    implementation of the same arithmetic could show)."""
    pct = percent_of_peak(flops, seconds, peaks, dtype)
    return "–" if pct is None else f"{100 / pct:.2f}×"


def _seconds(s: float | None) -> str:
    return "–" if s is None else f"{s:.2f}" if s >= 0.1 else f"{s * 1e3:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(RELEASED), choices=list(RELEASED))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dtypes", nargs="+", default=DTYPES, choices=DTYPES)
    parser.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for train_step.json and train_step.md")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="small configurations, batch 2, one repeat, quick peaks, all in this process: a few seconds",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    add_peak_arguments(parser)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_dispatch(json.loads(args.worker))))
        return
    if args.smoke:
        args.batch, args.repeats, args.peak_repeats = 2, 1, 0
    json_path, md_path = args.out / "train_step.json", args.out / "train_step.md"
    results = json.loads(json_path.read_text()) if json_path.is_file() else {}
    peaks, cpu = peaks_for(args), cpu_description()
    print(describe_peaks(peaks), flush=True)
    for name in args.models:
        for dtype in args.dtypes:
            print(f"{name} b{args.batch} {dtype} …", flush=True)
            row = run_case(name, args.batch, dtype, args.variants, args.repeats, args.smoke, in_process=args.smoke)
            row.update(peaks=peaks, cpu_description=cpu)
            results[key(row)] = row
            write_json(json_path, results)
            md_path.write_text(markdown(results, cpu, peaks))
            if "error" in row:
                print(f"  {row['error']}", flush=True)
            else:
                print("  " + ", ".join(f"{v} {r['seconds']:.3f}s" for v, r in row["variants"].items()), flush=True)
    print(md_path.read_text())


if __name__ == "__main__":
    main()
