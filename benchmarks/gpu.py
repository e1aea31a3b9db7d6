"""perceiver_io on a CUDA GPU: correctness against the CPU, then speed against transformers and the GPU's peak.

One run, ≤ 8 minutes on an H100/H200 (``--budget``, default 420 s of work after start-up; each part has its own
cap and skips the cases it cannot fit, largest last):

1. **check** (cap 90 s): every head, small configurations first (seconds): our model on the GPU against the same
   model on the CPU — float32 logits within 1e-4 relative L2 (TF32 off), bfloat16 logits (``model.to(bf16)``)
   within twice the CPU's own bfloat16 error of the CPU's float32 (``BF16_FACTOR``, floor 1.6e-2, ceiling 0.1), and
   the float32 training loss and gradient norm within 1e-4. Then
   language-perceiver and vision-perceiver-fourier at their released sizes (batch 1, float32).
2. **peak** (cap 30 s): the GPU's achieved peak — a large bfloat16 and float32 matmul (CUDA events, best of N) —
   and copy bandwidth; the datasheet's dense bfloat16 peak by device name (``DATASHEET_BF16_TFLOPS``).
3. **inference** (cap 150 s): the six released architectures, ours against transformers on the same random
   weights, float32 (TF32 off: IEEE float32 in both) and bfloat16 (``model.to(bf16)``), batch 1 and 8 (flow: one
   368×496 tile; multimodal: one 1/128 decode chunk), interleaved and timed with CUDA events.
4. **train** (cap 150 s): one training step (forward, loss, backward, AdamW; ``train_step.py``'s losses), float32
   and bfloat16 autocast, batch ``--batch`` (8), ours (also with activation checkpointing) against transformers,
   with peak GPU memory (``torch.cuda.max_memory_allocated``).

Each timed row reports TFLOP/s (FLOPs counted on transformers' model with ``torch.utils.flop_counter``) as a
fraction of the datasheet's dense bf16 peak and of the bf16 matmul peak measured in the same run. Results:
``<out>/gpu.md`` and ``gpu.json`` (``--out``, default ``benchmarks/results``).

Without CUDA, the CUDA parts are skipped (said so on the console and in the report) and the same code runs on the
CPU with the small configurations only, as a dry run of the script (seconds); it then keeps an earlier CUDA
report in ``--out`` rather than overwrite it. Needs only the repository and its test extras (``pip install -e
.[test]``, with a CUDA build of torch).

    python benchmarks/gpu.py                        # on the GPU machine: everything, ≤ 8 min
    python benchmarks/gpu.py --parts check peak     # correctness and peak only (≈ 1 min)
    python benchmarks/gpu.py --out /tmp/gpu_dry     # on a CPU-only machine: the dry run
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import workloads
from common import RESULTS, cast_floats, flop_counter, speed_up, write_json
from machine import cpu_description
from train_step import checkpointing_refusal, grad_norm, make_step

import perceiver_io
from perceiver_io.released import RELEASED

PARTS = {"check": 90.0, "peak": 30.0, "inference": 150.0, "train": 150.0}  # seconds each part may take
# Dense (no sparsity) bf16 tensor-core peak, TFLOP/s, from NVIDIA's datasheets; matched in order on the device name.
DATASHEET_BF16_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("A100", 312.0))
FP32_REL_L2 = 1e-4
# bf16 keeps 8 significant bits (unit roundoff u = 2⁻⁸ ≈ 3.9e-3); weights, activations and GEMM outputs are rounded
# and the errors add up over the layers, by an amount that depends on the model and its inputs (the released models'
# bf16 forward on the CPU: 0.5–1.3e-2 relative L2 of fp32, results/compare_transformers.md; the small flow model's
# 2-channel output: 4e-2). So the bound is calibrated in the same run: the GPU's bf16 logits may be off the CPU's
# fp32 by at most BF16_FACTOR × the CPU's own bf16 error on the same inputs, and never less than BF16_FLOOR (4u) nor
# more than BF16_CEILING; a wrong kernel is off by O(1).
BF16_FACTOR, BF16_FLOOR, BF16_CEILING = 2.0, 4 * 2**-8, 0.1
SEQUENCE_CLASSIFICATION = dict(workloads.SMALL["language-perceiver"], num_labels=3)  # the seventh head, check only


class Budget:
    """Seconds spent per part against its cap, and overall against ``total``."""

    def __init__(self, total: float) -> None:
        self.started, self.total = time.perf_counter(), total
        self.caps = dict(PARTS)
        self.spent = dict.fromkeys(PARTS, 0.0)

    def allows(self, part: str) -> bool:
        return self.spent[part] < self.caps[part] and time.perf_counter() - self.started < self.total

    @contextlib.contextmanager
    def charge(self, part: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.spent[part] += time.perf_counter() - start


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str) -> float:
    """Seconds of one call: CUDA events on the GPU (the kernels' time, launch included), wall time on the CPU."""
    if device != "cuda":
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    fn()
    end.record()
    end.synchronize()
    return begin.elapsed_time(end) / 1e3


def interleaved(runs: dict[str, Callable[[], Any]], device: str, repeats: int, warmup: int = 2) -> dict[str, Any]:
    """``common.interleaved`` with ``timed``: warm-ups, then rounds in alternating order; medians and samples."""
    for fn in runs.values():
        for _ in range(warmup):
            fn()
    synchronize(device)
    samples: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            samples[name].append(timed(runs[name], device))
    return {n: {"seconds": statistics.median(v), "all_seconds": [round(s, 6) for s in v]} for n, v in samples.items()}


def relative_l2(got: Any, ref: Any) -> float:
    """‖got − ref‖ / ‖ref‖ over all logits (dicts of logits concatenated), in float64 on the CPU."""
    if isinstance(ref, dict):
        got = torch.cat([got[k].flatten() for k in sorted(ref)])
        ref = torch.cat([ref[k].flatten() for k in sorted(ref)])
    got, ref = got.detach().double().cpu(), ref.detach().double().cpu()
    return ((got - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def datasheet_peak(name: str) -> float | None:
    return next((tflops for key, tflops in DATASHEET_BF16_TFLOPS if key in name), None)


# ---- 1. check ----


def _sequence_classifier() -> torch.nn.Module:
    config = perceiver_io.PerceiverConfig.from_dict(SEQUENCE_CLASSIFICATION)
    return perceiver_io.PerceiverForSequenceClassification(config)


def _heads(small_only: bool) -> list[tuple[str, str, Callable[[], torch.nn.Module] | None, bool]]:
    """(label, released name whose inputs and loss apply, a builder to use instead of loading that model, small)."""
    heads: list[tuple[str, str, Callable[[], torch.nn.Module] | None, bool]]
    heads = [(f"{name} (small)", name, None, True) for name in RELEASED]
    heads.append(("PerceiverForSequenceClassification (small)", "language-perceiver", _sequence_classifier, True))
    if not small_only:
        released = ("language-perceiver", "vision-perceiver-fourier")
        heads += [(f"{name} (released, b1)", name, None, False) for name in released]
    return heads


def check_head(
    label: str, name: str, build: Callable[[], torch.nn.Module] | None, small: bool, device: str
) -> dict[str, Any]:
    """Our model on ``device`` against itself on the CPU: fp32 and bf16 logits; fp32 training loss and gradient
    norm (where ``name``'s loss applies: not for a ``build``-ed head)."""
    torch.manual_seed(0)
    cpu_model = (build() if build else workloads.load("perceiver_io", name, small)).eval()
    inputs, targets = workloads.batch(name, 2 if small else 1, small)
    with torch.no_grad():
        reference = cpu_model(**inputs).logits
    row: dict[str, Any] = {"head": label}
    model = copy.deepcopy(cpu_model).to(device)
    on_device = workloads.to_device(inputs, device)
    with torch.no_grad():
        row["fp32_rel_l2"] = relative_l2(model(**on_device).logits, reference)
    if build is None:
        cpu_loss = workloads.loss(name, cpu_model(**inputs).logits, inputs, targets)
        cpu_loss.backward()
        dev_targets = workloads.to_device(targets, device)
        loss = workloads.loss(name, model(**on_device).logits, on_device, dev_targets)
        loss.backward()
        row["loss_rel"] = abs(loss.item() - cpu_loss.item()) / max(abs(cpu_loss.item()), 1e-30)
        row["grad_norm_rel"] = abs(grad_norm(model) - grad_norm(cpu_model)) / max(grad_norm(cpu_model), 1e-30)
    model.zero_grad(set_to_none=True)
    model.to(torch.bfloat16)
    cpu_model.zero_grad(set_to_none=True)
    cpu_model.to(torch.bfloat16)
    with torch.no_grad():
        row["bf16_rel_l2"] = relative_l2(model(**cast_floats(on_device, torch.bfloat16)).logits, reference)
        row["cpu_bf16_rel_l2"] = relative_l2(cpu_model(**cast_floats(inputs, torch.bfloat16)).logits, reference)
    row["bf16_bound"] = min(max(BF16_FACTOR * row["cpu_bf16_rel_l2"], BF16_FLOOR), BF16_CEILING)
    row["ok"] = (
        row["fp32_rel_l2"] <= FP32_REL_L2
        and row.get("loss_rel", 0.0) <= FP32_REL_L2
        and row.get("grad_norm_rel", 0.0) <= FP32_REL_L2
        and row["bf16_rel_l2"] <= row["bf16_bound"]
    )
    return row


# ---- 2. peak ----


def measure_peak(device: str, small: bool) -> dict[str, Any]:
    """Best TFLOP/s of a square matmul in bf16 and fp32 (TF32 off), and copy bandwidth in GB/s."""
    n = 512 if small else 8192
    out: dict[str, Any] = {"matmul_n": n}
    for dtype, repeats in ((torch.bfloat16, 20), (torch.float32, 5)):
        a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
        seconds = min(interleaved({"mm": lambda a=a, b=b: a @ b}, device, repeats, warmup=3)["mm"]["all_seconds"])
        out[str(dtype).removeprefix("torch.")] = 2 * n**3 / max(seconds, 1e-9) / 1e12
        del a, b
    nbytes = (16 if small else 1024) * 2**20
    src, dst = torch.empty(nbytes // 4, device=device), torch.empty(nbytes // 4, device=device)
    seconds = min(interleaved({"copy": lambda: dst.copy_(src)}, device, 10)["copy"]["all_seconds"])
    out["copy_gbs"] = 2 * nbytes / max(seconds, 1e-9) / 1e9
    return out


# ---- 3. inference and 4. training ----


def inference_inputs(name: str, batch: int, small: bool) -> dict[str, Any]:
    """Forward arguments: the training batch, except multimodal decodes one 1/128 chunk (compare_transformers)."""
    inputs, _ = workloads.batch(name, batch, small)
    if name == "multimodal-perceiver" and not small:
        inputs["subsampled_output_points"] = {"image": torch.arange(16 * 224 * 224 // 128), "audio": torch.arange(15)}
    return inputs


def time_inference(
    models: dict[str, torch.nn.Module], name: str, batch: int, dtype: str, device: str, small: bool, repeats: int
) -> dict[str, Any]:
    inputs = workloads.to_device(inference_inputs(name, batch, small), device)
    if dtype == "bf16":
        inputs = cast_floats(inputs, torch.bfloat16)
    with torch.no_grad():
        counted = models.get("transformers", models["ours"])
        with flop_counter() as counter:
            counted(**inputs)
        runs = {v: (lambda m=m: m(**inputs)) for v, m in models.items()}
        timing = interleaved(runs, device, repeats)
    return {
        "kind": "inference",
        "model": name,
        "batch": batch,
        "dtype": dtype,
        "flops": counter.get_total_flops(),
        "variants": timing,
    }


def time_training(
    models: dict[str, torch.nn.Module], name: str, batch: int, dtype: str, device: str, small: bool, repeats: int
) -> dict[str, Any]:
    """Interleaved training steps of transformers, ours and ours with activation checkpointing (one model, its
    flag switched per step), then each one's peak memory over one more step."""
    steps = {}
    for variant, model in models.items():
        step = make_step(model, name, batch, dtype, small, device)
        if variant == "transformers":
            steps[variant] = step
        else:
            for ckpt in (False, True):
                steps[f"ours{'+checkpointing' if ckpt else ''}"] = lambda step=step, model=model, ckpt=ckpt: (
                    model.set_gradient_checkpointing(ckpt),
                    step(),
                )
    counted = "transformers" if "transformers" in steps else "ours"
    with flop_counter() as counter:
        steps[counted]()
    timing = interleaved(steps, device, repeats, warmup=1)
    for variant, step in steps.items():
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            step()
            torch.cuda.synchronize()
            timing[variant]["peak_bytes"] = torch.cuda.max_memory_allocated() - base
    models["ours"].set_gradient_checkpointing(False)
    return {
        "kind": "train",
        "model": name,
        "batch": batch,
        "dtype": dtype,
        "flops": counter.get_total_flops(),
        "variants": timing,
    }


def _error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".splitlines()[0]


def run_case(
    rows: list[dict[str, Any]],
    what: dict[str, Any],
    measure: Callable[..., dict[str, Any]],
    models: dict[str, torch.nn.Module],
    **kwargs: Any,
) -> None:
    """Append ``measure(models, **kwargs)``'s row. Where it fails and transformers is among the contenders, ours
    are measured alone and transformers' error recorded (as compare_transformers.py does); any other failure is
    recorded as the row's error. The other cases still run."""
    try:
        rows.append(measure(models, **kwargs))
        return
    except Exception as error:  # recorded in the report
        failure = _error(error)
        traceback.print_exc()
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if "transformers" in models:
        try:
            row = measure({v: m for v, m in models.items() if v != "transformers"}, **kwargs)
            rows.append({**row, "transformers_error": failure})
            return
        except Exception as error:  # recorded in the report
            failure = _error(error)
    rows.append({**what, "error": failure})


def run_models(args: argparse.Namespace, device: str, budget: Budget, report: dict[str, Any]) -> None:
    """Parts 3 and 4, model by model (cheapest first), each case only while its part's cap allows."""
    order = [
        m
        for m in (
            "language-perceiver",
            "vision-perceiver-fourier",
            "vision-perceiver-learned",
            "vision-perceiver-conv",
            "multimodal-perceiver",
            "optical-flow-perceiver",
        )
        if m in args.models
    ]
    for name in order:
        wanted = [p for p in ("train", "inference") if p in args.parts and budget.allows(p)]
        if not wanted:
            report["skipped"].append(f"{name}: inference and training over their time caps")
            continue
        models = {}
        for library, variant in (("transformers", "transformers"), ("perceiver_io", "ours")):
            try:
                models[variant] = workloads.load(library, name, args.small).to(device)
            except Exception as error:  # e.g. transformers cannot build this head
                report["skipped"].append(f"{name}: {variant} failed to load: {error}")
        if "ours" not in models:
            continue
        common = dict(name=name, device=device, small=args.small, repeats=args.repeats)
        if "transformers" in models:
            report.setdefault("transformers_checkpointing", checkpointing_refusal(models["transformers"]))
        if "train" in wanted:
            for dtype in ("fp32", "bf16"):
                if not budget.allows("train"):
                    report["skipped"].append(f"train {name} {dtype}: over the part's cap")
                    continue
                with budget.charge("train"):
                    what = {"kind": "train", "model": name, "batch": args.batch, "dtype": dtype}
                    for model in models.values():
                        model.train()
                    # Half the repeats: a step costs ≈ 3 forwards, and the part has the same cap as inference.
                    steps = {**common, "repeats": max(2, args.repeats // 2)}
                    run_case(report["rows"], what, time_training, models, batch=args.batch, dtype=dtype, **steps)
        for model in models.values():
            model.eval().requires_grad_(False).zero_grad(set_to_none=True)
        if "inference" in args.parts:
            batches = [1] if name in ("optical-flow-perceiver", "multimodal-perceiver") else [1, 8]
            for dtype in ("fp32", "bf16"):
                if dtype == "bf16":
                    for model in models.values():
                        model.to(torch.bfloat16)
                for b in batches:
                    if not budget.allows("inference"):
                        report["skipped"].append(f"inference {name} {dtype} b{b}: over the part's cap")
                        continue
                    with budget.charge("inference"):
                        what = {"kind": "inference", "model": name, "batch": b, "dtype": dtype}
                        run_case(report["rows"], what, time_inference, models, batch=b, dtype=dtype, **common)
        del models
        if device == "cuda":
            torch.cuda.empty_cache()


# ---- report ----


def _tflops(row: dict[str, Any], variant: str) -> float | None:
    v = row["variants"].get(variant)
    return row["flops"] / v["seconds"] / 1e12 if v and row.get("flops") else None


def markdown(report: dict[str, Any]) -> str:
    env, peak = report["environment"], report.get("peak") or {}
    sheet = env.get("datasheet_bf16_tflops")
    lines = [
        "# perceiver_io on a GPU: checks against the CPU, speed against transformers and the GPU's peak",
        "",
        f"**Device**: {env['device']}; torch {env['torch']} (CUDA {env['cuda']}), transformers {env['transformers']};"
        f" host CPU {env['cpu']}. Run of {report['seconds']:.0f} s.",
        "",
    ]
    if report["cuda_skipped"]:
        lines += [
            "**CUDA parts skipped: no CUDA device.** Every part below ran on the CPU with small configurations, as a"
            " dry run of this script's code paths; its figures are not GPU figures.",
            "",
        ]
    lines += [
        f"**Peak**: datasheet dense bf16 {sheet if sheet else 'unknown for this device'}"
        f"{' TFLOP/s (NVIDIA datasheet)' if sheet else ''}; measured in this run: bf16 matmul"
        f" {peak.get('bfloat16', float('nan')):.1f} TFLOP/s, fp32 matmul (TF32 off)"
        f" {peak.get('float32', float('nan')):.1f} TFLOP/s ({peak.get('matmul_n', '?')}² square, best of N), copy"
        f" {peak.get('copy_gbs', float('nan')):.0f} GB/s.",
        "",
        "## 1. Our model on the device against the CPU",
        "",
        f"fp32: relative L2 of the logits, of the training loss and of the gradient norm ≤ {FP32_REL_L2:g} (TF32"
        " off). bf16 (`model.to(torch.bfloat16)`): relative L2 of the device's bf16 logits to the CPU's fp32 ≤ the"
        f" bound, {BF16_FACTOR:g} × the CPU's own bf16 error on the same inputs (within [{BF16_FLOOR:.2g},"
        f" {BF16_CEILING:g}]): bf16 keeps 8 significant bits, and how its rounding adds up over the layers depends on"
        " the model and inputs, so the CPU's bf16 run calibrates it.",
        "",
        "| head | fp32 logits | fp32 loss | fp32 grad norm | bf16 logits | CPU bf16 logits | bf16 bound | ok |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["checks"]:
        if "error" in r:
            lines.append(f"| {r['head']} | {r['error']} | | | | | | ✗ |")
            continue
        keys = ("fp32_rel_l2", "loss_rel", "grad_norm_rel", "bf16_rel_l2", "cpu_bf16_rel_l2", "bf16_bound")
        cells = [f"{r[k]:.1e}" if k in r else "–" for k in keys]
        lines.append(f"| {r['head']} | " + " | ".join(cells) + f" | {'✓' if r['ok'] else '✗'} |")
    for kind, title in (("inference", "2. Inference (forward)"), ("train", "3. One training step")):
        rows = [r for r in report["rows"] if r["kind"] == kind]
        if not rows:
            continue
        ours = ["ours", "ours+checkpointing"] if kind == "train" else ["ours"]
        lines += [
            "",
            f"## {title}",
            "",
            "ms: median (CUDA events; interleaved rounds after warm-up). Speed-up: transformers ÷ ours, *paired /"
            " best*. TFLOP/s: FLOPs counted on transformers' model ÷ time; % of the datasheet's dense bf16 peak and"
            " of the bf16 matmul measured above."
            + (
                " bf16 = autocast, fp32 weights; memory: peak allocated during a step (MiB)." if kind == "train" else ""
            ),
            "",
            "| model | batch | dtype | transformers ms | "
            + " | ".join(f"{v} ms" for v in ours)
            + " | speed-up (paired / best) "
            + "; ".join(ours)
            + " | TFLOP/s tf / ours | ours % of datasheet bf16 / measured bf16 |"
            + (" peak MiB tf / " + " / ".join(ours) + " |" if kind == "train" else ""),
            "|---|---|---|---|" + "---|" * (len(ours) + 3) + ("---|" if kind == "train" else ""),
        ]
        for r in rows:
            head = f"| {r['model']} | {r['batch']} | {r['dtype']} | "
            if "error" in r:
                lines.append(head + r["error"] + " |")
                continue
            v = r["variants"]
            ms = [f"{v[n]['seconds'] * 1e3:.2f}" if n in v else "–" for n in ["transformers", *ours]]
            if "transformers_error" in r:
                ms[0] = f"fails: {r['transformers_error']}"
            ups = "; ".join(speed_up(v.get("transformers"), v.get(n)) for n in ours)
            tf, mine = _tflops(r, "transformers"), _tflops(r, "ours")
            rates = " / ".join(f"{x:.3g}" if x else "–" for x in (tf, mine))
            pct = " / ".join(f"{100 * mine / p:.0f} %" if mine and p else "–" for p in (sheet, peak.get("bfloat16")))
            cells = [*ms, ups, rates, pct]
            if kind == "train":
                cells.append(
                    " / ".join(
                        f"{v[n]['peak_bytes'] / 2**20:,.0f}" if n in v and "peak_bytes" in v[n] else "–"
                        for n in ["transformers", *ours]
                    )
                )
            lines.append(head + " | ".join(cells) + " |")
    if report.get("transformers_checkpointing"):
        lines += ["", f"transformers' activation checkpointing for Perceiver: {report['transformers_checkpointing']}"]
    if report["skipped"]:
        lines += ["", "Skipped:", "", *(f"- {s}" for s in report["skipped"])]
    lines += ["", "Time per part (s): " + ", ".join(f"{p} {s:.0f}" for p, s in report["part_seconds"].items()), ""]
    return "\n".join(lines)


def environment(device: str) -> dict[str, Any]:
    import transformers

    name = torch.cuda.get_device_name() if device == "cuda" else "CPU (no CUDA device)"
    return {
        "device": name,
        "datasheet_bf16_tflops": datasheet_peak(name) if device == "cuda" else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "cpu": cpu_description()["model_name"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    parser.add_argument("--models", nargs="+", default=list(RELEASED), choices=list(RELEASED))
    parser.add_argument("--batch", type=int, default=8, help="training batch")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--budget", type=float, default=420.0, help="seconds of work in all (each part has its cap)")
    parser.add_argument("--small", action="store_true", help="small configurations only (seconds; implied on CPU)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for gpu.md and gpu.json")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda_skipped = device != "cuda"
    if cuda_skipped:
        print(
            f"CUDA not available (torch {torch.__version__}, CUDA build: {torch.version.cuda}): the CUDA parts are"
            " SKIPPED. Running every part on the CPU with small configurations as a dry run of this script.",
            flush=True,
        )
        args.small, args.batch, args.repeats = True, 2, 2
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means IEEE fp32 on both sides of every comparison
    torch.backends.cudnn.allow_tf32 = False
    budget = Budget(args.budget)
    report: dict[str, Any] = {
        "environment": environment(device),
        "cuda_skipped": cuda_skipped,
        "checks": [],
        "rows": [],
        "skipped": [],
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    print(f"device: {report['environment']['device']}", flush=True)
    if "check" in args.parts:
        with budget.charge("check"):
            for label, name, build, small in _heads(args.small):
                if not budget.allows("check"):
                    report["skipped"].append(f"check {label}: over the part's cap")
                    continue
                try:
                    row = check_head(label, name, build, small, device)
                except Exception as error:  # recorded; the other heads still run
                    row = {"head": label, "error": f"{type(error).__name__}: {error}".splitlines()[0], "ok": False}
                report["checks"].append(row)
                print("check", row, flush=True)
    if "peak" in args.parts:
        with budget.charge("peak"):
            report["peak"] = measure_peak(device, args.small)
        print("peak", report["peak"], flush=True)
    if {"inference", "train"} & set(args.parts):
        run_models(args, device, budget, report)
    report["part_seconds"] = budget.spent
    report["seconds"] = time.perf_counter() - budget.started
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = args.out / "gpu.json", args.out / "gpu.md"
    earlier = json.loads(json_path.read_text()) if json_path.is_file() else None
    text = markdown(report)
    if cuda_skipped and earlier is not None and not earlier.get("cuda_skipped", True):
        print(f"kept the CUDA report already in {args.out} (this dry run is not written there)", flush=True)
    else:
        write_json(json_path, report)
        md_path.write_text(text)
    print(text)
    if cuda_skipped:
        print("CUDA parts were SKIPPED (no CUDA device); the CPU dry run above is not a GPU figure.", flush=True)
    failed = [r["head"] for r in report["checks"] if not r["ok"]]
    if failed:
        sys.exit(f"CHECK FAILED (device against CPU): {failed}")


if __name__ == "__main__":
    main()
