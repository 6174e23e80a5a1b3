"""Resources: where the data comes from, the one seed every random step derives from, and the
regression gate's record of the last accepted model."""

import json
from pathlib import Path

import dagster as dg
from upath import UPath

from recsys_pipeline.movielens import resolve_source
from recsys_pipeline.orchestration.io_managers import local_source, local_target
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


class ModelGate(dg.ConfigurableResource):
    """The regression gate's memory: the validation RMSE of the last accepted model, kept in a JSON
    file in the artifact store beside the artifacts (a local path or an fsspec URL), so that every
    worker of a deployment and every Dagster instance, even a CLI run's throwaway one, sees the same
    record; and how much worse in stars a retrained model may be."""

    record_path: str
    rmse_tolerance: float = DEFAULT_RMSE_TOLERANCE

    def accepted(self) -> dict | None:
        """The last acceptance record, or None before any model was accepted."""
        path = UPath(self.record_path)
        if not path.exists():
            return None
        with local_source(path) as local:
            return json.loads(local.read_text())

    def record_acceptance(self, record: dict) -> None:
        """Replace the record atomically: a reader sees the previous record or this one."""
        with local_target(UPath(self.record_path)) as local:
            local.write_text(json.dumps(record, indent=2, sort_keys=True))
