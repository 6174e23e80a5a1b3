"""Feature engineering (ingest, split, movie features, user genre averages): the package against the
notebook's code, in the same run, on ml-latest-small.

The notebook's code (bench/notebook.py) runs `--baseline-repeats` times (default 1: it takes minutes),
the package's `--repeats` times; each side's median is reported.

    python -m bench.bench_features [--movielens DIR] [--repeats 5] [--baseline-repeats 1]
"""

import argparse
from pathlib import Path

import numpy as np

from bench.common import ML_LATEST_SMALL, machine, median_seconds, report
from bench.notebook import notebook_features
from recsys_pipeline import features, movielens, splits


def package_features(movielens_dir: Path) -> dict:
    """What the ingest and feature assets compute, called directly."""
    movies = movielens.read_movies(movielens_dir)
    ratings = movielens.read_ratings(movielens_dir)
    movielens.check_known_movies(ratings, movies)
    labelled = splits.assign_splits(ratings)
    train = splits.training_rows(labelled)
    movie_features = features.build_movie_features(movies, train)
    user_features = features.build_user_genre_averages(np.unique(labelled["userId"].to_numpy()), train, movie_features)
    return {"splits": labelled, "movie_features": movie_features, "user_features": user_features}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--movielens", type=Path, default=ML_LATEST_SMALL)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline-repeats", type=int, default=1)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    ours, our_times, result = median_seconds(lambda: package_features(args.movielens), args.repeats)
    baseline, baseline_times, _ = median_seconds(lambda: notebook_features(args.movielens), args.baseline_repeats)
    print(f"package runs: {', '.join(f'{t:.3f}' for t in our_times)} s; notebook runs: {', '.join(f'{t:.1f}' for t in baseline_times)} s")
    print(f"package output: {len(result['splits'])} labelled ratings, {len(result['movie_features'])} movies, {len(result['user_features'])} users")
    report("feature engineering", baseline, ours, "notebook (iterrows + groupby loops)", "package")


if __name__ == "__main__":
    main()
