"""The recommend module's answers on small hand-made tables whose right answers can be worked out by hand."""

import numpy as np
import pandas as pd
import pytest

from recsys_pipeline import features, recommend, similarity
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
        recommend.find_movie(movie_features, "toy")
    for listed in ("Toy Story (1995) [movieId 1]", "Toy Story 2 (1999) [movieId 3114]", "Toy Story 3 (2010) [movieId 78499]"):
        assert listed in str(raised.value)


MOVIELENS_TITLES = {
    2571: "Matrix, The (1999)",
    6365: "Matrix Reloaded, The (2003)",
    73: "Misérables, Les (1995)",
    1873: "Misérables, Les (1998)",
    47: "Seven (a.k.a. Se7en) (1995)",
    29: "City of Lost Children, The (Cité des enfants perdus, La) (1995)",
    8195: "Avventura, L' (Adventure, The) (1960)",
    6: "Heat (1995)",
    103372: "Heat, The (2013)",
    176371: "Blade Runner 2049 (2017)",
    1: "Toy Story (1995)",
    3114: "Toy Story 2 (1999)",
    1411: "Hamlet (1996)",
    3598: "Hamlet (2000)",
}


@pytest.fixture
def movielens_titles() -> pd.DataFrame:
    return pd.DataFrame({"movieId": list(MOVIELENS_TITLES), "title": list(MOVIELENS_TITLES.values())})


@pytest.mark.parametrize(
    ("query", "movie_id"),
    [
        ("The Matrix", 2571),  # MovieLens moves a leading article behind the title
        ("the matrix (1999)", 2571),
        ("THE MATRIX 1999", 2571),
        ("Matrix, The", 2571),
        ("Matrix", 2571),  # the title without its article, before the titles that contain it
        ("the matrix reloaded", 6365),
        ("Les Misérables (1998)", 1873),  # foreign articles too
        ("les miserables 1995", 73),  # accents optional
        ("Se7en", 47),  # "(a.k.a. ...)" names count
        ("seven 1995", 47),
        ("La Cité des enfants perdus", 29),  # so do alternate titles in parentheses, articles moved back
        ("city of lost children", 29),
        ("L'Avventura", 8195),
        ("the adventure", 8195),
        ("toy story", 1),  # the year is optional when the title is unique without it
        ("Toy Story 1995", 1),
        ("toy story (1995)", 1),
        ("Heat", 6),  # the title as written before the one without its article
        ("The Heat", 103372),
        ("heat 2013", 103372),
        ("Blade Runner 2049", 176371),  # a number that is part of the title, not its year
    ],
)
def test_find_movie_understands_movielens_title_conventions(movielens_titles, query, movie_id):
    assert recommend.find_movie(movielens_titles, query) == movie_id


@pytest.mark.parametrize(
    ("query", "candidates"),
    [("Les Misérables", [73, 1873]), ("hamlet", [1411, 3598]), ("matrix (2003)", None), ("toy story 2010", None)],
)
def test_find_movie_still_refuses_ambiguous_or_unknown_titles(movielens_titles, query, candidates):
    with pytest.raises(recommend.QueryError) as raised:
        recommend.find_movie(movielens_titles, query)
    message = str(raised.value)
    if candidates:
        assert f"matches {len(candidates)} movies" in message
        assert all(f"{MOVIELENS_TITLES[movie_id]} [movieId {movie_id}]" in message for movie_id in candidates)
    else:
        assert message.startswith(f"no movie titled '{query}'")


def test_an_unknown_title_written_naturally_is_matched_closely_to_the_stored_title(movielens_titles):
    with pytest.raises(recommend.QueryError, match=r"no movie titled 'The Matrx'\. Close matches: Matrix, The \(1999\)"):
        recommend.find_movie(movielens_titles, "The Matrx")


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


def test_genre_profile_gives_listed_genres_their_rating_and_the_rest_the_mean_of_them(movie_features):
    row = recommend.visitor_features([("animation", 5.0), ("Action", 4.0), ("Drama", 1.5)], (), movie_features, STARS)
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
    profile = recommend.visitor_features([("Crime", 4.0)], (), movie_features, STARS)
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
        recommend.visitor_features(ratings, (), movie_features, STARS)


# --- predictions ----------------------------------------------------------------------------------


def test_ranked_listing_orders_by_unclipped_score_skips_excluded_movies_and_breaks_ties_by_row(movie_features):
    scores = np.array([7.0, 9.5, 7.0, 12.0, 1.0])[: len(movie_features)]
    excluded = np.zeros(len(scores), dtype=bool)
    excluded[1] = True
    listing = recommend.ranked_listing(movie_features, scores, 3, excluded)
    expected_rows = [3, 0, 2][: len(listing)]
    assert listing["movieId"].tolist() == movie_features["movieId"].to_numpy()[expected_rows].tolist()
    assert listing["rank"].tolist() == list(range(1, len(listing) + 1))
    assert listing["score"].iloc[0] == 12.0  # never clipped to the rating range


def test_genre_profile_candidates_drop_disliked_genres_and_keep_only_loved_ones_when_given():
    table = pd.DataFrame(
        {
            "movieId": [1, 2, 3, 4],
            "rating_count": [1, 1, 1, 1],
            "genre_Horror": [1.0, 0.0, 0.0, 1.0],
            "genre_Comedy": [0.0, 1.0, 0.0, 1.0],
            "genre_Drama": [0.0, 0.0, 1.0, 0.0],
        }
    )
    visitors = recommend.Visitors(table, STARS)
    np.testing.assert_array_equal(visitors.candidates([("comedy", 5.0), ("Horror", 1.0)]), [False, True, False, False])
    # Nothing loved: every movie without a disliked genre, unmentioned genres included.
    np.testing.assert_array_equal(visitors.candidates([("Horror", 2.0)]), [False, True, True, False])
    # A neutral rating neither admits nor excludes.
    np.testing.assert_array_equal(visitors.candidates([("Drama", 3.5)]), [True, True, True, True])


def test_a_visitor_who_liked_movies_gets_the_row_of_a_user_who_rated_them_top_marks(movie_features):
    real = features.build_user_genre_averages([recommend.GENRE_PROFILE_USER], pd.DataFrame({"userId": 0, "movieId": [6, 838, 1], "rating": 5.0}), movie_features)
    visitor = recommend.visitor_features([], [6, 838, 1], movie_features, STARS)
    pd.testing.assert_frame_equal(visitor, real, check_exact=True)


def test_served_listing_is_the_users_rows_in_rank_order_with_genres(movie_features):
    served = pd.DataFrame(
        {"userId": [1, 1, 2], "rank": [2, 1, 1], "movieId": movie_features["movieId"].iloc[[0, 1, 2]].to_numpy(), "title": "t", "score": [0.5, 0.9, 0.1]}
    )
    listing = recommend.served_listing(served, movie_features, 1, 10)
    assert listing["movieId"].tolist() == movie_features["movieId"].iloc[[1, 0]].tolist()
    assert listing["score"].tolist() == [0.9, 0.5]
    assert {"rank", "movieId", "title", "genres", "score"} <= set(listing.columns)
    with pytest.raises(recommend.QueryError, match="no user 7"):
        recommend.served_listing(served, movie_features, 7, 10)
