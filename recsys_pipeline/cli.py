"""The `recsys` command: similar movies and recommendations from the current release.

    recsys similar "Toy Story (1995)" [-k 10] [--json]
    recsys recommend --user 1 [-k 10] [--json]
    recsys recommend --genres "Animation=5,Children=4.5,Horror=1" [-k 10] [--json]
    recsys recommend --movies "The Matrix,Alien,Blade Runner" [-k 10] [--json]
    recsys releases [--json]
    recsys rollback RELEASE_ID
    recsys serve [--host 127.0.0.1] [--port 8000] [--workers 1]

Answers come from the current release in <data dir>/releases (see recsys_pipeline.releases), the
data dir being --data-dir, else RECSYS_DATA_DIR, else ./data, as for the Dagster code location. No
command imports TensorFlow: a known user's list is the released user_recommendations, a visitor known
by genre ratings or liked movies is scored in numpy by the released ranking_model
(recsys_pipeline.ranking). The answers themselves come from recsys_pipeline.recommend.
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

from recsys_pipeline import layout, recommend, releases
from recsys_pipeline.sequential import SequentialModel
from recsys_pipeline.settings import SettingsError, data_dir_from_environment
from recsys_pipeline.standardisation import FittedScalers

DEFAULT_K = 10


class ArtifactError(Exception):
    """A release or one of its files is missing, unreadable or corrupt; the message says what to run."""


class Artifacts:
    """The files of the current release of one data directory (recsys_pipeline.releases), each
    verified against the release's manifest before it is read. The artifacts folder the pipeline is
    writing is never read: a retrain, a refused source or an interrupted run cannot change an answer."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.releases_dir = layout.releases_dir(data_dir)
        self._release: releases.Release | None = None

    def publish_hint(self) -> str:
        return f"run: RECSYS_DATA_DIR={self.data_dir} dagster asset materialize -m recsys_pipeline.definitions --select '*'"

    def release(self) -> releases.Release:
        if self._release is None:
            try:
                found = releases.current(self.releases_dir)
            except releases.ReleaseError as error:
                raise ArtifactError(str(error)) from error
            if found is None:
                raise ArtifactError(f"no release published yet in {self.releases_dir}; {self.publish_hint()}")
            self._release = found
        return self._release

    def path(self, asset: str) -> Path:
        """The current release's file of `asset`, after checking its size and SHA-256 against the manifest."""
        release = self.release()
        name = layout.file_name(asset)
        try:
            release.verify([name])
        except releases.ReleaseError as error:
            raise ArtifactError(f"{error}; go back to an intact release with `recsys rollback ID` (see `recsys releases`), or publish a new one: {self.publish_hint()}") from error
        return release.path(name)

    def _read(self, asset: str, reader):
        path = self.path(asset)
        try:
            return reader(path)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ArtifactError(f"{path} is unreadable ({type(error).__name__}: {error}); {self.publish_hint()}") from error

    def table(self, asset: str, columns: list[str] | None = None) -> pd.DataFrame:
        return self._read(asset, lambda path: pd.read_parquet(path, columns=columns))

    def scalers(self) -> FittedScalers:
        return self._read("fitted_scalers", lambda path: FittedScalers.from_dict(json.loads(path.read_text())))

    def movie_embeddings(self, movie_features: pd.DataFrame) -> np.ndarray:
        """The released movie embeddings, checked to be row-aligned with the release's `movie_features`."""
        embeddings = self._read("movie_embeddings", lambda path: np.load(path, mmap_mode="r", allow_pickle=False))
        if len(embeddings) != len(movie_features):
            raise ArtifactError(
                f"movie_embeddings holds {len(embeddings)} rows for {len(movie_features)} movies in movie_features of release "
                f"{self.release().release_id}; {self.publish_hint()}"
            )
        return embeddings

    def ranking_model(self) -> SequentialModel:
        return self._read("ranking_model", SequentialModel.load)


# --- commands -------------------------------------------------------------------------------------


def similar(args: argparse.Namespace, artifacts: Artifacts) -> tuple[str, pd.DataFrame]:
    movie_features = artifacts.table("movie_features")
    movie_id = recommend.find_movie(movie_features, args.movie)
    listing = recommend.similar_movies(movie_features, artifacts.movie_embeddings(movie_features), movie_id, args.k)
    title = movie_features.loc[movie_features["movieId"] == movie_id, "title"].iloc[0]
    return f"The {len(listing)} movies nearest to {title} [movieId {movie_id}] (squared embedding distance):", listing


def recommend_movies(args: argparse.Namespace, artifacts: Artifacts) -> tuple[str, pd.DataFrame]:
    """A known user's list is read from user_recommendations (what the service loads); a visitor
    described by genre ratings or movies they liked is scored in numpy by the released ranking_model
    (recommend.visitor_listing). No TensorFlow."""
    movie_features = artifacts.table("movie_features")
    if args.user is not None:
        served = artifacts.table("user_recommendations")
        listing = recommend.served_listing(served, movie_features, args.user, args.k, args.min_ratings)
        who = f"user {args.user} (movies they rated are left out)"
    elif args.movies is not None:
        liked = [recommend.find_movie(movie_features, title) for title in args.movies]
        listing = recommend.visitor_listing(
            artifacts.ranking_model(), artifacts.scalers(), movie_features, args.k, liked_movie_ids=liked, min_ratings=args.min_ratings
        )
        titles = movie_features.set_index("movieId").loc[liked, "title"]
        who = "a visitor who liked " + ", ".join(titles) + " (those are left out)"
    else:
        listing = recommend.visitor_listing(artifacts.ranking_model(), artifacts.scalers(), movie_features, args.k, genre_ratings=args.genres, min_ratings=args.min_ratings)
        who = "a new user rating " + ", ".join(f"{genre}={stars:g}" for genre, stars in args.genres)
    among = f", among movies with at least {args.min_ratings} training ratings" if args.min_ratings else ""
    return f"The {len(listing)} best-ranked movies for {who}{among}:", listing


def _release_rows(artifacts: Artifacts, shown: list[releases.Release]) -> pd.DataFrame:
    current_id = releases.current_id(artifacts.releases_dir)
    return pd.DataFrame(
        [
            {
                "release_id": release.release_id,
                "current": "*" if release.release_id == current_id else "",
                "created_at": release.manifest.get("created_at", ""),
                "val_rmse": release.manifest.get("val_rmse", np.nan),
                "test_rmse": release.manifest.get("metrics", {}).get("test_rmse", np.nan),
            }
            for release in shown
        ],
        columns=["release_id", "current", "created_at", "val_rmse", "test_rmse"],
    )


def list_releases(args: argparse.Namespace, artifacts: Artifacts) -> tuple[str, pd.DataFrame]:
    try:
        listing = _release_rows(artifacts, releases.list_releases(artifacts.releases_dir))
    except releases.ReleaseError as error:
        raise ArtifactError(str(error)) from error
    return f"{len(listing)} release(s) in {artifacts.releases_dir}, oldest first (* = current):", listing


def rollback(args: argparse.Namespace, artifacts: Artifacts) -> tuple[str, pd.DataFrame]:
    try:
        release = releases.make_current(artifacts.releases_dir, args.release_id)
        listing = _release_rows(artifacts, [release])
    except releases.ReleaseError as error:
        raise ArtifactError(str(error)) from error
    return f"Release {release.release_id} is now current:", listing


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


def movie_list(text: str) -> list[str]:
    """'The Matrix,Alien,1200' as ["The Matrix", "Alien", "1200"]: titles (or movieIds) resolved later."""
    titles = [title.strip() for title in text.split(",") if title.strip()]
    if not titles:
        raise argparse.ArgumentTypeError("expected titles or movieIds separated by commas, e.g. 'The Matrix,Alien'")
    return titles


def serve(args: argparse.Namespace, data_dir: Path) -> None:
    from recsys_pipeline import service  # FastAPI and uvicorn only for this command

    service.serve(data_dir, args.host, args.port, args.workers)


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

    recommend_parser = commands.add_parser("recommend", parents=[common], help="the best-ranked movies for a user (the served list)")
    who = recommend_parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", type=int, metavar="ID", help="a userId from the ratings; movies they rated are left out")
    who.add_argument("--genres", type=genre_ratings, metavar="GENRE=STARS,...", help="a new user described by ratings of whole genres")
    who.add_argument(
        "--movies", type=movie_list, metavar="TITLE,...", help="a visitor described by movies they liked, oldest first (titles as a person writes them, or movieIds)"
    )
    recommend_parser.add_argument(
        "--min-ratings", type=int, default=0, metavar="N", help="only movies with at least N training ratings (default 0: every movie)"
    )
    recommend_parser.set_defaults(run=recommend_movies)

    releases_parser = commands.add_parser("releases", parents=[common], help="the published releases, oldest first, the current one marked")
    releases_parser.set_defaults(run=list_releases)
    rollback_parser = commands.add_parser("rollback", parents=[common], help="make an earlier release current again (after verifying its files)")
    rollback_parser.add_argument("release_id", metavar="RELEASE_ID", help="an id listed by `recsys releases`")
    rollback_parser.set_defaults(run=rollback)

    serve_parser = commands.add_parser("serve", help="the HTTP recommendation service on the current release (OpenAPI at /docs)")
    serve_parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1: this machine only)")
    serve_parser.add_argument("--port", type=int, default=8000, help="the port (default 8000; 0 picks a free one, printed at start)")
    serve_parser.add_argument("--workers", type=positive_int, default=1, help="server processes sharing the port (default 1)")
    serve_parser.add_argument("--data-dir", type=Path, help="the pipeline's data directory (default: $RECSYS_DATA_DIR, else ./data)")
    return parser


SCORE_FORMATS = {"distance": "{:.4f}", "score": "{:.4f}", "val_rmse": "{:.4f}", "test_rmse": "{:.4f}"}


def render_table(heading: str, listing: pd.DataFrame) -> str:
    """The heading over an aligned table: numbers to the right, text to the left, scores rounded for reading."""
    columns = []
    for name in listing.columns:
        cells = [SCORE_FORMATS.get(name, "{}").format(value) for value in listing[name]]
        width = max([len(name), *(len(cell) for cell in cells)])
        align = str.rjust if pd.api.types.is_numeric_dtype(listing[name]) else str.ljust
        columns.append([align(cell, width) for cell in [name, *cells]])
    return "\n".join([heading, *("  ".join(row).rstrip() for row in zip(*columns, strict=True))])


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        data_dir = (args.data_dir or Path(data_dir_from_environment(os.environ))).expanduser().resolve()
        if args.command == "serve":
            serve(args, data_dir)
            return 0
        heading, listing = args.run(args, Artifacts(data_dir))
    except (recommend.QueryError, ArtifactError, SettingsError) as error:
        print(f"recsys: error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(listing.to_dict(orient="records"), indent=2) if args.json else render_table(heading, listing))
    return 0


if __name__ == "__main__":
    sys.exit(main())
