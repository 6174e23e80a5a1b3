"""The split, the scalers, and the proof that validation and test ratings never shape a feature."""

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from recsys_pipeline import features, splits
from recsys_pipeline.movielens import read_movies, read_ratings
from recsys_pipeline.standardisation import FittedScalers, fit_scalers, fit_standardiser


@pytest.mark.parametrize(
    ("n_ratings", "seed", "fractions"),
    [(1000, 47005, splits.DEFAULT_FRACTIONS), (100_836, 47005, splits.DEFAULT_FRACTIONS), (7, 3, (0.5, 0.25, 0.25)), (9_999, 0, (0.8, 0.1, 0.1)), (12_345, 2**32 - 1, (0.6, 0.3, 0.1))],
)
def test_split_is_the_notebooks_two_train_test_splits_row_for_row(n_ratings, seed, fractions):
    labels = splits.random_split(n_ratings, seed, fractions)
    train_fraction, _, test_fraction = fractions
    held_out_fraction = round(1 - train_fraction, 9)
    train, rest = train_test_split(np.arange(n_ratings), test_size=held_out_fraction, random_state=seed)
    validation, test = train_test_split(rest, test_size=round(test_fraction / held_out_fraction, 9), random_state=seed)
    expected = np.empty(n_ratings, dtype=object)
    expected[train], expected[validation], expected[test] = "train", "validation", "test"
    np.testing.assert_array_equal(np.asarray(labels, dtype=object), expected)


def test_split_refuses_too_few_ratings_to_train_on():
    with pytest.raises(ValueError, match="cannot hold out 30% of 1 ratings"):
        splits.random_split(1, 1)


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


def test_the_chronological_split_cuts_the_timeline_when_no_user_has_enough_ratings_for_their_own_cut():
    """Every user with 5 ratings: a per-user cut gives no test rating (a user needs 7), so the
    timeline is cut instead; nothing trained on is later than anything measured on."""
    ratings = pd.DataFrame({"userId": np.repeat(np.arange(50), 5), "movieId": np.tile(np.arange(5), 50), "rating": 3.0, "timestamp": np.arange(250)[::-1]})
    labelled = splits.assign_splits(ratings, method=splits.CHRONOLOGICAL)
    assert splits.partition_problems(labelled, len(ratings), splits.DEFAULT_FRACTIONS, splits.CHRONOLOGICAL) == []
    by_split = labelled.groupby("split", observed=True)["timestamp"]
    assert by_split.max()["train"] < by_split.min()["validation"] and by_split.max()["validation"] < by_split.min()["test"]
    # With one user of 7 ratings every per-user split holds some, and each user is cut at their own time.
    more = pd.concat([ratings, pd.DataFrame({"userId": 99, "movieId": np.arange(7), "rating": 4.0, "timestamp": np.arange(7)})], ignore_index=True)
    labelled = splits.assign_splits(more, method=splits.CHRONOLOGICAL)
    assert labelled.loc[labelled["userId"] < 50, "split"].ne("test").all()
    assert labelled.loc[labelled["userId"] == 99, "split"].tolist().count("test") == 1


def test_validation_ratings_follow_the_training_ones_on_the_chronological_split_only():
    rng = np.random.default_rng(4)
    ratings = pd.DataFrame(
        {"userId": np.repeat(np.arange(40), 30), "movieId": np.tile(np.arange(30), 40), "rating": 3.0, "timestamp": rng.integers(0, 50, 1200)}
    )  # many same-second ratings: movieId orders them
    assert splits.share_after_training(splits.assign_splits(ratings, method=splits.CHRONOLOGICAL)) == 1.0
    assert splits.share_after_training(splits.assign_splits(ratings, seed=4, method=splits.RANDOM)) < 0.5
    # A user with validation ratings and no training one: nothing of theirs is known, so theirs follow.
    alone = pd.DataFrame({"userId": [1, 1, 2], "movieId": [1, 2, 3], "rating": 3.0, "timestamp": [5, 1, 9], "split": pd.Categorical(["train", "validation", "validation"], categories=list(splits.SPLITS))})
    assert splits.share_after_training(alone) == pytest.approx(0.5)
    assert np.isnan(splits.share_after_training(alone, splits.TEST))


def test_too_few_ratings_to_split_are_refused_in_one_line():
    ratings = pd.DataFrame({"userId": [1, 1, 2, 2, 3], "movieId": [1, 2, 1, 3, 4], "rating": 3.0, "timestamp": [1, 2, 3, 4, 5]})
    labelled = splits.assign_splits(ratings, method=splits.CHRONOLOGICAL)
    assert "test holds no rating: 5 ratings are too few to split 70%/15%/15% (nothing to stop training on or to measure)" in splits.partition_problems(labelled, 5, splits.DEFAULT_FRACTIONS, splits.CHRONOLOGICAL)


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
    fold_users, fold_movies = features.out_of_fold_tables(train, features.rating_folds(len(train), 5, 47005), 5, user_table, movie_table)
    return movie_table, user_table, scalers, fold_users, fold_movies


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
    # The out-of-fold tables the training ratings read.
    for original_tables, changed_tables in ((original[3], changed[3]), (original[4], changed[4])):
        for before, after in zip(original_tables, changed_tables, strict=True):
            pd.testing.assert_frame_equal(before, after)

    # Control: the same tampering on training rows does move the features.
    tampered_train = labelled.copy()
    tampered_train.loc[~held_out, "rating"] = 5.0
    moved = _features_and_scalers(tampered_train, movies)
    assert not moved[0]["average_rating"].equals(original[0]["average_rating"])
    assert not moved[1]["shrunk_mean"].equals(original[1]["shrunk_mean"])
    assert not moved[3][0]["shrunk_mean"].equals(original[3][0]["shrunk_mean"])


def test_chronological_split_puts_each_users_latest_ratings_in_test():
    rng = np.random.default_rng(5)
    ratings = pd.DataFrame(
        {
            "userId": np.r_[np.full(10, 1), np.full(20, 2)],
            "movieId": np.r_[np.arange(10), np.arange(20)],
            "rating": 3.0,
            "timestamp": np.r_[rng.permutation(10) + 100, rng.permutation(20) + 500],
        }
    ).sample(frac=1.0, random_state=1, ignore_index=True)
    labelled = splits.assign_splits(ratings, fractions=(0.7, 0.15, 0.15), method=splits.CHRONOLOGICAL)
    assert labelled[["userId", "movieId", "timestamp"]].equals(ratings[["userId", "movieId", "timestamp"]])
    by_split = labelled.groupby(["userId", "split"], observed=True)["timestamp"].apply(sorted).to_dict()
    # user 1, 10 ratings: positions 0-6 train, 7-8 validation (>= 7), 9 test (>= 8.5).
    assert by_split[(1, "train")] == list(range(100, 107))
    assert by_split[(1, "validation")] == [107, 108] and by_split[(1, "test")] == [109]
    # user 2, 20 ratings: 14 train, 3 validation (>= 14), 3 test (>= 17).
    assert by_split[(2, "validation")] == [514, 515, 516] and by_split[(2, "test")] == [517, 518, 519]


def test_chronological_split_orders_same_second_ratings_by_movie_id_whatever_the_row_order():
    ratings = pd.DataFrame({"userId": [1] * 7, "movieId": [70, 10, 60, 20, 50, 30, 40], "timestamp": [5] * 7, "rating": [4.0] * 7})
    labelled = splits.assign_splits(ratings, method=splits.CHRONOLOGICAL)
    # 7 ratings in one second: the 5 lowest movieIds train (i < 4.9), movieId 60 validation, 70 test.
    assert labelled.sort_values("movieId")["split"].tolist() == ["train"] * 5 + ["validation", "test"]
    shuffled = splits.assign_splits(ratings.sample(frac=1.0, random_state=3), method=splits.CHRONOLOGICAL)
    pd.testing.assert_frame_equal(shuffled.sort_values("movieId").reset_index(drop=True), labelled.sort_values("movieId").reset_index(drop=True))


def test_chronological_split_of_the_real_ratings_is_a_clean_partition(real_movielens_dir):
    ratings = read_ratings(real_movielens_dir)
    labelled = splits.assign_splits(ratings, method=splits.CHRONOLOGICAL)
    assert splits.partition_problems(labelled, len(ratings), splits.DEFAULT_FRACTIONS) == []
    latest_train = labelled[labelled["split"] == "train"].groupby("userId")["timestamp"].max()
    earliest_test = labelled[labelled["split"] == "test"].groupby("userId")["timestamp"].min()
    assert (earliest_test >= latest_train.reindex(earliest_test.index)).all()
    with pytest.raises(ValueError, match="unknown split method 'weekly'"):
        splits.assign_splits(ratings, method="weekly")
