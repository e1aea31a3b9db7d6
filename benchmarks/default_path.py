"""What a user gets without asking: the default model against oneDNN switched off, ``optimize_for_inference`` and
transformers, timed in one process (interleaved rounds, medians; speed-ups are medians of same-round ratios).

The evidence behind the default CPU inference path (``perceiver_io.layers.onednn``: oneDNN's GEMMs where they
time faster than torch's on this CPU, attention kernels timed per shape): the default should time like the faster
of oneDNN forced on and off, like ``optimize_for_inference`` (which only adds the few linears outside the
layers), and ahead of transformers.

    .venv/bin/python benchmarks/default_path.py [--models vision-perceiver-fourier] [--dtypes fp32]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from common import RESULTS, VARIANT_HELP, machine, speed_up, write_json
from compare_transformers import DTYPES, FP32_BASELINE, Case, cases, time_case
from machine import achieved, add_peak_arguments, cpu_description, markdown_header, peaks_for

from perceiver_io.layers import onednn
from perceiver_io.layers.attention import measured_paths

VARIANTS = ["transformers", "ours-torch", "ours-onednn", "ours", "ours+onednn", "ours+prepack", "ours+compile"]


def _key(row: dict[str, Any]) -> str:
    return Case(row["model"], row["case"], row["batch"], row["dtype"]).key


def _kernels_chosen(linears: dict[tuple, bool], paths: dict[tuple, str]) -> str:
    """One line on what the timed choices of a case picked: linear shapes (rows×in×out) on oneDNN or torch, and
    the attention path per shape (pairs×T×S)."""
    linear = ", ".join(
        f"{rows}×{n_in}×{n_out}{' +GELU' if gelu else ''}: {'oneDNN' if v else 'torch'}"
        for (_, rows, n_out, n_in, _, gelu, *_), v in linears.items()
    )
    attention = ", ".join(f"{k[1]}×{k[2]}×{k[3]}: {v}" for k, v in paths.items())
    return f"linears {linear or '–'}; attention {attention or '–'}"


def markdown(rows: list[dict[str, Any]], machine_info: dict[str, Any], cpu: dict[str, Any], peaks: dict) -> str:
    lines = [
        "# The default path: perceiver_io as loaded vs oneDNN off, optimize_for_inference and transformers",
        "",
        *markdown_header(cpu, peaks),
        "Rows kept from earlier runs are compared with their own run's peaks (in the JSON).",
        "",
        *(f"- `{v}`: {VARIANT_HELP[v]}" for v in VARIANTS),
        "",
        "Seconds: median per forward. Ratios (> 1: the second is faster) as *paired / best*: the median of"
        " same-round ratios, and the ratio of the fastest samples (`common.speed_up`).",
        "",
        "| model | case | batch | dtype | " + " | ".join(f"{v} s" for v in VARIANTS) + " | ours-torch ÷ ours |"
        " ours-onednn ÷ ours | ours ÷ ours+onednn | ours ÷ ours+prepack | ours ÷ ours+compile | transformers ÷ ours |"
        " transformers fp32 ÷ ours (bf16 rows) |"
        " GFLOP/s (% of peak) " + " / ".join(VARIANTS) + " |",
        "|---|---|---|---|" + "---|" * (len(VARIANTS) + 8),
    ]
    for r in rows:
        v = r["variants"]
        ups = [
            speed_up(v["ours-torch"], v["ours"]),
            speed_up(v["ours-onednn"], v["ours"]),
            speed_up(v["ours"], v["ours+onednn"]),
            speed_up(v["ours"], v.get("ours+prepack")),
            speed_up(v["ours"], v.get("ours+compile")),
            speed_up(v["transformers"], v["ours"]),
            speed_up(r.get(FP32_BASELINE), v["ours"]),
        ]
        seconds = {n: v[n]["seconds"] if n in v else None for n in VARIANTS}  # older rows lack newer variants
        cells = [r["model"], r["case"], str(r["batch"]), r["dtype"]]
        cells += ["–" if t is None else f"{t:.2f}" for t in seconds.values()]
        rate = " / ".join(achieved(r["flops"], t, r.get("peaks"), r["dtype"]) for t in seconds.values())
        lines.append("| " + " | ".join([*cells, *ups, rate]) + " |")
    lines += ["", f"Machine: `{machine_info}`", "", "Load during each row (1/5/15-min load average; CPU pressure):", ""]
    lines += [
        f"- {r['model']} b{r['batch']} {r['dtype']}: {r['machine']['loadavg']}; {r['machine']['cpu_pressure']}"
        for r in rows
    ]
    lines += ["", "Kernels the default (`ours`) chose by timing in each case's process, first call of each shape:", ""]
    lines += [f"- {r['model']} b{r['batch']} {r['dtype']}: {r['kernels']}" for r in rows if "kernels" in r]
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["vision-perceiver-fourier", "language-perceiver"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1])
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for default_path.json and .md")
    add_peak_arguments(parser)
    args = parser.parse_args()
    peaks, cpu = peaks_for(args), cpu_description()
    # Rows accumulate across runs: a subset run replaces only its own cases.
    json_path = args.out / "default_path.json"
    rows = json.loads(json_path.read_text())["rows"] if json_path.is_file() else []
    for case in cases(args.models, args.batches, args.dtypes, None):
        print(f"{case.key} …", flush=True)
        linears, paths = onednn.measured(), measured_paths()
        row = {**time_case(case, VARIANTS, args.repeats), "peaks": peaks}
        row["kernels"] = _kernels_chosen(
            {k: v for k, v in onednn.measured().items() if k not in linears},
            {k: v for k, v in measured_paths().items() if k not in paths},
        )
        rows = [r for r in rows if _key(r) != case.key] + [row]
        print("  " + ", ".join(f"{n} {t['seconds']:.2f}s" for n, t in row["variants"].items()), flush=True)
    machine_info = machine()
    write_json(json_path, {"rows": rows, "machine": machine_info, "cpu": cpu, "peaks": peaks})
    text = markdown(rows, machine_info, cpu, peaks)
    (args.out / "default_path.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
