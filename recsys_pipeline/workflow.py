"""How the pipeline's steps fit together, without Dagster: ingest, split, features, scalers, a
candidate rating model, its embeddings, the ranking model, its evaluation and the served lists.

The Dagster assets (recsys_pipeline.orchestration.assets), the benchmarks (bench/) and the tests
call these functions, so the story is written once. Every feature and scaler is computed from the
training rows of the split; validation and test only measure. TensorFlow is imported only by the
functions that train or embed.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_pipeline import evaluation, features, movielens, ranking, splits
from recsys_pipeline.model_inputs import ModelInputs, rating_rows, scaled_inputs, side_inputs, training_inputs
from recsys_pipeline.settings import TrainingSettings
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
class Candidate:
    """A trained network, how training went, and its validation RMSE beside the global mean's."""

    model: object
    history: dict[str, list[float]]
    inputs: ModelInputs
    val_rmse: float
    global_mean_val_rmse: float
    training_seconds: float

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
    global_mean = np.full(len(validation), train["rating"].mean())
    return Candidate(
        model,
        history,
        inputs,
        evaluation.rmse(predicted, validation["rating"]),
        evaluation.rmse(global_mean, validation["rating"]),
        training_seconds,
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
    model, ranker: ranking.RankingModel, labelled: pd.DataFrame, user_features: pd.DataFrame, movie_features: pd.DataFrame, scalers: FittedScalers
) -> Evaluation:
    """Validation and test error of `model` in stars (and MSE on the [-1, 1] scale) beside a global-mean
    and a user+item bias baseline fitted on the same training rows, and test ranking quality of
    `ranker` (the served order) beside the most-popular baseline."""
    from recsys_pipeline import two_tower

    inputs = scaled_inputs(user_features, movie_features, scalers)
    train = splits.training_rows(labelled)
    scorer = two_tower.scorer(model, inputs)
    held_out = labelled[labelled["split"] != splits.TRAIN]
    table = evaluation.error_table(
        held_out,
        {
            TWO_TOWER: evaluation.clip_stars(scorer.predict(rating_rows(held_out, inputs))),
            GLOBAL_MEAN: np.full(len(held_out), train["rating"].mean()),
            USER_ITEM_BIAS: evaluation.clip_stars(evaluation.fit_bias_baseline(train).predict(held_out)),
        },
        scalers.target.to_unit,
    )
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


def model_figure(table: pd.DataFrame, split: str, metric: str, model: str = TWO_TOWER) -> float:
    """One figure of an evaluation table (`Evaluation.table`, the model_evaluation asset)."""
    rows = table[(table["model"] == model) & (table["split"] == split)]
    if len(rows) != 1:
        raise ValueError(f"the evaluation table has {len(rows)} rows for model {model!r} on {split}, expected 1")
    return float(rows[metric].iloc[0])


def ranking_report(
    ranker: ranking.RankingModel, labelled: pd.DataFrame, user_features: pd.DataFrame, movie_features: pd.DataFrame, scalers: FittedScalers, split: str = splits.TEST
) -> dict[str, float]:
    """Top-10 precision and NDCG and recall@20 on `split` of `ranker` (candidates: movies not rated in
    training; relevant: rated in `split`), beside the most-popular baseline."""
    train = splits.training_rows(labelled)
    inputs = ModelInputs(user_features["userId"].to_numpy(), None, movie_features["movieId"].to_numpy(), None)
    train_rows, held_rows = rating_rows(train, inputs), rating_rows(labelled[labelled["split"] == split], inputs)
    served = ranking.Ranker(ranker, train, user_features, movie_features, scalers)
    return evaluation.ranking_report(served.score_rows, (train_rows.user_rows, train_rows.movie_rows), (held_rows.user_rows, held_rows.movie_rows), movie_features["rating_count"].to_numpy())


# --- ranking --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RankingCandidate:
    """A trained ranking head, exported, with its training history and the epoch early stopping kept."""

    model: ranking.RankingModel
    history: dict[str, list[float]]
    training_seconds: float

    @property
    def best_epoch(self) -> int:
        scores = self.history.get("val_ndcg_at_10")
        return int(np.argmax(scores)) + 1 if scores else len(self.history["loss"])

    @property
    def served_val_ndcg(self) -> float:
        """Validation NDCG@10 of the served blend, at the chosen item-item weight."""
        return self.history["val_ndcg_at_10_by_item_item_weight"][ranking.ITEM_ITEM_WEIGHTS.index(self.model.item_item_weight)]


def train_ranking_model(
    rating_model,
    rows: pd.DataFrame,
    labelled: pd.DataFrame,
    user_features: pd.DataFrame,
    movie_features: pd.DataFrame,
    scalers: FittedScalers,
    settings,
    on_epoch_end=None,
) -> RankingCandidate:
    """Train the ranking head on the ratings in `rows` on top of `rating_model`'s towers, stopping
    early on validation NDCG@10 (candidates: movies not in `rows`), and choose the weight of the
    item-item term on the same figure."""
    from recsys_pipeline import retrieval, two_tower

    inputs = ModelInputs(user_features["userId"].to_numpy(), None, movie_features["movieId"].to_numpy(), None)
    pairs = rating_rows(rows, inputs)
    kernels, biases = retrieval.user_tower_layers(rating_model, two_tower.USER_TOWER)
    movie_vectors = two_tower.embed(rating_model, two_tower.MOVIE_TOWER, side_inputs([movie_features], scalers.movie)).vectors
    content = ranking.content_vectors(kernels, biases, scalers.user.transform(user_features))
    data = retrieval.ImplicitData(pairs.user_rows, pairs.movie_rows, content, movie_vectors)
    held = rating_rows(labelled[labelled["split"] == splits.VALIDATION], inputs)

    def validation_ndcg(scorers: dict) -> dict[object, np.ndarray]:
        """Per-user validation NDCG@10 of each scorer (candidates: movies not in `rows`)."""
        figures = evaluation.per_user_ranking_metrics(scorers, (pairs.user_rows, pairs.movie_rows), (held.user_rows, held.movie_rows), len(movie_features))
        return {key: values[f"ndcg_at_{evaluation.RANKING_CUTOFF}"] for key, values in figures.items()}

    def validate(model: ranking.RankingModel) -> float:
        towers = ranking.Ranker(model, rows, user_features, movie_features, scalers, item_item_weight=0.0)
        return float(np.mean(validation_ndcg({None: towers.score_rows})[None]))

    started = time.perf_counter()
    model, history = retrieval.train_retrieval(data, movie_features["movieId"].to_numpy(), kernels, biases, settings, validate, on_epoch_end)
    # The towers are trained; the weight of the item-item term is chosen on the same validation NDCG@10.
    by_weight = validation_ndcg(ranking.Ranker(model, rows, user_features, movie_features, scalers).score_rows_by_weight(ranking.ITEM_ITEM_WEIGHTS))
    history["val_ndcg_at_10_by_item_item_weight"] = [float(np.mean(by_weight[weight])) for weight in ranking.ITEM_ITEM_WEIGHTS]
    model = dataclasses.replace(model, item_item_weight=ranking.chosen_item_item_weight(by_weight))
    return RankingCandidate(model, history, time.perf_counter() - started)


def recommendations(
    ranker: ranking.RankingModel, rated: pd.DataFrame, user_features: pd.DataFrame, movie_features: pd.DataFrame, scalers: FittedScalers, top_n: int, batch: int = 1024
) -> pd.DataFrame:
    """Every user's `top_n` movies by `ranker`, never one they rated in `rated` (every split):
    userId, rank (1 = best), movieId, title, score (unclipped)."""
    import scipy.sparse as sp  # imported here: every Dagster step loads this module, few need scipy

    score_rows = ranking.Ranker(ranker, rated, user_features, movie_features, scalers).score_rows
    user_ids = user_features["userId"].to_numpy()
    inputs = ModelInputs(user_ids, None, movie_features["movieId"].to_numpy(), None)
    seen = rating_rows(rated, inputs)
    rated_matrix = sp.csr_matrix((np.ones(len(seen.user_rows), dtype=bool), (seen.user_rows, seen.movie_rows)), shape=(len(user_ids), len(movie_features)))
    frames = []
    for start in range(0, len(user_ids), batch):
        rows = np.arange(start, min(start + batch, len(user_ids)))
        columns, scores = ranking.top_movies(score_rows(rows), top_n, rated_matrix[rows].toarray())
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
