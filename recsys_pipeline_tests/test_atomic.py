"""Atomic writes: a failed, raising or SIGKILLed writer leaves the previous file byte for byte, and
the next writer succeeds and clears what the killed one left behind. Nothing is pickled."""

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dagster import build_input_context, build_output_context
from upath import UPath

from recsys_pipeline.atomic import atomic_target, remove_abandoned_temporaries, write_bytes_atomically
from recsys_pipeline.orchestration.io_managers import NumpyIOManager, ParquetIOManager

REPO_ROOT = Path(__file__).resolve().parents[1]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_write_replaces_the_file_and_leaves_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "artifact.parquet"
    write_bytes_atomically(target, b"old")
    write_bytes_atomically(target, b"new")
    assert target.read_bytes() == b"new"
    assert [path.name for path in tmp_path.iterdir()] == ["artifact.parquet"]


def test_a_failing_writer_leaves_the_previous_file_untouched(tmp_path: Path) -> None:
    target = tmp_path / "artifact.parquet"
    write_bytes_atomically(target, b"old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_target(target) as temporary:
        temporary.write_bytes(b"half of the ne")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert [path.name for path in tmp_path.iterdir()] == ["artifact.parquet"]


KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    from recsys_pipeline.atomic import atomic_target

    with atomic_target(sys.argv[1]) as temporary:
        with open(temporary, "wb") as file:
            file.write(b"x" * 1_000_000)
            file.flush()
            print("writing", flush=True)
            time.sleep(60)
    """
)


def start_writer(target: Path) -> subprocess.Popen:
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(target)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert writer.stdout is not None and writer.stdout.readline().strip() == "writing"
    return writer


def test_sigkill_during_a_write_keeps_the_old_file_and_the_next_write_succeeds(tmp_path: Path) -> None:
    target = tmp_path / "trained_model.keras"
    write_bytes_atomically(target, b"the model of the previous run")
    before = digest(target)
    writer = start_writer(target)
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=10)
    assert digest(target) == before
    (abandoned,) = (path for path in tmp_path.iterdir() if path != target)
    assert abandoned.name.startswith(".trained_model.keras.") and abandoned.name.endswith(".tmp.keras")

    write_bytes_atomically(target, b"the next run's model")
    assert target.read_bytes() == b"the next run's model"
    assert [path.name for path in tmp_path.iterdir()] == ["trained_model.keras"]


def test_a_live_writers_temporary_file_is_left_alone(tmp_path: Path) -> None:
    target = tmp_path / "raw_ratings.parquet"
    writer = start_writer(target)
    try:
        assert remove_abandoned_temporaries(target) == []
        write_bytes_atomically(target, b"another run's output")
        assert len(list(tmp_path.iterdir())) == 2  # ours, and the live writer's temporary file
    finally:
        writer.kill()
        writer.wait(timeout=10)
    assert len(remove_abandoned_temporaries(target)) == 1


def test_the_io_managers_neither_write_nor_read_pickles(tmp_path: Path) -> None:
    manager = NumpyIOManager(base_path=UPath(tmp_path))
    with pytest.raises(ValueError, match="allow_pickle=False"):
        manager.write(np.array([{"a": 1}], dtype=object), tmp_path / "objects.npy")
    pickled = tmp_path / "pickled.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="Python objects"):  # refused before anything is unpickled
        manager.read(pickled)


def test_an_io_manager_write_that_fails_leaves_the_stored_artifact(tmp_path: Path) -> None:
    manager = ParquetIOManager(base_path=UPath(tmp_path))
    stored = pd.DataFrame({"movieId": [1, 2]})
    manager.handle_output(build_output_context(asset_key="raw_movies"), stored)
    path = tmp_path / "raw_movies.parquet"
    before = digest(path)
    with pytest.raises(Exception, match="(?i)mixed|convert|type"):
        manager.handle_output(build_output_context(asset_key="raw_movies"), pd.DataFrame({"movieId": [1, "two", object()]}))
    assert digest(path) == before
    pd.testing.assert_frame_equal(manager.load_input(build_input_context(asset_key="raw_movies")), stored)
