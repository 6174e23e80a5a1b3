"""Feature engineering (ingest, split, movie features, user genre averages): the package against the
notebook's code, in the same run, on ml-latest-small.

The notebook's code (bench/notebook.py) runs `--baseline-repeats` times (default 1: it takes minutes),
the package's `--repeats` times; each side's median is reported.

    python -m bench.bench_features [--movielens DIR] [--repeats 5] [--baseline-repeats 1]
"""

import argparse
from pathlib import Path

from bench.common import ML_LATEST_SMALL, machine, median_seconds, report
from bench.notebook import notebook_features
from recsys_pipeline import workflow
from recsys_pipeline.settings import DEFAULT_SEED


def package_features(movielens_dir: Path) -> workflow.FeatureSet:
    """What the ingest and feature assets compute, through the same workflow functions."""
    return workflow.build_features(workflow.ingest(movielens_dir), DEFAULT_SEED)


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
    print(f"package output: {len(result.labelled)} labelled ratings, {len(result.movie_features)} movies, {len(result.user_features)} users")
    report("feature engineering", baseline, ours, "notebook (iterrows + groupby loops)", "package")


if __name__ == "__main__":
    main()
