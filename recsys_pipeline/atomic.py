"""Atomic file writes: a reader sees the old file or the new one, never half of either."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_target(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success, fsync it and rename it over `target`.

    The temporary file lives in the same folder so the rename never crosses a filesystem, and
    keeps the target's suffix because some writers (Keras) insist on it. On any error the
    temporary file is removed and the previous `target` is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{target.suffix}")
    try:
        yield temporary
        _fsync_file(temporary)
        os.replace(temporary, target)
        _fsync_directory(target.parent)
    finally:
        temporary.unlink(missing_ok=True)


def write_bytes_atomically(target: str | os.PathLike, payload: bytes) -> None:
    with atomic_target(target) as temporary:
        temporary.write_bytes(payload)


def write_json_atomically(target: str | os.PathLike, document: Any) -> None:
    write_bytes_atomically(target, json.dumps(document, indent=2, sort_keys=True).encode())


def _fsync_file(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_directory(path: Path) -> None:
    # Makes the rename itself durable; not every platform can open a directory.
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
