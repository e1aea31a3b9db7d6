"""keep_freed_memory: freed tensors' memory stays in the process and is reused without page faults."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

from perceiver_io import allocator, cli

# A child process allocates and frees a 64 MiB tensor (every page written) ten times and prints the page faults of
# each cycle. The setting is process-wide, so each case gets a fresh process.
_CYCLES = r"""
import resource, sys, torch
from perceiver_io.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
faults = []
for _ in range(10):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(16 * 2**20)
    del x
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, *faults)
"""


def _faults(mode: str) -> tuple[str, list[int]]:
    out = subprocess.run([sys.executable, "-c", _CYCLES, mode], capture_output=True, text=True, check=True).stdout
    applied, *faults = out.split()
    return applied, [int(f) for f in faults]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_memory_is_reused_without_page_faults():
    applied, kept = _faults("keep")
    assert applied == "True"
    # The heap grows to hold the tensor over the first few cycles (three tensors' pages at most in 20 runs, as the
    # timing of torch's own small allocations decides), then no new pages.
    assert sum(kept) <= 4 * 2**26 // resource.getpagesize()  # 2**26 bytes: one tensor
    assert kept[-5:] == [0] * 5
    _, default = _faults("default")
    # glibc's default maps each 64 MiB anew: at least one fault per 2 MiB page even with transparent huge pages.
    assert all(f >= 32 for f in default[1:])


def test_the_perceiver_command_keeps_freed_memory(monkeypatch):
    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append("keep") or True)
    monkeypatch.setattr(cli, "main", lambda: calls.append("main") or 0)
    assert cli.entry() == 0
    assert calls == ["keep", "main"]


def test_keep_freed_memory_is_a_no_op_off_linux(monkeypatch):
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.keep_freed_memory() is False
