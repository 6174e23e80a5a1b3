"""Resources: where the data comes from, the one seed every random step derives from, and the
regression gate's record of the last accepted model."""

import json
from pathlib import Path

import dagster as dg

from recsys_pipeline.atomic import write_json_atomically
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


class ModelGate(dg.ConfigurableResource):
    """The regression gate's memory: the validation RMSE of the last accepted model, kept in a JSON
    file beside the artifacts (not only in the Dagster instance, which a CLI run without
    DAGSTER_HOME throws away), and how much worse in stars a retrained model may be."""

    record_path: str
    rmse_tolerance: float = DEFAULT_RMSE_TOLERANCE

    def accepted(self) -> dict | None:
        """The last acceptance record, or None before any model was accepted."""
        path = Path(self.record_path)
        return json.loads(path.read_text()) if path.is_file() else None

    def record_acceptance(self, record: dict) -> None:
        write_json_atomically(self.record_path, record)
