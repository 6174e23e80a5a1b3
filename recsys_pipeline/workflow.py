"""How the pipeline's steps fit together, without Dagster: ingest, split, features, scalers, a
candidate rating model, its embeddings, the ranking model, its evaluation and the served lists.

The Dagster assets (recsys_pipeline.orchestration.assets), the benchmarks (bench/) and the tests
call these functions, so the story is written once. Every feature and scaler is computed from the
training rows of the split; validation and test only measure. TensorFlow is imported only by the
functions that train or embed.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_pipeline import evaluation, features, movielens, ranking, splits
from recsys_pipeline.model_inputs import ModelInputs, rating_rows, scaled_inputs, side_inputs, training_inputs
from recsys_pipeline.sequential import SequentialModel
from recsys_pipeline.settings import RankingSettings, TrainingSettings
from recsys_pipeline.standardisation import FittedScalers, fit_scalers

TWO_TOWER = "two_tower"
GLOBAL_MEAN = "global_mean"
USER_ITEM_BIAS = "user_item_bias"


# --- data and features ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Ingested:
    """Both MovieLens files, validated together, and what had to be dropped from the ratings."""

    movies: pd.DataFrame
    ratings: pd.DataFrame
    repairs: movielens.RatingRepairs


def ingest(directory: Path) -> Ingested:
    """Read and validate movies.csv and ratings.csv; a malformed file raises MovieLensError naming
    the file, column and lines. Duplicate ratings and ratings of unknown movies are dropped up to
    1% of the ratings (and counted), beyond that refused."""
    movies = movielens.read_movies(directory)
    ratings, repairs = movielens.repair_ratings(movielens.read_ratings(directory), movies, directory / movielens.RATINGS_FILE)
    return Ingested(movies, ratings, repairs)


def build_movie_features(raw_movies: pd.DataFrame, labelled: pd.DataFrame) -> pd.DataFrame:
    """One row per movie, its rating statistics from the training rows of `labelled` only."""
    return features.build_movie_features(raw_movies, splits.training_rows(labelled))


def build_user_features(labelled: pd.DataFrame, movie_features: pd.DataFrame) -> pd.DataFrame:
    """One row per user of any split, its statistics from the training rows of `labelled` only."""
    users = np.unique(labelled["userId"].to_numpy())
    return features.build_user_genre_averages(users, splits.training_rows(labelled), movie_features)


def fit_feature_scalers(labelled: pd.DataFrame, user_features: pd.DataFrame, movie_features: pd.DataFrame) -> FittedScalers:
    """Standardisation of the model's inputs and the rating range, fitted on training rows only."""
    return fit_scalers(
        splits.training_rows(labelled),
        user_features,
        features.user_input_columns(user_features),
        movie_features,
        features.movie_input_columns(movie_features),
    )


@dataclass(frozen=True)
class FeatureSet:
    labelled: pd.DataFrame
    movie_features: pd.DataFrame
    user_features: pd.DataFrame
    scalers: FittedScalers


def build_features(ingested: Ingested, seed: int, method: str = splits.RANDOM, fractions: tuple[float, float, float] = splits.DEFAULT_FRACTIONS) -> FeatureSet:
    """Every step from the ingested files to the fitted scalers, as the assets run them one by one."""
    labelled = splits.assign_splits(ingested.ratings, seed, fractions, method)
    movie_features = build_movie_features(ingested.movies, labelled)
    user_features = build_user_features(labelled, movie_features)
    return FeatureSet(labelled, movie_features, user_features, fit_feature_scalers(labelled, user_features, movie_features))


# --- the model ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ValidationReference:
    """What a validation RMSE was measured on: the fingerprint of the validation ratings
    (splits.validation_fingerprint) and the RMSE there of predicting the training mean for every
    rating, the yardstick of how hard those ratings are. The regression gate reads both."""

    fingerprint: str
    global_mean_rmse: float


def validation_reference(labelled: pd.DataFrame) -> ValidationReference:
    validation = labelled[labelled["split"] == splits.VALIDATION]
    global_mean = np.full(len(validation), splits.training_rows(labelled)["rating"].mean())
    return ValidationReference(splits.validation_fingerprint(labelled), evaluation.rmse(global_mean, validation["rating"]))


@dataclass(frozen=True)
class Candidate:
    """A trained network, how training went, and its validation RMSE beside the global mean's, with
    the fingerprint of the validation ratings both were measured on."""

    model: object
    history: dict[str, list[float]]
    inputs: ModelInputs
    val_rmse: float
    global_mean_val_rmse: float
    training_seconds: float
    val_fingerprint: str

    @property
    def best_epoch(self) -> int:
        return int(np.argmin(self.history["val_loss"])) + 1


def train_candidate(
    labelled: pd.DataFrame,
    user_features: pd.DataFrame,
    movie_features: pd.DataFrame,
    scalers: FittedScalers,
    settings: TrainingSettings,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> Candidate:
    """Train on the training rows with early stopping on the validation rows, then measure validation RMSE."""
    from recsys_pipeline import two_tower

    train = splits.training_rows(labelled)
    validation = labelled[labelled["split"] == splits.VALIDATION]
    inputs, train_rows = training_inputs(train, user_features, movie_features, scalers, settings.out_of_fold_folds, settings.seed)
    started = time.perf_counter()
    model, history = two_tower.train_two_tower(
        inputs.users, inputs.movies, train_rows, rating_rows(validation, inputs), float(train["rating"].mean()), settings, on_epoch_end
    )
    training_seconds = time.perf_counter() - started
    inputs = inputs.full_training()
    predicted = evaluation.clip_stars(two_tower.scorer(model, inputs).predict(rating_rows(validation, inputs)))
    reference = validation_reference(labelled)
    return Candidate(
        model,
        history,
        inputs,
        evaluation.rmse(predicted, validation["rating"]),
        reference.global_mean_rmse,
        training_seconds,
        reference.fingerprint,
    )


def movie_embeddings(model, movie_features: pd.DataFrame, scalers: FittedScalers) -> np.ndarray:
    """Every movie's vector from the movie side, L2-normalised; row i is movie_features row i."""
    from recsys_pipeline import two_tower

    vectors = two_tower.embed(model, two_tower.MOVIE_TOWER, side_inputs([movie_features], scalers.movie)).vectors
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


# --- evaluation -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    """Error per model and split (`table`), and the headline figures (`metrics`) by name."""

    table: pd.DataFrame
    metrics: dict[str, float]


def evaluate(
    model, ranker: SequentialModel, labelled: pd.DataFrame, user_features: pd.DataFrame, movie_features: pd.DataFrame, scalers: FittedScalers
) -> Evaluation:
    """Validation and test error of `model` in stars (and MSE on the [-1, 1] scale) beside a global-mean
    and a user+item bias baseline fitted on the same training rows, and test ranking quality of
    `ranker` (the served order) beside its ablations and peers (`ranking_report`)."""
    table = _error_table(model, labelled, user_features, movie_features, scalers)
    metrics = {
        "test_rmse": model_figure(table, splits.TEST, "rmse"),
        "test_mae": model_figure(table, splits.TEST, "mae"),
        "test_mse_scaled": model_figure(table, splits.TEST, "mse_scaled"),
        "val_rmse": model_figure(table, splits.VALIDATION, "rmse"),
        "baseline_global_mean_rmse": model_figure(table, splits.TEST, "rmse", GLOBAL_MEAN),
        "baseline_bias_rmse": model_figure(table, splits.TEST, "rmse", USER_ITEM_BIAS),
        **ranking_report(ranker, labelled, user_features, movie_features, scalers),
    }
    return Evaluation(table, metrics)


def _error_table(model, labelled: pd.DataFrame, user_features: pd.DataFrame, movie_features: pd.DataFrame, scalers: FittedScalers) -> pd.DataFrame:
    """`evaluate`'s error table; its own function so that its rows and predictions are freed before
    the ranking is measured (at 25M's shape they are gigabytes)."""
    from recsys_pipeline import two_tower

    inputs = scaled_inputs(user_features, movie_features, scalers)
    train = splits.training_rows(labelled)
    scorer = two_tower.scorer(model, inputs)
    held_out = labelled[labelled["split"] != splits.TRAIN]
    return evaluation.error_table(
        held_out,
        {
            TWO_TOWER: evaluation.clip_stars(scorer.predict(rating_rows(held_out, inputs))),
            GLOBAL_MEAN: np.full(len(held_out), train["rating"].mean()),
            USER_ITEM_BIAS: evaluation.clip_stars(evaluation.fit_bias_baseline(train).predict(held_out)),
        },
        scalers.target.to_unit,
    )


def model_figure(table: pd.DataFrame, split: str, metric: str, model: str = TWO_TOWER) -> float:
    """One figure of an evaluation table (`Evaluation.table`, the model_evaluation asset)."""
    rows = table[(table["model"] == model) & (table["split"] == split)]
    if len(rows) != 1:
        raise ValueError(f"the evaluation table has {len(rows)} rows for model {model!r} on {split}, expected 1")
    return float(rows[metric].iloc[0])


def ranking_report(
    ranker: SequentialModel, labelled: pd.DataFrame, user_features: pd.DataFrame, movie_features: pd.DataFrame, scalers: FittedScalers
) -> dict[str, float]:
    """Top-10 precision and NDCG, recall@20 and coverage on test of the served ranking (`test_*`),
    each user known by every rating before test (training and validation), as serving knows them;
    candidates: movies rated in neither; relevant: rated in test. Beside it, measured on the same
    users and candidates: the towers alone, the item-item term alone and its transition term alone
    (`towers_*`, `item_item_*`, `transitions_*`, ablations), EASE (`baseline_ease_*`) and most popular (`baseline_popularity_*`)."""
    known = labelled.loc[labelled["split"] != splits.TEST, ["userId", "movieId", "timestamp"]]  # what the ranker reads
    served = ranking.Ranker(ranker, known, user_features, movie_features, scalers)
    served.solve_only([ranker.item_item_l2, EASE_L2])
    known_pairs, test_pairs = served.known_pairs, _pairs(labelled[labelled["split"] == splits.TEST], user_features, movie_features)
    del known  # the ranker holds what is needed
    popularity = evaluation.popularity_scores(np.bincount(known_pairs[1], minlength=len(movie_features)))

    def ease(user_rows: np.ndarray) -> np.ndarray:  # plain EASE, from the served term's Gram matrix
        return served.ease_scores(user_rows, math.inf, EASE_L2)

    scorers = {
        "test": served.score_rows,
        "towers": served.model_scores,
        "item_item": served.item_item_scores,
        "transitions": served.transition_scores,
        "baseline_ease": ease,
        "baseline_popularity": lambda user_rows: np.broadcast_to(popularity, (len(user_rows), len(popularity))),
    }
    by_scorer = evaluation.ranking_metrics_by_scorer(scorers, known_pairs, test_pairs, len(movie_features))
    return {f"{prefix}_{name}": value for prefix, figures in by_scorer.items() for name, value in figures.items()}


def _pairs(ratings: pd.DataFrame, user_features: pd.DataFrame, movie_features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(user rows, movie rows) of ratings in the feature tables."""
    inputs = ModelInputs(user_features["userId"].to_numpy(), None, movie_features["movieId"].to_numpy(), None)
    rows = rating_rows(ratings, inputs)
    return rows.user_rows, rows.movie_rows


# --- ranking --------------------------------------------------------------------------------------

# EASE's ridge penalty as published for ml-latest-small: the peer model_evaluation reports.
EASE_L2 = 100.0
# How the item-item weight is chosen, by where the validation ratings lie in each user's ratings
# (splits.share_after_training: most of them after the user's training ratings, or not).
FOLLOWING, INTERLEAVED = "following", "interleaved"
ITEM_ITEM_WEIGHT_RULES = {
    FOLLOWING: "the best on validation (validation ratings follow the training ones, as what serving predicts follows what it knows)",
    INTERLEAVED: "the largest within one standard error of the best on validation (validation ratings interleaved with the training ones)",
}


@dataclass(frozen=True)
class RankingCandidate:
    """The trained time-aware ranking model, exported with its popularity prior (`popularity_weight`)
    and the item-item term's penalty, half-life, transition weight and weight, its training history
    and what validation said of each choice. `model` has not seen the test ratings (what the test
    split measures); `served` is the same model trained on every rating too (what users get), with
    the same choices."""

    model: SequentialModel
    served: SequentialModel
    history: dict[str, list[float]]
    val_ndcg_by_popularity_weight: dict[float, float]
    val_ndcg_by_half_life: dict[float, float]
    val_ndcg_by_transition_weight: dict[float, float]
    val_ndcg_by_item_item_weight: dict[float, float]
    item_item_weight_rule: str
    training_seconds: float

    @property
    def best_epoch(self) -> int:
        scores = self.history.get("val_ndcg_at_10")
        return int(np.argmax(scores)) + 1 if scores else len(self.history["loss"])

    @property
    def popularity_weight(self) -> float:
        return max(self.val_ndcg_by_popularity_weight, key=self.val_ndcg_by_popularity_weight.get)

    @property
    def served_val_ndcg(self) -> float:
        """Validation NDCG@10 of the served blend, at the chosen half-life and item-item weight."""
        return self.val_ndcg_by_item_item_weight[self.model.item_item_weight]


def train_ranking_model(
    labelled: pd.DataFrame, user_features: pd.DataFrame, movie_features: pd.DataFrame, scalers: FittedScalers, settings: RankingSettings, on_epoch_end=None
) -> RankingCandidate:
    """Train the time-aware towers on each user's training ratings in order, stopping early on
    validation NDCG@10 (candidates: movies not rated in training); refit on training and validation
    ratings (the held-out model), then on every rating (the served one); then choose the item-item
    term's ridge penalty, half-life, transition weight and weight on the same validation NDCG@10 (the
    weight by `ITEM_ITEM_WEIGHT_RULES`)."""
    from recsys_pipeline import sequential

    # Measured before training, while memory is low: at 25M ratings it reads every training rating.
    interleaved = splits.share_after_training(labelled) < 0.5
    train = splits.training_rows(labelled)
    train_pairs = _pairs(train, user_features, movie_features)
    held = _pairs(labelled[labelled["split"] == splits.VALIDATION], user_features, movie_features)
    movie_ids = movie_features["movieId"].to_numpy()

    def sequences_of(ratings: pd.DataFrame) -> sequential.Sequences:
        users, movies = _pairs(ratings, user_features, movie_features)
        return sequential.user_sequences(users, movies, ratings["timestamp"].to_numpy(), len(user_features), movie_ids)

    data = sequential.TrainingData(
        sequences_of(train), movie_ids, scalers.movie.transform(movie_features).astype("float32"), scalers.user.transform(user_features).astype("float32")
    )

    def validation_ndcg_by_user(scorers: dict) -> dict[object, np.ndarray]:
        """Validation NDCG@10 of each scorer per validation user (candidates: movies not rated in training)."""
        figures = evaluation.per_user_ranking_metrics(scorers, train_pairs, held, len(movie_features), max_users=settings.validation_users or len(user_features))
        return {key: values[f"ndcg_at_{evaluation.RANKING_CUTOFF}"] for key, values in figures.items()}

    def validation_ndcg(scorers: dict) -> dict[object, float]:
        return mean_by_choice(validation_ndcg_by_user(scorers))

    def best(figures: dict[object, float]):
        return max(figures, key=figures.get)

    # The users' training sequences are prepared once: every epoch's model and the item-item choices reuse them.
    prepared: list[ranking.Ranker] = []

    def ranker_of(model: SequentialModel) -> ranking.Ranker:
        if not prepared:
            prepared.append(ranking.Ranker(model, train, user_features, movie_features, scalers))
        return prepared[0].using(model)

    def validate(model: SequentialModel) -> float:
        return validation_ndcg({None: ranker_of(dataclasses.replace(model, item_item_weight=0.0)).score_rows})[None]

    started = time.perf_counter()
    refit = sequences_of(labelled[labelled["split"] != splits.TEST]) if settings.refit_epochs else None
    serving = sequences_of(labelled) if settings.serving_epochs else None
    trained = sequential.train_sequential(data, settings, validate, on_epoch_end, refit, serving)
    # The towers are trained; on the same validation NDCG@10, the weight of their popularity prior,
    # then EASE's half-life (at a reference ridge penalty), then its penalty at that half-life, then
    # the transition term's weight beside it, each the best on validation; then the item-item term's
    # weight in the blend.
    log_popularity = sequential.log_popularity(data.sequences, len(movie_ids))
    by_popularity_weight = validation_ndcg(
        {weight: ranker_of(dataclasses.replace(trained.validated.with_popularity(weight, log_popularity), item_item_weight=0.0)).score_rows for weight in ranking.POPULARITY_WEIGHTS}
    )
    popularity_weight = best(by_popularity_weight)
    validated = trained.validated.with_popularity(popularity_weight, log_popularity)
    chooser = ranker_of(dataclasses.replace(validated, item_item_l2=ranking.REFERENCE_L2))
    by_half_life = validation_ndcg(chooser.ease_rows_by_half_life(ranking.HALF_LIVES))
    half_life = best(by_half_life)
    l2 = best(validation_ndcg({l2: (lambda rows, l2=l2: chooser.ease_scores(rows, half_life, l2)) for l2 in ranking.ITEM_ITEM_L2S}))
    chooser.forget_penalties_except(l2)
    chooser = chooser.using(dataclasses.replace(chooser.model, item_item_half_life=half_life, item_item_l2=l2))
    by_transition_weight = validation_ndcg(chooser.item_item_rows_by_transition_weight(ranking.TRANSITION_WEIGHTS))
    chooser = chooser.using(dataclasses.replace(chooser.model, transition_weight=best(by_transition_weight)))
    by_weight_by_user = validation_ndcg_by_user(chooser.score_rows_by_weight(ranking.ITEM_ITEM_WEIGHTS))
    by_weight = mean_by_choice(by_weight_by_user)
    # Validation knows all of a user's ratings before the validated ones when these come last (the
    # chronological split), as serving does: the best weight. When they are interleaved with the
    # training ones (the random split), serving knows more of each user's ratings than validation
    # did, which is worth more to the item-item term than to the towers (they read the latest
    # `max_history`): the largest weight that validation cannot tell from the best.
    choices = {
        "item_item_weight": max(within_one_standard_error(by_weight_by_user)) if interleaved else best(by_weight),
        "item_item_half_life": half_life,
        "item_item_l2": l2,
        "transition_weight": chooser.model.transition_weight,
    }
    held_out, served = (dataclasses.replace(towers.with_popularity(popularity_weight, log_popularity), **choices) for towers in (trained.model, trained.served))
    return RankingCandidate(
        held_out,
        served,
        trained.history,
        by_popularity_weight,
        by_half_life,
        by_transition_weight,
        by_weight,
        ITEM_ITEM_WEIGHT_RULES[INTERLEAVED if interleaved else FOLLOWING],
        time.perf_counter() - started,
    )


def mean_by_choice(ndcg_by_choice: dict[float, np.ndarray]) -> dict[float, float]:
    return {choice: float(np.mean(values)) for choice, values in ndcg_by_choice.items()}


def within_one_standard_error(ndcg_by_choice: dict[float, np.ndarray]) -> list[float]:
    """The choices whose mean validation NDCG@10 (per user, the same users for each choice) is within
    one standard error of the best choice's, the error of the mean of the two choices' per-user
    differences (the one-standard-error rule); the best included."""
    means = mean_by_choice(ndcg_by_choice)
    best = max(means, key=means.get)

    def within(choice: float) -> bool:
        difference = ndcg_by_choice[best] - ndcg_by_choice[choice]
        standard_error = np.std(difference, ddof=1) / math.sqrt(len(difference)) if len(difference) > 1 else 0.0
        return float(np.mean(difference)) <= standard_error

    return [choice for choice in ndcg_by_choice if within(choice)]


# Users scored at once by `recommendations`: each users x movies float64 array of a batch (about
# six are alive while it is scored and ranked) holds at most this many scores.
SCORES_PER_BATCH = 20_000_000


def recommendations(
    ranker: SequentialModel, rated: pd.DataFrame, user_features: pd.DataFrame, movie_features: pd.DataFrame, scalers: FittedScalers, top_n: int
) -> pd.DataFrame:
    """Every user's `top_n` movies by `ranker`, never one they rated in `rated` (every split):
    userId, rank (1 = best), movieId, title, score (unclipped). Each user is known by every rating in
    `rated`. Users are scored in blocks of SCORES_PER_BATCH scores, so memory does not grow with users."""
    import scipy.sparse as sp  # imported here: every Dagster step loads this module, few need scipy

    batch = max(1, min(1024, SCORES_PER_BATCH // max(len(movie_features), 1)))
    served = ranking.Ranker(ranker, rated, user_features, movie_features, scalers)
    served.solve_only([ranker.item_item_l2])
    user_ids = user_features["userId"].to_numpy()
    seen = served.known_pairs
    rated_matrix = sp.csr_matrix((np.ones(len(seen[0]), dtype=bool), seen), shape=(len(user_ids), len(movie_features)))
    frames = []
    for start in range(0, len(user_ids), batch):
        rows = np.arange(start, min(start + batch, len(user_ids)))
        columns, scores = ranking.top_movies(served.score_rows(rows), top_n, rated_matrix[rows].toarray())
        keep = np.isfinite(scores)  # fewer unrated movies than top_n: the list is shorter
        frames.append(
            pd.DataFrame(
                {
                    "userId": np.repeat(user_ids[rows], columns.shape[1])[keep.ravel()],
                    "rank": np.tile(np.arange(1, columns.shape[1] + 1), len(rows))[keep.ravel()],
                    "movieId": movie_features["movieId"].to_numpy()[columns][keep],
                    "title": movie_features["title"].to_numpy()[columns][keep],
                    "score": scores[keep],
                }
            )
        )
    return pd.concat(frames, ignore_index=True)
