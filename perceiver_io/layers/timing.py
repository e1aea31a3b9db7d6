"""Choosing a kernel by timing it: the fastest of a few candidates on the caller's own tensors, measured once."""

from __future__ import annotations

import time
from collections.abc import Callable

# Above this many FLOPs per call one timed call per candidate is enough (and measuring stays under a second).
MEASURE_ONCE_FLOPS = 1e9


def fastest(candidates: list[str], run: Callable[[str], object], flops: float) -> str:
    """The candidate whose ``run`` is quickest: one warm-up call each (oneDNN builds its kernels on a shape's first
    call), then the best of 1 (above MEASURE_ONCE_FLOPS) or 3 interleaved calls."""
    rounds = 1 if flops > MEASURE_ONCE_FLOPS else 3
    best = dict.fromkeys(candidates, float("inf"))
    for name in candidates:
        run(name)
    for _ in range(rounds):
        for name in candidates:
            start = time.perf_counter()
            run(name)
            best[name] = min(best[name], time.perf_counter() - start)
    return min(candidates, key=best.__getitem__)
