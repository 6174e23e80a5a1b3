"""The feature steps as Dagster runs and records them, against the notebook's feature code, same run,
on ml-latest-small.

Ours: `dagster asset materialize` of the ingest and feature assets (raw_movies, raw_ratings,
rating_splits, movie_features, user_genre_averages) and their checks, from a fresh DAGSTER_HOME and
data directory, `--repeats` times, each in a new process, so every import a step makes is paid
again. A step's wall time is STEP_START to STEP_SUCCESS in the run's event log (bench/asset_table.py):
input loading, computation, Parquet writing and metadata included, process start-up and definitions
loading not. The feature steps' time is the sum over the steps that materialize those assets; the
checks' steps are reported beside it. Baseline: the notebook's feature code (bench/notebook.py),
`--baseline-repeats` times in this process, between the first and the second half of the Dagster
runs. Medians are compared.

    python -m bench.bench_feature_steps [--movielens DIR] [--repeats 5] [--baseline-repeats 1] [--nice 10]
"""

import argparse
import shutil
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path

import dagster as dg

from bench.asset_table import step_figures
from bench.common import ML_LATEST_SMALL, machine, median_seconds, report
from bench.notebook import notebook_features
from bench.run_pipeline import dagster_home, run_pipeline

FEATURE_ASSETS = ("raw_movies", "raw_ratings", "rating_splits", "movie_features", "user_genre_averages")


def step_seconds(movielens: Path, nice: int) -> tuple[dict[str, float], set[str]]:
    """Wall seconds of every step of one CLI run of the feature assets, by step key, as its event log
    records them, and the keys of the steps that materialized a feature asset (the others are checks)."""
    workdir = Path(tempfile.mkdtemp(prefix="recsys_feature_steps."))
    try:
        _, _, status = run_pipeline(str(movielens.resolve()), None, workdir, nice, select=",".join(FEATURE_ASSETS))
        if status:
            raise SystemExit(f"the run failed with exit status {status}:\n{(workdir / 'run.log').read_text()[-3000:]}")
        with dg.DagsterInstance.from_config(str(dagster_home(workdir))) as instance:
            rows = step_figures(instance, instance.get_runs(limit=1)[0].run_id)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    unfinished = [row["step"] for row in rows if row["outcome"] != "success"]
    if unfinished:
        raise SystemExit(f"steps did not succeed: {', '.join(unfinished)}")
    feature_steps = {row["step"] for row in rows if set(row["assets"]) & set(FEATURE_ASSETS)}
    return {row["step"]: row["seconds"] for row in rows}, feature_steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--movielens", type=Path, default=ML_LATEST_SMALL)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline-repeats", type=int, default=1)
    parser.add_argument("--nice", type=int, default=0, help="niceness of the Dagster runs (run the whole script under the same)")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    # Half the runs before the minutes-long baseline and half after, so a change of load on a shared
    # machine weighs on both sides.
    before = (args.repeats + 1) // 2
    measured = [step_seconds(args.movielens, args.nice) for _ in range(before)]
    baseline, baseline_times, _ = median_seconds(lambda: notebook_features(args.movielens), args.baseline_repeats)
    measured += [step_seconds(args.movielens, args.nice) for _ in range(args.repeats - before)]
    runs = [seconds for seconds, _ in measured]
    feature_steps = set().union(*(steps for _, steps in measured))

    by_step = defaultdict(list)
    for run in runs:
        for step, seconds in run.items():
            by_step[step].append(seconds)
    print("| step | kind | wall s per run | median |")
    print("|---|---|---|---:|")
    for step, times in by_step.items():
        kind = "feature" if step in feature_steps else "check"
        print(f"| {step} | {kind} | {', '.join(f'{t:.3f}' for t in times)} | {statistics.median(times):.3f} |")
    feature_totals = [sum(seconds for step, seconds in run.items() if step in feature_steps) for run in runs]
    check_totals = [sum(seconds for step, seconds in run.items() if step not in feature_steps) for run in runs]
    print(f"feature steps per run: {', '.join(f'{t:.3f}' for t in feature_totals)} s; their checks: {', '.join(f'{t:.3f}' for t in check_totals)} s")
    print(f"notebook runs: {', '.join(f'{t:.1f}' for t in baseline_times)} s")
    ours = statistics.median(feature_totals)
    report("feature steps (event log)", baseline, ours, "notebook feature code", "Dagster feature steps")
    with_checks = statistics.median([f + c for f, c in zip(feature_totals, check_totals, strict=True)])
    report("feature steps and their checks (event log)", baseline, with_checks, "notebook feature code", "Dagster feature and check steps")


if __name__ == "__main__":
    main()
