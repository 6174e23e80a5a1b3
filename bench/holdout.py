"""The check on ratings the pipeline never sees, as a new user of the project would run it.

A share of ml-latest-small's ratings is hidden: each user's latest (`--hide latest`, what they rated
next) or a random share (`--hide random`). The whole graph runs on the rest with its defaults, and
the served `user_recommendations` are scored against the hidden ratings beside peers computed from
the same visible ratings: EASE (lambda 100), EASE fed a recency-weighted history (each visible
rating weighted 0.5^(age rank / 10), age rank 0 the user's latest; no learning) and most popular.
Every list leaves out the movies the user rated in the visible ratings; P@10, NDCG@10 and R@20
are recsys_pipeline.evaluation's, over the users with a hidden rating.

A user's latest ratings are ordered by (timestamp, movieId); each user with n ratings hides
floor(share x n) of them, at least one when n >= 2 (a user with one rating hides none).

`--config FILE` runs the graph with a Dagster run config instead of the defaults, e.g. the random
split's configuration (`ops: {rating_splits: {config: {method: random}}}`) against a random share.

Usage: PYTHONPATH=. python -m bench.holdout [--hide latest random] [--share 0.1] [--seed 47005]
       [--config run_config.yaml] [--data DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pandas as pd
import yaml

from bench.common import ML_LATEST_SMALL
from recsys_pipeline import evaluation, layout, movielens, ranking

EASE_LAMBDA = 100.0
RECENCY_HALF_LIFE = 10.0
LATEST, RANDOM = "latest", "random"


def hidden_mask(ratings: pd.DataFrame, how: str, share: float, seed: int) -> np.ndarray:
    """Which ratings to hide: per user floor(share x n), at least one when the user has two or more."""
    users = ratings["userId"].to_numpy()
    counts = ratings.groupby("userId")["userId"].transform("size").to_numpy()
    n_hidden = np.where(counts >= 2, np.maximum(np.floor(share * counts), 1), 0)
    if how == LATEST:
        rank = ranking.age_ranks(users, ratings["timestamp"].to_numpy(), ratings["movieId"].to_numpy())
    else:
        draw = np.random.default_rng(seed).random(len(ratings))
        rank = pd.Series(draw).groupby(users).rank(method="first").to_numpy() - 1
    return rank < n_hidden


def run_graph(source: Path, data_dir: Path, seed: int, run_config: dict | None = None) -> pd.DataFrame:
    """Every asset with its defaults (or `run_config`), in process; the served lists."""
    import dagster as dg

    from recsys_pipeline.definitions import build_definitions

    defs = build_definitions(str(source), data_dir, seed=seed)
    result = defs.resolve_job_def("recsys_pipeline").execute_in_process(run_config=run_config or {}, instance=dg.DagsterInstance.ephemeral())
    if not result.success:
        raise SystemExit("the graph failed on the visible ratings")
    return pd.read_parquet(layout.artifact_path(data_dir, "user_recommendations"))


def served_scorer(served: pd.DataFrame, user_ids: np.ndarray, movie_ids: np.ndarray):
    """`score_rows` ranking each user's served list in its order; unlisted movies never shown."""
    scores = np.full((len(user_ids), len(movie_ids)), -np.inf)
    rows = pd.Index(user_ids).get_indexer(served["userId"])
    columns = pd.Index(movie_ids).get_indexer(served["movieId"])
    scores[rows, columns] = -served["rank"].to_numpy(dtype="float64")
    return lambda user_rows: scores[user_rows]


def measure(ratings: pd.DataFrame, movies: pd.DataFrame, how: str, share: float, seed: int, run_config: dict | None = None) -> list[dict]:
    hidden = hidden_mask(ratings, how, share, seed)
    visible = ratings[~hidden]
    with tempfile.TemporaryDirectory(prefix="holdout-") as scratch:
        source = Path(scratch) / "source"
        source.mkdir()
        visible.to_csv(source / movielens.RATINGS_FILE, index=False)
        movies.to_csv(source / movielens.MOVIES_FILE, index=False)
        started = time.perf_counter()
        served = run_graph(source, Path(scratch) / "data", seed, run_config)
        graph_seconds = time.perf_counter() - started
    user_ids, movie_ids = np.unique(ratings["userId"]), movies["movieId"].to_numpy()
    seen = (pd.Index(user_ids).get_indexer(visible["userId"]), pd.Index(movie_ids).get_indexer(visible["movieId"]))
    held = ratings[hidden]
    relevant = (pd.Index(user_ids).get_indexer(held["userId"]), pd.Index(movie_ids).get_indexer(held["movieId"]))
    ages = ranking.age_ranks(visible["userId"].to_numpy(), visible["timestamp"].to_numpy(), visible["movieId"].to_numpy())
    popularity = evaluation.popularity_scores(np.bincount(seen[1], minlength=len(movie_ids)))
    ease = ranking.ItemItem(*seen, len(user_ids), len(movie_ids), EASE_LAMBDA)
    scorers = {
        "served (user_recommendations)": served_scorer(served, user_ids, movie_ids),
        f"EASE (lambda {EASE_LAMBDA:g})": ease.scorer(),
        f"EASE, recency-weighted history (half-life {RECENCY_HALF_LIFE:g} ratings)": ease.scorer(ranking.recency_weights(ages, RECENCY_HALF_LIFE)),
        "most popular": lambda user_rows: np.broadcast_to(popularity, (len(user_rows), len(movie_ids))),
    }
    figures = evaluation.ranking_metrics_by_scorer(scorers, seen, relevant, len(movie_ids))
    base = {"hidden": how, "share": share, "seed": seed, "run_config": run_config or {}, "hidden_ratings": int(hidden.sum()), "graph_seconds": round(graph_seconds, 1)}
    return [{**base, "model": name, **{metric: round(value, 4) for metric, value in values.items()}} for name, values in figures.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ML_LATEST_SMALL)
    parser.add_argument("--hide", nargs="+", default=[LATEST, RANDOM], choices=[LATEST, RANDOM])
    parser.add_argument("--share", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=47005)
    parser.add_argument("--config", type=Path, help="a Dagster run config (YAML) for the graph; default: every asset's defaults")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    run_config = yaml.safe_load(args.config.read_text()) if args.config else None
    movies = movielens.read_movies(args.data)
    ratings = movielens.read_ratings(args.data)
    rows = []
    for how in args.hide:
        rows += measure(ratings, movies, how, args.share, args.seed, run_config)
    for row in rows:
        print(f"{row['hidden']:>7} | {row['model']:<70} | P@10 {row['precision_at_10']:.4f} | NDCG@10 {row['ndcg_at_10']:.4f} | R@20 {row['recall_at_20']:.4f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
