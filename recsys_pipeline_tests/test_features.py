"""Feature engineering on small hand-made frames with hand-computed expectations."""

import numpy as np
import pandas as pd
import pytest

from recsys_pipeline import features


def _movies() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "movieId": [30, 10, 20, 40],
            "title": ["Heat (1995)", "Toy Story (1995)", "Black Mirror", "Death Note: Desu nôto (2006–2007)"],
            "genres": ["Action|Crime", "Animation|Comedy", "(no genres listed)", "Animation"],
        }
    )


def _train_ratings() -> pd.DataFrame:
    # user 1: Toy Story 4, Heat 2; user 2: Toy Story 5; nobody rated movies 20 and 40.
    return pd.DataFrame({"userId": [1, 1, 2], "movieId": [10, 30, 10], "rating": [4.0, 2.0, 5.0]})


def test_release_year_comes_from_the_end_of_the_title():
    years = features.parse_release_year(pd.Series(["Heat (1995)", "Black Mirror", "1984 (1984)", "Nôto (2006–2007)", "Babylon 5"]))
    assert years.iloc[0] == 1995 and np.isnan(years.iloc[1]) and years.iloc[2] == 1984 and years.iloc[3] == 2006
    assert np.isnan(years.iloc[4])


def test_one_hot_genres_drop_the_no_genres_marker():
    genres = pd.Series(["Action|Crime", "(no genres listed)", "Crime"])
    vocabulary = features.genre_vocabulary(genres)
    assert vocabulary == ["Action", "Crime"]
    one_hot = features.one_hot_genres(genres, vocabulary)
    assert list(one_hot.columns) == ["genre_Action", "genre_Crime"]
    assert one_hot.to_numpy().tolist() == [[1, 1], [0, 0], [0, 1]]


def test_movie_features_use_training_ratings_and_flag_imputed_years():
    table = features.build_movie_features(_movies(), _train_ratings())
    assert table["movieId"].tolist() == [10, 20, 30, 40]
    by_id = table.set_index("movieId")
    assert by_id.loc[10, "average_rating"] == pytest.approx(4.5)
    assert by_id.loc[10, "rating_count"] == 2
    assert by_id.loc[30, "average_rating"] == pytest.approx(2.0)
    # No training rating: the global training mean (11 / 3) and a count of zero.
    assert by_id.loc[40, "average_rating"] == pytest.approx(11 / 3)
    assert by_id.loc[40, "rating_count"] == 0
    # "Black Mirror" has no year: the median of 1995, 1995, 2006, flagged.
    assert by_id.loc[20, "year"] == 1995.0 and bool(by_id.loc[20, "year_imputed"])
    assert not by_id.loc[40, "year_imputed"] and by_id.loc[40, "year"] == 2006.0
    assert by_id.loc[20, features.genre_columns(table)].sum() == 0
    assert features.notebook_movie_input_columns(table) == ["year", "average_rating", "genre_Action", "genre_Animation", "genre_Comedy", "genre_Crime"]
    assert features.movie_input_columns(table) == [
        "year", "genre_Action", "genre_Animation", "genre_Comedy", "genre_Crime", "log_rating_count", "shrunk_mean", "rating_std"
    ]


def test_movie_shrunk_mean_count_and_spread_by_hand():
    by_id = features.build_movie_features(_movies(), _train_ratings()).set_index("movieId")
    prior = 11 / 3
    # Toy Story: 4 and 5, shrunk with 5 pseudo-ratings at the global mean; population std 0.5.
    assert by_id.loc[10, "shrunk_mean"] == pytest.approx((9 + 5 * prior) / 7)
    assert by_id.loc[10, "rating_std"] == pytest.approx(0.5)
    assert by_id.loc[10, "log_rating_count"] == pytest.approx(np.log(3))
    # Heat: one rating, no spread; movie 40: no rating, the prior itself.
    assert by_id.loc[30, "shrunk_mean"] == pytest.approx((2 + 5 * prior) / 6)
    assert by_id.loc[30, "rating_std"] == 0.0
    assert by_id.loc[40, "shrunk_mean"] == pytest.approx(prior) and by_id.loc[40, "log_rating_count"] == 0.0


def test_user_genre_averages_are_per_user_means_with_own_average_as_fallback():
    movie_table = features.build_movie_features(_movies(), _train_ratings())
    table = features.build_user_genre_averages([2, 1, 3], _train_ratings(), movie_table).set_index("userId")
    assert table.index.tolist() == [1, 2, 3]
    # user 1: Animation and Comedy from Toy Story (4); Action and Crime from Heat (2).
    assert table.loc[1, "avg_rating_Animation"] == 4.0
    assert table.loc[1, "avg_rating_Action"] == 2.0
    assert table.loc[1, "average_rating"] == 3.0
    # user 2 rated no Action movie: their own average (5) stands in.
    assert table.loc[2, "avg_rating_Action"] == 5.0
    # user 3 has no training rating: the global training mean everywhere, count 0.
    assert table.loc[3, "rating_count"] == 0
    assert table.loc[3, "avg_rating_Comedy"] == pytest.approx(11 / 3)
    assert features.notebook_user_input_columns(table.reset_index()) == [
        "avg_rating_Action", "avg_rating_Animation", "avg_rating_Comedy", "avg_rating_Crime"
    ]
    genres = ["Action", "Animation", "Comedy", "Crime"]
    assert features.user_input_columns(table.reset_index()) == [
        "log_rating_count", *(f"share_{g}" for g in genres), *(f"preference_{g}" for g in genres), "shrunk_mean", "rating_std"
    ]


def test_user_shares_shrunk_mean_and_genre_preferences_by_hand():
    movie_table = features.build_movie_features(_movies(), _train_ratings())
    table = features.build_user_genre_averages([1, 2, 3], _train_ratings(), movie_table).set_index("userId")
    # user 1 rated Toy Story 4 (Animation, Comedy) and Heat 2 (Action, Crime): sum 6 over 2 ratings.
    shrunk = (6 + 5 * 11 / 3) / 7
    assert table.loc[1, "shrunk_mean"] == pytest.approx(shrunk)
    assert table.loc[1, "rating_std"] == pytest.approx(1.0)
    assert table.loc[1, ["share_Action", "share_Animation", "share_Comedy", "share_Crime"]].tolist() == [0.5, 0.5, 0.5, 0.5]
    # One Animation rating of 4 shrunk with 5 pseudo-ratings at the user's shrunk mean, minus that mean.
    assert table.loc[1, "preference_Animation"] == pytest.approx((4 + 5 * shrunk) / 6 - shrunk)
    assert table.loc[1, "preference_Action"] == pytest.approx((2 + 5 * shrunk) / 6 - shrunk)
    assert table.loc[2, "share_Animation"] == 1.0 and table.loc[2, "share_Action"] == 0.0
    assert table.loc[2, "preference_Action"] == pytest.approx(0.0, abs=1e-12) and table.loc[2, "rating_std"] == 0.0
    # No training rating: prior mean, no shares, no preference.
    assert table.loc[3, "shrunk_mean"] == pytest.approx(11 / 3)
    assert table.loc[3, [c for c in table.columns if c.startswith(("share_", "preference_"))]].abs().sum() < 1e-12


def test_out_of_fold_tables_leave_out_each_folds_ratings_but_keep_counts_and_shares():
    train = _train_ratings()  # (1, Toy Story, 4), (1, Heat, 2), (2, Toy Story, 5)
    fold = np.array([1, 2, 1])
    movie_table = features.build_movie_features(_movies(), train)
    user_table = features.build_user_genre_averages([1, 2], train, movie_table)
    users, movies = features.out_of_fold_tables(train, fold, 2, user_table, movie_table)
    assert len(users) == len(movies) == 2
    first_users, first_movies = users[0].set_index("userId"), movies[0].set_index("movieId")
    # Without fold 1 only (1, Heat, 2) remains: global mean 2, Toy Story unrated there.
    assert first_movies.loc[10, "average_rating"] == 2.0 and first_movies.loc[10, "shrunk_mean"] == 2.0
    assert first_movies.loc[30, "shrunk_mean"] == pytest.approx((2 + 5 * 2) / 6)
    assert first_users.loc[1, "average_rating"] == 2.0 and first_users.loc[2, "average_rating"] == 2.0
    # Counts and shares describe what was rated, so they stay those of every training rating.
    assert first_movies.loc[10, "rating_count"] == 2 and first_users.loc[1, "share_Animation"] == 0.5
    # Without fold 2, (1, Heat, 2) is left out: Toy Story's 4 and 5 remain, global mean 4.5.
    second_movies, second_users = movies[1].set_index("movieId"), users[1].set_index("userId")
    assert second_movies.loc[10, "shrunk_mean"] == pytest.approx((9 + 5 * 4.5) / 7)
    assert second_movies.loc[30, "shrunk_mean"] == pytest.approx(4.5) and second_movies.loc[30, "rating_count"] == 1
    assert second_users.loc[1, "average_rating"] == 4.0 and abs(second_users.loc[1, "preference_Action"]) < 1e-12
    # The full tables themselves are untouched.
    assert movie_table.set_index("movieId").loc[10, "average_rating"] == 4.5


def test_rating_folds_are_seeded_and_cover_every_fold():
    folds = features.rating_folds(1000, 5, seed=3)
    assert set(folds.tolist()) == {1, 2, 3, 4, 5}
    assert np.array_equal(folds, features.rating_folds(1000, 5, seed=3))


def test_user_genre_averages_match_a_per_user_loop_on_random_data():
    rng = np.random.default_rng(3)
    movies = pd.DataFrame(
        {
            "movieId": np.arange(1, 41),
            "title": [f"Movie {i} (2000)" for i in range(1, 41)],
            "genres": rng.choice(["Action", "Comedy|Drama", "Drama", "Action|Comedy", "(no genres listed)"], 40),
        }
    )
    ratings = pd.DataFrame({"userId": rng.integers(1, 9, 300), "movieId": rng.integers(1, 41, 300), "rating": rng.integers(1, 11, 300) / 2})
    ratings = ratings.drop_duplicates(["userId", "movieId"])
    movie_table = features.build_movie_features(movies, ratings)
    table = features.build_user_genre_averages(ratings["userId"].unique(), ratings, movie_table).set_index("userId")
    for user, own in ratings.groupby("userId"):
        for genre in ("Action", "Comedy", "Drama"):
            rated = own[own["movieId"].map(movies.set_index("movieId")["genres"]).str.contains(genre)]
            expected = rated["rating"].mean() if len(rated) else own["rating"].mean()
            assert table.loc[user, f"avg_rating_{genre}"] == pytest.approx(expected)


def test_user_genre_averages_refuse_ratings_of_unknown_movies():
    movie_table = features.build_movie_features(_movies(), _train_ratings())
    with pytest.raises(ValueError, match="outside the given tables"):
        features.build_user_genre_averages([1], pd.DataFrame({"userId": [1], "movieId": [999], "rating": [3.0]}), movie_table)


def test_per_user_genre_sums_equal_scipys_sparse_product_to_the_bit():
    # Ratings with many digits, in shuffled order: any other order of addition would differ in the last bits.
    import scipy.sparse as sp

    rng = np.random.default_rng(5)
    pairs = rng.choice(50 * 300, 4_000, replace=False)
    user_codes, movie_codes = pairs // 300, pairs % 300
    weights = rng.uniform(0.5, 5.0, len(pairs))
    genre_rows = (rng.random((300, 7)) < 0.3).astype("float64")
    expected = sp.csr_matrix((weights, (user_codes, movie_codes)), shape=(50, 300)) @ genre_rows
    np.testing.assert_array_equal(features._per_user_sums(user_codes, movie_codes, weights, genre_rows, 50), expected)
