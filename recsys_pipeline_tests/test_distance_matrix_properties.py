"""The distance matrix is well formed (what the blocking check distance_matrix_well_formed asserts)
for any embeddings and any block size, down to the bit."""

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from recsys_pipeline.orchestration import checks
from recsys_pipeline.similarity import MAX_SQUARED_DISTANCE, squared_distance_matrix

# Small blocks, and blocks of more than about 128 rows, where (with 32 dimensions) BLAS rounds some
# (i, j) and (j, i) of a block's product with itself differently.
BLOCK_SIZES = [1, 3, 64, 128, 256, 2048]


def embeddings_of_kind(kind: str, n: int, dimensions: int, seed: int) -> np.ndarray:
    """Unit float32 vectors as the movie tower yields them: independent, some repeated exactly (movies
    with identical inputs), or some perturbed in the last bits (near-identical movies, whose distances
    near 5e-8 are where a product of a block with itself rounds differently in (i, j) and (j, i))."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dimensions)).astype("float32")
    copies = rng.choice(n, size=n // 2, replace=False)
    if kind == "duplicated":
        vectors[copies] = vectors[rng.integers(0, n)]
    elif kind == "near_duplicated":
        vectors[copies] = vectors[rng.integers(0, n)] * (1 + rng.normal(scale=1e-6, size=(len(copies), dimensions))).astype("float32")
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(["random", "duplicated", "near_duplicated"]),
    n=st.integers(1, 400),
    dimensions=st.sampled_from([1, 2, 8, 32]),
    block_rows=st.sampled_from(BLOCK_SIZES),
    seed=st.integers(0, 2**32 - 1),
)
@example(kind="near_duplicated", n=150, dimensions=32, block_rows=2048, seed=0)  # 8 asymmetric entries before the fix, here
def test_distance_matrix_is_exactly_symmetric_and_well_formed(kind, n, dimensions, block_rows, seed):
    embeddings = embeddings_of_kind(kind, n, dimensions, seed)
    matrix = squared_distance_matrix(embeddings, block_rows=block_rows)

    assert matrix.shape == (n, n) and matrix.dtype == np.float32
    assert np.array_equal(matrix.view("uint32"), matrix.T.view("uint32"))  # bitwise, not up to rounding
    assert np.all(np.diagonal(matrix) == 0)
    assert np.isfinite(matrix).all() and matrix.min() >= 0 and matrix.max() <= MAX_SQUARED_DISTANCE
    direct = np.sum((embeddings[:, None, :].astype("float64") - embeddings[None, :, :]) ** 2, axis=2)
    np.testing.assert_allclose(matrix, direct, rtol=0, atol=10 * checks.TOLERANCE)
    # The same matrix, whatever the block size: blocks change only which entry is computed where.
    np.testing.assert_allclose(matrix, squared_distance_matrix(embeddings, block_rows=n), rtol=0, atol=1e-6)
    well_formed = checks.distance_matrix_well_formed(matrix)
    assert well_formed.passed, well_formed.metadata
    assert checks.distance_matrix_matches_embeddings(matrix, embeddings).passed
