"""The whole pipeline from the command line against the notebook, same run, on ml-latest-small.

Ours: `dagster asset materialize --select '*'` from a fresh DAGSTER_HOME and data directory (every
asset and check, including process start-up, the distance matrix and the evaluation; see
bench/run_pipeline.py). Baseline: the notebook's features, scaling and 20 training epochs at batch 32
(bench/notebook.py), in this process. Each side runs `--repeats` times (default 1) and the medians
are compared.

    python -m bench.bench_pipeline [--movielens DIR] [--repeats 1]
"""

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

from bench.common import ML_LATEST_SMALL, machine, report, timed
from bench.notebook import notebook_features, notebook_scaling, notebook_training
from bench.run_pipeline import run_pipeline


def notebook_pipeline(movielens_dir: Path) -> None:
    scaled = notebook_scaling(notebook_features(movielens_dir))
    (user_train, user_cv, _), (movie_train, movie_cv, _), (y_train, y_cv, _) = scaled["user"], scaled["movie"], scaled["y"]
    notebook_training(user_train, movie_train, y_train, user_cv, movie_cv, y_cv)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--movielens", type=Path, default=ML_LATEST_SMALL)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    ours, peaks = [], []
    for _ in range(args.repeats):
        workdir = Path(tempfile.mkdtemp(prefix="recsys_pipeline_bench."))
        try:
            seconds, peak, status = run_pipeline(str(args.movielens.resolve()), None, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if status:
            raise SystemExit(f"the pipeline run failed with exit status {status}")
        ours.append(seconds)
        peaks.append(peak)
    baseline = [timed(notebook_pipeline, args.movielens)[0] for _ in range(args.repeats)]
    print(f"pipeline CLI runs: {', '.join(f'{t:.1f}' for t in ours)} s (peak tree PSS {max(peaks) / 2**30:.2f} GiB)")
    print(f"notebook features + 20 epochs runs: {', '.join(f'{t:.1f}' for t in baseline)} s")
    report("whole pipeline", statistics.median(baseline), statistics.median(ours), "notebook features + 20 epochs", "dagster CLI, every asset and check")


if __name__ == "__main__":
    main()
