"""Keeping freed memory in the process, for work that allocates the same large tensors again and again.

glibc's malloc serves a large allocation (above a threshold of at most 32 MiB) with a fresh ``mmap`` and returns it
to the system when it is freed. A training loop or a run of inferences then faults the pages of its large
activations in again on every step, and the kernel zeroes each one first. On a 2-core AMD Zen 4 that is 1.4 M page
faults and a quarter of a language-model training step at batch 8 (23.3 s, 17.5 s with freed memory kept), and
2–11 % of a batch-1 forward (``benchmarks/allocator.py``, ``benchmarks/results/zen4/allocator.md``). transformers'
models pay the same cost.

``keep_freed_memory`` tells glibc never to use ``mmap`` for an allocation and never to trim its heap, so freed
blocks stay in the process and the next step reuses them. The price is that memory freed by the process goes back
to the system only when the process exits: resident memory stays at its peak. The ``perceiver`` command calls it
at start. In your own script, call it once before the loop.
"""

from __future__ import annotations

import ctypes
import sys

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """From now on (process-wide), allocations come from malloc's heap and freed memory stays there for reuse.

    Returns whether the setting applied. It needs glibc's ``mallopt``, so it returns False on macOS, Windows and
    musl, and changes nothing there.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # -1 as the trim threshold is glibc's documented "never trim".
    return mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, -1) == 1
