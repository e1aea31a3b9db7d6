"""Shared by the benchmark scripts: interleaved timing, peak-memory measurement, the machine's description,
released models with random weights in both libraries, and their inputs."""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from machine import cpu_description
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count

import perceiver_io
from perceiver_io.inference import optimize_for_inference
from perceiver_io.layers import onednn
from perceiver_io.released import RELEASED

RESULTS = Path(__file__).resolve().parent / "results"
MODEL_CACHE = Path(os.environ.get("PERCEIVER_BENCH_CACHE", "/tmp/perceiver_io_bench_models"))

_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def return_freed_memory_to_os() -> None:
    """Make glibc hand every large freed block back to the OS at once (a fixed 64 KiB mmap threshold), so that RSS
    tracks live tensors and one model's freed activations do not hide the next model's peak."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, 1 << 16)
    except OSError:
        pass


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


class PeakMemory:
    """Peak resident memory above the level at entry, in bytes (``.peak``).

    Uses the kernel's high-water mark (VmHWM, reset by writing 5 to /proc/self/clear_refs) — exact, no sampling.
    Where that reset is refused, a thread samples VmRSS every millisecond instead.
    """

    def __enter__(self) -> PeakMemory:
        self._sampler = None
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
        except OSError:
            self._max, self._stop = 0, threading.Event()
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        self.base = _status_bytes("VmRSS")
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._max = max(self._max, _status_bytes("VmRSS"))
            time.sleep(0.001)

    def __exit__(self, *exc: object) -> None:
        if self._sampler is None:
            high = _status_bytes("VmHWM")
        else:
            self._stop.set()
            self._sampler.join()
            high = self._max
        self.peak = max(0, high - self.base)


def interleaved(runs: dict[str, Callable[[], Any]], repeats: int = 5) -> dict[str, dict[str, Any]]:
    """Seconds per call of each callable: one warm-up each, then ``repeats`` rounds in alternating order (ABC, CBA,
    …) so that drift on a shared machine hits every contender alike. Returns, per name, the median and all samples.

    Memory is measured elsewhere (``peak_memory``, in its own process): the allocator setting that makes RSS
    truthful costs page faults that would distort these times.
    """
    for fn in runs.values():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            runs[name]()
            samples[name].append(time.perf_counter() - start)
    return {
        name: {"seconds": statistics.median(v), "all_seconds": [round(s, 4) for s in v]} for name, v in samples.items()
    }


def speed_up(baseline: dict[str, Any] | None, contender: dict[str, Any] | None) -> str:
    """How much faster the contender is than the baseline (``interleaved`` results) as "paired / best": the median
    over rounds of the baseline's time ÷ the contender's in the same round (the two ran seconds apart, so a burst
    of load from other work skews one round, not the median), and the ratio of the two fastest samples (load only
    ever adds time, so each best is the nearest to an unloaded run). "–" if either is missing."""
    if baseline is None or contender is None:
        return "–"
    pairs = zip(baseline["all_seconds"], contender["all_seconds"], strict=True)
    paired = statistics.median(base / other for base, other in pairs)
    best = min(baseline["all_seconds"]) / min(contender["all_seconds"])
    return f"{paired:.2f}× / {best:.2f}×"


def peak_memory(fn: Callable[[], Any], runs: int = 2) -> int:
    """Peak resident bytes above the level before the call: the largest of ``runs`` calls after a warm-up.
    Call ``return_freed_memory_to_os`` first, at process start."""
    fn()
    peaks = []
    for _ in range(runs):
        with PeakMemory() as m:
            fn()
        peaks.append(m.peak)
    return max(peaks)


def _sdpa_cpu_flops(q, k, v, *args, out_shape=None, **kwargs) -> int:
    b, h, t, dqk = q
    return 2 * b * h * t * k[-2] * (dqk + v[-1])


def _linear_pointwise_flops(x, w, *args, out_shape=None, **kwargs) -> int:
    return 2 * math.prod(x[:-1]) * x[-1] * w[0]


def _sdpa_cpu_backward_flops(grad_out, q, k, v, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, q, k, v)


@contextlib.contextmanager
def flop_counter() -> Iterator[FlopCounterMode]:
    """torch's FLOP counter (2 FLOPs per multiply-add), also counting the ops it misses that we call directly:
    SDPA's CPU flash kernel (forward, and backward counted as torch counts the other SDPA kernels' backward,
    recomputed scores included) and oneDNN's linear.

    Counted with oneDNN off (``onednn.use("off")``): in the default mode a shape's first call also times the
    candidate kernels (``perceiver_io.layers.timing``), and those runs would be counted as the model's. The count
    is the same for every kernel choice: each computes the same products."""
    counter = FlopCounterMode(
        display=False,
        custom_mapping={
            torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops,
            torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_cpu_backward_flops,
            torch.ops.mkldnn._linear_pointwise: _linear_pointwise_flops,
        },
    )
    with onednn.use("off"), counter:
        yield counter


def machine() -> dict[str, Any]:
    """What the numbers were measured on (``machine.cpu_description``: the CPU, its family/model/stepping and GEMM
    ISA flags), including how loaded the machine was (load average, CPU pressure). The measured peaks are
    ``machine.measure_peaks``."""
    import transformers

    with open("/proc/meminfo") as fh:
        mem_kb = int(fh.readline().split()[1])
    pressure = None
    if os.path.exists("/proc/pressure/cpu"):
        pressure = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    cpu = cpu_description()
    return {
        "cpu": cpu["model_name"],
        "cpu_id": f"{cpu['vendor']} family {cpu['family']} model {cpu['model']} stepping {cpu['stepping']}",
        "logical_cpus": cpu["logical_cpus"],
        "torch_threads": cpu["torch_threads"],
        "memory_gib": round(mem_kb / 2**20, 1),
        "isa": cpu["isa"],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onednn": torch.backends.mkldnn.is_available(),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        "cpu_pressure": pressure,
    }


def model_folder(name: str) -> Path:
    """A transformers-layout folder with random weights for released model ``name`` (written once, by our
    ``save_pretrained``; both libraries then load the very same file)."""
    folder = MODEL_CACHE / name
    if not (folder / "model.safetensors").is_file():
        torch.manual_seed(0)
        model = getattr(perceiver_io, RELEASED[name].head)(perceiver_io.PerceiverConfig.released(name))
        if name == "optical-flow-perceiver":
            # DeepMind zero-initialises the flow output layer: random weights give the output check something to see.
            torch.nn.init.normal_(model.perceiver.decoder.final.weight, std=0.05)
        model.save_pretrained(folder)
    return folder


VARIANT_HELP = {
    "transformers": "transformers' PerceiverFor… in eager mode",
    "ours-torch": "perceiver_io with oneDNN switched off (onednn.disabled()): torch's kernels, the default before"
    " oneDNN became it",
    "ours-onednn": "perceiver_io with oneDNN forced on wherever it can run (onednn.use('on')): the default before"
    " kernels were measured per CPU",
    "ours": "perceiver_io as loaded: oneDNN's GEMMs where they time faster than torch's on this CPU, attention kernels"
    " timed per shape",
    "ours+onednn": "perceiver_io after optimize_for_inference (every linear a OneDNNLinear): what the task helpers run",
    "ours+prepack": "perceiver_io after optimize_for_inference(prepack=True): weights kept in oneDNN's blocked layout"
    " (opt-in; twice the weights' memory)",
    "ours+compile": "perceiver_io after optimize_for_inference(compile=True): inductor with frozen weights (opt-in;"
    " compiled before timing)",
}


def load_models(name: str, variants: list[str], dtype: torch.dtype) -> dict[str, torch.nn.Module]:
    """The requested variants (``VARIANT_HELP``) of released model ``name``, same weights, eval mode, in
    ``dtype``. Call them through ``forward``."""
    import transformers

    folder, head = model_folder(name), RELEASED[name].head
    models = {}
    for variant in variants:
        if variant == "transformers":
            model = getattr(transformers, head).from_pretrained(folder)
        elif variant in ("ours-torch", "ours-onednn", "ours"):
            model = getattr(perceiver_io, head).from_pretrained(folder)
        elif variant == "ours+onednn":
            model = optimize_for_inference(getattr(perceiver_io, head).from_pretrained(folder))
        elif variant == "ours+prepack":
            model = optimize_for_inference(getattr(perceiver_io, head).from_pretrained(folder), prepack=True)
        elif variant == "ours+compile":
            model = optimize_for_inference(getattr(perceiver_io, head).from_pretrained(folder), compile=True)
        else:
            raise ValueError(f"unknown variant {variant!r}")
        models[variant] = model.eval().requires_grad_(False).to(dtype)
    return models


def forward(variant: str, model: torch.nn.Module, inputs: dict[str, Any]) -> Any:
    """``model(**inputs)`` as ``variant`` runs it: ``ours-torch`` with oneDNN switched off, ``ours-onednn`` with
    it switched on."""
    modes = {"ours-torch": "off", "ours-onednn": "on"}
    with onednn.use(modes[variant]) if variant in modes else contextlib.nullcontext():
        return model(**inputs)


def cast_floats(inputs: Any, dtype: torch.dtype) -> Any:
    """Floating tensors in (nested dicts of) inputs → ``dtype``; integer ids and masks unchanged."""
    if isinstance(inputs, dict):
        return {k: cast_floats(v, dtype) for k, v in inputs.items()}
    if torch.is_tensor(inputs) and inputs.is_floating_point():
        return inputs.to(dtype)
    return inputs


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
