"""How sensitive the transition term (recsys_pipeline.ranking.Transitions) is to its fixed settings.

The pipeline's chronological split (seed-independent: each user's latest 15% is test, the 15% before
validation). For each variant of the window, half-lives, penalty, targets and movies kept, the
transition term is fitted twice: on training ratings and scored on validation (what the pipeline's
choices see), and on training + validation ratings and scored on test. Beside it, on the same users
and candidates: EASE (lambda 100), recency-weighted EASE (the penalty and half-life validation chose
on ml-latest-small: lambda 400, half-life 5) and the item-item term as served with transition weight 1,
standardised(recency-weighted EASE) + standardised(transitions). No learning, so one run is exact.

Usage: PYTHONPATH=. python -m bench.transitions [--data DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.common import ML_LATEST_SMALL
from recsys_pipeline import evaluation, movielens, ranking, splits

EASE_LAMBDA, SERVED_LAMBDA, SERVED_HALF_LIFE = 100.0, 400.0, 5.0
DEFAULTS = {
    "TRANSITION_WINDOW": ranking.TRANSITION_WINDOW,
    "TRANSITION_TARGETS": ranking.TRANSITION_TARGETS,
    "TRANSITION_HALF_LIFE": ranking.TRANSITION_HALF_LIFE,
    "TRANSITION_L2": ranking.TRANSITION_L2,
    "TRANSITION_MAX_MOVIES": ranking.TRANSITION_MAX_MOVIES,
}
VARIANTS = {
    "the pipeline's": {},
    "window 50": {"TRANSITION_WINDOW": 50},
    "window 10": {"TRANSITION_WINDOW": 10},
    "half-life 3": {"TRANSITION_HALF_LIFE": 3.0},
    "half-life 10": {"TRANSITION_HALF_LIFE": 10.0},
    "penalty 30": {"TRANSITION_L2": 30.0},
    "penalty 300": {"TRANSITION_L2": 300.0},
    "5 targets": {"TRANSITION_TARGETS": 5},
    "20 targets": {"TRANSITION_TARGETS": 20},
    "1,000 movies": {"TRANSITION_MAX_MOVIES": 1_000},
    "4,000 movies": {"TRANSITION_MAX_MOVIES": 4_000},
}


def stage_data(labelled: pd.DataFrame, stage: str):
    """(known ratings, relevant ratings) of the stage: validation is scored from training, test from both."""
    if stage == "validation":
        return labelled[labelled["split"] == splits.TRAIN], labelled[labelled["split"] == splits.VALIDATION]
    return labelled[labelled["split"] != splits.TEST], labelled[labelled["split"] == splits.TEST]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ML_LATEST_SMALL)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    ratings = movielens.read_ratings(args.data)
    labelled = splits.assign_splits(ratings, method=splits.CHRONOLOGICAL)
    # Candidates as in the pipeline: every movie of movies.csv.
    user_ids, movie_ids = np.unique(ratings["userId"]), movielens.read_movies(args.data)["movieId"].to_numpy()
    rows = []
    for stage in ("validation", "test"):
        known, relevant = stage_data(labelled, stage)
        users = pd.Index(user_ids).get_indexer(known["userId"])
        movies = pd.Index(movie_ids).get_indexer(known["movieId"])
        held = (pd.Index(user_ids).get_indexer(relevant["userId"]), pd.Index(movie_ids).get_indexer(relevant["movieId"]))
        ages = ranking.age_ranks(known["userId"].to_numpy(), known["timestamp"].to_numpy(), known["movieId"].to_numpy())
        item_item = ranking.ItemItem(users, movies, len(user_ids), len(movie_ids), EASE_LAMBDA)
        recent_ease = item_item.scorer(ranking.recency_weights(ages, SERVED_HALF_LIFE), SERVED_LAMBDA)
        scorers = {"EASE (lambda 100)": item_item.scorer(), "recency-weighted EASE (lambda 400, half-life 5)": recent_ease}
        for name, overrides in VARIANTS.items():
            for constant, value in {**DEFAULTS, **overrides}.items():
                setattr(ranking, constant, value)
            started = time.perf_counter()
            transitions = ranking.Transitions(users, movies, ages, len(user_ids), len(movie_ids))
            print(f"{stage}: {name} fitted in {time.perf_counter() - started:.1f} s", flush=True)
            scorers[f"transitions alone, {name}"] = transitions.scores
            scorers[f"item-item term (transition weight 1), {name}"] = lambda rows, t=transitions: ranking.standardised(recent_ease(rows)) + ranking.standardised(t.scores(rows))
        for constant, value in DEFAULTS.items():
            setattr(ranking, constant, value)
        figures = evaluation.ranking_metrics_by_scorer(scorers, (users, movies), held, len(movie_ids))
        rows += [{"stage": stage, "model": name, **values} for name, values in figures.items()]
    print("\n| model | validation P@10 | validation NDCG@10 | test P@10 | test NDCG@10 |\n|---|---:|---:|---:|---:|")
    for name in dict.fromkeys(row["model"] for row in rows):
        by_stage = {row["stage"]: row for row in rows if row["model"] == name}
        cells = [f"{by_stage[stage][metric]:.4f}" for stage in ("validation", "test") for metric in ("precision_at_10", "ndcg_at_10")]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
