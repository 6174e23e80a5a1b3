"""Movie-to-movie distances between unit-length embeddings, by blocked matrix products.

For unit vectors a and b, |a - b|^2 = 2 - 2 a.b, so every distance comes from one matrix product
instead of the lab's Python double loop, and always lies in [0, 4].
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

MAX_SQUARED_DISTANCE = 4.0
# 20,000 movies make a 1.6 GB float32 matrix; MovieLens 25M's 62,423 would make 15.6 GB.
DEFAULT_MAX_MATRIX_MOVIES = 20_000


def _to_distance(similarity: np.ndarray) -> np.ndarray:
    """Squared distances in float32 from dot products of unit vectors."""
    return np.clip(2.0 - 2.0 * similarity, 0.0, MAX_SQUARED_DISTANCE).astype("float32")


def _distance_block(rows: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """Squared distances from each of `rows` to every embedding, in float32."""
    return _to_distance(rows.astype("float64") @ embeddings.astype("float64").T)


def squared_distance_matrix(embeddings: np.ndarray, block_rows: int = 2048, out: np.ndarray | None = None) -> np.ndarray:
    """The full (n, n) float32 matrix: exactly symmetric, zero on the diagonal.

    Only blocks on or above the diagonal are computed; each is mirrored below it, so symmetry is
    exact rather than up to rounding. `out` may be a memory-mapped array for matrices beyond RAM.
    """
    n = len(embeddings)
    matrix = np.empty((n, n), dtype="float32") if out is None else out
    for start in range(0, n, block_rows):
        stop = min(start + block_rows, n)
        block = _distance_block(embeddings[start:stop], embeddings[start:])
        matrix[start:stop, start:] = block
        matrix[start:, start:stop] = block.T
    np.fill_diagonal(matrix, 0.0)
    return matrix


@dataclass(frozen=True)
class DistanceMatrixFile:
    """The distance matrix of `embeddings`, computed only when it is written, block by block, into a
    memory-mapped `.npy` file, so memory holds one block rather than the whole (n, n) matrix."""

    embeddings: np.ndarray
    block_rows: int = 2048

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.embeddings), len(self.embeddings))

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.shape[1] * np.dtype("float32").itemsize

    def write_npy(self, path: str | os.PathLike) -> None:
        matrix = np.lib.format.open_memmap(path, mode="w+", dtype="float32", shape=self.shape)
        squared_distance_matrix(self.embeddings, self.block_rows, out=matrix)
        matrix.flush()
        del matrix


def nearest_neighbours(embeddings: np.ndarray, k: int, block_elements: int = 2**23) -> tuple[np.ndarray, np.ndarray]:
    """For each row, the `k` nearest other rows and their squared distances, nearest first.

    Exact (no approximation): for unit vectors the nearest rows are those with the largest dot
    product, computed in float64. Rows are processed in blocks of about `block_elements` products,
    so memory stays bounded (tens of MB) whatever the number of movies. Ties are broken by the
    lower row number, including ties at the k-th place, so the result is deterministic.
    """
    n = len(embeddings)
    k = min(k, n - 1)
    block_rows = max(1, block_elements // max(n, 1))
    columns = np.ascontiguousarray(embeddings, dtype="float64").T
    neighbours = np.empty((n, k), dtype="int64")
    distances = np.empty((n, k), dtype="float32")
    for start in range(0, n, block_rows):
        stop = min(start + block_rows, n)
        similarity = np.asarray(embeddings[start:stop], dtype="float64") @ columns
        similarity[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # a movie is not its own neighbour
        best = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        best_similarity = np.take_along_axis(similarity, best, axis=1)
        order = np.lexsort((best, -best_similarity), axis=1)
        best = np.take_along_axis(best, order, axis=1)
        # Where another row ties the k-th, argpartition chose among them arbitrarily: sort those rows fully.
        kth = np.take_along_axis(similarity, best[:, -1:], axis=1)
        for row in np.flatnonzero((similarity >= kth).sum(axis=1) > k):
            best[row] = np.lexsort((np.arange(n), -similarity[row]))[:k]
        neighbours[start:stop] = best
        distances[start:stop] = _to_distance(np.take_along_axis(similarity, best, axis=1))
    return neighbours, distances


def similar_movies_table(movie_features: pd.DataFrame, neighbours: np.ndarray, distances: np.ndarray) -> pd.DataFrame:
    """Long table: for each movie, its neighbours with rank 1..k, titles and squared distances."""
    n, k = neighbours.shape
    movie_ids = movie_features["movieId"].to_numpy()
    titles = movie_features["title"].to_numpy()
    source = np.repeat(np.arange(n), k)
    target = neighbours.ravel()
    return pd.DataFrame(
        {
            "movieId": movie_ids[source],
            "title": titles[source],
            "rank": np.tile(np.arange(1, k + 1), n).astype("int16"),
            "similar_movieId": movie_ids[target],
            "similar_title": titles[target],
            "distance": distances.ravel(),
        }
    )
