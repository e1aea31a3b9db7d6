"""Shared machinery of the fuzz tests (tests/test_fuzz_*.py): hypothesis profiles, the outcome classification
and the per-entry-point tally that every fuzz test reports.

Every generated call ends in exactly one outcome:

- ``refused``: a ValueError/TypeError (for files also OSError; CheckpointFormatError is a ValueError) raised by
  a ``raise`` statement of the perceiver_io package (the innermost traceback frame is ours and lies inside a
  ``raise``; a torch/numpy op failing inside our frame does not count), for an input that the test's own
  validity predicate calls invalid, with a message that names the bad value (one of the case's ``names``);
- ``valid``: the predicate calls the input valid, the call returns, and the result equals the reference
  (transformers on the same weights, or a closed form);
- anything else is a failure: ``internal`` (an error raised outside our own checks), ``silent`` (a result for
  an invalid input, or a result that differs from the reference), ``over-strict`` (a valid input refused),
  ``vague`` (our refusal does not name the bad value).

The test asserts that there are no failures and prints one summary line per entry point; the summaries are also
appended as JSON lines to ``$FUZZ_REPORT`` (if set) and to ``fuzz-report.jsonl`` in pytest's base temp dir.

Run: ``pytest -s tests/test_fuzz_*.py`` (bounded CI profile, ~1,300 cases) or ``pytest -s -m slow tests/test_fuzz_*.py``
(10x the examples); ``FUZZ_REPORT=fuzz.jsonl`` keeps the per-entry counts and one example per failure class.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import json
import os
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import perceiver_io

# Bounded CI profile: reproducible (derandomize), no per-example deadline (first calls warm caches), no example
# database (CI has no state). The slow tests run SLOW_FACTOR times as many examples.
settings.register_profile(
    "perceiver-fuzz",
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
FUZZ_SETTINGS = settings.get_profile("perceiver-fuzz")
SLOW_FACTOR = 10

PACKAGE_DIR = Path(perceiver_io.__file__).resolve().parent
REFUSAL_TYPES: tuple[type[BaseException], ...] = (ValueError, TypeError)
FILE_REFUSAL_TYPES: tuple[type[BaseException], ...] = (ValueError, TypeError, OSError)
OUTCOMES = ("refused", "valid", "internal", "silent", "over-strict", "vague")


@dataclass
class Case:
    """One generated call: ``kind`` names the generated class (e.g. "labels out of range"), ``valid`` is the
    test's independent predicate, ``names`` the strings of which a refusal must contain at least one."""

    kind: str
    valid: bool
    names: tuple[str, ...] = ()
    detail: str = ""


@functools.cache
def _raise_spans(filename: str) -> tuple[tuple[int, int], ...]:
    """(first line, last line) of every ``raise`` statement in one of our source files."""
    tree = ast.parse(Path(filename).read_text(encoding="utf-8"))
    return tuple(
        (node.lineno, node.end_lineno or node.lineno) for node in ast.walk(tree) if isinstance(node, ast.Raise)
    )


def raised_by_our_check(exc: BaseException) -> tuple[bool, str]:
    """Whether the innermost frame of ``exc``'s traceback is a ``raise`` statement in perceiver_io; and where."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return False, "?"
    last = frames[-1]
    path = Path(last.filename).resolve()
    where = f"{path.name}:{last.lineno} in {last.name}"
    if not path.is_relative_to(PACKAGE_DIR):
        ours = [f for f in frames if Path(f.filename).resolve().is_relative_to(PACKAGE_DIR)]
        if ours:
            where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno} in {ours[-1].name} → {where}"
        return False, where
    inside = any(lo <= last.lineno <= hi for lo, hi in _raise_spans(str(path)))
    return inside, where


@dataclass
class Tally:
    """Outcome counts for one entry point, and one example of each failure class."""

    entry: str
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    kinds: dict[str, dict[str, int]] = field(default_factory=dict)
    failures: dict[tuple[str, ...], list[Any]] = field(default_factory=dict)

    def add(self, case: Case, outcome: str, error: str = "", where: str = "") -> None:
        self.counts[outcome] += 1
        per_kind = self.kinds.setdefault(case.kind, dict.fromkeys(OUTCOMES, 0))
        per_kind[outcome] += 1
        if outcome not in ("refused", "valid"):
            key = (case.kind, outcome, error.split(":")[0], where)
            entry = self.failures.setdefault(key, [0, case.detail, error])
            entry[0] += 1
            if len(case.detail) < len(entry[1]):  # keep the shortest example
                entry[1], entry[2] = case.detail, error

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        bad = self.total - self.counts["refused"] - self.counts["valid"]
        return (
            f"[fuzz] {self.entry}: {self.total} cases generated, {self.counts['refused']} refused by our check, "
            f"{self.counts['valid']} valid and equal to the reference, {bad} else"
            + (
                ""
                if not bad
                else " (" + ", ".join(f"{self.counts[o]} {o}" for o in OUTCOMES[2:] if self.counts[o]) + ")"
            )
        )

    def failure_report(self) -> str:
        lines = []
        for (kind, outcome, _, where), (count, detail, error) in sorted(self.failures.items()):
            lines.append(
                f"  {outcome.upper()} ×{count} [{kind}] at {where or '-'}\n      input: {detail}\n      got: {error}"
            )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "entry": self.entry,
            "cases": self.total,
            **self.counts,
            "kinds": self.kinds,
            "failures": [
                {"kind": k[0], "outcome": k[1], "where": k[3], "count": v[0], "example": v[1], "error": v[2]}
                for k, v in self.failures.items()
            ],
        }


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


def run_case(
    tally: Tally,
    case: Case,
    call: Callable[[], Any],
    check: Callable[[Any], str | None] | None = None,
    refusal_types: tuple[type[BaseException], ...] = REFUSAL_TYPES,
) -> str:
    """Call, classify, record; ``check(result)`` returns None when the result equals the reference, else why not."""
    try:
        result = call()
    except Exception as exc:  # every error is classified, none escapes: the tally is the test's verdict
        ours, where = raised_by_our_check(exc)
        if not (ours and isinstance(exc, refusal_types)):
            outcome = "internal"
        elif case.valid:
            outcome = "over-strict"
        elif case.names and not any(name in str(exc) for name in case.names):
            outcome = "vague"
        else:
            outcome = "refused"
        tally.add(case, outcome, _short(exc), where if outcome != "refused" else "")
        return outcome
    if not case.valid:
        tally.add(case, "silent", "returned a result for an invalid input")
        return "silent"
    problem = check(result) if check is not None else None
    if problem is not None:
        tally.add(case, "silent", f"differs from the reference: {problem}")
        return "silent"
    tally.add(case, "valid")
    return "valid"


def fuzz(
    tally: Tally,
    strategy: st.SearchStrategy,
    one: Callable[[Any], None],
    max_examples: int,
    report_dir: Path | None = None,
) -> Tally:
    """Run ``one(drawn)`` on ``max_examples`` draws of ``strategy`` (``one`` calls ``run_case``), then report.

    Failures are collected rather than raised, so one run lists every failure class with its smallest example
    (hypothesis would stop at the first and shrink it)."""

    @settings(FUZZ_SETTINGS, max_examples=max_examples)
    @given(strategy)
    def draw(value: Any) -> None:
        one(value)

    with single_thread():
        draw()
    report(tally, report_dir)
    return tally


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """The fuzzed models are tiny: one thread avoids OpenMP hand-offs that cost more than the ops themselves
    (5-10x on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def report(tally: Tally, report_dir: Path | None) -> None:
    print("\n" + tally.summary())
    paths = [Path(p) for p in [os.environ.get("FUZZ_REPORT")] if p]
    if report_dir is not None:
        paths.append(Path(report_dir) / "fuzz-report.jsonl")
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(tally.to_json(), default=str) + "\n")


def assert_no_failures(tally: Tally) -> None:
    bad = tally.total - tally.counts["refused"] - tally.counts["valid"]
    assert bad == 0, f"{tally.summary()}\n{tally.failure_report()}"


def close(got: Any, expected: Any, atol_scale: float = 1e-4, rel_l2: float = 1e-5) -> str | None:
    """None when two tensors agree by the suite's parity criterion (conftest.assert_close_to_reference)."""
    from conftest import assert_close_to_reference

    if got is None or expected is None:
        return None if got is expected else f"one of the results is None ({got is None}, {expected is None})"
    if got.shape != expected.shape:
        return f"shape {tuple(got.shape)} vs reference {tuple(expected.shape)}"
    if got.dtype != expected.dtype:
        return f"dtype {got.dtype} vs reference {expected.dtype}"
    finite = expected.isfinite()
    if (
        not (finite == got.isfinite()).all()
        or not (got[~finite].double().nan_to_num(0) == expected[~finite].double().nan_to_num(0)).all()
    ):
        return "non-finite entries differ"
    if not finite.any():
        return None
    try:
        assert_close_to_reference(got[finite].detach(), expected[finite].detach(), atol_scale=atol_scale, rel_l2=rel_l2)
    except AssertionError as err:
        return str(err).splitlines()[0]
    return None


def examples(n: int, slow: bool) -> int:
    return n * SLOW_FACTOR if slow else n
