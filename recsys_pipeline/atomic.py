"""Atomic file writes: a reader sees the old file or the new one, never half of either."""

from __future__ import annotations

import glob
import json
import os
import re
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
    remove_abandoned_temporaries(target)
    temporary = target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{target.suffix}")
    try:
        yield temporary
        _fsync_file(temporary)
        os.replace(temporary, target)
        fsync_directory(target.parent)
    finally:
        temporary.unlink(missing_ok=True)


def remove_abandoned_temporaries(target: Path) -> list[Path]:
    """Delete temporary files beside `target` left by writers that were killed (their process is gone).

    A live writer's file, even another run's, is kept. Process ids are only meaningful on this
    host, so a data folder shared between machines must not have two writers at once.
    """
    removed = []
    for temporary in target.parent.glob(f".{glob.escape(target.name)}.*.tmp{glob.escape(target.suffix)}"):
        writer = re.fullmatch(rf"\.{re.escape(target.name)}\.(\d+)-[0-9a-f]{{8}}\.tmp{re.escape(target.suffix)}", temporary.name)
        if writer is not None and not _process_alive(int(writer.group(1))):
            temporary.unlink(missing_ok=True)
            removed.append(temporary)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


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


def fsync_directory(path: Path) -> None:
    # Makes the rename itself durable; not every platform can open a directory.
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
