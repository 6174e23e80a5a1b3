"""Distances, nearest neighbours and baselines against brute-force references."""

import numpy as np
import pandas as pd
import pytest

from recsys_pipeline import evaluation, similarity


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
