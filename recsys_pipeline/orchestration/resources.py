"""Resources: where the data comes from, the one seed every random step derives from, where releases
are published, and the regression gate that compares a candidate with the current release."""

from pathlib import Path

import dagster as dg
from upath import UPath

from recsys_pipeline import layout, releases
from recsys_pipeline.movielens import resolve_source
from recsys_pipeline.settings import DEFAULT_DATA_DIR, DEFAULT_RMSE_TOLERANCE, DEFAULT_SEED, DEFAULT_SOURCE


class MovieLensSource(dg.ConfigurableResource):
    """A directory of MovieLens CSVs, a local .zip, or an https URL of a .zip (cached under `cache_dir`).

    `sha256` is the archive's expected SHA-256; a .zip or download that does not match is refused.
    """

    location: str = DEFAULT_SOURCE
    cache_dir: str = DEFAULT_DATA_DIR
    sha256: str | None = None

    def directory(self) -> Path:
        return resolve_source(self.location, Path(self.cache_dir), self.sha256)


class Reproducibility(dg.ConfigurableResource):
    """One seed drives the split, the network's initialisation and the shuffling of batches."""

    seed: int = DEFAULT_SEED


class ReleaseStore(dg.ConfigurableResource):
    """The artifacts folder the pipeline writes and the releases folder consumers read (see
    recsys_pipeline.releases). `artifacts_base_path` may be an fsspec URL; releases are local."""

    artifacts_base_path: str
    releases_dir: str

    def artifact_path(self, asset: str) -> UPath:
        return UPath(self.artifacts_base_path) / layout.file_name(asset)

    def publish(self, release_id: str, details: dict, keep: int) -> releases.Release:
        files = {layout.file_name(asset): self.artifact_path(asset) for asset in layout.RELEASED_ASSETS}
        return releases.publish(Path(self.releases_dir), files, release_id, details, keep)

    def list(self) -> list[releases.Release]:
        return releases.list_releases(Path(self.releases_dir))


class ModelGate(dg.ConfigurableResource):
    """The regression gate: how much worse in stars a retrained model may be than the model of the
    current release (whose manifest records its validation RMSE). The release lives beside the
    artifacts, not only in the Dagster instance, which a CLI run without DAGSTER_HOME throws away."""

    releases_dir: str
    rmse_tolerance: float = DEFAULT_RMSE_TOLERANCE

    def accepted(self) -> dict | None:
        """The current release's manifest (with `val_rmse` and the model's `run_id`), or None before the first release."""
        release = releases.current(Path(self.releases_dir))
        return None if release is None else release.manifest
