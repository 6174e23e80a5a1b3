"""The time-aware two-tower (recsys_pipeline.sequential, issue 16) beside its peers, on each user's future
and on a random share.

Protocols (80/10/10): `chronological` holds out each user's latest 10% of ratings as test and the 10%
just before as validation; `random` holds out a random 10% (validation another random 10%).
Features and scalers come from training ratings only. The model trains on the training sequences
with early stopping on validation NDCG@10 (candidates: movies not rated in training), the half-life
of the recency-weighted EASE and the blend weight are chosen there too. Test is then scored with
each user known by ALL their ratings before test, training and validation (the served list uses
every rating a user has); EASE, recency-weighted EASE and most-popular are fitted on the same
training + validation ratings, for fairness. Candidates: movies the user rated in neither;
relevant: the test ones. Figures come from evaluation.per_user_ranking_metrics.

Rows: the new towers alone, recency-weighted EASE alone, the served blend, EASE (lambda 100), most
popular, and with --today today's ranking head and served blend (trains the rating model: slow).

Usage: PYTHONPATH=. nice -n 5 .venv/bin/python bench/time_aware.py [--seeds 47005 1 2] [--splits chronological random]
       [--encoder pool|attention] [--max-history 50] [--targets 10] [--no-gaps] [--no-user-content] [--today] [--json out.json]
"""

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

for variable in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
    os.environ.setdefault(variable, "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pandas as pd

from recsys_pipeline import evaluation, features, movielens, ranking, sequential, splits, workflow
from recsys_pipeline.standardisation import fit_scalers

DEFAULT_DATA = Path(os.environ.get("RECSYS_MOVIELENS", Path(__file__).resolve().parents[1].parent / "shared" / "movielens" / "ml-latest-small"))
FRACTIONS = (0.8, 0.1, 0.1)
EASE_LAMBDA = 100.0
METRICS = ("precision_at_10", "ndcg_at_10", "recall_at_20")


def prepare(ratings: pd.DataFrame, movies: pd.DataFrame, seed: int, method: str) -> dict:
    labelled = splits.assign_splits(ratings, seed, FRACTIONS, method)
    train, validation, test = (labelled[labelled["split"] == name] for name in splits.SPLITS)
    movie_table = features.build_movie_features(movies, train)
    user_table = features.build_user_genre_averages(np.unique(labelled["userId"]), train, movie_table)
    scalers = fit_scalers(train, user_table, features.user_input_columns(user_table), movie_table, features.movie_input_columns(movie_table))
    users, movie_ids = pd.Index(user_table["userId"]), movie_table["movieId"].to_numpy()

    def rows(frame):
        return users.get_indexer(frame["userId"]), pd.Index(movie_ids).get_indexer(frame["movieId"])

    def seqs(frame):
        u, m = rows(frame)
        return sequential.user_sequences(u, m, frame["timestamp"].to_numpy(), len(users), movie_ids)

    known = pd.concat([train, validation])
    return {
        "labelled": labelled,
        "user_table": user_table,
        "movie_table": movie_table,
        "scalers": scalers,
        "train": train,
        "known": known,
        "pairs": {name: rows(frame) for name, frame in (("train", train), ("validation", validation), ("test", test), ("known", known))},
        "sequences": {"train": seqs(train), "known": seqs(known)},
        "data": sequential.TrainingData(
            seqs(train),
            movie_ids,
            scalers.movie.transform(movie_table).astype("float32"),
            scalers.user.transform(user_table).astype("float32"),
        ),
    }


def run_split(p: dict, seed: int, settings: sequential.SequentialSettings, today: bool = False, verbose: bool = True) -> list[dict]:
    n_users, n_movies = len(p["user_table"]), len(p["movie_table"])
    pairs, data = p["pairs"], p["data"]

    def validation_ndcg(scorers):
        figures = evaluation.per_user_ranking_metrics(scorers, pairs["train"], pairs["validation"], n_movies)
        return {key: values["ndcg_at_10"] for key, values in figures.items()}

    def validate(model):
        return float(np.mean(validation_ndcg({0: sequential.two_tower_scorer(model, data.sequences, data.user_content)})[0]))

    def log(epoch, loss, score):
        if verbose:
            print(f"  epoch {epoch + 1}: loss {loss:.4f} val NDCG@10 {score:.4f} ({time.perf_counter() - started:.1f} s)", file=sys.stderr, flush=True)

    started = time.perf_counter()
    known = p["sequences"]["known"]
    trained = sequential.train_sequential(data, replace(settings, seed=seed), validate, log, known if settings.refit_epochs else None)
    training_seconds = time.perf_counter() - started
    model, history = trained.validated, trained.history
    # Item-item: half-life and blend weight on validation (EASE fitted on training ratings).
    chosen = time.perf_counter()
    item_item_train = sequential.RecencyItemItem(*pairs["train"], n_users, n_movies, EASE_LAMBDA)
    half_life, by_half_life = sequential.choose_half_life(item_item_train, data.sequences, n_movies, validation_ndcg)
    weight, by_weight = sequential.choose_blend_weight(model, data.sequences, data.user_content, item_item_train, half_life, validation_ndcg)
    model = replace(trained.model, item_item_weight=weight, item_item_half_life=half_life, item_item_l2=EASE_LAMBDA)
    choosing_seconds = time.perf_counter() - chosen
    if verbose:
        print(f"  half-life {half_life} {by_half_life}; weight {weight} {by_weight}", file=sys.stderr, flush=True)

    # Test: every user known by training + validation ratings.
    item_item = sequential.RecencyItemItem(*pairs["known"], n_users, n_movies, EASE_LAMBDA)
    counts = np.bincount(pairs["known"][1], minlength=n_movies)
    popularity = evaluation.popularity_scores(counts)
    scorers = {
        "time-aware towers alone": sequential.two_tower_scorer(model, known, data.user_content),
        f"recency-weighted EASE alone (half-life {half_life:g})": item_item.scorer(known, half_life, n_movies),
        f"served: time-aware towers + recency EASE (weight {weight:g})": sequential.served_scorer(model, known, data.user_content, item_item),
        f"EASE (lambda {EASE_LAMBDA:g})": item_item.scorer(known, float("inf"), n_movies),
        "recency-weighted EASE (half-life 10, fixed)": item_item.scorer(known, 10.0, n_movies),
        "most popular": lambda rows: np.broadcast_to(popularity, (len(rows), n_movies)),
    }
    if trained.model is not trained.validated:
        scorers["time-aware towers alone, not refitted (ablation)"] = sequential.two_tower_scorer(trained.validated, known, data.user_content)
    extra = {}
    if today:
        scorers.update(today_scorers(p, seed, extra))
    figures = evaluation.per_user_ranking_metrics(scorers, pairs["known"], pairs["test"], n_movies)
    rows = []
    for name, values in figures.items():
        row = {"model": name.split(" (")[0] if name.startswith(("served", "recency-weighted EASE alone")) else name}
        row.update({metric: float(np.mean(values[metric])) for metric in METRICS})
        if name == "time-aware towers alone":
            row.update(training_seconds=training_seconds, epochs=len(history["loss"]), best_epoch=int(np.argmax(history["val_ndcg_at_10"])) + 1, choosing_seconds=choosing_seconds)
        if name.startswith("served"):
            row.update(item_item_weight=weight, half_life=half_life)
        if name.startswith("today") and extra:
            row.update(extra)
        rows.append(row)
    return rows


def today_scorers(p: dict, seed: int, extra: dict) -> dict:
    """Today's ranking head and served blend (rating model + retrieval head), trained on train with
    validation, scoring test from training + validation ratings like the rest."""
    from recsys_pipeline import two_tower
    from recsys_pipeline.settings import RankingSettings, TrainingSettings

    labelled, user_table, movie_table, scalers = p["labelled"], p["user_table"], p["movie_table"], p["scalers"]
    validation = labelled[labelled["split"] == splits.VALIDATION]
    model, _, _ = two_tower.train_on_ratings(p["train"], validation, user_table, movie_table, scalers, TrainingSettings(seed=seed, out_of_fold_folds=5))
    started = time.perf_counter()
    ranker = workflow.train_ranking_model(model, p["train"], labelled, user_table, movie_table, scalers, RankingSettings(seed=seed))
    extra["training_seconds"] = time.perf_counter() - started
    return {
        "today: ranking head alone": workflow.ranking_scores(ranker.model, p["known"], user_table, movie_table, scalers, 0.0),
        "today: served blend": workflow.ranking_scores(ranker.model, p["known"], user_table, movie_table, scalers),
    }


def summary(results: list[dict]) -> str:
    frame = pd.DataFrame(results)
    columns = [*METRICS, *(c for c in ("training_seconds", "epochs", "item_item_weight", "half_life") if c in frame)]
    lines = ["| split | model | seeds | " + " | ".join(columns) + " |", "|---|---|---|" + "---|" * len(columns)]
    for (split, model), group in frame.groupby(["split", "model"], sort=False):
        cells = []
        for column in columns:
            values = group[column].dropna().tolist()
            # numpy, not statistics: a half-life may be inf (plain EASE chosen).
            cells.append("–" if not values else f"{np.mean(values):.4f} ± {np.std(values, ddof=1) if len(values) > 1 else 0.0:.4f}")
        lines.append(f"| {split} | {model} | {len(group)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, nargs="+", default=[47005, 1, 2])
    parser.add_argument("--splits", nargs="+", default=[splits.CHRONOLOGICAL, splits.RANDOM], choices=splits.METHODS)
    parser.add_argument("--encoder", default=sequential.SequentialSettings.encoder, choices=sequential.ENCODERS)
    parser.add_argument("--max-history", type=int, default=sequential.SequentialSettings.max_history)
    parser.add_argument("--targets", type=int, default=sequential.SequentialSettings.targets)
    parser.add_argument("--epochs", type=int, default=sequential.SequentialSettings.epochs)
    parser.add_argument("--batch-size", type=int, default=sequential.SequentialSettings.batch_size)
    parser.add_argument("--learning-rate", type=float, default=sequential.SequentialSettings.learning_rate)
    parser.add_argument("--prefixes", type=int, default=sequential.SequentialSettings.prefixes_per_user, help="per user and epoch; 0 = every prefix")
    parser.add_argument("--recent", type=float, default=sequential.SequentialSettings.recent)
    parser.add_argument("--patience", type=int, default=sequential.SequentialSettings.patience)
    parser.add_argument("--dimensions", type=int, default=sequential.SequentialSettings.dimensions)
    parser.add_argument("--negatives", default=sequential.ALL_MOVIES, choices=(sequential.ALL_MOVIES, sequential.IN_BATCH))
    parser.add_argument("--budget", type=float, default=sequential.SequentialSettings.time_budget_s, help="seconds of training at most")
    parser.add_argument("--refit-epochs", type=int, default=sequential.SequentialSettings.refit_epochs, help="epochs on train + validation after early stopping")
    parser.add_argument("--no-gaps", action="store_true")
    parser.add_argument("--no-user-content", action="store_true")
    parser.add_argument("--no-mask-history", action="store_true")
    parser.add_argument("--today", action="store_true", help="also train today's ranking head (slow)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import tensorflow as tf

    threads = int(os.environ["TF_NUM_INTRAOP_THREADS"])
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    settings = sequential.SequentialSettings(
        encoder=args.encoder,
        max_history=args.max_history,
        targets=args.targets,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        prefixes_per_user=args.prefixes or None,
        recent=args.recent,
        patience=args.patience,
        dimensions=args.dimensions,
        negatives=args.negatives,
        gaps=not args.no_gaps,
        user_content=not args.no_user_content,
        mask_history=not args.no_mask_history,
        time_budget_s=args.budget,
        refit_epochs=args.refit_epochs,
    )
    print(settings, file=sys.stderr)
    movies = movielens.read_movies(args.data)
    ratings, _ = movielens.repair_ratings(movielens.read_ratings(args.data), movies, args.data / movielens.RATINGS_FILE)
    results = []
    for method in args.splits:
        for seed in args.seeds:
            p = prepare(ratings, movies, seed, method)
            for row in run_split(p, seed, settings, args.today):
                row = {"split": method, "seed": seed, **row}
                results.append(row)
                print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print()
    print(summary(results))


if __name__ == "__main__":
    sys.exit(main())
