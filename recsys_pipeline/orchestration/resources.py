"""Resources: where the data comes from, the one seed every random step derives from, where releases
are published, and the regression gate that compares a candidate with the current release."""

from pathlib import Path

import dagster as dg
from upath import UPath

from recsys_pipeline import layout, releases
from recsys_pipeline.movielens import MovieLensError, resolve_source
from recsys_pipeline.settings import DEFAULT_DATA_DIR, DEFAULT_RMSE_TOLERANCE, DEFAULT_SEED, DEFAULT_SOURCE


class MovieLensSource(dg.ConfigurableResource):
    """A directory of MovieLens CSVs, a local .zip, or an https URL of a .zip (cached under `cache_dir`).

    `sha256` is the archive's expected SHA-256; a .zip or download that does not match is refused.
    """

    location: str = DEFAULT_SOURCE
    cache_dir: str = DEFAULT_DATA_DIR
    sha256: str | None = None

    def directory(self) -> Path:
        """The folder holding the CSVs. A source that is missing, unreachable or not MovieLens fails
        the step with its one-line reason, which says how to set RECSYS_MOVIELENS: a Failure, not
        retried, without the traceback of the download or file system calls behind it."""
        try:
            return resolve_source(self.location, Path(self.cache_dir), self.sha256)
        except MovieLensError as error:
            raise dg.Failure(description=str(error), metadata={"location": self.location}, allow_retries=False) from None


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
    """The regression gate: how much worse a retrained model may be than the model of the current
    release (whose manifest records its validation RMSE, the global mean's RMSE on the same
    validation ratings and their fingerprint): `rmse_tolerance` stars on the same validation
    ratings, the same expressed as skill over the global mean when they differ (the rule:
    checks.REGRESSION_GATE_RULE). The release lives beside the artifacts, not only in the Dagster
    instance, which a CLI run without DAGSTER_HOME throws away."""

    releases_dir: str
    rmse_tolerance: float = DEFAULT_RMSE_TOLERANCE

    def accepted(self) -> dict | None:
        """The current release's manifest (with `val_rmse`, `global_mean_val_rmse`,
        `val_fingerprint` and the model's `run_id`), or None before the first release. A manifest
        written before the gate recorded the global mean's RMSE gets it from the release's own
        model_evaluation.parquet (verified against the manifest), where the evaluation measured it
        on the same validation ratings; its fingerprint stays unknown."""
        release = releases.current(Path(self.releases_dir))
        if release is None:
            return None
        manifest = dict(release.manifest)
        if manifest.get("global_mean_val_rmse") is None:
            manifest["global_mean_val_rmse"] = _released_global_mean_val_rmse(release)
        return manifest


def _released_global_mean_val_rmse(release: releases.Release) -> float | None:
    import pandas as pd

    from recsys_pipeline import splits, workflow

    name = layout.file_name("model_evaluation")
    try:
        release.verify([name])
        return workflow.model_figure(pd.read_parquet(release.path(name)), splits.VALIDATION, "rmse", workflow.GLOBAL_MEAN)
    except (releases.ReleaseError, OSError, ValueError, KeyError):
        return None
