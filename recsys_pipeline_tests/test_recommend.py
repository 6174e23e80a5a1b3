"""The recommend module's answers on small hand-made tables whose right answers can be worked out by hand."""

import numpy as np
import pandas as pd
import pytest

from recsys_pipeline import features, recommend, similarity
from recsys_pipeline.model_inputs import Scorer, TowerOutputs
from recsys_pipeline.standardisation import TargetScaler

STARS = TargetScaler(minimum=0.5, maximum=5.0)


@pytest.fixture
def movie_features() -> pd.DataFrame:
    """Seven movies, rows in movieId order as build_movie_features keeps them; two share a title."""
    movies = pd.DataFrame(
        {
            "movieId": [1, 6, 9, 838, 3114, 26958, 78499],
            "title": ["Toy Story (1995)", "Heat (1995)", "Sudden Death (1995)", "Emma (1996)", "Toy Story 2 (1999)", "Emma (1996)", "Toy Story 3 (2010)"],
            "genres": ["Animation|Children", "Action|Crime", "Action", "Romance", "Animation|Children", "Drama|Romance", "Animation|Children"],
        }
    )
    ratings = pd.DataFrame({"userId": [1, 1, 2], "movieId": [1, 6, 838], "rating": [4.0, 5.0, 3.0]})
    return features.build_movie_features(movies, ratings)


def unit_circle(angles_in_degrees: list[float]) -> np.ndarray:
    radians = np.deg2rad(angles_in_degrees)
    return np.column_stack([np.cos(radians), np.sin(radians)]).astype("float32")


# --- find_movie -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "movie_id"),
    [("6", 6), ("Heat (1995)", 6), ("heat (1995)", 6), ("  HEAT (1995) ", 6), ("sudden", 9), ("Toy Story 2", 3114), ("78499", 78499)],
)
def test_find_movie_by_id_exact_title_any_case_or_unique_part(movie_features, query, movie_id):
    assert recommend.find_movie(movie_features, query) == movie_id


def test_an_exact_title_in_any_case_wins_over_the_titles_that_contain_it():
    movies = pd.DataFrame({"movieId": [1, 2, 3], "title": ["Heat Wave (1990)", "Heat", "Dead Heat (1988)"], "genres": ["Drama"] * 3})
    assert recommend.find_movie(movies, "Heat") == 2
    assert recommend.find_movie(movies, "heat") == 2


def test_a_part_of_several_titles_is_ambiguous_and_lists_each_candidate_with_its_id(movie_features):
    with pytest.raises(recommend.QueryError, match="matches 3 movies") as raised:
        recommend.find_movie(movie_features, "toy story")
    for listed in ("Toy Story (1995) [movieId 1]", "Toy Story 2 (1999) [movieId 3114]", "Toy Story 3 (2010) [movieId 78499]"):
        assert listed in str(raised.value)


def test_a_title_shared_by_two_movies_is_ambiguous_until_given_by_id(movie_features):
    with pytest.raises(recommend.QueryError, match=r"Emma \(1996\) \[movieId 838\]; Emma \(1996\) \[movieId 26958\]"):
        recommend.find_movie(movie_features, "Emma (1996)")
    assert recommend.find_movie(movie_features, "26958") == 26958


def test_an_unknown_title_names_close_matches(movie_features):
    with pytest.raises(recommend.QueryError, match=r"no movie titled 'Toy Stroy \(1995\)'\. Close matches: Toy Story \(1995\)"):
        recommend.find_movie(movie_features, "Toy Stroy (1995)")
    with pytest.raises(recommend.QueryError, match="No close match"):
        recommend.find_movie(movie_features, "zzzzzz")


def test_an_unknown_id_is_looked_up_as_a_title(movie_features):
    with pytest.raises(recommend.QueryError, match="no movie titled '12345'"):
        recommend.find_movie(movie_features, "12345")


# --- similar_movies -------------------------------------------------------------------------------


def test_similar_movies_are_the_nearest_others_nearest_first(movie_features):
    # Angles on the unit circle: the nearest movies to row 0 (0 degrees) are rows 2 (10), 4 (-20), 1 (40).
    embeddings = unit_circle([0, 40, 10, 170, -20, 90, 180])
    listing = recommend.similar_movies(movie_features, embeddings, movie_id=1, k=3)
    assert listing["movieId"].tolist() == [9, 3114, 6]
    assert listing["rank"].tolist() == [1, 2, 3]
    assert listing.columns.tolist() == ["rank", "movieId", "title", "genres", "distance"]
    expected = [2 - 2 * np.cos(np.deg2rad(angle)) for angle in (10, 20, 40)]
    np.testing.assert_allclose(listing["distance"], expected, atol=1e-6)


def test_similar_movies_never_lists_the_movie_itself_even_when_k_asks_for_all(movie_features):
    embeddings = unit_circle([0, 0, 0, 0, 0, 0, 0])  # all equally near: ties go to the lower row
    listing = recommend.similar_movies(movie_features, embeddings, movie_id=838, k=50)
    assert len(listing) == len(movie_features) - 1
    assert 838 not in listing["movieId"].tolist()
    assert listing["movieId"].tolist() == [1, 6, 9, 3114, 26958, 78499]


def test_similar_movies_match_every_row_of_the_full_neighbour_search(movie_features):
    embeddings = unit_circle(list(np.random.default_rng(3).uniform(0, 360, len(movie_features))))
    neighbours, distances = similarity.nearest_neighbours(embeddings, 4)
    for row, movie_id in enumerate(movie_features["movieId"]):
        listing = recommend.similar_movies(movie_features, embeddings, int(movie_id), k=4)
        assert listing["movieId"].tolist() == movie_features["movieId"].to_numpy()[neighbours[row]].tolist()
        np.testing.assert_array_equal(listing["distance"].to_numpy(dtype="float32"), distances[row])


def test_nearest_neighbours_of_chosen_rows_equal_those_rows_of_the_full_search():
    embeddings = np.random.default_rng(0).normal(size=(50, 8))
    embeddings = (embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)).astype("float32")
    every_neighbour, every_distance = similarity.nearest_neighbours(embeddings, 5, block_elements=7 * 50)
    rows = np.array([49, 0, 17, 17])
    neighbours, distances = similarity.nearest_neighbours(embeddings, 5, block_elements=3 * 50, rows=rows)
    np.testing.assert_array_equal(neighbours, every_neighbour[rows])
    np.testing.assert_array_equal(distances, every_distance[rows])


# --- users ----------------------------------------------------------------------------------------


def test_user_features_is_the_users_row_and_an_unknown_user_names_the_range():
    table = pd.DataFrame({"userId": [1, 2, 610], "average_rating": [3.0, 4.0, 2.5]})
    assert recommend.user_features(table, 2)["average_rating"].tolist() == [4.0]
    with pytest.raises(recommend.QueryError, match=r"no user 611 in the ratings \(users 1\.\.610, 3 in all\)\. Close matches: 610"):
        recommend.user_features(table, 611)


def test_rated_movie_ids_come_from_every_split():
    splits = pd.DataFrame(
        {
            "userId": [1, 1, 1, 2],
            "movieId": [10, 20, 30, 40],
            "split": pd.Categorical(["train", "validation", "test", "train"]),
        }
    )
    assert sorted(recommend.rated_movie_ids(splits, 1).tolist()) == [10, 20, 30]


def test_genre_profile_gives_listed_genres_their_rating_and_the_rest_the_mean_of_them(movie_features):
    row = recommend.genre_profile_features([("animation", 5.0), ("Action", 4.0), ("Drama", 1.5)], movie_features, STARS)
    assert len(row) == 1
    genres = ["Action", "Animation", "Children", "Crime", "Drama", "Romance"]
    assert row.columns.tolist() == [
        "userId", "rating_count", "average_rating", "log_rating_count", "shrunk_mean", "rating_std",
        *(f"avg_rating_{g}" for g in genres), *(f"share_{g}" for g in genres), *(f"preference_{g}" for g in genres),
    ]
    mean = (5.0 + 4.0 + 1.5) / 3
    assert row.iloc[0][features.user_genre_columns(row)].tolist() == pytest.approx([4.0, 5.0, mean, mean, 1.5, mean])
    assert row["average_rating"].iloc[0] == pytest.approx(mean)


def test_genre_profile_has_the_columns_of_a_real_users_row(movie_features):
    ratings = pd.DataFrame({"userId": [1], "movieId": [6], "rating": [4.0]})
    real = features.build_user_genre_averages([1], ratings, movie_features)
    profile = recommend.genre_profile_features([("Crime", 4.0)], movie_features, STARS)
    assert profile.columns.tolist() == real.columns.tolist()


@pytest.mark.parametrize(
    ("ratings", "message"),
    [
        ([("Animaton", 5.0)], r"no genre 'Animaton'\. Close matches: Animation.*Genres: Action, Animation,"),
        ([("Horror", 2.0)], r"no genre 'Horror'\."),
        ([("Drama", 3.0), ("drama", 4.0)], "genre 'Drama' is rated twice"),
        ([("Drama", 7.0)], "genre 'Drama' rated 7.0: ratings lie between 0.5 and 5.0 stars"),
        ([("Drama", 0.0)], "ratings lie between 0.5 and 5.0 stars"),
        ([], "rate at least one genre"),
    ],
)
def test_genre_profile_refuses_unknown_repeated_or_out_of_range_genres(movie_features, ratings, message):
    with pytest.raises(recommend.QueryError, match=message):
        recommend.genre_profile_features(ratings, movie_features, STARS)


# --- predictions ----------------------------------------------------------------------------------


def test_predicted_stars_are_scale_times_dot_plus_offset_and_biases_clipped_to_the_rating_range():
    users = TowerOutputs(vectors=np.array([[1.0, 2.0]], dtype="float32"), biases=np.array([0.25], dtype="float32"))
    movies = TowerOutputs(vectors=np.array([[1.0, 0.0], [0.0, -1.0], [3.0, 3.0]], dtype="float32"), biases=np.array([0.0, -0.5, 0.0], dtype="float32"))
    scorer = Scorer(users, movies, scale=0.5, offset=3.0)
    # 0.5·1 + 3 + 0.25 + 0 = 3.75; 0.5·(-2) + 3 + 0.25 - 0.5 = 1.75; 0.5·9 + 3.25 = 7.75, clipped to 5.
    np.testing.assert_allclose(recommend.predicted_stars(scorer, STARS), [3.75, 1.75, 5.0], atol=1e-6)


def test_top_predictions_rank_by_predicted_rating_skip_excluded_movies_and_break_ties_by_row(movie_features):
    stars = np.array([4.0, 5.0, 3.0, 4.5, 4.5, 1.0, 4.9])
    listing = recommend.top_predictions(movie_features, stars, k=3, exclude_movie_ids=[6])
    assert listing["movieId"].tolist() == [78499, 838, 3114]
    assert listing["predicted_rating"].tolist() == [4.9, 4.5, 4.5]
    assert listing.columns.tolist() == ["rank", "movieId", "title", "genres", "predicted_rating"]
    assert len(recommend.top_predictions(movie_features, stars, k=100, exclude_movie_ids=[1, 6])) == len(movie_features) - 2


def test_top_predictions_can_leave_out_movies_with_few_training_ratings(movie_features):
    # The fixture's training ratings: movies 1, 6 and 838 have one each, every other movie none.
    stars = np.array([4.0, 5.0, 3.0, 4.5, 4.5, 1.0, 4.9])
    listing = recommend.top_predictions(movie_features, stars, k=5, min_ratings=1)
    assert listing["movieId"].tolist() == [6, 838, 1]
