"""The machine a benchmark runs on: what its CPU is, and what it can do, measured in the same run.

A speed figure means something only next to the limit of the machine that produced it (the CPUs this project runs
on change from one run to the next: AMD Zen 4, Zen 5, Intel with AMX). ``cpu_description`` reads the CPU's
identity and the instruction-set extensions that decide GEMM speed; ``measure_peaks`` times, in-process, the best
float32 and bfloat16 GEMM of each available kernel (torch's default ``F.linear``: MKL in float32; oneDNN's fused
linear, with dense and with pre-packed weights) on a few large shapes, and the memory bandwidth of a large copy and
add. Every benchmark table states both in its header (``markdown_header``) and reports each model row's achieved
FLOP/s as a fraction of the measured peak (``percent_of_peak``).

    .venv/bin/python benchmarks/machine.py [--repeats 10]      # print the description and the peaks
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from perceiver_io.layers import onednn

# Extensions that decide GEMM speed: AVX-512 width and its bf16/int8 dot products, and Intel's AMX tile units.
GEMM_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")
# (M rows, K in, N out): two large square-ish ones and the released models' widest latent shapes.
PEAK_SHAPES = ((2048, 2048, 2048), (2048, 1280, 1280), (4096, 1024, 1024))
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
BANDWIDTH_BYTES = 256 * 2**20  # per tensor: far beyond any last-level cache


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_description() -> dict[str, Any]:
    """Model name, vendor, family/model/stepping, GEMM-relevant ISA flags (``GEMM_FLAGS`` present), core counts and
    torch's thread count."""
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    return {
        "model_name": info.get("model name") or platform.processor() or platform.machine(),
        "vendor": info.get("vendor_id"),
        "family": int(info["cpu family"]) if "cpu family" in info else None,
        "model": int(info["model"]) if info.get("model", "").isdigit() else None,
        "stepping": int(info["stepping"]) if info.get("stepping", "").isdigit() else None,
        "isa": [f for f in GEMM_FLAGS if f in flags],
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


def _best_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """The fastest of ``repeats`` calls after one warm-up (load from other work only ever adds time)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def gemm_kernels(dtype: torch.dtype, m: int, k: int, n: int) -> dict[str, Callable[[], torch.Tensor]]:
    """Each available GEMM kernel computing (m, k) @ (n, k)ᵀ in ``dtype`` on random operands."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(m, k, generator=g).to(dtype)
    w = (torch.randn(n, k, generator=g) * k**-0.5).to(dtype)
    kernels = {"torch F.linear": lambda: F.linear(x, w)}
    if onednn.available():
        packed = torch.ops.mkldnn._reorder_linear_weight(w, m)
        kernels["oneDNN linear"] = lambda: onednn.linear(x, w)
        kernels["oneDNN pre-packed"] = lambda: torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
    return kernels


def bandwidth(nbytes: int = BANDWIDTH_BYTES, repeats: int = 5) -> dict[str, float]:
    """Memory bandwidth in GB/s (10⁹ bytes): ``copy`` reads one ``nbytes`` tensor and writes another; ``add`` reads
    two and writes a third."""
    a, b, c = (torch.empty(nbytes // 4).fill_(i + 1.0) for i in range(3))
    copy = _best_seconds(lambda: c.copy_(a), repeats)
    add = _best_seconds(lambda: torch.add(a, b, out=c), repeats)
    return {"copy": 2 * nbytes / copy / 1e9, "add": 3 * nbytes / add / 1e9}


@functools.cache
def measure_peaks(repeats: int = 10, shapes: tuple[tuple[int, int, int], ...] = PEAK_SHAPES) -> dict[str, Any]:
    """GEMM GFLOP/s of every kernel × shape × dtype (best of ``repeats``), the best of each dtype (``fp32``,
    ``bf16``: the peak model rows are compared with) and the memory bandwidth. Takes ≈ 10 s on 2 cores at the
    default settings; measured once per process."""
    started = time.perf_counter()
    gemm: list[dict[str, Any]] = []
    with torch.no_grad():
        for dtype_name, dtype in DTYPES.items():
            for m, k, n in shapes:
                for kernel, fn in gemm_kernels(dtype, m, k, n).items():
                    gflops = 2 * m * k * n / _best_seconds(fn, repeats) / 1e9
                    gemm.append({"dtype": dtype_name, "kernel": kernel, "mkn": [m, k, n], "gflops": gflops})
        nbytes = BANDWIDTH_BYTES if max(m for m, _, _ in shapes) >= 1024 else BANDWIDTH_BYTES // 16
        memory = bandwidth(nbytes, max(2, repeats // 2))
    best = {d: max((r for r in gemm if r["dtype"] == d), key=lambda r: r["gflops"]) for d in DTYPES}
    return {
        "fp32": best["fp32"]["gflops"],
        "bf16": best["bf16"]["gflops"],
        "best": best,
        "gemm": gemm,
        "bandwidth_gbs": memory,
        "repeats": repeats,
        "seconds_to_measure": time.perf_counter() - started,
        "loadavg": Path("/proc/loadavg").read_text().split()[:3] if os.path.exists("/proc/loadavg") else None,
    }


def quick_peaks() -> dict[str, Any]:
    """``measure_peaks`` on small shapes with two repeats: well under a second, for smoke runs (not a peak)."""
    return measure_peaks(2, ((256, 256, 256),))


def add_peak_arguments(parser: argparse.ArgumentParser) -> None:
    """``--peak-repeats``: how many times each peak GEMM is timed (0: ``quick_peaks``, for smoke runs)."""
    parser.add_argument(
        "--peak-repeats",
        type=int,
        default=10,
        help="repeats of each GEMM-peak and bandwidth measurement (0: a sub-second stand-in for smoke runs)",
    )


def peaks_for(args: argparse.Namespace) -> dict[str, Any]:
    """The peaks as ``--peak-repeats`` asks."""
    return quick_peaks() if args.peak_repeats == 0 else measure_peaks(args.peak_repeats)


def percent_of_peak(
    flops: float | None, seconds: float | None, peaks: dict[str, Any] | None, dtype: str
) -> float | None:
    """Achieved FLOP/s as a percentage of this run's measured GEMM peak in ``dtype`` ('fp32' or 'bf16'); None where
    a figure is missing (no FLOPs, no time, no peaks)."""
    if not flops or not seconds or not peaks or dtype not in peaks:
        return None
    return 100 * flops / seconds / 1e9 / peaks[dtype]


def achieved(flops: float | None, seconds: float | None, peaks: dict[str, Any] | None, dtype: str) -> str:
    """ "GFLOP/s (x % of peak)" for a table cell; "–" where the time or count is missing."""
    if not flops or not seconds:
        return "–"
    pct = percent_of_peak(flops, seconds, peaks, dtype)
    return f"{flops / seconds / 1e9:.0f}" + ("" if pct is None else f" ({pct:.0f} %)")


def describe(cpu: dict[str, Any]) -> str:
    """One line: "Intel(R) Xeon(R) … (GenuineIntel family 6 model 143 stepping 8; 2 CPUs, torch 2 threads;
    avx2 avx512f …)"."""
    ident = f"{cpu.get('vendor')} family {cpu.get('family')} model {cpu.get('model')} stepping {cpu.get('stepping')}"
    cores = f"{cpu.get('usable_cpus', cpu.get('logical_cpus'))} CPUs, torch {cpu.get('torch_threads')} threads"
    return f"{cpu.get('model_name')} ({ident}; {cores}; {' '.join(cpu.get('isa', [])) or 'no GEMM ISA flags'})"


def describe_peaks(peaks: dict[str, Any]) -> str:
    """One line: the best fp32 and bf16 GEMM (kernel, shape) and the bandwidth."""

    def best(d: str) -> str:
        r = peaks["best"][d]
        return f"{d} {r['gflops']:.0f} GFLOP/s ({r['kernel']}, {'×'.join(map(str, r['mkn']))})"

    bw = peaks["bandwidth_gbs"]
    return (
        f"GEMM peak {best('fp32')}, {best('bf16')}; memory bandwidth copy {bw['copy']:.0f} GB/s, add {bw['add']:.0f}"
        f" GB/s (best of {peaks['repeats']}, load average {peaks.get('loadavg')})"
    )


def markdown_header(cpu: dict[str, Any], peaks: dict[str, Any]) -> list[str]:
    """Markdown lines for a table's header: the CPU, the peaks this run measured, and every kernel's best."""
    kernels = sorted({r["kernel"] for r in peaks["gemm"]})
    lines = [
        f"**CPU**: {describe(cpu)}",
        "",
        f'**Measured in this run** (`benchmarks/machine.py`): {describe_peaks(peaks)}. "% of peak" below is a'
        " row's counted FLOPs (2 per multiply-add) ÷ its time ÷ the GEMM peak of its dtype.",
        "",
        "| GEMM kernel | " + " | ".join(f"{d} GFLOP/s (best shape)" for d in DTYPES) + " |",
        "|---|" + "---|" * len(DTYPES),
    ]
    for kernel in kernels:
        cells = []
        for d in DTYPES:
            rows = [r for r in peaks["gemm"] if r["kernel"] == kernel and r["dtype"] == d]
            cells.append(f"{max(r['gflops'] for r in rows):.0f}" if rows else "–")
        lines.append(f"| {kernel} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    cpu = cpu_description()
    peaks = measure_peaks(args.repeats)
    print("\n".join(markdown_header(cpu, peaks)))
    print(json.dumps({"cpu": cpu, "peaks": peaks}, indent=2))


if __name__ == "__main__":
    main()
