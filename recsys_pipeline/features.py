"""Movie and user features, computed from training ratings only and without per-row Python loops."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

NO_GENRES = "(no genres listed)"
GENRE_PREFIX = "genre_"
USER_GENRE_PREFIX = "avg_rating_"
USER_SHARE_PREFIX = "share_"
USER_PREFERENCE_PREFIX = "preference_"
# Pseudo-ratings at the prior that shrink a mean over few ratings towards it: (sum + k·prior) / (n + k).
SHRINKAGE = 5.0
# Columns computed from rating values ("target statistics"). A training rating must not see its own
# value through them, so training reads them out of fold (see out_of_fold_tables); counts and shares
# only say what was rated and come from every training rating.
MOVIE_TARGET_COLUMNS = ["average_rating", "shrunk_mean", "rating_std"]
USER_TARGET_COLUMNS = ["average_rating", "shrunk_mean", "rating_std"]
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
    training rating gets the global training mean as its average and a count of 0. `shrunk_mean`
    is (sum + 5·global mean) / (count + 5), so a movie rated once by an enthusiast stays near the
    mean; `rating_std` is the population standard deviation (0 below two ratings).
    """
    movies = movies.sort_values("movieId", ignore_index=True)
    year = parse_release_year(movies["title"])
    stats = train_ratings.groupby("movieId")["rating"].agg(["mean", "count", "sum", "std"])
    global_mean = float(train_ratings["rating"].mean())
    count = stats["count"].reindex(movies["movieId"]).fillna(0).to_numpy()
    total = stats["sum"].reindex(movies["movieId"]).fillna(0.0).to_numpy()
    features = pd.DataFrame(
        {
            "movieId": movies["movieId"].to_numpy(),
            "title": movies["title"].to_numpy(),
            "genres": movies["genres"].to_numpy(),
            "year": year.fillna(year.median() if year.notna().any() else 0.0).to_numpy(),
            "year_imputed": year.isna().to_numpy(),
            "average_rating": stats["mean"].reindex(movies["movieId"]).fillna(global_mean).to_numpy(),
            "rating_count": count.astype("int64"),
            "log_rating_count": np.log1p(count),
            "shrunk_mean": (total + SHRINKAGE * global_mean) / (count + SHRINKAGE),
            "rating_std": _population_std(stats["std"].reindex(movies["movieId"]).fillna(0.0).to_numpy(), count),
        }
    )
    return pd.concat([features, one_hot_genres(movies["genres"], genre_vocabulary(movies["genres"]))], axis=1)


def _population_std(sample_std: np.ndarray, count: np.ndarray) -> np.ndarray:
    return np.where(count > 1, sample_std * np.sqrt(np.maximum(count - 1, 0) / np.maximum(count, 1)), 0.0)


def notebook_movie_input_columns(movie_features: pd.DataFrame) -> list[str]:
    """The notebook's movie-tower inputs: year, average rating and the one-hot genres."""
    return ["year", "average_rating", *genre_columns(movie_features)]


def notebook_user_input_columns(user_features: pd.DataFrame) -> list[str]:
    """The notebook's user-tower inputs: the user's average rating per genre."""
    return user_genre_columns(user_features)


def movie_input_columns(movie_features: pd.DataFrame) -> list[str]:
    """Movie-tower inputs: year, genres, how often the movie is rated, its shrunk mean and spread."""
    return ["year", *genre_columns(movie_features), "log_rating_count", "shrunk_mean", "rating_std"]


def user_input_columns(user_features: pd.DataFrame) -> list[str]:
    """User-tower inputs: activity, genre shares, shrunk genre preferences, shrunk mean and spread."""
    preferences = [c for c in user_features.columns if c.startswith(USER_PREFERENCE_PREFIX)]
    return ["log_rating_count", *user_share_columns(user_features), *preferences, "shrunk_mean", "rating_std"]


def build_user_genre_averages(user_ids: Sequence[int], train_ratings: pd.DataFrame, movie_features: pd.DataFrame) -> pd.DataFrame:
    """One row per user in `user_ids`: training rating statistics overall and per genre.

    `average_rating` and `avg_rating_<genre>` are the notebook's plain averages. The model reads
    `share_<genre>` (the fraction of the user's ratings in the genre), `shrunk_mean`
    ((sum + 5·global mean) / (n + 5)), `preference_<genre>` (the genre's mean shrunk towards the
    user's shrunk mean with 5 pseudo-ratings, minus that mean), `rating_std` and `log_rating_count`.

    Per-genre sums and counts add each rating's genre row into its user's row (`_per_user_sums`).
    Where a user rated no movie of a genre, the user's own average stands in (no evidence of a taste
    either way); a user with no training rating at all gets the global training mean everywhere.
    """
    users = pd.Index(np.sort(np.asarray(user_ids)), name="userId")
    genres = genre_columns(movie_features)
    user_codes = users.get_indexer(train_ratings["userId"])
    movie_codes = pd.Index(movie_features["movieId"]).get_indexer(train_ratings["movieId"])
    if (user_codes < 0).any() or (movie_codes < 0).any():
        raise ValueError("training ratings refer to users or movies outside the given tables")
    statistics = user_rating_statistics(
        user_codes, movie_codes, train_ratings["rating"].to_numpy(dtype="float64"), movie_features[genres].to_numpy(dtype="float64"), len(users), genres
    )
    return pd.DataFrame({"userId": users.to_numpy(), **statistics})


def user_rating_statistics(
    user_codes: np.ndarray, movie_codes: np.ndarray, ratings: np.ndarray, genre_matrix: np.ndarray, n_users: int, genres: Sequence[str]
) -> dict[str, np.ndarray]:
    """build_user_genre_averages' columns (after userId) as arrays, for users 0..n_users-1: rating i is
    user user_codes[i]'s `ratings[i]` stars for the movie whose genre row is genre_matrix[movie_codes[i]]
    (`genres` names its columns). Plain numpy, so one visitor's row costs microseconds."""
    genre_counts = _per_user_sums(user_codes, movie_codes, np.ones_like(ratings), genre_matrix, n_users)
    genre_sums = _per_user_sums(user_codes, movie_codes, ratings, genre_matrix, n_users)

    counts = np.bincount(user_codes, minlength=n_users)
    totals = np.bincount(user_codes, weights=ratings, minlength=n_users)
    global_mean = float(ratings.mean())
    user_mean = np.divide(totals, counts, out=np.full(n_users, global_mean), where=counts > 0)
    averages = np.divide(genre_sums, genre_counts, out=np.repeat(user_mean[:, None], len(genres), axis=1), where=genre_counts > 0)

    shrunk_mean = (totals + SHRINKAGE * global_mean) / (counts + SHRINKAGE)
    preference = (genre_sums + SHRINKAGE * shrunk_mean[:, None]) / (genre_counts + SHRINKAGE) - shrunk_mean[:, None]
    squares = np.bincount(user_codes, weights=ratings**2, minlength=n_users)
    variance = np.divide(squares, counts, out=np.zeros(n_users), where=counts > 0) - user_mean**2
    names = [genre.removeprefix(GENRE_PREFIX) for genre in genres]
    shares = genre_counts / np.maximum(counts, 1)[:, None]
    return {
        "rating_count": counts.astype("int64"),
        "average_rating": user_mean,
        "log_rating_count": np.log1p(counts),
        "shrunk_mean": shrunk_mean,
        "rating_std": np.where(counts > 1, np.sqrt(np.maximum(variance, 0.0)), 0.0),
        **{USER_GENRE_PREFIX + name: averages[:, column] for column, name in enumerate(names)},
        **{USER_SHARE_PREFIX + name: shares[:, column] for column, name in enumerate(names)},
        **{USER_PREFERENCE_PREFIX + name: preference[:, column] for column, name in enumerate(names)},
    }


def _per_user_sums(user_codes: np.ndarray, movie_codes: np.ndarray, weights: np.ndarray, movie_rows: np.ndarray, n_users: int) -> np.ndarray:
    """Per user, the sum of weight x movie row over the user's ratings: the product of the sparse
    (users x movies) weight matrix with `movie_rows`, added up in (user, movie) order as scipy's CSR
    product does, so the result is the same to the bit, without importing scipy in the step."""
    order = np.lexsort((movie_codes, user_codes))
    users, movies, weights = user_codes[order], movie_codes[order], weights[order]
    sums = np.zeros((n_users, movie_rows.shape[1]))
    for column in range(movie_rows.shape[1]):
        sums[:, column] = np.bincount(users, weights=weights * movie_rows[movies, column], minlength=n_users)
    return sums


def user_share_columns(user_features: pd.DataFrame) -> list[str]:
    return [c for c in user_features.columns if c.startswith(USER_SHARE_PREFIX)]


def user_target_columns(user_features: pd.DataFrame) -> list[str]:
    preferences = [c for c in user_features.columns if c.startswith(USER_PREFERENCE_PREFIX)]
    return [*USER_TARGET_COLUMNS, *user_genre_columns(user_features), *preferences]


def rating_folds(n_ratings: int, folds: int, seed: int) -> np.ndarray:
    """A fold number in 1..folds for each training rating, drawn reproducibly from `seed`."""
    return np.random.default_rng(seed).integers(1, folds + 1, size=n_ratings).astype("int32")


def out_of_fold_tables(
    train_ratings: pd.DataFrame, fold: np.ndarray, folds: int, user_features: pd.DataFrame, movie_features: pd.DataFrame
) -> tuple[list[pd.DataFrame], list[pd.DataFrame]]:
    """Per fold f in 1..folds, the user and movie tables with target statistics from the training
    ratings outside fold f (cross-fitting, as scikit-learn's TargetEncoder does).

    A training rating in fold f reads table f, so no input contains its own rating; validation,
    test and recommendations read the full tables (`user_features`, `movie_features`). Counts and
    shares are kept from the full tables. Memory is folds × (users + movies) rows, never per rating.
    """
    movies = movie_features[["movieId", "title", "genres"]]
    user_ids = user_features["userId"].to_numpy()
    user_tables, movie_tables = [], []
    for f in range(1, folds + 1):
        outside = train_ratings[fold != f]
        movie_table = build_movie_features(movies, outside)
        user_table = build_user_genre_averages(user_ids, outside, movie_table)
        movie_kept, user_kept = movie_features.copy(), user_features.copy()
        movie_kept[MOVIE_TARGET_COLUMNS] = movie_table[MOVIE_TARGET_COLUMNS].to_numpy()
        user_target = user_target_columns(user_features)
        user_kept[user_target] = user_table[user_target].to_numpy()
        user_tables.append(user_kept)
        movie_tables.append(movie_kept)
    return user_tables, movie_tables
