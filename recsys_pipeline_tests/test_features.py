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
    assert features.movie_input_columns(table) == ["year", "average_rating", "genre_Action", "genre_Animation", "genre_Comedy", "genre_Crime"]


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
    assert features.user_input_columns(table.reset_index()) == [
        "avg_rating_Action", "avg_rating_Animation", "avg_rating_Comedy", "avg_rating_Crime"
    ]


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
