"""What the rating network reads: scaled per-user and per-movie tables (out of fold for training
ratings), and ratings as row numbers into them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys_pipeline import features
from recsys_pipeline.standardisation import FittedScalers, Standardiser


@dataclass(frozen=True)
class SideInputs:
    """One side's scaled features, `matrix[block, row]`: block 0 from every training rating, blocks
    1..K out of fold (training only). `ids[row]` is the row's ID input: the row itself, or the
    out-of-vocabulary ID len(ids) when the user or movie has no training rating."""

    matrix: np.ndarray
    ids: np.ndarray


@dataclass(frozen=True)
class ModelInputs:
    """Row i of the user side belongs to `user_ids[i]`, likewise for movies."""

    user_ids: np.ndarray
    users: SideInputs
    movie_ids: np.ndarray
    movies: SideInputs

    def full_training(self) -> ModelInputs:
        """Only block 0, the features from every training rating, that validation, test and serving read."""
        return ModelInputs(self.user_ids, SideInputs(self.users.matrix[:1], self.users.ids), self.movie_ids, SideInputs(self.movies.matrix[:1], self.movies.ids))


@dataclass(frozen=True)
class RatingRows:
    """Ratings as row numbers into the user and movie tables, the feature block each reads, and stars."""

    user_rows: np.ndarray
    movie_rows: np.ndarray
    block: np.ndarray
    targets: np.ndarray


@dataclass(frozen=True)
class TowerOutputs:
    """One side's vectors and biases, row i for row i of its table."""

    vectors: np.ndarray
    biases: np.ndarray


def side_inputs(tables: Sequence[pd.DataFrame], scaler: Standardiser) -> SideInputs:
    matrix = np.stack([scaler.transform(table) for table in tables])
    known = tables[0]["rating_count"].to_numpy() > 0
    return SideInputs(matrix, np.where(known, np.arange(len(known)), len(known)).astype("int32"))


def scaled_inputs(
    user_features: pd.DataFrame,
    movie_features: pd.DataFrame,
    scalers: FittedScalers,
    out_of_fold_users: Sequence[pd.DataFrame] = (),
    out_of_fold_movies: Sequence[pd.DataFrame] = (),
) -> ModelInputs:
    return ModelInputs(
        user_ids=user_features["userId"].to_numpy(),
        users=side_inputs([user_features, *out_of_fold_users], scalers.user),
        movie_ids=movie_features["movieId"].to_numpy(),
        movies=side_inputs([movie_features, *out_of_fold_movies], scalers.movie),
    )


def training_inputs(
    train: pd.DataFrame, user_features: pd.DataFrame, movie_features: pd.DataFrame, scalers: FittedScalers, folds: int, seed: int
) -> tuple[ModelInputs, RatingRows]:
    """The inputs of training and the training ratings as rows into them: with `folds` >= 2 each
    training rating reads its user's and movie's rating statistics from the other folds
    (features.out_of_fold_tables, blocks 1..folds), so the network learns to trust them as much as
    they deserve on unseen ratings; 0 reads them in sample, as the notebook did (block 0 only)."""
    if folds == 0:
        inputs = scaled_inputs(user_features, movie_features, scalers)
        return inputs, rating_rows(train, inputs)
    fold = features.rating_folds(len(train), folds, seed)
    fold_users, fold_movies = features.out_of_fold_tables(train, fold, folds, user_features, movie_features)
    inputs = scaled_inputs(user_features, movie_features, scalers, fold_users, fold_movies)
    return inputs, rating_rows(train, inputs, fold)


def rating_rows(ratings: pd.DataFrame, inputs: ModelInputs, block: np.ndarray | None = None) -> RatingRows:
    """Locate each rating's user and movie rows; every rated user and movie must have features.

    `block` (default 0, the full-training features) says which feature block each rating reads.
    """
    user_rows = pd.Index(inputs.user_ids).get_indexer(ratings["userId"])
    movie_rows = pd.Index(inputs.movie_ids).get_indexer(ratings["movieId"])
    if (user_rows < 0).any() or (movie_rows < 0).any():
        raise ValueError("some ratings refer to users or movies that have no feature row")
    block = np.zeros(len(ratings), dtype="int32") if block is None else np.asarray(block, dtype="int32")
    return RatingRows(user_rows.astype("int32"), movie_rows.astype("int32"), block, ratings["rating"].to_numpy(dtype="float32"))


def predict_stars(users: TowerOutputs, movies: TowerOutputs, scale: float, offset: float, user_rows: np.ndarray, movie_rows: np.ndarray) -> np.ndarray:
    """The network's output for each (user row, movie row) pair, computed from the two sides' outputs."""
    dot = np.einsum("ij,ij->i", users.vectors[user_rows], movies.vectors[movie_rows], dtype="float64")
    return scale * dot + offset + users.biases[user_rows] + movies.biases[movie_rows]


@dataclass(frozen=True)
class Scorer:
    """Everything needed to predict any (user, movie) pair in numpy, from one pass through each side."""

    users: TowerOutputs
    movies: TowerOutputs
    scale: float
    offset: float

    def predict(self, rows: RatingRows) -> np.ndarray:
        return predict_stars(self.users, self.movies, self.scale, self.offset, rows.user_rows, rows.movie_rows)
