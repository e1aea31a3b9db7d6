"""glibc's default malloc against ``perceiver_io.allocator.keep_freed_memory`` (what the ``perceiver`` command runs
with): the same training steps and forwards, each setting in a fresh process (the setting is process-wide), both
libraries.

Each job loads a released architecture (random weights), runs ``--steps`` training steps (forward, loss, backward,
AdamW; ``train_step.make_step``) or forwards, and reports per step: wall seconds, system CPU seconds (the kernel
zeroing fresh pages) and minor page faults. The first step is a warm-up; the table shows the median of the rest.
Settings alternate (default, keep, default, keep, …) over ``--rounds`` so that drifting load hits both.

    .venv/bin/python benchmarks/allocator.py [--out benchmarks/results/zen4] [--rounds 1]
    .venv/bin/python benchmarks/allocator.py --smoke --out /tmp/allocator_smoke   # small configs, seconds
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import workloads
from common import RESULTS, machine, write_json
from machine import cpu_description, describe
from train_step import make_step

from perceiver_io.allocator import keep_freed_memory

SETTINGS = ("default", "keep")
# (library, model, batch, what): a training step at batch 8 as in train_step.py, and batch-1 forwards.
JOBS = [
    ("perceiver_io", "language-perceiver", 8, "train"),
    ("transformers", "language-perceiver", 8, "train"),
    ("perceiver_io", "vision-perceiver-fourier", 1, "forward"),
    ("perceiver_io", "language-perceiver", 1, "forward"),
]


def run_job(library: str, name: str, batch: int, what: str, setting: str, steps: int, small: bool) -> dict[str, Any]:
    """In this process: the setting, then ``steps`` timed calls → per-step seconds, system seconds, page faults."""
    applied = keep_freed_memory() if setting == "keep" else False
    torch.manual_seed(0)
    model = workloads.load(library, name, small)
    if what == "train":
        call = make_step(model, name, batch, "fp32", small)
    else:
        model.eval()
        inputs, _ = workloads.batch(name, batch, small)

        def call() -> None:
            with torch.no_grad():
                model(**inputs)

    samples = []
    for _ in range(steps):
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        call()
        seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
        samples.append((seconds, after.ru_stime - before.ru_stime, after.ru_minflt - before.ru_minflt))
    return {"applied": applied, "samples": samples}


def _worker(job: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{job}: {(proc.stderr.strip().splitlines() or ['failed'])[-1]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def markdown(rows: list[dict[str, Any]], cpu: dict[str, Any]) -> str:
    lines = [
        "# glibc's default malloc vs keep_freed_memory (the `perceiver` command's setting)",
        "",
        f"**CPU**: {describe(cpu)}",
        "",
        "Each setting in a fresh process; per step after a warm-up: median wall seconds, system CPU seconds and minor"
        " page faults. Speed-up: the default median ÷ the keep median.",
        "",
        "| library | model | batch | work | default s | keep s | speed-up | sys s default / keep |"
        " page faults default / keep |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        d, k = r["default"], r["keep"]
        lines.append(
            f"| {r['library']} | {r['model']} | {r['batch']} | {r['work']} | {d['seconds']:.2f} | {k['seconds']:.2f} |"
            f" {d['seconds'] / k['seconds']:.2f}× | {d['sys']:.1f} / {k['sys']:.1f} |"
            f" {d['faults']:,.0f} / {k['faults']:,.0f} |"
        )
    lines += ["", f"Machine: `{machine()}`", ""]
    return "\n".join(lines)


def _summary(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Medians over every round's steps after the first of each process."""
    kept = [s for run in runs for s in run["samples"][1:]]
    return {key: statistics.median(s[i] for s in kept) for i, key in enumerate(("seconds", "sys", "faults"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4, help="timed calls per process (the first is a warm-up)")
    parser.add_argument("--rounds", type=int, default=1, help="processes per setting and job")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for allocator.json and allocator.md")
    parser.add_argument("--smoke", action="store_true", help="small configurations, 2 steps: seconds")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        job = json.loads(args.worker)
        print(json.dumps(run_job(**job)))
        return
    rows, steps = [], 2 if args.smoke else args.steps
    for library, name, batch, what in JOBS:
        runs: dict[str, list[dict[str, Any]]] = {s: [] for s in SETTINGS}
        for _ in range(args.rounds):
            for setting in SETTINGS:
                job = dict(library=library, name=name, batch=batch, what=what, setting=setting, steps=steps)
                job["small"] = args.smoke
                runs[setting].append(_worker(job))
        row = dict(library=library, model=name, batch=batch, work=what, runs=runs)
        row.update({s: _summary(runs[s]) for s in SETTINGS})
        print(f"{library} {name} b{batch} {what}: " + ", ".join(f"{s} {row[s]['seconds']:.2f}s" for s in SETTINGS))
        rows.append(row)
    cpu = cpu_description()
    write_json(args.out / "allocator.json", {"rows": rows, "machine": machine(), "cpu": cpu})
    text = markdown(rows, cpu)
    (args.out / "allocator.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
