"""Error metrics and the baselines every model is compared with, fitted on training ratings only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


def rmse(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(predicted, "float64") - np.asarray(actual, "float64")) ** 2)))


def mae(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(predicted, "float64") - np.asarray(actual, "float64"))))


@dataclass(frozen=True)
class BiasBaseline:
    """rating ~ global mean + user bias + movie bias, the "user+item bias" peer."""

    global_mean: float
    user_bias: pd.Series
    movie_bias: pd.Series

    def predict(self, ratings: pd.DataFrame) -> np.ndarray:
        user = self.user_bias.reindex(ratings["userId"]).fillna(0.0).to_numpy()
        movie = self.movie_bias.reindex(ratings["movieId"]).fillna(0.0).to_numpy()
        return self.global_mean + user + movie


def fit_bias_baseline(train_ratings: pd.DataFrame, user_reg: float = 15.0, movie_reg: float = 10.0, iterations: int = 10) -> BiasBaseline:
    """Regularised biases by alternating least squares (the scheme and defaults of Surprise's BaselineOnly)."""
    users, user_codes = np.unique(train_ratings["userId"].to_numpy(), return_inverse=True)
    movies, movie_codes = np.unique(train_ratings["movieId"].to_numpy(), return_inverse=True)
    ratings = train_ratings["rating"].to_numpy(dtype="float64")
    global_mean = float(ratings.mean())
    user_counts = np.bincount(user_codes, minlength=len(users))
    movie_counts = np.bincount(movie_codes, minlength=len(movies))
    user_bias = np.zeros(len(users))
    movie_bias = np.zeros(len(movies))
    for _ in range(iterations):
        residual = ratings - global_mean - user_bias[user_codes]
        movie_bias = np.bincount(movie_codes, weights=residual, minlength=len(movies)) / (movie_reg + movie_counts)
        residual = ratings - global_mean - movie_bias[movie_codes]
        user_bias = np.bincount(user_codes, weights=residual, minlength=len(users)) / (user_reg + user_counts)
    return BiasBaseline(global_mean, pd.Series(user_bias, index=users), pd.Series(movie_bias, index=movies))


def clip_stars(predicted: np.ndarray, minimum: float = 0.5, maximum: float = 5.0) -> np.ndarray:
    return np.clip(predicted, minimum, maximum)


def error_table(ratings: pd.DataFrame, predictions: dict[str, np.ndarray], to_unit) -> pd.DataFrame:
    """RMSE and MAE in stars, and MSE on the [-1, 1] training scale, per model and split.

    `predictions` maps a model name to its predicted stars for every row of `ratings`, which
    carries the true `rating` and its `split`.
    """
    rows = []
    actual = ratings["rating"].to_numpy()
    for model, predicted in predictions.items():
        for split in ratings["split"].cat.categories:
            mask = (ratings["split"] == split).to_numpy()
            if not mask.any():
                continue
            scaled_error = to_unit(predicted[mask]) - to_unit(actual[mask])
            rows.append(
                {
                    "model": model,
                    "split": split,
                    "ratings": int(mask.sum()),
                    "rmse": rmse(predicted[mask], actual[mask]),
                    "mae": mae(predicted[mask], actual[mask]),
                    "mse_scaled": float(np.mean(np.square(scaled_error, dtype="float64"))),
                }
            )
    return pd.DataFrame(rows)
