"""The one ranker: which movies a user sees, in which order, from the exported ranking model in numpy.

The ranking model (trained by recsys_pipeline.retrieval, exported as plain arrays in an .npz) scores
a user against every movie with a dot product of two vectors plus a movie bias:

    score(user, movie) = user_vector · movie_vector + movie_bias
    user_vector = content_projection · user_tower(user's features) + history_projection · mean(history rows of the movies they rated)

`model_evaluation`, the `user_recommendations` asset and the `recsys` command all order movies with
`top_movies` on these scores, so the figure in the UI is the figure of the list a person gets.
Nothing here imports TensorFlow: the user tower's Dense layers are evaluated in numpy.

Rows are looked up by ID: the model carries its movieId vocabulary (row i of every movie table is
`movie_ids[i]`), and a movie unknown to it cannot be scored or shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Arrays of the .npz; the user tower's layers are tower_kernel_0, tower_bias_0, tower_kernel_1, ...
MOVIE_IDS = "movie_ids"
MOVIE_VECTORS = "movie_vectors"
MOVIE_BIASES = "movie_biases"
HISTORY_EMBEDDINGS = "history_embeddings"
HISTORY_PROJECTION = "history_projection"
CONTENT_PROJECTION = "content_projection"
TOWER_KERNEL = "tower_kernel_"
TOWER_BIAS = "tower_bias_"


@dataclass(frozen=True)
class RankingModel:
    """The exported ranking model: every array the numpy scorer needs, and nothing else."""

    movie_ids: np.ndarray
    movie_vectors: np.ndarray
    movie_biases: np.ndarray
    history_embeddings: np.ndarray
    history_projection: np.ndarray
    content_projection: np.ndarray
    tower_kernels: tuple[np.ndarray, ...]
    tower_biases: tuple[np.ndarray, ...]

    def arrays(self) -> dict[str, np.ndarray]:
        named = {
            MOVIE_IDS: self.movie_ids,
            MOVIE_VECTORS: self.movie_vectors,
            MOVIE_BIASES: self.movie_biases,
            HISTORY_EMBEDDINGS: self.history_embeddings,
            HISTORY_PROJECTION: self.history_projection,
            CONTENT_PROJECTION: self.content_projection,
        }
        for layer, (kernel, bias) in enumerate(zip(self.tower_kernels, self.tower_biases, strict=True)):
            named[f"{TOWER_KERNEL}{layer}"] = kernel
            named[f"{TOWER_BIAS}{layer}"] = bias
        return named

    @classmethod
    def from_arrays(cls, arrays) -> RankingModel:
        layers = sum(1 for name in arrays if name.startswith(TOWER_KERNEL))
        return cls(
            movie_ids=np.asarray(arrays[MOVIE_IDS]),
            movie_vectors=np.asarray(arrays[MOVIE_VECTORS]),
            movie_biases=np.asarray(arrays[MOVIE_BIASES]),
            history_embeddings=np.asarray(arrays[HISTORY_EMBEDDINGS]),
            history_projection=np.asarray(arrays[HISTORY_PROJECTION]),
            content_projection=np.asarray(arrays[CONTENT_PROJECTION]),
            tower_kernels=tuple(np.asarray(arrays[f"{TOWER_KERNEL}{i}"]) for i in range(layers)),
            tower_biases=tuple(np.asarray(arrays[f"{TOWER_BIAS}{i}"]) for i in range(layers)),
        )

    def save(self, path: Path) -> None:
        with open(path, "wb") as file:
            np.savez(file, **self.arrays())

    @classmethod
    def load(cls, path: Path) -> RankingModel:
        with np.load(path, allow_pickle=False) as arrays:
            return cls.from_arrays(arrays)

    def movie_rows(self, movie_ids) -> np.ndarray:
        """Row of each movieId in this model's tables, -1 where the model does not know the movie."""
        order = np.argsort(self.movie_ids, kind="stable")
        position = np.searchsorted(self.movie_ids, movie_ids, sorter=order)
        position = np.minimum(position, len(order) - 1)
        rows = order[position]
        return np.where(self.movie_ids[rows] == np.asarray(movie_ids), rows, -1)

    def content_vectors(self, scaled_user_features: np.ndarray) -> np.ndarray:
        return content_vectors(self.tower_kernels, self.tower_biases, scaled_user_features)

    def user_vectors(self, scaled_user_features: np.ndarray, history_rows: list[np.ndarray]) -> np.ndarray:
        """Each user's vector from their scaled features and the model rows of the movies they rated (may be empty)."""
        history = np.zeros((len(history_rows), self.history_embeddings.shape[1]), dtype="float32")
        for user, rows in enumerate(history_rows):
            if len(rows):
                history[user] = self.history_embeddings[rows].mean(axis=0)
        return self.content_vectors(scaled_user_features) @ self.content_projection + history @ self.history_projection

    def scores(self, user_vectors: np.ndarray) -> np.ndarray:
        """Users × movies scores, unclipped (float64, so near-equal scores stay apart)."""
        return np.asarray(user_vectors, dtype="float64") @ self.movie_vectors.T.astype("float64") + self.movie_biases


def content_vectors(kernels, biases, scaled_user_features: np.ndarray) -> np.ndarray:
    """The user tower's content vector (Dense ReLU layers, then a linear one) of each row of scaled features."""
    hidden = np.asarray(scaled_user_features, dtype="float32")
    last = len(kernels) - 1
    for layer, (kernel, bias) in enumerate(zip(kernels, biases, strict=True)):
        hidden = hidden @ kernel + bias
        if layer < last:
            hidden = np.maximum(hidden, 0.0)
    return hidden


def history_rows(model: RankingModel, user_ids: np.ndarray, rated_user_ids: np.ndarray, rated_movie_ids: np.ndarray) -> list[np.ndarray]:
    """For each of `user_ids`, the model rows of the movies they rated (pairs of rated_user_ids, rated_movie_ids)."""
    rows = model.movie_rows(rated_movie_ids)
    known = rows >= 0
    users, rows = np.asarray(rated_user_ids)[known], rows[known]
    order = np.argsort(users, kind="stable")
    users, rows = users[order], rows[order]
    starts = np.searchsorted(users, user_ids, side="left")
    ends = np.searchsorted(users, user_ids, side="right")
    return [rows[start:end] for start, end in zip(starts, ends, strict=True)]


def top_movies(scores: np.ndarray, k: int, excluded: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k best movie columns, best first, and their scores; `excluded` (bool, same shape) are never listed.

    Equal scores go to the lower column, so the order is deterministic; scores are never clipped.
    """
    scores = np.array(scores, dtype="float64", ndmin=2)
    if excluded is not None:
        scores[np.asarray(excluded, dtype=bool)] = -np.inf
    k = min(k, scores.shape[1])
    position = scores.shape[1] - k
    kth = np.partition(scores, position, axis=1)[:, position : position + 1]
    above = scores > kth
    tied = scores == kth
    needed = k - above.sum(axis=1, keepdims=True)
    chosen = above | (tied & (np.cumsum(tied, axis=1) <= needed))
    columns = np.nonzero(chosen)[1].reshape(len(scores), k)
    order = np.lexsort((columns, -np.take_along_axis(scores, columns, axis=1)), axis=1)
    columns = np.take_along_axis(columns, order, axis=1)
    return columns, np.take_along_axis(scores, columns, axis=1)
