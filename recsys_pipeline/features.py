"""Movie and user features, computed from training ratings only and without per-row Python loops."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

NO_GENRES = "(no genres listed)"
GENRE_PREFIX = "genre_"
USER_GENRE_PREFIX = "avg_rating_"
# A year at the end of the title, e.g. "Heat (1995)" or a series' "(2006–2007)", whose first year counts.
YEAR_PATTERN = r"\((\d{4})(?:\s*[-–]\s*\d{4})?\)\s*$"


def parse_release_year(titles: pd.Series) -> pd.Series:
    """The release year at the end of each title, NaN where the title carries none."""
    return titles.str.extract(YEAR_PATTERN, expand=False).astype("float64")


def genre_vocabulary(genres: pd.Series) -> list[str]:
    """Every genre named in `genres` (pipe-separated), sorted, without the "(no genres listed)" marker."""
    names = genres.str.split("|").explode()
    return sorted(set(names.dropna()) - {NO_GENRES, ""})


def one_hot_genres(genres: pd.Series, vocabulary: Sequence[str]) -> pd.DataFrame:
    """One float32 column per genre in `vocabulary`; a movie with no listed genre is all zeros."""
    dummies = genres.str.get_dummies(sep="|").reindex(columns=list(vocabulary), fill_value=0)
    dummies.columns = [GENRE_PREFIX + name for name in vocabulary]
    return dummies.astype("float32")


def genre_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c.startswith(GENRE_PREFIX)]


def user_genre_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c.startswith(USER_GENRE_PREFIX)]


def build_movie_features(movies: pd.DataFrame, train_ratings: pd.DataFrame) -> pd.DataFrame:
    """One row per movie, sorted by movieId: year, one-hot genres and training rating statistics.

    A title without a year gets the median known year and `year_imputed = True`. A movie with no
    training rating gets the global training mean as its average and a count of 0.
    """
    movies = movies.sort_values("movieId", ignore_index=True)
    year = parse_release_year(movies["title"])
    stats = train_ratings.groupby("movieId")["rating"].agg(["mean", "count"])
    global_mean = float(train_ratings["rating"].mean())
    features = pd.DataFrame(
        {
            "movieId": movies["movieId"].to_numpy(),
            "title": movies["title"].to_numpy(),
            "genres": movies["genres"].to_numpy(),
            "year": year.fillna(year.median() if year.notna().any() else 0.0).to_numpy(),
            "year_imputed": year.isna().to_numpy(),
            "average_rating": stats["mean"].reindex(movies["movieId"]).fillna(global_mean).to_numpy(),
            "rating_count": stats["count"].reindex(movies["movieId"]).fillna(0).astype("int64").to_numpy(),
        }
    )
    return pd.concat([features, one_hot_genres(movies["genres"], genre_vocabulary(movies["genres"]))], axis=1)


def movie_input_columns(movie_features: pd.DataFrame) -> list[str]:
    """The notebook's movie-tower inputs: year, average rating and the one-hot genres."""
    return ["year", "average_rating", *genre_columns(movie_features)]


def user_input_columns(user_features: pd.DataFrame) -> list[str]:
    """The notebook's user-tower inputs: the user's average rating per genre."""
    return user_genre_columns(user_features)


def build_user_genre_averages(user_ids: Sequence[int], train_ratings: pd.DataFrame, movie_features: pd.DataFrame) -> pd.DataFrame:
    """One row per user in `user_ids`: average training rating overall and per genre.

    Per-genre sums and counts are two sparse products (users x movies) @ (movies x genres). Where a
    user rated no movie of a genre, the user's own average stands in (no evidence of a taste either
    way); a user with no training rating at all gets the global training mean everywhere.
    """
    import scipy.sparse as sp  # imported here: every Dagster step loads this module, few need scipy

    users = pd.Index(np.sort(np.asarray(user_ids)), name="userId")
    genres = genre_columns(movie_features)
    user_codes = users.get_indexer(train_ratings["userId"])
    movie_codes = pd.Index(movie_features["movieId"]).get_indexer(train_ratings["movieId"])
    if (user_codes < 0).any() or (movie_codes < 0).any():
        raise ValueError("training ratings refer to users or movies outside the given tables")
    ratings = train_ratings["rating"].to_numpy(dtype="float64")
    shape = (len(users), len(movie_features))
    rated = sp.csr_matrix((np.ones_like(ratings), (user_codes, movie_codes)), shape=shape)
    rating_sums = sp.csr_matrix((ratings, (user_codes, movie_codes)), shape=shape)
    genre_matrix = movie_features[genres].to_numpy(dtype="float64")
    genre_counts = rated @ genre_matrix
    genre_sums = rating_sums @ genre_matrix

    counts = np.bincount(user_codes, minlength=len(users))
    totals = np.bincount(user_codes, weights=ratings, minlength=len(users))
    global_mean = float(ratings.mean())
    user_mean = np.divide(totals, counts, out=np.full(len(users), global_mean), where=counts > 0)
    averages = np.divide(genre_sums, genre_counts, out=np.repeat(user_mean[:, None], len(genres), axis=1), where=genre_counts > 0)

    table = pd.DataFrame({"userId": users.to_numpy(), "rating_count": counts.astype("int64"), "average_rating": user_mean})
    per_genre = pd.DataFrame(averages, columns=[USER_GENRE_PREFIX + g.removeprefix(GENRE_PREFIX) for g in genres])
    return pd.concat([table, per_genre], axis=1)
