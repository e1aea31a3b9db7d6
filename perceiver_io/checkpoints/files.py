"""Atomic file writes whose result has the permissions any other file the user writes gets (their umask).

A file is written to a hidden temporary sibling, flushed to disk and renamed over its destination, so a reader
(or a process killed mid-write) sees either the old file or the new one, never a part. ``tempfile.mkstemp``
would create the temporary file with mode 0600, and the rename keeps that mode; here it is created like
``open(path, "w")`` creates a file (0666 less the umask: 0644 under the usual 0022).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def _temporary_sibling(path: Path) -> Path:
    # Hidden and unique (several writers, or a leftover of a killed one), and in the same folder so the rename
    # stays on one file system.
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")


def _create(path: Path) -> int:
    """Create ``path`` empty, as ``open(path, "x")`` would (0666 less the umask); return its mode."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    return path.stat().st_mode & 0o7777


def _finish(path: Path, mode: int) -> None:
    # Some writers replace the file rather than rewrite it (safetensors writes its own 0600 temporary file and
    # renames it): give it back the mode it was created with, then make its content durable.
    os.chmod(path, mode)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """Make renames in ``folder`` durable (POSIX keeps directory entries in the directory's own data)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def staged_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to; on success it replaces ``path`` atomically.

    The temporary file exists (empty, created with the user's umask) when the block starts, and gets that mode
    back after the block whatever the writer did. If the block raises, the temporary file is removed and
    ``path`` is left as it was.
    """
    path = Path(path)
    tmp = _temporary_sibling(path)
    created = _create(tmp)
    try:
        yield tmp
        _finish(tmp, created)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


@contextlib.contextmanager
def staged_files(paths: list[Path]) -> Iterator[list[Path]]:
    """Like `staged_file` for several files that belong together: all are written first, then renamed in
    order, back to back, so an interruption while writing leaves every old file in place."""
    temporaries: list[Path] = []
    modes: list[int] = []
    try:
        for path in paths:
            temporaries.append(_temporary_sibling(path))
            modes.append(_create(temporaries[-1]))
        yield temporaries
        for tmp, mode in zip(temporaries, modes, strict=True):
            _finish(tmp, mode)
        for tmp, path in zip(temporaries, paths, strict=True):
            os.replace(tmp, path)
    except BaseException:
        for tmp in temporaries:
            tmp.unlink(missing_ok=True)
        raise
    for folder in {path.parent for path in paths}:
        _fsync_folder(folder)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """``open(path, mode)`` for writing (``"w"`` or ``"wb"``), made atomic with `staged_file`."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes a whole file: mode must be 'w' or 'wb', got {mode!r}")
    with staged_file(path) as tmp, open(tmp, mode, encoding=encoding if mode == "w" else None) as handle:
        yield handle


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, with the user's umask."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)
