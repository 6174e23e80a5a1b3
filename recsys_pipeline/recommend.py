"""Answering one question from the materialized artifacts: movies like this one, movies for this user.

Plain functions on the artifact tables and arrays that return DataFrames; the `recsys` command
(recsys_pipeline.cli) loads the artifacts and prints what these return. Nothing here imports
TensorFlow: passing a user and the movies through the model is the caller's step.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from recsys_pipeline import features, similarity
from recsys_pipeline.evaluation import clip_stars
from recsys_pipeline.standardisation import TargetScaler

CLOSE_MATCHES = 5
AMBIGUOUS_LISTED = 20
# The id of a user described only by genre ratings; it only labels that user's one feature row.
GENRE_PROFILE_USER = 0
MOVIE_COLUMNS = ["movieId", "title", "genres"]


class QueryError(ValueError):
    """A question the artifacts cannot answer as asked: bad values, an unknown or ambiguous name."""


def close_matches(query: str, candidates: Iterable[str]) -> list[str]:
    """Up to five of `candidates` resembling `query` regardless of case, best first."""
    by_lowercase = {str(candidate).lower(): str(candidate) for candidate in candidates}
    found = difflib.get_close_matches(query.lower(), list(by_lowercase), n=CLOSE_MATCHES, cutoff=0.5)
    return [by_lowercase[match] for match in found]


def _suggest(query: str, candidates: Iterable[str]) -> str:
    matches = close_matches(query, candidates)
    return f"Close matches: {'; '.join(matches)}." if matches else "No close match."


# --- movies ---------------------------------------------------------------------------------------


def find_movie(movie_features: pd.DataFrame, query: str) -> int:
    """The movieId that `query` names: a movieId, the exact title, the title in any case, or a part of exactly one title.

    A title shared by several movies, or a part found in several titles, is ambiguous: the error
    lists the candidates with their ids. An unknown title's error lists close matches.
    """
    query = query.strip()
    if query.isdigit() and (movie_features["movieId"] == int(query)).any():
        return int(query)
    titles = movie_features["title"]
    lowercase = titles.str.lower()
    for matching in (titles == query, lowercase == query.lower(), lowercase.str.contains(query.lower(), regex=False)):
        found = movie_features.loc[matching.to_numpy(), ["movieId", "title"]]
        if len(found) == 1:
            return int(found["movieId"].iloc[0])
        if len(found) > 1:
            listed = "; ".join(f"{title} [movieId {movie_id}]" for movie_id, title in found.head(AMBIGUOUS_LISTED).itertuples(index=False))
            more = f" and {len(found) - AMBIGUOUS_LISTED} more" if len(found) > AMBIGUOUS_LISTED else ""
            raise QueryError(f"'{query}' matches {len(found)} movies: {listed}{more}. Give the exact title or the movieId.")
    raise QueryError(f"no movie titled '{query}'. {_suggest(query, titles)}")


def _movie_row(movie_features: pd.DataFrame, movie_id: int) -> int:
    rows = np.flatnonzero(movie_features["movieId"].to_numpy() == movie_id)
    if len(rows) == 0:
        raise QueryError(f"no movie with movieId {movie_id}.")
    return int(rows[0])


def _listing(movie_features: pd.DataFrame, rows: np.ndarray, score_column: str, scores: np.ndarray) -> pd.DataFrame:
    """Ranked movies: rank 1.., movieId, title, genres and the score they were ranked by."""
    listing = movie_features.iloc[rows][MOVIE_COLUMNS].reset_index(drop=True)
    listing.insert(0, "rank", np.arange(1, len(rows) + 1))
    listing[score_column] = np.asarray(scores, dtype="float64")
    return listing


def similar_movies(movie_features: pd.DataFrame, movie_embeddings: np.ndarray, movie_id: int, k: int) -> pd.DataFrame:
    """The `k` movies nearest to `movie_id` by squared embedding distance, nearest first, never the movie itself.

    The exact blocked search of the similar_movies asset (same distances, same tie-breaking), run
    for one movie and any k. Row i of `movie_embeddings` belongs to row i of `movie_features`.
    """
    neighbours, distances = similarity.nearest_neighbours(np.asarray(movie_embeddings), k, rows=[_movie_row(movie_features, movie_id)])
    return _listing(movie_features, neighbours[0], "distance", distances[0])


# --- users ----------------------------------------------------------------------------------------


def user_features(user_genre_averages: pd.DataFrame, user_id: int) -> pd.DataFrame:
    """The one user_genre_averages row of `user_id`; an unknown user's error gives the known range and close ids."""
    row = user_genre_averages[user_genre_averages["userId"] == user_id]
    if row.empty:
        ids = user_genre_averages["userId"]
        raise QueryError(f"no user {user_id} in the ratings (users {ids.min()}..{ids.max()}, {len(ids)} in all). {_suggest(str(user_id), ids.astype(str))}")
    return row


def rated_movie_ids(rating_splits: pd.DataFrame, user_id: int) -> np.ndarray:
    """Every movie `user_id` rated in any split: known tastes are not recommendations."""
    return rating_splits.loc[rating_splits["userId"] == user_id, "movieId"].unique()


def genre_profile_features(genre_ratings: Sequence[tuple[str, float]], movie_features: pd.DataFrame, target: TargetScaler) -> pd.DataFrame:
    """The user_genre_averages row of a new user known only by a rating per genre (names in any case).

    Each rated genre becomes one rating of a stand-in movie of that genre alone, so
    features.build_user_genre_averages builds the row exactly as for a real user: each listed genre
    gets its rating, every other genre the user's own average of the given ratings.
    """
    columns = features.genre_columns(movie_features)
    vocabulary = [column.removeprefix(features.GENRE_PREFIX) for column in columns]
    by_lowercase = {genre.lower(): genre for genre in vocabulary}
    rated: dict[str, float] = {}
    for name, stars in genre_ratings:
        genre = by_lowercase.get(name.strip().lower())
        if genre is None:
            raise QueryError(f"no genre '{name}'. {_suggest(name, vocabulary)} Genres: {', '.join(vocabulary)}.")
        if genre in rated:
            raise QueryError(f"genre '{genre}' is rated twice.")
        if not target.minimum <= stars <= target.maximum:
            raise QueryError(f"genre '{genre}' rated {stars}: ratings lie between {target.minimum} and {target.maximum} stars.")
        rated[genre] = float(stars)
    if not rated:
        raise QueryError("rate at least one genre, e.g. 'Comedy=4'.")
    stand_ins = pd.DataFrame(np.eye(len(columns))[[vocabulary.index(genre) for genre in rated]], columns=columns)
    stand_ins.insert(0, "movieId", np.arange(len(rated)))
    ratings = pd.DataFrame({"userId": GENRE_PROFILE_USER, "movieId": stand_ins["movieId"], "rating": list(rated.values())})
    return features.build_user_genre_averages([GENRE_PROFILE_USER], ratings, stand_ins)


def predicted_stars(scorer, target: TargetScaler) -> np.ndarray:
    """Every movie's predicted rating in stars for the scorer's one user, clipped to the rating range.

    `scorer` is a two_tower.Scorer (or anything with `scores(user_rows)`) holding that user in row 0.
    """
    return clip_stars(scorer.scores(np.array([0]))[0], target.minimum, target.maximum)


def top_predictions(
    movie_features: pd.DataFrame, stars: np.ndarray, k: int, exclude_movie_ids: Iterable[int] = (), min_ratings: int = 0
) -> pd.DataFrame:
    """The `k` movies with the highest predicted rating, skipping `exclude_movie_ids`; ties go to the earlier row.

    `min_ratings` leaves out movies with fewer training ratings: a movie's average rating is a model
    input, so one enthusiastic rating can lift an obscure movie to the top.
    """
    eligible = ~movie_features["movieId"].isin(list(exclude_movie_ids)) & (movie_features["rating_count"] >= min_ratings)
    candidates = np.flatnonzero(eligible.to_numpy())
    best = candidates[np.argsort(-np.asarray(stars)[candidates], kind="stable")[:k]]
    return _listing(movie_features, best, "predicted_rating", np.asarray(stars)[best])
