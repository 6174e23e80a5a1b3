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


def _distance_block(rows: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """Squared distances from each of `rows` to every embedding, in float32."""
    block = rows.astype("float64") @ embeddings.astype("float64").T
    return np.clip(2.0 - 2.0 * block, 0.0, MAX_SQUARED_DISTANCE).astype("float32")


def squared_distance_matrix(embeddings: np.ndarray, block_rows: int = 2048, out: np.ndarray | None = None) -> np.ndarray:
    """The full (n, n) float32 matrix: exactly symmetric, zero on the diagonal.

    Only the upper triangle is computed and each entry is mirrored below the diagonal, so symmetry
    is exact rather than up to rounding. That includes the diagonal blocks: a block's product with
    itself is not bit-symmetric (BLAS sums in different orders for (i, j) and (j, i)), so only its
    upper triangle is kept. `out` may be a memory-mapped array for matrices beyond RAM.
    """
    n = len(embeddings)
    matrix = np.empty((n, n), dtype="float32") if out is None else out
    for start in range(0, n, block_rows):
        stop = min(start + block_rows, n)
        block = _distance_block(embeddings[start:stop], embeddings[start:])
        diagonal_block = np.triu(block[:, : stop - start], k=1)
        block[:, : stop - start] = diagonal_block + diagonal_block.T
        matrix[start:stop, start:] = block
        matrix[start:, start:stop] = block.T
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


def nearest_neighbours(
    embeddings: np.ndarray, k: int, block_elements: int = 2**23, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """For each row (or each of `rows` only), the `k` nearest other rows by squared Euclidean
    distance, nearest first, and those distances (float32).

    Exact, with ties broken by the lower row number. Rows are processed in blocks of about
    `block_elements` dot products, so memory stays bounded (tens of MB) whatever the number of
    movies. For near-unit vectors the largest dot products are the nearest rows; every row whose dot
    product is within the spread of squared norms of the k-th best could still be nearer, so those
    candidates (usually just k) are ranked by sum((a - b)^2) computed directly, as the lab does.
    Identical embeddings are then at distance exactly 0, and their ties are exact.
    """
    n = len(embeddings)
    queries = np.arange(n) if rows is None else np.asarray(rows, dtype="int64")
    k = min(k, n - 1)
    block_rows = max(1, block_elements // max(n, 1))
    vectors = np.ascontiguousarray(embeddings, dtype="float64")
    squared_norms = np.einsum("ij,ij->i", vectors, vectors)
    # |a-b|^2 = |a|^2 + |b|^2 - 2a.b: a row can beat a larger dot product by at most half the norm spread.
    margin = (squared_norms.max() - squared_norms.min()) / 2 + 1e-9
    neighbours = np.empty((len(queries), k), dtype="int64")
    distances = np.empty((len(queries), k), dtype="float32")
    # Two block-sized buffers, reused: fresh ones cost a page fault per 4 KB on every block.
    similarity_buffer, negated_buffer = np.empty((2, min(block_rows, len(queries)), n))
    for start in range(0, len(queries), block_rows):
        block = queries[start : start + block_rows]
        similarity = np.matmul(vectors[block], vectors.T, out=similarity_buffer[: len(block)])
        similarity[np.arange(len(block)), block] = -np.inf  # a movie is not its own neighbour
        # The k-th largest dot product of each row: a selection of values, in place on a negated copy
        # (argpartition also moves indices, several times slower; the candidates come from the threshold below).
        negated = np.negative(similarity, out=negated_buffer[: len(block)])
        negated.partition(k - 1, axis=1)
        kth = -negated[:, k - 1]
        hits, columns = np.nonzero(similarity >= (kth - margin)[:, None])
        direct = np.sum((vectors[block[hits]] - vectors[columns]) ** 2, axis=1)
        neighbours[start : start + len(block)], distances[start : start + len(block)] = _k_nearest_candidates(hits, columns, direct, len(block), k)
    return neighbours, distances


def _k_nearest_candidates(hits: np.ndarray, columns: np.ndarray, distances: np.ndarray, queries: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each query's k nearest among candidate (query, column, distance) triples, `hits` ascending
    (as np.nonzero returns them) with at least k candidates per query: nearest first, ties to the lower column."""
    order = np.lexsort((columns, distances, hits))  # by query, then distance, then lower row number
    first = np.searchsorted(hits, np.arange(queries))
    chosen = order[first[:, None] + np.arange(k)]
    return columns[chosen], distances[chosen]


def exact_top_k(embeddings: np.ndarray, k: int, rows: np.ndarray | None = None, block_elements: int = 2**23) -> tuple[np.ndarray, np.ndarray]:
    """The brute-force reference that `nearest_neighbours` is tested and checked against: for each
    row (or each of `rows`), the `k` nearest other rows and their squared distances (float64),
    nearest first, ties to the lower row number.

    Every pair's |a|^2 + |b|^2 - 2 a.b in float64, with no assumption of unit length. Distances are
    computed between distinct vectors and mapped back, so identical embeddings are exactly 0 apart
    and tie exactly. Memory stays at about `block_elements` distances per block of queries.
    """
    vectors = np.asarray(embeddings, dtype="float64")
    n = len(vectors)
    queries = np.arange(n) if rows is None else np.asarray(rows, dtype="int64")
    k = min(k, n - 1)
    distinct, inverse = np.unique(vectors, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    repeated = len(distinct) < n
    if not repeated:  # no vector twice: compute between the rows as they are, without mapping back
        distinct, inverse = vectors, np.arange(n)
    squared_norms = np.einsum("ij,ij->i", distinct, distinct)
    block_rows = max(1, block_elements // max(n, 1))
    neighbours = np.empty((len(queries), k), dtype="int64")
    distances = np.empty((len(queries), k), dtype="float64")
    for start in range(0, len(queries), block_rows):
        block = queries[start : start + block_rows]
        own = inverse[block]
        between_distinct = squared_norms[own, None] + squared_norms[None, :] - 2.0 * (distinct[own] @ distinct.T)
        between_distinct[np.arange(len(block)), own] = 0.0
        row_distances = between_distinct[:, inverse] if repeated else between_distinct
        row_distances[np.arange(len(block)), block] = np.inf  # a movie is not its own neighbour
        kth = np.partition(row_distances, k - 1, axis=1)[:, k - 1]
        hits, columns = np.nonzero(row_distances <= kth[:, None])
        found = _k_nearest_candidates(hits, columns, row_distances[hits, columns], len(block), k)
        neighbours[start : start + len(block)], distances[start : start + len(block)] = found
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
