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


@pytest.mark.parametrize("dense", [True, False])
def test_an_item_item_term_told_its_penalties_frees_its_gram_matrix_once_they_are_solved(dense, monkeypatch):
    users, movies = rated_pairs(0)
    if not dense:
        monkeypatch.setattr(ranking, "DENSE_SCORES_LIMIT", 0)
    item_item = ranking.ItemItem(users, movies, 12, 20, 5.0)
    item_item.only_penalties = (5.0, 40.0)
    rows = np.arange(12)
    tolerance = {"atol": 1e-9} if dense else {"rtol": 1e-5, "atol": 1e-6}
    np.testing.assert_allclose(item_item.scorer()(rows), ease_by_definition(users, movies, 12, 20, 5.0, np.ones(len(users))), **tolerance)
    assert item_item._gram is not None  # 40 is still to come
    np.testing.assert_allclose(item_item.scorer(None, 40.0)(rows), ease_by_definition(users, movies, 12, 20, 40.0, np.ones(len(users))), **tolerance)
    assert item_item._gram is None
    np.testing.assert_allclose(item_item.scorer(None, 5.0)(rows), ease_by_definition(users, movies, 12, 20, 5.0, np.ones(len(users))), **tolerance)
    with pytest.raises(RuntimeError, match="not 0.5"):
        item_item.scorer(None, 0.5)


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


def transitions_by_definition(users, movies, ages, n_users, n_movies, kept, every=1):
    """SLIT as the docstring of ranking.Transitions states it, one position at a time."""
    column = {movie: position for position, movie in enumerate(kept)}
    decay = lambda distance: 0.5 ** (distance / ranking.TRANSITION_HALF_LIFE)  # noqa: E731
    sources, following = [], []
    for user in range(n_users):
        mine = np.flatnonzero(users == user)
        ordered = movies[mine[np.argsort(-ages[mine])]]  # oldest first
        for t in range(len(ordered) - 1):
            source, target = np.zeros(len(kept)), np.zeros(len(kept))
            for d in range(ranking.TRANSITION_WINDOW):
                if t - d >= 0 and ordered[t - d] in column:
                    source[column[ordered[t - d]]] += decay(d)
            for e in range(1, ranking.TRANSITION_TARGETS + 1):
                if t + e < len(ordered) and ordered[t + e] in column:
                    target[column[ordered[t + e]]] += decay(e - 1)
            sources.append(source)
            following.append(target)
    source, target = np.array(sources)[::every], np.array(following)[::every]
    weights = np.linalg.solve(source.T @ source + ranking.TRANSITION_L2 * np.eye(len(kept)), source.T @ target)
    inputs = np.zeros((n_users, len(kept)))
    for user, movie, age in zip(users, movies, ages, strict=True):
        if age < ranking.TRANSITION_WINDOW and movie in column:
            inputs[user, column[movie]] += decay(age)
    scores = np.zeros((n_users, n_movies))
    scores[:, kept] = inputs @ weights
    return scores


def random_sequences(seed: int, n_users: int = 7, n_movies: int = 15):
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), rng.integers(1, 12, n_users))
    movies = rng.integers(0, n_movies, len(users))  # a movie may come twice in one user's ratings
    ages = ranking.age_ranks(users, rng.integers(0, 5, len(users)), rng.permutation(len(users)))
    return users, movies, ages


@pytest.mark.parametrize("block_positions", [5, 1_000_000])
def test_the_transition_term_is_slit_over_the_most_rated_movies(block_positions, monkeypatch):
    for name, value in {"TRANSITION_WINDOW": 4, "TRANSITION_TARGETS": 3, "TRANSITION_MAX_MOVIES": 10, "TRANSITION_L2": 2.0, "TRANSITION_BLOCK_POSITIONS": block_positions}.items():
        monkeypatch.setattr(ranking, name, value)
    users, movies, ages = random_sequences(0)
    kept = np.sort(np.argsort(-np.bincount(movies, minlength=15), kind="stable")[:10])
    transitions = ranking.Transitions(users, movies, ages, 7, 15)
    np.testing.assert_allclose(transitions.scores(np.arange(7)), transitions_by_definition(users, movies, ages, 7, 15, kept), atol=1e-10)
    # Above TRANSITION_MAX_POSITIONS positions, every k-th is fitted.
    monkeypatch.setattr(ranking, "TRANSITION_MAX_POSITIONS", 9)
    every = -(-(len(users) - 7) // 9)  # each user's latest rating is no position
    sampled = ranking.Transitions(users, movies, ages, 7, 15)
    np.testing.assert_allclose(sampled.scores(np.arange(7)), transitions_by_definition(users, movies, ages, 7, 15, kept, every), atol=1e-10)


def test_the_transition_term_knows_what_comes_next_and_ignores_row_order():
    """Everyone rated 0, then 1, then 2: after 0 come 1 and 2, after 1 comes 2, never 0 (EASE, which
    reads who rated what, cannot tell the direction)."""
    users = np.repeat(np.arange(20), 3)
    movies = np.tile([0, 1, 2], 20)
    timestamps = np.tile([10, 20, 30], 20)
    ages = ranking.age_ranks(users, timestamps, movies)
    # User 20 rated only 0; user 21 only 1.
    scores = ranking.Transitions(np.r_[users, 20, 21], np.r_[movies, 0, 1], np.r_[ages, 0, 0], 22, 3).scores(np.array([20, 21]))
    assert scores[0, 1] > 0 and scores[0, 2] > 0
    assert scores[1, 2] > 0 == scores[1, 0]
    order = np.random.default_rng(0).permutation(len(users))
    shuffled = ranking.Transitions(users[order], movies[order], ages[order], 20, 3).scores(np.arange(20))
    np.testing.assert_array_equal(shuffled, ranking.Transitions(users, movies, ages, 20, 3).scores(np.arange(20)))


def test_narrow_scores_are_standardised_added_and_widened_as_the_wide_rows_would_be():
    rng = np.random.default_rng(3)
    base = rng.normal(size=(4, 30))
    ease = ranking.ColumnScores.of(np.array([2, 7, 19, 25]), rng.normal(size=(4, 4)), 30)
    transitions = ranking.ColumnScores.of(np.array([0, 7, 19]), rng.normal(size=(4, 3)), 30)
    wide_ease, wide_transitions = ease.dense(), transitions.dense()
    assert wide_ease.shape == (4, 30) and (wide_ease[:, [0, 1, 29]] == 0).all() and (wide_ease[:, [2, 7]] == ease.values[:, :2]).all()
    np.testing.assert_allclose(ease.standardised().dense(), ranking.standardised(wide_ease), atol=1e-12)
    item_item = ease.standardised().plus(transitions.standardised(), 1.5)
    expected = ranking.standardised(wide_ease) + 1.5 * ranking.standardised(wide_transitions)
    np.testing.assert_allclose(item_item.dense(), expected, atol=1e-12)
    np.testing.assert_array_equal(item_item.columns, [0, 2, 7, 19, 25])
    np.testing.assert_allclose(item_item.standardised().added_to(ranking.standardised(base), 0.5), ranking.blend(base, expected, 0.5), atol=1e-12)
    # Every column kept: the plain wide arithmetic.
    every = ranking.ColumnScores.of(np.arange(30), base, 30)
    np.testing.assert_allclose(every.standardised().dense(), ranking.standardised(base), atol=1e-12)


def test_standardised_rows_have_mean_zero_and_unit_spread():
    scores = np.random.default_rng(4).normal(3.0, 2.0, size=(5, 40)).astype("float32")
    result = ranking.standardised(scores)
    assert result.dtype == np.float64 and scores.dtype == np.float32
    np.testing.assert_allclose(result.mean(axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(result.std(axis=1), 1.0, atol=1e-12)
    assert np.isfinite(ranking.standardised(np.ones((2, 5)))).all()  # a constant row stays finite
