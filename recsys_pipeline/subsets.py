"""Legitimate variants of a MovieLens dataset: subsets of its ratings or users, rows shuffled, earlier
slices of time. Every blocking check must hold on each of them; the tests and the real-data runs of
docs/reliability.md use them to show it.

    python -m recsys_pipeline.subsets SOURCE_DIR OUT_DIR --variant half_the_users [--seed 0]

writes ratings.csv and movies.csv (restricted to the movies still rated) into OUT_DIR.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_pipeline.atomic import atomic_target


def _sample_ratings(share: float) -> Callable[[pd.DataFrame, np.random.Generator], pd.DataFrame]:
    def sample(ratings: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
        return ratings[rng.random(len(ratings)) < share]

    return sample


def _half_the_users(ratings: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    users = np.unique(ratings["userId"].to_numpy())
    return ratings[ratings["userId"].isin(rng.choice(users, size=max(1, len(users) // 2), replace=False))]


def _shuffled(ratings: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    return ratings.iloc[rng.permutation(len(ratings))]


def _before_quantile(quantile: float) -> Callable[[pd.DataFrame, np.random.Generator], pd.DataFrame]:
    def before(ratings: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
        return ratings[ratings["timestamp"] < ratings["timestamp"].quantile(quantile)]

    return before


def _user_counts(ratings: pd.DataFrame) -> pd.Series:
    return ratings.groupby("userId")["movieId"].transform("size")


def _light_users_only(ratings: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    return ratings[_user_counts(ratings) <= 30]


def _heavy_users_only(ratings: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    return ratings[_user_counts(ratings) > 20]


def _few_ratings_per_user(ratings: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """At most three ratings per user, some with one: users a split may leave without training rows."""
    rank = rng.permutation(len(ratings))
    order = pd.Series(rank, index=ratings.index).groupby(ratings["userId"]).rank(method="first")
    return ratings[order <= 3]


# name -> rows of the ratings to keep (order as returned), drawn with the given generator.
VARIANTS: dict[str, Callable[[pd.DataFrame, np.random.Generator], pd.DataFrame]] = {
    "ratings_90_percent": _sample_ratings(0.9),
    "ratings_50_percent": _sample_ratings(0.5),
    "half_the_users": _half_the_users,
    "shuffled_rows": _shuffled,
    "before_median_time": _before_quantile(0.5),
    "before_first_quartile_time": _before_quantile(0.25),
    "users_with_at_most_30_ratings": _light_users_only,
    "users_with_more_than_20_ratings": _heavy_users_only,
    "at_most_3_ratings_per_user": _few_ratings_per_user,
}


def variant(movies: pd.DataFrame, ratings: pd.DataFrame, name: str, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The movies and ratings of variant `name`: the kept ratings, and the movies they rate."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant '{name}', expected one of {', '.join(VARIANTS)}")
    kept = VARIANTS[name](ratings, np.random.default_rng(seed))
    if kept.empty:
        raise ValueError(f"variant '{name}' keeps no rating of these {len(ratings)}")
    return movies[movies["movieId"].isin(kept["movieId"])], kept


def write_variant(source: str | os.PathLike, out_dir: str | os.PathLike, name: str, seed: int = 0) -> Path:
    """Read SOURCE's movies.csv and ratings.csv as they are and write variant `name` into `out_dir`."""
    source, out_dir = Path(source), Path(out_dir)
    movies = pd.read_csv(source / "movies.csv", dtype=str, keep_default_na=False)
    ratings = pd.read_csv(source / "ratings.csv")
    movies = movies.assign(movieId=movies["movieId"].astype("int64"))
    kept_movies, kept_ratings = variant(movies, ratings, name, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    for file_name, table in (("movies.csv", kept_movies), ("ratings.csv", kept_ratings)):
        with atomic_target(out_dir / file_name) as temporary:
            table.to_csv(temporary, index=False, lineterminator="\n", encoding="utf-8")
    return out_dir


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m recsys_pipeline.subsets", description=__doc__.split("\n")[0])
    parser.add_argument("source", help="a folder with movies.csv and ratings.csv")
    parser.add_argument("out_dir", help="the folder to write the variant's movies.csv and ratings.csv into")
    parser.add_argument("--variant", choices=sorted(VARIANTS), required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = write_variant(args.source, args.out_dir, args.variant, args.seed)
    print(f"wrote variant {args.variant} (seed {args.seed}) into {out}")


if __name__ == "__main__":
    main()
