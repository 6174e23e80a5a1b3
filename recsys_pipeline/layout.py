"""Where every artifact lives on disk: `<data dir>/artifacts/<asset><extension>`.

The one description of the storage layout, shared by the Dagster IO managers that write the files
and the `recsys` command that reads them. The format of each asset is decided here.
"""

from __future__ import annotations

from pathlib import Path

ARTIFACTS_DIR = "artifacts"
# A candidate is a Keras model file that also holds the model's validation RMSE (two_tower.save_candidate).
EXTENSIONS = {"parquet": ".parquet", "npy": ".npy", "json": ".json", "keras": ".keras", "candidate": ".keras"}
# Assets stored as Parquet tables need no entry: it is the default format.
DEFAULT_FORMAT = "parquet"
ASSET_FORMATS = {
    "fitted_scalers": "json",
    "trained_model": "candidate",
    "accepted_model": "keras",
    "movie_embeddings": "npy",
    "embedding_distance_matrix": "npy",
}
# In the artifact store beside the artifacts, so the regression gate remembers the accepted model
# whatever Dagster instance or worker runs it.
ACCEPTED_MODEL_RECORD = "accepted_model.record.json"


def asset_format(asset: str) -> str:
    return ASSET_FORMATS.get(asset, DEFAULT_FORMAT)


def artifacts_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / ARTIFACTS_DIR


def artifact_path(data_dir: str | Path, asset: str) -> Path:
    """The file the pipeline writes for `asset` under `data_dir`."""
    return artifacts_dir(data_dir) / f"{asset}{EXTENSIONS[asset_format(asset)]}"
