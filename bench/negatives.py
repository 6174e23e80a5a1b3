"""What the 25M-shaped run's ranking settings cost on ml-latest-small: the time-aware ranking model
trained with the batch's target movies and the log-Q correction (`negatives: in_batch`, the default)
against a softmax over the whole catalogue (`negatives: all`), and against the scale run config's whole recipe (the
`ranking_model` config of bench/scale_run_config.yaml), each over seeds.

The pipeline's own protocol: the chronological split (each user's latest 15% is test, the 15% before
validation), features and scalers from training ratings, `workflow.train_ranking_model` then
`workflow.ranking_report` (test P@10 / NDCG@10 of the served blend and of the towers alone, users
known by training and validation ratings), EASE measured on the same users.

Usage: PYTHONPATH=. python -m bench.negatives [--seeds 47005 1 2] [--data DIR] [--json out.json] [--recipes NAME ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import yaml

from bench.common import ML_LATEST_SMALL
from recsys_pipeline import splits, workflow
from recsys_pipeline.settings import RankingSettings

SCALE_CONFIG = Path(__file__).with_name("scale_run_config.yaml")
RECIPES = {
    "softmax over every movie": {"negatives": "all"},
    "in-batch negatives with log-Q (default)": {"negatives": "in_batch"},
    # Read from the 25M-shaped run's config, so the two cannot drift apart.
    "the 25M run's recipe (bench/scale_run_config.yaml)": yaml.safe_load(SCALE_CONFIG.read_text())["ops"]["ranking_model"]["config"],
}
FIGURES = ("test_precision_at_10", "test_ndcg_at_10", "towers_ndcg_at_10", "baseline_ease_ndcg_at_10")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ML_LATEST_SMALL)
    parser.add_argument("--seeds", type=int, nargs="+", default=[47005, 1, 2])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES), help="which recipes (all by default)")
    args = parser.parse_args()
    ingested = workflow.ingest(args.data)
    rows = []
    for seed in args.seeds:
        feature_set = workflow.build_features(ingested, seed, splits.CHRONOLOGICAL)
        for name in args.recipes:
            overrides = RECIPES[name]
            settings = dataclasses.replace(RankingSettings(seed=seed), **overrides)
            started = time.perf_counter()
            candidate = workflow.train_ranking_model(feature_set.labelled, feature_set.user_features, feature_set.movie_features, feature_set.scalers, settings)
            seconds = time.perf_counter() - started
            report = workflow.ranking_report(candidate.model, feature_set.labelled, feature_set.user_features, feature_set.movie_features, feature_set.scalers)
            rows.append({"recipe": name, "seed": seed, "seconds": seconds, **{figure: report[figure] for figure in FIGURES}})
            print(f"seed {seed} | {name} | {seconds:.1f} s | " + " ".join(f"{figure} {report[figure]:.4f}" for figure in FIGURES), flush=True)
    print("\n| recipe | training s | served P@10 | served NDCG@10 | towers NDCG@10 | EASE NDCG@10 |\n|---|---:|---:|---:|---:|---:|")
    for name in args.recipes:
        mine = [row for row in rows if row["recipe"] == name]

        def cell(key: str, digits: int = 4) -> str:
            values = np.array([row[key] for row in mine])
            return f"{values.mean():.{digits}f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.{digits}f}"

        print(f"| {name} | {cell('seconds', 1)} | {cell('test_precision_at_10')} | {cell('test_ndcg_at_10')} | {cell('towers_ndcg_at_10')} | {cell('baseline_ease_ndcg_at_10')} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
