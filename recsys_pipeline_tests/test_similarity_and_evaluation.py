"""Distances, nearest neighbours and baselines against brute-force references."""

import numpy as np
import pandas as pd
import pytest

from recsys_pipeline import evaluation, ranking, similarity


def _unit_vectors(n: int, d: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, d)).astype("float32")
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_distance_matrix_equals_the_double_loop_and_is_exactly_symmetric():
    embeddings = _unit_vectors(37, 8, 0)
    matrix = similarity.squared_distance_matrix(embeddings, block_rows=10)
    loop = np.array([[np.sum((a.astype("float64") - b) ** 2) for b in embeddings] for a in embeddings])
    assert matrix.dtype == np.float32 and matrix.shape == (37, 37)
    assert np.allclose(matrix, loop, atol=1e-6)
    assert np.array_equal(matrix, matrix.T)
    assert np.all(np.diagonal(matrix) == 0) and matrix.min() >= 0 and matrix.max() <= 4


def test_nearest_neighbours_equal_brute_force_sorting_and_exclude_self():
    embeddings = _unit_vectors(200, 16, 1)
    neighbours, distances = similarity.nearest_neighbours(embeddings, k=5, block_elements=64 * 200)
    reference = similarity.squared_distance_matrix(embeddings)
    np.fill_diagonal(reference, np.inf)
    expected = np.argsort(reference, axis=1, kind="stable")[:, :5]
    assert np.array_equal(neighbours, expected)
    assert np.allclose(distances, np.take_along_axis(reference, expected, axis=1), atol=1e-6)
    assert not (neighbours == np.arange(200)[:, None]).any()


def test_similar_movies_table_ranks_neighbours_by_movie_id():
    movies = pd.DataFrame({"movieId": [5, 7, 9], "title": ["A", "B", "C"]})
    table = similarity.similar_movies_table(movies, np.array([[1, 2], [0, 2], [1, 0]]), np.zeros((3, 2), dtype="float32"))
    assert table["rank"].tolist() == [1, 2] * 3
    assert table.loc[table["movieId"] == 9, "similar_movieId"].tolist() == [7, 5]
    assert table.loc[table["movieId"] == 9, "similar_title"].tolist() == ["B", "A"]


def test_bias_baseline_matches_closed_form_on_one_user():
    # One user, two movies: with regularisation the biases shrink toward zero in a known way.
    train = pd.DataFrame({"userId": [1, 1], "movieId": [1, 2], "rating": [5.0, 3.0]})
    model = evaluation.fit_bias_baseline(train, user_reg=0.0, movie_reg=0.0, iterations=1)
    assert model.global_mean == 4.0
    assert model.movie_bias.to_dict() == {1: 1.0, 2: -1.0}
    assert model.user_bias.to_dict() == {1: 0.0}
    # Unknown users and movies fall back to the global mean.
    assert model.predict(pd.DataFrame({"userId": [9], "movieId": [9]})).tolist() == [4.0]


def test_error_table_reports_rmse_mae_and_scaled_mse_per_model_and_split():
    ratings = pd.DataFrame(
        {"rating": [1.0, 3.0, 5.0, 5.0], "split": pd.Categorical(["validation", "validation", "test", "test"], categories=["train", "validation", "test"])}
    )
    table = evaluation.error_table(ratings, {"perfect": ratings["rating"].to_numpy(), "off_by_one": ratings["rating"].to_numpy() - 1}, lambda x: np.asarray(x) / 2)
    metric = table.set_index(["model", "split"])
    assert metric.loc[("perfect", "test"), "rmse"] == 0
    assert metric.loc[("off_by_one", "validation"), "rmse"] == pytest.approx(1.0)
    assert metric.loc[("off_by_one", "validation"), "mae"] == pytest.approx(1.0)
    assert metric.loc[("off_by_one", "test"), "mse_scaled"] == pytest.approx(0.25)
    assert set(table["split"]) == {"validation", "test"}


# --- ranking --------------------------------------------------------------------------------------


def test_precision_and_ndcg_at_k_on_a_hand_made_example():
    # user 0 rated movie 0 in training and movies 2 and 3 in test; user 1 rated 4 in training and 0 in
    # test; user 2 has no test rating and does not count.
    train_pairs = (np.array([0, 1, 2]), np.array([0, 4, 1]))
    test_pairs = (np.array([0, 0, 1]), np.array([2, 3, 0]))
    scores = np.array([[9.0, 8.0, 7.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0, 5.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    result = evaluation.ranking_metrics(lambda rows: scores[rows], train_pairs, test_pairs, n_movies=5, k=2)
    # user 0: movie 0 is seen, top 2 = [1, 2], one hit at rank 2 of two relevant: NDCG (1/log2 3) / (1 + 1/log2 3).
    # user 1: movie 4 is seen, the rest tie, lower rows first: [0, 1], a hit at rank 1 of one relevant: NDCG 1.
    first = (1 / np.log2(3)) / (1 + 1 / np.log2(3))
    assert result["precision_at_2"] == pytest.approx(0.5)
    assert result["ndcg_at_2"] == pytest.approx((first + 1.0) / 2)


def test_ranking_report_ranks_the_popularity_baseline_by_training_count():
    # Three users, four movies; movie 3 is the most rated in training, then movie 2.
    train_pairs = (np.array([0, 1, 2, 1, 2]), np.array([3, 3, 3, 2, 2]))
    test_pairs = (np.array([0, 0, 1]), np.array([2, 1, 0]))
    counts = np.array([0, 0, 2, 3])
    report = evaluation.ranking_report(lambda rows: np.broadcast_to(np.log1p(counts), (len(rows), 4)), train_pairs, test_pairs, counts)
    # Popularity (k = 10 > candidates): user 0 sees [2, 0, 1] -> hits at ranks 1 and 3; user 1 sees [0, 1] -> hit at rank 1.
    user_0 = (1 + 1 / np.log2(4)) / (1 + 1 / np.log2(3))
    assert report["baseline_popularity_ndcg_at_10"] == pytest.approx((user_0 + 1.0) / 2)
    assert report["baseline_popularity_precision_at_10"] == pytest.approx((2 / 10 + 1 / 10) / 2)
    # Recall@20: user 0 finds both of its two relevant movies, user 1 its one.
    assert report["baseline_popularity_recall_at_20"] == pytest.approx(1.0)
    # A model scoring by popularity ranks exactly as the baseline.
    assert report["test_ndcg_at_10"] == pytest.approx(report["baseline_popularity_ndcg_at_10"])


def test_top_k_equals_a_stable_full_sort_with_ties_and_excluded_movies():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n, k = int(rng.integers(1, 30)), int(rng.integers(1, 12))
        scores = rng.integers(0, 4, size=(5, n)).astype("float64")  # many ties
        scores[rng.random((5, n)) < 0.2] = -np.inf  # seen in training
        expected = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(ranking.top_movies(scores, k)[0], expected)


def test_ranking_metrics_sample_users_beyond_the_limit():
    # 40 users, each with movie u % 5 relevant; scores put movie 0 first, so users 0, 5, 10, ... hit.
    users = np.arange(40)
    test_pairs = (users, users % 5)
    train_pairs = (np.array([], dtype=int), np.array([], dtype=int))
    scores = lambda rows: np.tile(-np.arange(5.0), (len(rows), 1))  # noqa: E731
    everyone = evaluation.ranking_metrics(scores, train_pairs, test_pairs, n_movies=5, k=1)
    assert everyone["precision_at_1"] == pytest.approx(8 / 40)
    sample = evaluation.ranking_metrics(scores, train_pairs, test_pairs, n_movies=5, k=1, max_users=10)
    assert sample == evaluation.ranking_metrics(scores, train_pairs, test_pairs, n_movies=5, k=1, max_users=10)
    sampled = np.random.default_rng(0).choice(users, 10, replace=False)
    assert sample["precision_at_1"] == pytest.approx(np.mean(sampled % 5 == 0))


def test_blends_by_weight_rank_exactly_as_the_served_blend_and_metrics_match_one_by_one():
    rng = np.random.default_rng(3)
    two_tower, item_item = rng.normal(size=(30, 50)), rng.normal(size=(30, 50))
    calls = []

    def two_tower_rows(rows):
        calls.append(len(rows))
        return two_tower[rows]

    scorers = ranking.blends_by_weight(two_tower_rows, lambda rows: item_item[rows], ranking.ITEM_ITEM_WEIGHTS)
    rows = np.arange(0, 30, 3)
    for weight, score_rows in scorers.items():
        np.testing.assert_array_equal(score_rows(rows), ranking.blend(two_tower[rows], item_item[rows], weight))
    assert calls == [len(rows)]  # one batch's standardised scores, computed once for every weight

    train_pairs = (rng.integers(0, 30, 200), rng.integers(0, 50, 200))
    test_pairs = (rng.integers(0, 30, 100), rng.integers(0, 50, 100))
    together = evaluation.ranking_metrics_by_scorer(scorers, train_pairs, test_pairs, 50, batch=7)
    for weight, score_rows in scorers.items():
        assert together[weight] == evaluation.ranking_metrics(score_rows, train_pairs, test_pairs, 50, batch=7)
    assert len({figures["ndcg_at_10"] for figures in together.values()}) > 1
