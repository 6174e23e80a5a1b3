"""The served ranker's item-item term in numpy: EASE fed a recency-weighted history, and age ranks."""

import numpy as np
import pytest

from recsys_pipeline import ranking


def rated_pairs(seed: int, n_users: int = 12, n_movies: int = 20, share: float = 0.3):
    users, movies = np.nonzero(np.random.default_rng(seed).random((n_users, n_movies)) < share)
    return users, movies


def ease_by_definition(users, movies, n_users, n_movies, l2, input_weights):
    """EASE as published: B = I - P / diag(P), P = (X'X + l2 I)^-1, scores = Z B with Z the weighted input."""
    rated = np.zeros((n_users, n_movies))
    rated[users, movies] = 1.0
    weighted = np.zeros((n_users, n_movies))
    weighted[users, movies] = input_weights
    precision = np.linalg.inv(rated.T @ rated + l2 * np.eye(n_movies))
    weights = np.eye(n_movies) - precision / np.diag(precision)
    return weighted @ weights


@pytest.mark.parametrize("dense", [True, False])
def test_the_item_item_term_is_ease_fed_the_weighted_history(dense, monkeypatch):
    users, movies = rated_pairs(0)
    weights = np.random.default_rng(1).random(len(users))
    if not dense:  # the movies x movies path, as at MovieLens 25M's shape
        monkeypatch.setattr(ranking, "DENSE_SCORES_LIMIT", 0)
    item_item = ranking.ItemItem(users, movies, 12, 20, 5.0)
    rows = np.arange(12)
    # The movies x movies weights are float32 (half the memory and time at 12,000 movies).
    tolerance = {"atol": 1e-9} if dense else {"rtol": 1e-5, "atol": 1e-6}
    np.testing.assert_allclose(item_item.scorer(weights)(rows), ease_by_definition(users, movies, 12, 20, 5.0, weights), **tolerance)
    np.testing.assert_allclose(item_item.scorer()(rows), ease_by_definition(users, movies, 12, 20, 5.0, np.ones(len(users))), **tolerance)
    # Other penalties are solved from the same Gram matrix.
    for l2 in (0.5, 40.0):
        np.testing.assert_allclose(item_item.scorer(weights, l2)(rows), ease_by_definition(users, movies, 12, 20, l2, weights), **tolerance)


def test_ease_weights_by_cholesky_are_the_general_inverses_for_any_block_size():
    """ranking._ease_weights mirrors the triangle LAPACK returns in blocks of 2048 rows: a matrix over
    several blocks must give numpy's answer too."""
    rng = np.random.default_rng(4)
    rated = (rng.random((300, 2500)) < 0.05).astype("float64")
    gram = rated.T @ rated
    precision = np.linalg.inv(gram + 7.0 * np.eye(len(gram)))
    expected = -precision / np.diag(precision)
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(ranking._ease_weights(gram, 7.0), expected, rtol=1e-4, atol=1e-6)


def test_age_ranks_count_back_from_each_users_latest_rating_ties_by_movie_id():
    users = np.array([1, 1, 1, 2, 2])
    timestamps = np.array([5, 7, 7, 1, 0])
    movie_ids = np.array([10, 11, 12, 3, 4])
    np.testing.assert_array_equal(ranking.age_ranks(users, timestamps, movie_ids), [2, 1, 0, 0, 1])
    # The row order of the ratings does not matter.
    order = np.array([4, 2, 0, 3, 1])
    np.testing.assert_array_equal(ranking.age_ranks(users[order], timestamps[order], movie_ids[order]), np.array([2, 1, 0, 0, 1])[order])


def test_recency_weights_halve_every_half_life():
    np.testing.assert_allclose(ranking.recency_weights(np.array([0, 1, 2]), 1.0), [1.0, 0.5, 0.25])
    np.testing.assert_array_equal(ranking.recency_weights(np.array([0, 7]), np.inf), [1.0, 1.0])
