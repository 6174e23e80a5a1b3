"""Releases: what consumers read, published together, immutable, and switched atomically.

The pipeline writes its artifacts one step at a time, so at any moment the artifacts folder may hold
files of two runs (a retrain in progress, a model the regression gate refused beside features it
rewrote, an interrupted run). A release is a folder `<releases>/<release id>/` holding copies of
every artifact a consumer reads, as they were when the accepted model's downstream steps had all
materialized and passed their checks, and a `manifest.json` (release id, model run, metrics, the
validation ratings' fingerprint and global-mean RMSE, each file's size and SHA-256). `<releases>/current.json` names the current release; it is replaced
atomically (temporary file, then rename), so a reader sees the old release or the new one, never a
mix. Consumers (the `recsys` command) read only the current release and verify its files against
the manifest. The regression gate compares a candidate with the current release's model.

No Dagster here: the `release` asset and the `recsys` command call these functions.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys_pipeline import layout
from recsys_pipeline.atomic import fsync_directory, write_json_atomically
from recsys_pipeline.sequential import SequentialModel
from recsys_pipeline.standardisation import FittedScalers

MANIFEST = "manifest.json"
CURRENT = "current.json"
STAGING_PREFIX = ".staging-"
DEFAULT_KEEP = 5
# 2: with `global_mean_val_rmse` and `val_fingerprint` (what the regression gate compares); 1 had neither.
MANIFEST_VERSION = 2
COPY_CHUNK_BYTES = 1 << 20


class ReleaseError(Exception):
    """A release that is missing, unknown, or whose files do not match its manifest; the message says what to run."""


@dataclass(frozen=True)
class Release:
    """One published release: its folder and its manifest."""

    directory: Path
    manifest: dict[str, Any]

    @property
    def release_id(self) -> str:
        return self.manifest["release_id"]

    def path(self, file_name: str) -> Path:
        """The released file `file_name` (e.g. "movie_features.parquet"), checked against the manifest."""
        if file_name not in self.manifest["files"]:
            raise ReleaseError(f"release {self.release_id} in {self.directory.parent} has no {file_name}; publish a new release")
        return self.directory / file_name

    # What consumers read, by asset (layout decides each asset's file and format).

    def table(self, asset: str) -> pd.DataFrame:
        return pd.read_parquet(self.path(layout.file_name(asset)))

    def array(self, asset: str) -> np.ndarray:
        return np.load(self.path(layout.file_name(asset)), allow_pickle=False)

    def ranking_model(self) -> SequentialModel:
        return SequentialModel.load(self.path(layout.file_name("ranking_model")))

    def scalers(self) -> FittedScalers:
        return FittedScalers.from_dict(json.loads(self.path(layout.file_name("fitted_scalers")).read_text()))

    def verify(self, file_names: list[str] | None = None) -> None:
        """Raise ReleaseError unless each named file (default: all) has the manifest's size and SHA-256."""
        for name in file_names if file_names is not None else list(self.manifest["files"]):
            expected = self.manifest["files"][name] if name in self.manifest["files"] else None
            path = self.directory / name
            if expected is None:
                raise ReleaseError(f"release {self.release_id} has no {name}")
            if not path.is_file():
                raise ReleaseError(f"{path} is missing from release {self.release_id}")
            if path.stat().st_size != expected["bytes"] or file_sha256(path) != expected["sha256"]:
                raise ReleaseError(f"{path} does not match release {self.release_id}'s manifest (size or SHA-256 differs): the file is corrupt")


def file_sha256(path: Path) -> str:
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def new_release_id(run_id: str, now: datetime | None = None) -> str:
    """Sortable by time: 20261201T120000Z-<first 8 characters of the run id>."""
    moment = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    return f"{moment}-{run_id[:8]}"


def publish(
    releases_dir: Path,
    files: dict[str, Any],
    release_id: str,
    details: dict[str, Any],
    keep: int = DEFAULT_KEEP,
) -> Release:
    """Copy `files` (released name -> source path: a Path, or a UPath on an object store) into a new release, write its manifest, make it
    current, and delete the oldest releases beyond `keep` (never the current one).

    The copy is staged in a hidden folder and renamed into place only once every file and the
    manifest are written and synced; the switch of `current.json` is the last step. A failure at any
    point leaves the previous current release untouched.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    releases_dir.mkdir(parents=True, exist_ok=True)
    final = releases_dir / release_id
    if final.exists():
        raise ReleaseError(f"release {release_id} already exists in {releases_dir}")
    missing = [str(path) for path in files.values() if not path.exists()]
    if missing:
        raise ReleaseError(f"cannot publish release {release_id}: missing artifact(s) {', '.join(missing)}")
    staging = releases_dir / f"{STAGING_PREFIX}{release_id}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        listed = {}
        for name, source in files.items():
            target = staging / name
            # A copy, not a link: nothing done to the artifacts folder later can reach a release.
            with source.open("rb") as reader, open(target, "wb") as writer:
                shutil.copyfileobj(reader, writer, COPY_CHUNK_BYTES)
                writer.flush()
                os.fsync(writer.fileno())
            listed[name] = {"bytes": target.stat().st_size, "sha256": file_sha256(target)}
        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "release_id": release_id,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **details,
            "files": listed,
        }
        write_json_atomically(staging / MANIFEST, manifest)
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_directory(releases_dir)
    make_current(releases_dir, release_id)
    prune(releases_dir, keep)
    return Release(final, manifest)


def make_current(releases_dir: Path, release_id: str) -> Release:
    """Point `current.json` at `release_id` (atomically), after verifying every file of that release."""
    release = load(releases_dir, release_id)
    release.verify()
    write_json_atomically(releases_dir / CURRENT, {"release_id": release_id})
    return release


def load(releases_dir: Path, release_id: str) -> Release:
    directory = releases_dir / release_id
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        known = ", ".join(listed.release_id for listed in list_releases(releases_dir)) or "none"
        raise ReleaseError(f"no release {release_id!r} in {releases_dir} (releases: {known})")
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("release_id") != release_id or not isinstance(manifest.get("files"), dict):
            raise ValueError("release id or file list missing")
    except (OSError, ValueError) as error:
        raise ReleaseError(f"{manifest_path} is unreadable ({error}); roll back to another release") from error
    return Release(directory, manifest)


def current_id(releases_dir: Path) -> str | None:
    """The current release's id, or None before the first release."""
    pointer = releases_dir / CURRENT
    if not pointer.is_file():
        return None
    try:
        return str(json.loads(pointer.read_text())["release_id"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ReleaseError(f"{pointer} is unreadable ({error}); choose a release with `recsys rollback ID` (see `recsys releases`)") from error


def current(releases_dir: Path) -> Release | None:
    release_id = current_id(releases_dir)
    return None if release_id is None else load(releases_dir, release_id)


def list_releases(releases_dir: Path) -> list[Release]:
    """Every complete release (those with a readable manifest), oldest first."""
    if not releases_dir.is_dir():
        return []
    found = []
    for directory in sorted(releases_dir.iterdir()):
        if directory.is_dir() and not directory.name.startswith(".") and (directory / MANIFEST).is_file():
            try:
                found.append(load(releases_dir, directory.name))
            except ReleaseError:
                continue
    return found


def prune(releases_dir: Path, keep: int) -> list[str]:
    """Delete the oldest releases so that at most `keep` remain, never the current one; also leftover staging folders."""
    current_release = current_id(releases_dir)
    releases = [release.release_id for release in list_releases(releases_dir)]
    removable = [release_id for release_id in releases if release_id != current_release]
    deleted = removable[: max(0, len(releases) - keep)]
    for release_id in deleted:
        shutil.rmtree(releases_dir / release_id)
    for leftover in releases_dir.glob(f"{STAGING_PREFIX}*"):
        shutil.rmtree(leftover, ignore_errors=True)
    return deleted
