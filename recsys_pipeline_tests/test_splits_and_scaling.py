"""The split, the scalers, and the proof that validation and test ratings never shape a feature."""

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from recsys_pipeline import features, splits
from recsys_pipeline.movielens import read_movies, read_ratings
from recsys_pipeline.scaling import FittedScalers, fit_scalers, fit_standardiser


def test_split_is_the_notebooks_two_train_test_splits():
    labels = splits.random_split(1000, seed=47005)
    rows = np.arange(1000)
    train, rest = train_test_split(rows, test_size=0.3, random_state=47005)
    validation, test = train_test_split(rest, test_size=0.5, random_state=47005)
    assert set(np.flatnonzero(labels == "train")) == set(train)
    assert set(np.flatnonzero(labels == "validation")) == set(validation)
    assert set(np.flatnonzero(labels == "test")) == set(test)


def test_split_is_seeded_and_proportional():
    a, b, c = splits.random_split(10_000, 1), splits.random_split(10_000, 1), splits.random_split(10_000, 2)
    assert (a == b).all() and not (a == c).all()
    shares = pd.Series(a).value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.70, abs=0.001)
    assert shares["validation"] == pytest.approx(0.15, abs=0.001)


def test_split_rejects_fractions_that_do_not_sum_to_one():
    with pytest.raises(ValueError, match="sum to 1"):
        splits.random_split(10, 1, (0.5, 0.2, 0.2))


def test_partition_problems_detects_missing_rows_and_skewed_shares():
    ratings = pd.DataFrame({"userId": np.arange(100), "movieId": np.arange(100), "rating": 3.0})
    labelled = splits.assign_splits(ratings, 5)
    assert splits.partition_problems(labelled, 100, splits.DEFAULT_FRACTIONS, tolerance=0.02) == []
    assert any("99 labelled rows" in p for p in splits.partition_problems(labelled.iloc[1:], 100, splits.DEFAULT_FRACTIONS))
    skewed = labelled.assign(split=pd.Categorical(["train"] * 100, categories=list(splits.SPLITS)))
    assert any("validation holds 0.00%" in p for p in splits.partition_problems(skewed, 100, splits.DEFAULT_FRACTIONS))


def test_weighted_standardiser_equals_standard_scaler_on_the_per_rating_matrix():
    table = pd.DataFrame({"id": [1, 2, 3], "x": [1.0, 2.0, 10.0], "constant": [4.0, 4.0, 4.0]})
    weights = np.array([3, 1, 2])
    fitted = fit_standardiser(table, "id", ["x", "constant"], weights)
    per_rating = np.repeat(table[["x", "constant"]].to_numpy(), weights, axis=0)
    reference = StandardScaler().fit(per_rating)
    assert fitted.mean == pytest.approx(reference.mean_.tolist())
    assert fitted.scale == pytest.approx(reference.scale_.tolist())
    assert np.allclose(fitted.transform(table), reference.transform(table[["x", "constant"]].to_numpy()), atol=1e-6)


def test_target_scaler_maps_the_training_range_onto_minus_one_to_one_and_back():
    train = pd.DataFrame({"userId": [1, 1], "movieId": [1, 2], "rating": [0.5, 5.0]})
    users = pd.DataFrame({"userId": [1], "avg_rating_Drama": [3.0]})
    movies = pd.DataFrame({"movieId": [1, 2], "year": [1990.0, 2000.0]})
    scalers = fit_scalers(train, users, ["avg_rating_Drama"], movies, ["year"])
    assert scalers.target.to_unit(np.array([0.5, 2.75, 5.0])).tolist() == pytest.approx([-1.0, 0.0, 1.0])
    assert scalers.target.to_stars(np.array([-1.0, 1.0])).tolist() == pytest.approx([0.5, 5.0])
    assert FittedScalers.from_dict(scalers.to_dict()) == scalers


def _features_and_scalers(labelled: pd.DataFrame, movies: pd.DataFrame):
    train = splits.training_rows(labelled)
    movie_table = features.build_movie_features(movies, train)
    user_table = features.build_user_genre_averages(labelled["userId"].unique(), train, movie_table)
    scalers = fit_scalers(train, user_table, features.user_input_columns(user_table), movie_table, features.movie_input_columns(movie_table))
    return movie_table, user_table, scalers


def test_changing_held_out_ratings_changes_no_feature_and_no_scaler(real_movielens_dir):
    movies = read_movies(real_movielens_dir)
    labelled = splits.assign_splits(read_ratings(real_movielens_dir), 47005)
    held_out = (labelled["split"] != "train").to_numpy()
    tampered = labelled.copy()
    rng = np.random.default_rng(0)
    tampered.loc[held_out, "rating"] = rng.choice(np.arange(1, 11) / 2, held_out.sum())
    assert not tampered["rating"].equals(labelled["rating"])

    original = _features_and_scalers(labelled, movies)
    changed = _features_and_scalers(tampered, movies)
    pd.testing.assert_frame_equal(original[0], changed[0])
    pd.testing.assert_frame_equal(original[1], changed[1])
    assert original[2] == changed[2]

    # Control: the same tampering on training rows does move the features.
    tampered_train = labelled.copy()
    tampered_train.loc[~held_out, "rating"] = 5.0
    assert not _features_and_scalers(tampered_train, movies)[0]["average_rating"].equals(original[0]["average_rating"])
