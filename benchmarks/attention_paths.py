"""Which attention kernel is fastest for each attention of the released models: the data behind
``perceiver_io.layers.attention.attention_path``.

For every attention shape of the six released models (batch 1, and batch 8 for vision's latents), in float32 and
bfloat16, times (interleaved, medians): SDPA; the plain path unblocked (one pass over all B·H·T·S scores); the plain
path blocked to SCORE_BLOCK_ELEMENTS; the plain path on oneDNN. Reports GFLOP/s, the fastest, what
``attention_path`` measures and picks on this CPU, and what its fallback rule picks with and without oneDNN.

    .venv/bin/python benchmarks/attention_paths.py [--cases vision_self flow_self] [--dtypes fp32]
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from common import RESULTS, interleaved, machine, write_json
from machine import add_peak_arguments, cpu_description, markdown_header, peaks_for

from perceiver_io.layers import onednn
from perceiver_io.layers.attention import attention_path, plain_attention, sdpa_attention

# name: (batch, heads, queries T, keys S, qk width per head, v width per head)
CASES = {
    "vision_cross": (1, 1, 512, 50176, 261, 261),
    "vision_self": (1, 8, 512, 512, 128, 128),
    "vision_self_b8": (8, 8, 512, 512, 128, 128),
    "language_cross": (1, 8, 256, 2048, 32, 160),
    "language_self": (1, 8, 256, 256, 32, 160),
    "language_decoder": (1, 8, 2048, 256, 32, 96),
    "flow_cross": (1, 1, 2048, 182528, 322, 322),
    "flow_self": (1, 16, 2048, 2048, 32, 32),
    "flow_decoder_chunk": (1, 1, 16384, 2048, 512, 512),
    "multimodal_cross": (1, 1, 784, 52097, 704, 704),
    "multimodal_self": (1, 8, 784, 784, 64, 64),
    "multimodal_decoder_chunk": (1, 1, 6290, 784, 512, 512),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
_PEAK_DTYPE = {"float32": "fp32", "bfloat16": "bf16"}


def head_views(b: int, n: int, h: int, d: int, dtype: torch.dtype, g: torch.Generator) -> torch.Tensor:
    """(B, H, N, D) as the model makes it: a head-split view of a (B, N, H·D) projection."""
    return torch.randn(b, n, h * d, generator=g).to(dtype).view(b, n, h, d).transpose(1, 2)


def measure(name: str, dtype: torch.dtype, repeats: int) -> dict[str, Any]:
    b, h, t, s, dqk, dv = CASES[name]
    g = torch.Generator().manual_seed(0)
    q, k, v = (head_views(b, n, h, d, dtype, g) for n, d in ((t, dqk), (s, dqk), (s, dv)))
    runs = {
        "sdpa": lambda: sdpa_attention(q, k, v),
        "plain blocked": lambda: plain_attention(q, k, v),
    }
    if b * h * t * s <= 1 << 28:  # the unblocked pass needs all scores at once (1 GiB in float32 at this size)
        runs["plain unblocked"] = lambda: plain_attention(q, k, v, max_scores=b * h * t * s)
    if onednn.available():
        runs["plain oneDNN"] = lambda: plain_attention(q, k, v, use_onednn=True)
    flops = 2 * b * h * t * s * (dqk + dv)
    with torch.no_grad():
        timing = interleaved(runs, repeats)
        paths = {"sdpa": runs["sdpa"], "plain": runs["plain blocked"], "onednn": runs.get("plain oneDNN")}
        pick_measured = attention_path(q, k, v, run=lambda p: paths[p](), caller=("benchmark",))
        with onednn.use("on"):
            pick_onednn = attention_path(q, k, v)
        with onednn.disabled():
            pick_torch = attention_path(q, k, v)
    names = {"sdpa": "sdpa", "plain": "plain blocked", "onednn": "plain oneDNN"}
    return {
        "case": name,
        "shape": dict(zip(("batch", "heads", "T", "S", "d_qk", "d_v"), CASES[name], strict=True)),
        "dtype": str(dtype).removeprefix("torch."),
        "gflops": {k_: flops / r["seconds"] / 1e9 for k_, r in timing.items()},
        "fastest": min(timing, key=lambda k_: timing[k_]["seconds"]),
        "policy": names[pick_torch],
        "policy_onednn": names[pick_onednn],
        "measured": names[pick_measured],
    }


def markdown(rows: list[dict[str, Any]], cpu: dict[str, Any], peaks: dict[str, Any]) -> str:
    columns = ["sdpa", "plain unblocked", "plain blocked", "plain oneDNN"]
    lines = [
        "# Attention kernels (GFLOP/s; interleaved medians)",
        "",
        *markdown_header(cpu, peaks),
        "measured: what `attention_path` picks in inference (the default: it times the candidates once per shape on"
        " this CPU); rule / rule+oneDNN: the Zen 5 rule it falls back on (`rule_path`) with oneDNN switched off"
        " (`onednn.disabled()`, or under autograd) / on (`onednn.use('on')`).",
        "",
        "| case | dtype | " + " | ".join(columns) + " | fastest | fastest % of peak | measured | rule | rule+oneDNN |",
        "|---|---|" + "---|" * (len(columns) + 5),
    ]
    for r in rows:
        cells = [f"{r['gflops'][c]:.0f}" if c in r["gflops"] else "–" for c in columns]
        lines.append(
            f"| {r['case']} | {r['dtype']} | " + " | ".join(cells) + f" | {r['fastest']} | "
            f"{100 * r['gflops'][r['fastest']] / peaks[_PEAK_DTYPE[r['dtype']]]:.0f} % | {r['measured']} | "
            f"{r['policy']} | {r['policy_onednn']} |"
        )
    lines += ["", f"Machine: `{machine()}`", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--repeats", type=int, default=5)
    add_peak_arguments(parser)
    args = parser.parse_args()
    peaks, cpu = peaks_for(args), cpu_description()
    rows = []
    for name in args.cases:
        for dtype in args.dtypes:
            rows.append(measure(name, DTYPES[dtype], args.repeats))
            r = rows[-1]
            print(name, dtype, {k: round(v) for k, v in r["gflops"].items()}, "policy:", r["policy"], flush=True)
    write_json(RESULTS / "attention_paths.json", {"rows": rows, "machine": machine(), "cpu": cpu, "peaks": peaks})
    text = markdown(rows, cpu, peaks)
    (RESULTS / "attention_paths.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
