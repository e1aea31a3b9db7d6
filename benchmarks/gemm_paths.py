"""Linear layers: PyTorch's default GEMM (MKL for float32) vs oneDNN's fused linear, on the released models' shapes.

The data behind ``perceiver_io.layers.onednn.OneDNNLinear``: GFLOP/s of ``F.linear`` and of
``perceiver_io.layers.onednn.linear`` (dense weights, as we use it, and with weights pre-packed by oneDNN, which we
do not use), float32 and bfloat16, and the float32 results' max |Δ| to a float64 reference.

    .venv/bin/python benchmarks/gemm_paths.py [--dtypes fp32]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from common import RESULTS, interleaved, machine, write_json
from machine import add_peak_arguments, cpu_description, markdown_header, peaks_for

from perceiver_io.layers import onednn

# name: (rows M, in K, out N)
SHAPES = {
    "vision latent q/k/v/o/MLP (b1)": (512, 1024, 1024),
    "vision latent (b8)": (4096, 1024, 1024),
    "vision cross k/v (50,176 px)": (50176, 261, 261),
    "language latent v/o/MLP": (256, 1280, 1280),
    "language latent q/k": (256, 1280, 256),
    "language input v": (2048, 768, 1280),
    "flow latent": (2048, 512, 512),
    "flow decoder q (16k chunk)": (16384, 322, 512),
    "multimodal decoder MLP (chunk)": (6290, 1026, 1026),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
_PEAK_DTYPE = {"float32": "fp32", "bfloat16": "bf16"}


def measure(name: str, dtype: torch.dtype, repeats: int) -> dict:
    m, k, n = SHAPES[name]
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(m, k, generator=g), torch.randn(n, k, generator=g) * k**-0.5, torch.randn(n, generator=g)
    reference = F.linear(x.double(), w.double(), b.double())
    x, w, b = x.to(dtype), w.to(dtype), b.to(dtype)
    packed = torch.ops.mkldnn._reorder_linear_weight(w, m)
    runs = {
        "torch default": lambda: F.linear(x, w, b),
        "oneDNN": lambda: onednn.linear(x, w, b),
        "oneDNN pre-packed": lambda: torch.ops.mkldnn._linear_pointwise(x, packed, b, "none", [], ""),
    }
    with torch.no_grad():
        errors = {v: (fn().double() - reference).abs().max().item() for v, fn in runs.items()}
        timing = interleaved(runs, repeats)
    flops = 2 * m * k * n
    return {
        "shape": name,
        "mkn": [m, k, n],
        "dtype": str(dtype).removeprefix("torch."),
        "gflops": {v: flops / r["seconds"] / 1e9 for v, r in timing.items()},
        "max_abs_error": errors,
    }


def markdown(rows: list[dict], cpu: dict, peaks: dict) -> str:
    variants = ["torch default", "oneDNN", "oneDNN pre-packed"]
    lines = [
        "# Linear layers: GFLOP/s (interleaved medians) and max |Δ| to float64",
        "",
        *markdown_header(cpu, peaks),
        "| shape | M×K×N | dtype | " + " | ".join(variants) + " | oneDNN ÷ default | max|Δ| default / oneDNN |"
        " oneDNN % of peak |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        g, e = r["gflops"], r["max_abs_error"]
        lines.append(
            f"| {r['shape']} | {'×'.join(map(str, r['mkn']))} | {r['dtype']} | "
            + " | ".join(f"{g[v]:.0f}" for v in variants)
            + f" | {g['oneDNN'] / g['torch default']:.2f}× | {e['torch default']:.1e} / {e['oneDNN']:.1e} |"
            + f" {100 * g['oneDNN'] / peaks[_PEAK_DTYPE[r['dtype']]]:.0f} % |"
        )
    lines += ["", f"Machine: `{machine()}`", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for gemm_paths.json and .md")
    add_peak_arguments(parser)
    args = parser.parse_args()
    if not onednn.available():
        raise SystemExit("this PyTorch build has no oneDNN linear")
    peaks, cpu = peaks_for(args), cpu_description()
    rows = []
    for name in SHAPES:
        for dtype in args.dtypes:
            rows.append(measure(name, DTYPES[dtype], args.repeats))
            print(name, dtype, {v: round(x) for v, x in rows[-1]["gflops"].items()}, flush=True)
    write_json(args.out / "gemm_paths.json", {"rows": rows, "machine": machine(), "cpu": cpu, "peaks": peaks})
    text = markdown(rows, cpu, peaks)
    (args.out / "gemm_paths.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
