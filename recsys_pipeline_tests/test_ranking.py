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
    np.testing.assert_allclose(item_item.scorer(weights)(rows), ease_by_definition(users, movies, 12, 20, 5.0, weights), atol=1e-9)
    np.testing.assert_allclose(item_item.scorer()(rows), ease_by_definition(users, movies, 12, 20, 5.0, np.ones(len(users))), atol=1e-9)


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
