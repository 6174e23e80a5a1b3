"""Resources: where the data comes from, and the one seed every random step derives from."""


from pathlib import Path

import dagster as dg

from recsys_pipeline.movielens import DEFAULT_SOURCE, resolve_source
from recsys_pipeline.splits import DEFAULT_SEED


class MovieLensSource(dg.ConfigurableResource):
    """A directory of MovieLens CSVs, a local .zip, or an https URL of a .zip (cached under `cache_dir`).

    `sha256` is the archive's expected SHA-256; a .zip or download that does not match is refused.
    """

    location: str = DEFAULT_SOURCE
    cache_dir: str = "data"
    sha256: str | None = None

    def directory(self) -> Path:
        return resolve_source(self.location, Path(self.cache_dir), self.sha256)


class Reproducibility(dg.ConfigurableResource):
    """One seed drives the split, the network's initialisation and the shuffling of batches."""

    seed: int = DEFAULT_SEED
