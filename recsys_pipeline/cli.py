"""The `recsys` command: similar movies and recommendations from the latest materialized artifacts.

    recsys similar "Toy Story (1995)" [-k 10] [--json]
    recsys recommend --user 1 [-k 10] [--json]
    recsys recommend --genres "Animation=5,Children=4.5,Horror=1" [-k 10] [--json]

Artifacts are read from <data dir>/artifacts, the data dir being --data-dir, else RECSYS_DATA_DIR,
else ./data, as for the Dagster code location. Only `recommend` imports TensorFlow, to embed the
user through the trained model's user tower. The answers themselves come from recsys_pipeline.recommend.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_pipeline import layout, recommend
from recsys_pipeline.settings import SettingsError, data_dir_from_environment
from recsys_pipeline.standardisation import FittedScalers

# What movie_embeddings is computed from: a newer input means the embeddings are stale.
EMBEDDING_INPUTS = ("accepted_model", "movie_features", "fitted_scalers")
DEFAULT_K = 10


class ArtifactError(Exception):
    """An artifact is missing, unreadable or out of step with the others; the message says what to materialize."""


class Artifacts:
    """The artifact files of one data directory, loaded on demand."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.directory = layout.artifacts_dir(data_dir)

    def path(self, asset: str) -> Path:
        return layout.artifact_path(self.data_dir, asset)

    def materialize_hint(self, assets: Sequence[str]) -> str:
        selection = ",".join(assets)
        return f"run: RECSYS_DATA_DIR={self.data_dir} dagster asset materialize -m recsys_pipeline.definitions --select '{selection}'"

    def require(self, assets: Sequence[str]) -> None:
        """Fail naming the assets to materialize when any of `assets` has no file yet."""
        missing = [asset for asset in assets if not self.path(asset).is_file()]
        if not missing:
            return
        # Nothing built yet: the whole graph is needed, not just the files this command reads.
        nothing_built = len(missing) == len(assets)
        raise ArtifactError(
            f"missing artifact(s) {', '.join(missing)} in {self.directory}; "
            + self.materialize_hint(["*"] if nothing_built else missing)
        )

    def _read(self, asset: str, reader):
        try:
            return reader(self.path(asset))
        except (OSError, ValueError) as error:
            raise ArtifactError(f"{self.path(asset)} is unreadable ({error}); {self.materialize_hint([asset])}") from error

    def table(self, asset: str, columns: list[str] | None = None) -> pd.DataFrame:
        return self._read(asset, lambda path: pd.read_parquet(path, columns=columns))

    def scalers(self) -> FittedScalers:
        return self._read("fitted_scalers", lambda path: FittedScalers.from_dict(json.loads(path.read_text())))

    def movie_embeddings(self, movie_features: pd.DataFrame) -> np.ndarray:
        """The stored movie embeddings, checked to be row-aligned with `movie_features` and newer than their inputs."""
        embeddings = self._read("movie_embeddings", lambda path: np.load(path, mmap_mode="r", allow_pickle=False))
        if len(embeddings) != len(movie_features):
            raise ArtifactError(
                f"movie_embeddings holds {len(embeddings)} rows for {len(movie_features)} movies in movie_features; "
                + self.materialize_hint(["movie_embeddings"])
            )
        built = self.path("movie_embeddings").stat().st_mtime
        newer = [asset for asset in EMBEDDING_INPUTS if self.path(asset).is_file() and self.path(asset).stat().st_mtime > built]
        if newer:
            raise ArtifactError(f"movie_embeddings is older than {', '.join(newer)}; " + self.materialize_hint(["movie_embeddings"]))
        return embeddings

    def model(self):
        from recsys_pipeline import two_tower  # TensorFlow, only for the commands that embed

        return self._read("accepted_model", lambda path: two_tower.load_model(str(path)))


# --- commands -------------------------------------------------------------------------------------


def similar(args: argparse.Namespace, artifacts: Artifacts) -> tuple[str, pd.DataFrame]:
    artifacts.require(["movie_features", "movie_embeddings"])
    movie_features = artifacts.table("movie_features")
    movie_id = recommend.find_movie(movie_features, args.movie)
    listing = recommend.similar_movies(movie_features, artifacts.movie_embeddings(movie_features), movie_id, args.k)
    title = movie_features.loc[movie_features["movieId"] == movie_id, "title"].iloc[0]
    return f"The {len(listing)} movies nearest to {title} [movieId {movie_id}] (squared embedding distance):", listing


def recommend_movies(args: argparse.Namespace, artifacts: Artifacts) -> tuple[str, pd.DataFrame]:
    for_user = args.user is not None
    artifacts.require(["movie_features", "fitted_scalers", "accepted_model", *(["user_genre_averages", "rating_splits"] if for_user else [])])
    movie_features = artifacts.table("movie_features")
    scalers = artifacts.scalers()
    user_row_number = None  # a new user has no learned ID: the model scores them by content alone
    if for_user:
        user_table = artifacts.table("user_genre_averages")
        user_row = recommend.user_features(user_table, args.user)
        user_row_number = int(np.flatnonzero(user_table["userId"].to_numpy() == args.user)[0]) if user_row["rating_count"].iloc[0] > 0 else None
        rated = recommend.rated_movie_ids(artifacts.table("rating_splits", columns=["userId", "movieId"]), args.user)
        who = f"user {args.user}, leaving out the {len(rated)} movies they rated"
    else:
        user_row = recommend.genre_profile_features(args.genres, movie_features, scalers.target)
        rated = []
        who = "a new user rating " + ", ".join(f"{genre}={stars:g}" for genre, stars in args.genres)
    from recsys_pipeline import two_tower  # TensorFlow, imported only once the question is known to be answerable

    stars = recommend.predicted_stars(two_tower.user_scorer(artifacts.model(), scalers, user_row, user_row_number, movie_features), scalers.target)
    listing = recommend.top_predictions(movie_features, stars, args.k, rated, args.min_ratings)
    among = f", among movies with at least {args.min_ratings} training ratings" if args.min_ratings else ""
    return f"The {len(listing)} highest predicted ratings for {who}{among}:", listing


# --- command line ---------------------------------------------------------------------------------


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def genre_ratings(text: str) -> list[tuple[str, float]]:
    """'Animation=5,Horror=1' as [("Animation", 5.0), ("Horror", 1.0)]; genre names are checked later."""
    pairs = []
    for item in text.split(","):
        name, equals, stars = item.partition("=")
        try:
            if not equals or not name.strip():
                raise ValueError
            pairs.append((name.strip(), float(stars)))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected GENRE=STARS pairs separated by commas, e.g. 'Animation=5,Horror=1'; got '{item}'") from None
    return pairs


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-k", type=positive_int, default=DEFAULT_K, help=f"how many movies to list (default {DEFAULT_K})")
    common.add_argument("--json", action="store_true", help="print a JSON list of objects instead of a table")
    common.add_argument("--data-dir", type=Path, help="the pipeline's data directory (default: $RECSYS_DATA_DIR, else ./data)")

    parser = argparse.ArgumentParser(prog="recsys", description="Similar movies and recommendations from the materialized recsys_pipeline artifacts.")
    commands = parser.add_subparsers(dest="command", required=True)
    similar_parser = commands.add_parser("similar", parents=[common], help="the movies nearest to one movie in the model's embedding space")
    similar_parser.add_argument("movie", metavar="TITLE_OR_ID", help="a movieId, an exact title (any case) or a part of exactly one title")
    similar_parser.set_defaults(run=similar)

    recommend_parser = commands.add_parser("recommend", parents=[common], help="the movies with the highest predicted rating for a user")
    who = recommend_parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", type=int, metavar="ID", help="a userId from the ratings; movies they rated are left out")
    who.add_argument("--genres", type=genre_ratings, metavar="GENRE=STARS,...", help="a new user described by ratings of whole genres")
    recommend_parser.add_argument(
        "--min-ratings", type=int, default=0, metavar="N", help="only movies with at least N training ratings (default 0: every movie)"
    )
    recommend_parser.set_defaults(run=recommend_movies)
    return parser


SCORE_FORMATS = {"distance": "{:.4f}", "predicted_rating": "{:.2f}"}


def render_table(heading: str, listing: pd.DataFrame) -> str:
    """The heading over an aligned table: numbers to the right, text to the left, scores rounded for reading."""
    columns = []
    for name in listing.columns:
        cells = [SCORE_FORMATS.get(name, "{}").format(value) for value in listing[name]]
        width = max(len(name), *(len(cell) for cell in cells))
        align = str.rjust if pd.api.types.is_numeric_dtype(listing[name]) else str.ljust
        columns.append([align(cell, width) for cell in [name, *cells]])
    return "\n".join([heading, *("  ".join(row).rstrip() for row in zip(*columns, strict=True))])


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        data_dir = (args.data_dir or Path(data_dir_from_environment(os.environ))).expanduser().resolve()
        heading, listing = args.run(args, Artifacts(data_dir))
    except (recommend.QueryError, ArtifactError, SettingsError) as error:
        print(f"recsys: error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(listing.to_dict(orient="records"), indent=2) if args.json else render_table(heading, listing))
    return 0


if __name__ == "__main__":
    sys.exit(main())
