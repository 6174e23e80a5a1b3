"""Recommendation quality over seeds and splits: the rating model and the served ranking beside every peer.

For each split method (per-user chronological, the pipeline's default: each user's latest ratings
are test; random 70/15/15 as the published peers) and each seed, features, scalers and out-of-fold
statistics come from training ratings only, and both models train, exactly as the Dagster assets
build them; test measures. Rating rows: the rating model (hybrid, and the pure content model, the
cold-start path), the global mean and the user+item bias baseline. Ranking rows, every user known
by their training and validation ratings: the served blend, its ablations (the time-aware towers
alone, the item-item term alone, its transition term alone, its recency-weighted EASE alone), EASE,
EASE fed a recency-weighted history with a fixed half-life, item-kNN, implicit ALS (the `bench`
extra) and most popular; then genre fidelity of cold-start lists. Cells are mean ± std over
seeds. `--notebook-mode` also reruns the notebook's own protocol: features from ALL ratings (test
included, the notebook's leak), its inputs and unit-vector cosine design, reported as test MSE on
the [-1, 1] scale (the notebook printed about 0.120).

Usage: PYTHONPATH=. nice -n 10 python bench/quality.py [--seeds 47005 1 2] [--splits random chronological]
       [--variants hybrid content] [--notebook-mode] [--data DIR, default $RECSYS_MOVIELENS or ../shared/movielens/ml-latest-small] [--json out.json]
"""

import argparse
import json
import os
import statistics
import sys
from dataclasses import replace
from pathlib import Path

# One thread each, so runs are reproducible and leave the shared cores to others.
for variable in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
    os.environ.setdefault(variable, "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pandas as pd

from bench.common import ML_LATEST_SMALL as DEFAULT_DATA
from recsys_pipeline import evaluation, features, ranking, recommend, splits, workflow
from recsys_pipeline.model_inputs import rating_rows
from recsys_pipeline.sequential import SequentialModel
from recsys_pipeline.settings import RankingSettings, TrainingSettings
from recsys_pipeline.standardisation import fit_scalers

FOLDS = 5
RATING_METRICS = ("test_rmse", "test_mae")
RANKING_METRICS = ("test_precision_at_10", "test_ndcg_at_10", "test_recall_at_20", "test_coverage_at_10")
FIDELITY_METRICS = ("loved_share_at_10", "disliked_share_at_10", "median_training_ratings_at_10")
# New users described by genre ratings (`recsys recommend --genres`), for the genre-fidelity figures.
GENRE_PROFILES = (
    (("Sci-Fi", 5.0),),
    (("Animation", 5.0), ("Children", 4.5), ("Horror", 1.0)),
    (("Comedy", 5.0), ("Romance", 4.5), ("Drama", 2.0)),
    (("Horror", 5.0), ("Thriller", 4.0), ("Comedy", 1.0)),
    (("Documentary", 4.5),),
    (("Action", 1.0), ("Drama", 4.0)),
)
# The peers' settings: EASE as published for ml-latest-small (and fed a recency-weighted history with
# the half-life the issue measured), implicit's ALS with common defaults.
EASE_LAMBDA = 100.0
FIXED_HALF_LIFE = 10.0
ALS_FACTORS, ALS_REGULARISATION, ALS_ALPHA, ALS_ITERATIONS = 64, 0.05, 2.0, 20


def _tables(movies: pd.DataFrame, users: np.ndarray, rated: pd.DataFrame):
    movie_table = features.build_movie_features(movies, rated)
    user_table = features.build_user_genre_averages(users, rated, movie_table)
    return user_table, movie_table


def _pairs(frame: pd.DataFrame, user_table: pd.DataFrame, movie_table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return pd.Index(user_table["userId"]).get_indexer(frame["userId"]), pd.Index(movie_table["movieId"]).get_indexer(frame["movieId"])


def item_knn_scorer(train_pairs, n_users: int, n_movies: int):
    """Item-kNN: cosine similarity between movies' rater sets (every neighbour), summed over the user's movies."""
    import scipy.sparse as sp

    rated = sp.csr_matrix((np.ones(len(train_pairs[0]), dtype="float32"), train_pairs), shape=(n_users, n_movies))
    norms = np.sqrt(np.asarray(rated.multiply(rated).sum(axis=0)).ravel()) + 1e-9
    similarity = (rated.T @ rated).toarray() / norms[:, None] / norms[None, :]
    np.fill_diagonal(similarity, 0.0)
    return lambda rows: rated[rows] @ similarity


def als_scorer(train_pairs, n_users: int, n_movies: int, seed: int):
    """implicit's alternating least squares (the `bench` extra); None when the package is missing."""
    try:
        from implicit.cpu.als import AlternatingLeastSquares
    except ImportError:
        return None
    import scipy.sparse as sp

    rated = sp.csr_matrix((np.ones(len(train_pairs[0]), dtype="float32"), train_pairs), shape=(n_users, n_movies))
    model = AlternatingLeastSquares(factors=ALS_FACTORS, regularization=ALS_REGULARISATION, alpha=ALS_ALPHA, iterations=ALS_ITERATIONS, random_state=seed)
    model.fit(rated, show_progress=False)
    return lambda rows: model.user_factors[rows] @ model.item_factors.T


def genre_fidelity_rows(model: SequentialModel, scalers, movie_table: pd.DataFrame, k: int = 10) -> list[dict]:
    """For each of GENRE_PROFILES, the share of the top k with a loved genre (rated 4 or more), the share
    with a disliked one (below 3) and the median training rating count of the listed movies: as served
    (recommend.visitor_listing, the `recsys recommend --genres` answer) and for the model's own order
    over every movie (no candidate rule), which shows what the model learned by itself."""
    rows = []
    for profile in GENRE_PROFILES:
        genres = {name: stars for name, stars in profile}
        loved = [f"{features.GENRE_PREFIX}{name}" for name, stars in genres.items() if stars >= recommend.LOVED]
        disliked = [f"{features.GENRE_PREFIX}{name}" for name, stars in genres.items() if stars < recommend.DISLIKED]
        user = scalers.user.transform(recommend.visitor_features(profile, (), movie_table, scalers.target))
        listings = {
            "served": recommend.visitor_listing(model, scalers, movie_table, k, genre_ratings=profile),
            "model alone, every movie": recommend.ranked_listing(movie_table, ranking.visitor_scores(model, [], user[0], movie_table["movieId"].to_numpy()), k),
        }
        for kind, listing in listings.items():
            listed = movie_table.set_index("movieId").loc[listing["movieId"]]
            rows.append(
                {
                    "model": f"cold start {', '.join(f'{name}={stars:g}' for name, stars in profile)}: {kind}",
                    "loved_share_at_10": float(listed[loved].to_numpy().any(axis=1).mean()) if loved else None,
                    "disliked_share_at_10": float(listed[disliked].to_numpy().any(axis=1).mean()) if disliked else None,
                    "median_training_ratings_at_10": float(listed["rating_count"].median()),
                }
            )
    return rows


def ranking_rows(named_scorers: dict, train_pairs, test_pairs, n_movies: int) -> list[dict]:
    rows = []
    for name, score_rows in named_scorers.items():
        if score_rows is None:
            print(f"{name}: skipped (pip install -e '.[bench]')", file=sys.stderr)
            continue
        figures = evaluation.ranking_metrics(score_rows, train_pairs, test_pairs, n_movies)
        rows.append({"model": name, **{f"test_{metric}": value for metric, value in figures.items()}})
    return rows


def run_split(ingested: workflow.Ingested, seed: int, method: str, variants: list[str]) -> list[dict]:
    """Every model's test figures on one split, its features built and its models trained as the
    assets do. Ranking: each user known by their training and validation ratings (as serving knows
    them), candidates the movies rated in neither, relevant the test ones, for every row alike."""
    from recsys_pipeline import two_tower

    feature_set = workflow.build_features(ingested, seed, method)
    labelled, user_table, movie_table, scalers = feature_set.labelled, feature_set.user_features, feature_set.movie_features, feature_set.scalers
    train, test = splits.training_rows(labelled), labelled[labelled["split"] == splits.TEST]
    rows = []
    for variant in variants:
        settings = TrainingSettings(seed=seed, hybrid=variant == "hybrid", out_of_fold_folds=FOLDS)
        candidate = workflow.train_candidate(labelled, user_table, movie_table, scalers, settings)
        predicted = evaluation.clip_stars(two_tower.scorer(candidate.model, candidate.inputs).predict(rating_rows(test, candidate.inputs)))
        rows.append(
            {
                "model": f"rating model ({variant})",
                "test_rmse": evaluation.rmse(predicted, test["rating"]),
                "test_mae": evaluation.mae(predicted, test["rating"]),
                "epochs": len(candidate.history["loss"]),
                "seconds": candidate.training_seconds,
            }
        )
    global_mean = float(train["rating"].mean())
    bias = evaluation.fit_bias_baseline(train).predict(test)
    rows.append({"model": "global mean", "test_rmse": evaluation.rmse(np.full(len(test), global_mean), test["rating"]), "test_mae": evaluation.mae(np.full(len(test), global_mean), test["rating"])})
    rows.append({"model": "user+item bias", "test_rmse": evaluation.rmse(evaluation.clip_stars(bias), test["rating"]), "test_mae": evaluation.mae(evaluation.clip_stars(bias), test["rating"])})

    ranker = workflow.train_ranking_model(labelled, user_table, movie_table, scalers, RankingSettings(seed=seed))
    report = workflow.ranking_report(ranker.model, labelled, user_table, movie_table, scalers)
    half_life, weight, transition_weight = ranker.model.item_item_half_life, ranker.model.item_item_weight, ranker.model.transition_weight
    named = {
        "test": f"served: time-aware towers + item-item (weight {weight:g}, half-life {half_life:g}, transition weight {transition_weight:g})",
        "towers": "time-aware towers alone, with their popularity prior (ablation)",
        "item_item": f"item-item alone: EASE lambda {ranker.model.item_item_l2:g}, recency-weighted, half-life {half_life:g}, + {transition_weight:g} x transitions, chosen on validation (ablation)",
        "transitions": "what people rated next alone: the transition term, SLIT (ablation)",
        "baseline_ease": f"EASE (lambda {workflow.EASE_L2:g})",
        "baseline_popularity": "most popular",
    }
    for prefix, name in named.items():
        row = {"model": name, **{f"test_{metric}": report[f"{prefix}_{metric}"] for metric in (m.removeprefix("test_") for m in RANKING_METRICS)}}
        if prefix == "test":
            row.update(ranking_epochs=ranker.best_epoch, seconds=ranker.training_seconds)
        rows.append(row)
    known = labelled[labelled["split"] != splits.TEST]
    known_pairs, test_pairs = _pairs(known, user_table, movie_table), _pairs(test, user_table, movie_table)
    n_users, n_movies = len(user_table), len(movie_table)
    ages = ranking.age_ranks(known["userId"].to_numpy(), known["timestamp"].to_numpy(), known["movieId"].to_numpy())
    item_item = ranking.ItemItem(*known_pairs, n_users, n_movies, EASE_LAMBDA)
    rows += ranking_rows(
        {
            f"EASE fed a recency-weighted history (lambda {EASE_LAMBDA:g}, half-life {FIXED_HALF_LIFE:g}, fixed)": item_item.scorer(ranking.recency_weights(ages, FIXED_HALF_LIFE)),
            f"EASE fed a recency-weighted history (lambda {ranker.model.item_item_l2:g}, half-life {half_life:g}, chosen on validation: the served item-item term without transitions)": item_item.scorer(
                ranking.recency_weights(ages, half_life), ranker.model.item_item_l2
            ),
            "item-kNN (cosine)": item_knn_scorer(known_pairs, n_users, n_movies),
            f"implicit ALS ({ALS_FACTORS} factors)": als_scorer(known_pairs, n_users, n_movies, seed),
        },
        known_pairs,
        test_pairs,
        n_movies,
    )
    rows += genre_fidelity_rows(ranker.model, scalers, movie_table)
    return [{"split": method, "seed": seed, **row} for row in rows]


def run_notebook_mode(ratings: pd.DataFrame, movies: pd.DataFrame, seed: int) -> dict:
    """The notebook's protocol: features and scalers from every rating, its inputs, unit vectors, no biases."""
    from recsys_pipeline import two_tower

    labelled = splits.assign_splits(ratings, seed)
    train, validation, test = (labelled[labelled["split"] == name] for name in splits.SPLITS)
    user_table, movie_table = _tables(movies, np.unique(labelled["userId"]), labelled)  # the leak: all ratings
    scalers = fit_scalers(labelled, user_table, features.notebook_user_input_columns(user_table), movie_table, features.notebook_movie_input_columns(movie_table))
    settings = replace(
        TrainingSettings(seed=seed, hybrid=False, unit_vectors=True, biases=False, out_of_fold_folds=0),
        tower_widths=(256, 128), dropout=0.0, learning_rate=1e-3, early_stopping_patience=5, lr_reduction_patience=1000,
    )
    candidate = workflow.train_candidate(labelled, user_table, movie_table, scalers, settings)
    predicted = evaluation.clip_stars(two_tower.scorer(candidate.model, candidate.inputs).predict(rating_rows(test, candidate.inputs)))
    scaled_error = scalers.target.to_unit(predicted) - scalers.target.to_unit(test["rating"].to_numpy())
    return {"split": "random (notebook mode)", "seed": seed, "model": "notebook design, leaky features", "test_mse_scaled": float(np.mean(np.square(scaled_error, dtype="float64"))), "test_rmse": evaluation.rmse(predicted, test["rating"]), "epochs": len(candidate.history["loss"])}


def summary(results: list[dict]) -> str:
    """Markdown: one row per split and model, mean ± std over seeds for each metric it has."""
    frame = pd.DataFrame(results)
    metrics = [m for m in (*RATING_METRICS, *RANKING_METRICS, *FIDELITY_METRICS, "test_mse_scaled") if m in frame]
    lines = ["| split | model | seeds | " + " | ".join(metrics) + " |", "|---|---|---|" + "---|" * len(metrics)]
    for (split, model), group in frame.groupby(["split", "model"], sort=False):
        cells = []
        for metric in metrics:
            values = group[metric].dropna().tolist()
            cells.append("–" if not values else f"{statistics.mean(values):.4f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.4f}")
        lines.append(f"| {split} | {model} | {len(group)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, nargs="+", default=[47005, 1, 2])
    parser.add_argument("--splits", nargs="+", default=list(splits.METHODS), choices=splits.METHODS)
    parser.add_argument("--variants", nargs="*", default=["hybrid", "content"], choices=["hybrid", "content"])
    parser.add_argument("--notebook-mode", action="store_true")
    parser.add_argument("--json", type=Path, help="also write every per-seed row here")
    args = parser.parse_args()

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    ingested = workflow.ingest(args.data)
    results = []
    for method in args.splits:
        for seed in args.seeds:
            for row in run_split(ingested, seed, method, args.variants):
                results.append(row)
                print(json.dumps(row), flush=True)
    if args.notebook_mode:
        for seed in args.seeds:
            row = run_notebook_mode(ingested.ratings, ingested.movies, seed)
            results.append(row)
            print(json.dumps(row), flush=True)
    print()
    print(summary(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.exit(main())
