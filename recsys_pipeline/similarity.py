"""Movie-to-movie distances between unit-length embeddings, by blocked matrix products.

For unit vectors a and b, |a - b|^2 = 2 - 2 a.b, so every distance comes from one matrix product
instead of the lab's Python double loop, and always lies in [0, 4].
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MAX_SQUARED_DISTANCE = 4.0


def _distance_block(rows: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """Squared distances from each of `rows` to every embedding, in float32."""
    block = rows.astype("float64") @ embeddings.astype("float64").T
    return np.clip(2.0 - 2.0 * block, 0.0, MAX_SQUARED_DISTANCE).astype("float32")


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


def nearest_neighbours(embeddings: np.ndarray, k: int, block_rows: int = 2048, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For each row (or each of `rows` only), the `k` nearest other rows and their squared distances, nearest first.

    Exact (no approximation), in row blocks so memory stays at `block_rows` x n. Ties are broken by
    the lower row number, so the result is deterministic.
    """
    n = len(embeddings)
    rows = np.arange(n) if rows is None else np.asarray(rows, dtype="int64")
    k = min(k, n - 1)
    neighbours = np.empty((len(rows), k), dtype="int64")
    distances = np.empty((len(rows), k), dtype="float32")
    for start in range(0, len(rows), block_rows):
        stop = min(start + block_rows, len(rows))
        block = _distance_block(embeddings[rows[start:stop]], embeddings)
        block[np.arange(stop - start), rows[start:stop]] = np.inf  # a movie is not its own neighbour
        candidates = np.argpartition(block, k, axis=1)[:, : k + 1]
        candidate_distances = np.take_along_axis(block, candidates, axis=1)
        order = np.lexsort((candidates, candidate_distances), axis=1)[:, :k]
        neighbours[start:stop] = np.take_along_axis(candidates, order, axis=1)
        distances[start:stop] = np.take_along_axis(candidate_distances, order, axis=1)
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
