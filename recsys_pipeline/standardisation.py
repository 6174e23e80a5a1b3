"""Feature standardisation and target scaling as plain, JSON-serialisable parameters."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Standardiser:
    """(x - mean) / scale per column, as scikit-learn's StandardScaler with population variance."""

    key: str
    columns: list[str]
    mean: list[float]
    scale: list[float]

    def transform(self, table: pd.DataFrame) -> np.ndarray:
        return self.transform_values(table[self.columns].to_numpy(dtype="float64"))

    def transform_values(self, values: np.ndarray) -> np.ndarray:
        """`transform` of rows already holding `columns` in order."""
        return ((np.asarray(values, dtype="float64") - np.asarray(self.mean)) / np.asarray(self.scale)).astype("float32")


@dataclass(frozen=True)
class TargetScaler:
    """Min-max scaling of ratings onto [-1, 1], the range of a dot product of unit vectors."""

    minimum: float
    maximum: float

    def to_unit(self, stars: np.ndarray) -> np.ndarray:
        return (2.0 * (np.asarray(stars, dtype="float64") - self.minimum) / (self.maximum - self.minimum) - 1.0).astype("float32")

    def to_stars(self, unit: np.ndarray) -> np.ndarray:
        return (np.asarray(unit, dtype="float64") + 1.0) / 2.0 * (self.maximum - self.minimum) + self.minimum


@dataclass(frozen=True)
class FittedScalers:
    user: Standardiser
    movie: Standardiser
    target: TargetScaler

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> FittedScalers:
        return cls(
            user=Standardiser(**document["user"]),
            movie=Standardiser(**document["movie"]),
            target=TargetScaler(**document["target"]),
        )


def fit_standardiser(table: pd.DataFrame, key: str, columns: list[str], row_weights: np.ndarray) -> Standardiser:
    """Standardise `columns` of `table` as if each row appeared `row_weights` times.

    Weighting each user or movie by its number of training ratings gives exactly the statistics of
    the per-rating training matrix the network sees, without materialising that matrix. A constant
    column keeps scale 1 so it maps to 0 rather than to NaN.
    """
    values = table[columns].to_numpy(dtype="float64")
    weights = np.asarray(row_weights, dtype="float64")
    if weights.sum() <= 0:
        raise ValueError(f"cannot fit a scaler for '{key}': no training rows")
    mean = np.average(values, axis=0, weights=weights)
    variance = np.average((values - mean) ** 2, axis=0, weights=weights)
    scale = np.sqrt(variance)
    scale[scale < 1e-12] = 1.0
    return Standardiser(key=key, columns=list(columns), mean=mean.tolist(), scale=scale.tolist())


def fit_scalers(
    train_ratings: pd.DataFrame,
    user_features: pd.DataFrame,
    user_columns: list[str],
    movie_features: pd.DataFrame,
    movie_columns: list[str],
) -> FittedScalers:
    """Fit every scaler on training ratings only."""
    user_weights = train_ratings["userId"].value_counts().reindex(user_features["userId"], fill_value=0).to_numpy()
    movie_weights = train_ratings["movieId"].value_counts().reindex(movie_features["movieId"], fill_value=0).to_numpy()
    rating = train_ratings["rating"]
    return FittedScalers(
        user=fit_standardiser(user_features, "userId", user_columns, user_weights),
        movie=fit_standardiser(movie_features, "movieId", movie_columns, movie_weights),
        target=TargetScaler(minimum=float(rating.min()), maximum=float(rating.max())),
    )
