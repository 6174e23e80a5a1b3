"""Where every artifact lives on disk: `<data dir>/artifacts/<asset><extension>`, and releases in `<data dir>/releases/`.

The one description of the storage layout, shared by the Dagster IO managers that write the files
and the `recsys` command that reads them. The format of each asset is decided here.
"""

from __future__ import annotations

from pathlib import Path

ARTIFACTS_DIR = "artifacts"
# A candidate is a Keras model file that also holds the model's validation RMSE (two_tower.save_candidate).
EXTENSIONS = {"parquet": ".parquet", "npy": ".npy", "json": ".json", "keras": ".keras", "npz": ".npz", "candidate": ".keras"}
# Assets stored as Parquet tables need no entry: it is the default format.
DEFAULT_FORMAT = "parquet"
ASSET_FORMATS = {
    "fitted_scalers": "json",
    "trained_model": "candidate",
    "accepted_model": "keras",
    "movie_embeddings": "npy",
    "embedding_distance_matrix": "npy",
    "ranking_model": "npz",
    "held_out_ranking_model": "npz",
}
RELEASES_DIR = "releases"
# What a consumer (the `recsys` command, a serving system) reads: published together as one release.
# Nothing per rating: a release grows with users and movies, not with the ratings (the served lists
# already leave out what each user rated; the gate's validation fingerprint is in the manifest).
RELEASED_ASSETS = (
    "movie_features",
    "user_genre_averages",
    "fitted_scalers",
    "accepted_model",
    "movie_embeddings",
    "similar_movies",
    "model_evaluation",
    "ranking_model",
    "user_recommendations",
)


def asset_format(asset: str) -> str:
    return ASSET_FORMATS.get(asset, DEFAULT_FORMAT)


def artifacts_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / ARTIFACTS_DIR


def file_name(asset: str) -> str:
    """The name of `asset`'s file, in the artifacts folder and in a release alike."""
    return f"{asset}{EXTENSIONS[asset_format(asset)]}"


def artifact_path(data_dir: str | Path, asset: str) -> Path:
    """The file the pipeline writes for `asset` under `data_dir`."""
    return artifacts_dir(data_dir) / file_name(asset)


def releases_dir(data_dir: str | Path) -> Path:
    """Where releases are published (see recsys_pipeline.releases), beside the artifacts."""
    return Path(data_dir) / RELEASES_DIR
