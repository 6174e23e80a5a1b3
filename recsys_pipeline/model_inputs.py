"""What the network reads: scaled per-user and per-movie matrices, and ratings as row numbers into them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys_pipeline.scaling import FittedScalers


@dataclass(frozen=True)
class ModelInputs:
    """Scaled feature matrices; row i of `user_matrix` belongs to `user_ids[i]`, likewise for movies."""

    user_ids: np.ndarray
    user_matrix: np.ndarray
    movie_ids: np.ndarray
    movie_matrix: np.ndarray


@dataclass(frozen=True)
class RatingRows:
    """Ratings as row numbers into the user and movie matrices, with targets scaled to [-1, 1]."""

    user_rows: np.ndarray
    movie_rows: np.ndarray
    targets: np.ndarray


def scaled_inputs(user_features: pd.DataFrame, movie_features: pd.DataFrame, scalers: FittedScalers) -> ModelInputs:
    return ModelInputs(
        user_ids=user_features["userId"].to_numpy(),
        user_matrix=scalers.user.transform(user_features),
        movie_ids=movie_features["movieId"].to_numpy(),
        movie_matrix=scalers.movie.transform(movie_features),
    )


def rating_rows(ratings: pd.DataFrame, inputs: ModelInputs, scalers: FittedScalers) -> RatingRows:
    """Locate each rating's user and movie rows; every rated user and movie must have features."""
    user_rows = pd.Index(inputs.user_ids).get_indexer(ratings["userId"])
    movie_rows = pd.Index(inputs.movie_ids).get_indexer(ratings["movieId"])
    if (user_rows < 0).any() or (movie_rows < 0).any():
        raise ValueError("some ratings refer to users or movies that have no feature row")
    return RatingRows(user_rows.astype("int32"), movie_rows.astype("int32"), scalers.target.to_unit(ratings["rating"].to_numpy()))


def predict_scaled(user_embeddings: np.ndarray, movie_embeddings: np.ndarray, rows: RatingRows) -> np.ndarray:
    """The network's output for each rating: the dot product of its user and movie embeddings."""
    return np.einsum("ij,ij->i", user_embeddings[rows.user_rows], movie_embeddings[rows.movie_rows])
