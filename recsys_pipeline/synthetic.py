"""Synthetic MovieLens data in the GroupLens ml-latest-small CSV format, at any size.

The data has the shape that matters to a recommender: Zipf-like movie popularity, long-tailed
user activity, multi-genre movies, titles without a year, non-ASCII titles, and ratings a
content-based model can learn (user and movie biases plus a user's taste for the movie's genres).
Everything is vectorised numpy: MovieLens 25M's shape takes about a minute and under 3 GB on two cores.

    python -m recsys_pipeline.synthetic OUT_DIR --users 162541 --movies 62423 --ratings 25000095
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_pipeline.atomic import atomic_target

# name: (share of ml-latest-small movies listing it, offset to the mean rating of its movies)
GENRES: dict[str, tuple[float, float]] = {
    "Action": (0.19, -0.10),
    "Adventure": (0.13, 0.00),
    "Animation": (0.06, 0.15),
    "Children": (0.07, -0.15),
    "Comedy": (0.39, -0.10),
    "Crime": (0.12, 0.15),
    "Documentary": (0.05, 0.30),
    "Drama": (0.45, 0.15),
    "Fantasy": (0.08, -0.05),
    "Film-Noir": (0.01, 0.40),
    "Horror": (0.10, -0.30),
    "IMAX": (0.02, 0.10),
    "Musical": (0.03, 0.05),
    "Mystery": (0.06, 0.10),
    "Romance": (0.16, 0.00),
    "Sci-Fi": (0.10, -0.05),
    "Thriller": (0.19, -0.05),
    "War": (0.04, 0.30),
    "Western": (0.02, 0.10),
}
GENRE_NAMES = list(GENRES)
NO_GENRES = "(no genres listed)"
NO_GENRES_SHARE = 0.003
NO_YEAR_SHARE = 0.015
FIRST_YEAR, LAST_YEAR = 1920, 2018
FIRST_TIMESTAMP, LAST_TIMESTAMP = 820454400, 1546300799  # 1996-01-01 .. 2018-12-31 23:59:59 UTC

ADJECTIVES = [
    "Silent", "Last", "Dark", "Golden", "Broken", "Hidden", "Wild", "Lost", "Crimson", "Eternal",
    "Little", "Great", "Secret", "Midnight", "Frozen", "Burning", "Electric", "Lonely", "Brave", "Sweet",
    "Fatal", "Distant", "Hollow", "Savage", "Quiet", "Bitter", "Shining", "Forgotten", "Final", "Stolen",
    "Belle", "Dernière", "Pequeña", "Schöne", "Célèbre",
]
NOUNS = [
    "River", "Summer", "Night", "City", "Heart", "Storm", "Kingdom", "Road", "Garden", "Mirror",
    "Empire", "Island", "Shadow", "Game", "Dream", "Machine", "Harbor", "Voyage", "Promise", "Witness",
    "Frontier", "Castle", "Stranger", "Planet", "Detective", "Winter", "Alibi", "Horizon", "Ghost", "Station",
    "Café", "Señorita", "Amélie", "Noël", "Fiancée", "Mañana", "Château", "Straße",
]
# Endings of the title before the year; ", The" is MovieLens' way of sorting articles and needs CSV quoting.
SUFFIXES = ["", ", The", ", A", " 2", " II", ": The Beginning", " of the Night"]
SUFFIX_SHARES = [0.70, 0.12, 0.04, 0.05, 0.03, 0.03, 0.03]
TAGS = [
    "atmospheric", "funny", "twist ending", "based on a book", "thought-provoking", "visually appealing",
    "dark comedy", "sci-fi", "classic", "surreal", "quirky", "time travel", "dystopia", "superhero",
    "Oscar (Best Picture)", "great soundtrack", "cinematography", "true story", "nonlinear", "violence",
    "heartwarming", "predictable", "overrated", "In Netflix queue", "Studio Ghibli", "Pixar",
    "Christopher Nolan", "Pedro Almodóvar", "Amélie", "mind-bending", "social commentary", "war, politics",
    "boring", "bad acting", "murder", "space", "inspirational", "disturbing", "romance", "WWII",
]

POPULARITY_OFFSET = 40  # flattens the Zipf head: the top movie holds ~0.3% of ratings, as in MovieLens
USER_ACTIVITY_SIGMA = 1.24  # lognormal spread giving MovieLens 25M's median/mean ratings per user (71/153)
GROUPLENS_MIN_RATINGS = 20  # GroupLens keeps only users with at least 20 ratings
GLOBAL_MEAN_RATING = 3.5
USER_BIAS_SD, MOVIE_BIAS_SD, TASTE_SD, NOISE_SD = 0.35, 0.45, 0.6, 0.7
TAGGER_SHARE = 0.1
RATING_CHUNK_ROWS = 1_000_000
CSV_CHUNK_ROWS = 500_000


@dataclass(frozen=True)
class SyntheticSpec:
    n_users: int = 200
    n_movies: int = 300
    n_ratings: int = 5_000
    n_tags: int = 200
    seed: int = 0

    def validate(self) -> None:
        if self.n_users < 1 or self.n_movies < 1 or self.n_tags < 0:
            raise ValueError(f"{self}: need n_users >= 1, n_movies >= 1 and n_tags >= 0.")
        if not self.n_users <= self.n_ratings <= self.n_users * self.n_movies:
            raise ValueError(
                f"{self}: n_ratings must be between n_users ({self.n_users}, one rating each) and "
                f"n_users * n_movies ({self.n_users * self.n_movies}, every user rating every movie)."
            )


def generate_movielens(spec: SyntheticSpec) -> dict[str, pd.DataFrame]:
    """The four MovieLens tables ("movies", "ratings", "tags", "links"), the same for the same spec."""
    spec.validate()
    rng = np.random.default_rng(spec.seed)
    movie_ids = np.cumsum(rng.geometric(0.3, spec.n_movies))  # gaps like real ids: 62,423 movies reach ~209k
    years = np.clip(np.rint(LAST_YEAR - rng.gamma(2.0, 12.0, spec.n_movies)), FIRST_YEAR, LAST_YEAR).astype(np.int64)
    genre_matrix = _genre_matrix(rng, spec.n_movies)
    movies = pd.DataFrame(
        {"movieId": movie_ids, "title": _titles(rng, years), "genres": _genre_strings(genre_matrix)}
    )
    ratings = _ratings(rng, spec, movie_ids, genre_matrix)
    return {
        "movies": movies,
        "ratings": ratings,
        "tags": _tags(rng, ratings, spec.n_tags),
        "links": _links(rng, movie_ids, years),
    }


def write_movielens(spec: SyntheticSpec, directory: str | os.PathLike) -> Path:
    """Write movies.csv, ratings.csv, tags.csv and links.csv for `spec` into `directory`."""
    directory = Path(directory)
    tables = generate_movielens(spec)
    # GroupLens pads imdbIds to seven digits ("0114709").
    tables["links"]["imdbId"] = tables["links"]["imdbId"].astype(str).str.zfill(7)
    for name, table in tables.items():
        with atomic_target(directory / f"{name}.csv") as temporary:
            table.to_csv(temporary, index=False, chunksize=CSV_CHUNK_ROWS, lineterminator="\n", encoding="utf-8")
    return directory


# --- Movies --------------------------------------------------------------------------------------


def _genre_matrix(rng: np.random.Generator, n_movies: int) -> np.ndarray:
    """Boolean movies x genres: 1-5 genres per movie drawn by genre frequency, ~0.3% with none."""
    shares = np.array([share for share, _ in GENRES.values()])
    counts = 1 + rng.binomial(4, 0.32, n_movies)  # mean ~2.3 genres, as in MovieLens
    counts[rng.choice(n_movies, round(NO_GENRES_SHARE * n_movies), replace=False)] = 0
    # Gumbel top-k: the k largest perturbed log-weights are a weighted sample without replacement.
    keys = np.log(shares) + rng.gumbel(size=(n_movies, len(shares)))
    ranks = np.argsort(np.argsort(-keys, axis=1), axis=1)
    return ranks < counts[:, None]


def _genre_strings(genre_matrix: np.ndarray) -> np.ndarray:
    joined = np.full(len(genre_matrix), "", dtype=object)
    for column, name in enumerate(GENRE_NAMES):  # alphabetical, as GroupLens lists them
        joined = joined + np.where(genre_matrix[:, column], "|" + name, "")
    return pd.Series(joined).str[1:].replace("", NO_GENRES).to_numpy()


def _titles(rng: np.random.Generator, years: np.ndarray) -> np.ndarray:
    n_movies = len(years)
    nouns = np.array(NOUNS, dtype=object)[rng.integers(len(NOUNS), size=n_movies)]
    adjectives = np.array(ADJECTIVES, dtype=object)[rng.integers(len(ADJECTIVES), size=n_movies)]
    cores = np.where(rng.random(n_movies) < 0.2, nouns, adjectives + " " + nouns)
    suffixes = np.array(SUFFIXES, dtype=object)[rng.choice(len(SUFFIXES), n_movies, p=SUFFIX_SHARES)]
    year_parts = " (" + years.astype(str).astype(object) + ")"
    year_parts[rng.choice(n_movies, round(NO_YEAR_SHARE * n_movies), replace=False)] = ""
    return cores + suffixes + year_parts


def _links(rng: np.random.Generator, movie_ids: np.ndarray, years: np.ndarray) -> pd.DataFrame:
    n_movies = len(movie_ids)
    imdb_ids = np.empty(n_movies, dtype=np.int64)
    imdb_ids[np.argsort(years, kind="stable")] = np.sort(rng.choice(9_999_999, n_movies, replace=False) + 1)
    tmdb_ids = pd.array(rng.choice(999_999, n_movies, replace=False) + 1, dtype="Int64")
    tmdb_ids[rng.choice(n_movies, round(0.001 * n_movies), replace=False)] = pd.NA  # as in GroupLens' file
    return pd.DataFrame({"movieId": movie_ids, "imdbId": imdb_ids, "tmdbId": tmdb_ids})


# --- Ratings -------------------------------------------------------------------------------------


def _ratings_per_user(rng: np.random.Generator, spec: SyntheticSpec) -> np.ndarray:
    """Lognormal activity with a floor, each user capped so their movies stay easy to sample."""
    average = spec.n_ratings / spec.n_users
    floor = int(np.clip(average // 5, 1, GROUPLENS_MIN_RATINGS))
    cap = min(spec.n_movies, max(spec.n_movies // 2, int(np.ceil(average))))
    activity = rng.lognormal(0.0, USER_ACTIVITY_SIGMA, spec.n_users)
    counts = floor + rng.multinomial(spec.n_ratings - floor * spec.n_users, activity / activity.sum())
    excess = int(np.maximum(counts - cap, 0).sum())
    counts = np.minimum(counts, cap)
    while excess:  # hand the ratings over the cap to users with room, in proportion to their room
        room = cap - counts
        extra = np.minimum(rng.multinomial(excess, room / room.sum()), room)
        counts += extra
        excess -= int(extra.sum())
    return counts


def _sample_pairs(rng: np.random.Generator, counts: np.ndarray, popularity: np.ndarray) -> np.ndarray:
    """Sorted distinct keys user * n_movies + movie, counts[u] movies per user, drawn by popularity.

    Each round draws with replacement, keeps the first draws of movies the user lacks, and tops up
    in the next round; draws are scaled by the popularity mass the user still lacks, so even users
    who need half the catalogue finish in a few rounds.
    """
    n_users, n_movies = len(counts), len(popularity)
    cumulative = np.cumsum(popularity / popularity.sum())
    keys = np.empty(0, dtype=np.int64)
    deficit = counts.astype(np.int64)
    mass_held = np.zeros(n_users)
    while deficit.any():
        unheld = np.maximum(1.0 - mass_held, 1e-6)
        # 10% spare draws cover draws that repeat each other within the round.
        draws = np.where(deficit > 0, np.ceil(deficit / unheld * 1.1).astype(np.int64) + 1, 0)
        users = np.repeat(np.arange(n_users, dtype=np.int64), draws)
        movies = np.minimum(np.searchsorted(cumulative, rng.random(len(users)), side="right"), n_movies - 1)
        drawn = users * n_movies + movies
        distinct, first_draw = np.unique(drawn, return_index=True)
        fresh = first_draw[~_contains(keys, distinct)]
        kept = np.zeros(len(drawn), dtype=bool)
        kept[fresh] = True
        # Draws are grouped by user, so the rank of a kept draw within its user is its offset in the group.
        kept_users = users[kept]
        per_user = np.bincount(kept_users, minlength=n_users)
        rank = np.arange(len(kept_users)) - (np.cumsum(per_user) - per_user)[kept_users]
        taken = drawn[kept][rank < deficit[kept_users]]
        taken_users = taken // n_movies
        deficit -= np.bincount(taken_users, minlength=n_users)
        mass_held += np.bincount(taken_users, weights=popularity[taken % n_movies], minlength=n_users) / popularity.sum()
        keys = np.sort(np.concatenate([keys, np.sort(taken)]), kind="stable")  # timsort merges the two runs linearly
    return keys


def _contains(sorted_haystack: np.ndarray, needles: np.ndarray) -> np.ndarray:
    if not len(sorted_haystack):
        return np.zeros(len(needles), dtype=bool)
    positions = np.minimum(np.searchsorted(sorted_haystack, needles), len(sorted_haystack) - 1)
    return sorted_haystack[positions] == needles


def _ratings(rng: np.random.Generator, spec: SyntheticSpec, movie_ids: np.ndarray, genre_matrix: np.ndarray) -> pd.DataFrame:
    n_users, n_movies = spec.n_users, spec.n_movies
    popularity = 1.0 / (rng.permutation(n_movies) + 1 + POPULARITY_OFFSET)
    keys = _sample_pairs(rng, _ratings_per_user(rng, spec), popularity)
    users, movies = keys // n_movies, keys % n_movies
    del keys

    # rating = global mean + user bias + movie bias + the user's taste for the movie's genres + noise
    user_bias = rng.normal(0.0, USER_BIAS_SD, n_users)
    movie_bias = rng.normal(0.0, MOVIE_BIAS_SD, n_movies)
    genre_offsets = np.array([offset for _, offset in GENRES.values()])
    tastes = (genre_offsets + rng.normal(0.0, TASTE_SD, (n_users, len(GENRES)))).astype(np.float32)
    genre_weights = (genre_matrix / np.maximum(genre_matrix.sum(axis=1, keepdims=True), 1)).astype(np.float32)
    rating = np.empty(len(users))
    for start in range(0, len(users), RATING_CHUNK_ROWS):
        u, m = users[start : start + RATING_CHUNK_ROWS], movies[start : start + RATING_CHUNK_ROWS]
        affinity = np.einsum("ij,ij->i", tastes[u], genre_weights[m])
        score = GLOBAL_MEAN_RATING + user_bias[u] + movie_bias[m] + affinity + rng.normal(0.0, NOISE_SD, len(u))
        rating[start : start + len(u)] = np.clip(np.rint(score * 2) / 2, 0.5, 5.0)

    # Each user rates within an active period: a start between 1996 and 2018 and a lognormal length.
    first = rng.integers(FIRST_TIMESTAMP, LAST_TIMESTAMP, n_users)
    length = np.minimum(rng.lognormal(np.log(30 * 86400), 2.0, n_users), LAST_TIMESTAMP - first)
    timestamp = first[users] + (rng.random(len(users)) * length[users]).astype(np.int64)
    order = np.argsort(users * (LAST_TIMESTAMP + 1) + timestamp, kind="stable")
    return pd.DataFrame(
        {"userId": users[order] + 1, "movieId": movie_ids[movies[order]], "rating": rating[order], "timestamp": timestamp[order]}
    )


# --- Tags ----------------------------------------------------------------------------------------


def _tags(rng: np.random.Generator, ratings: pd.DataFrame, n_tags: int) -> pd.DataFrame:
    """A tenth of the users tag movies they rated, soon after rating them; tag words are Zipf-like."""
    user_ids = ratings["userId"].to_numpy()
    taggers = rng.random(user_ids.max() + 1) < TAGGER_SHARE
    candidates = np.flatnonzero(taggers[user_ids])
    rows = rng.choice(candidates if len(candidates) else np.arange(len(user_ids)), n_tags)
    tag_shares = 1.0 / np.arange(1, len(TAGS) + 1)
    timestamp = ratings["timestamp"].to_numpy()[rows] + rng.integers(0, 3600, n_tags)
    tags = pd.DataFrame(
        {
            "userId": user_ids[rows],
            "movieId": ratings["movieId"].to_numpy()[rows],
            "tag": np.array(TAGS, dtype=object)[rng.choice(len(TAGS), n_tags, p=tag_shares / tag_shares.sum())],
            "timestamp": np.minimum(timestamp, LAST_TIMESTAMP),
        }
    )
    return tags.sort_values(["userId", "timestamp"], kind="stable", ignore_index=True)


# --- Command line --------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    defaults = SyntheticSpec()
    parser = argparse.ArgumentParser(prog="python -m recsys_pipeline.synthetic", description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", help="folder to write movies.csv, ratings.csv, tags.csv and links.csv into")
    parser.add_argument("--users", type=int, default=defaults.n_users)
    parser.add_argument("--movies", type=int, default=defaults.n_movies)
    parser.add_argument("--ratings", type=int, default=defaults.n_ratings)
    parser.add_argument("--tags", type=int, default=defaults.n_tags)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    args = parser.parse_args(argv)
    spec = SyntheticSpec(args.users, args.movies, args.ratings, args.tags, args.seed)
    try:
        spec.validate()
    except ValueError as error:
        parser.error(str(error))
    started = time.perf_counter()
    directory = write_movielens(spec, args.out_dir)
    elapsed = time.perf_counter() - started
    for path in sorted(directory.glob("*.csv")):
        print(f"{path}: {path.stat().st_size / 1e6:.1f} MB")
    print(
        f"wrote {spec.n_ratings} ratings by {spec.n_users} users of {spec.n_movies} movies "
        f"and {spec.n_tags} tags in {elapsed:.1f} s"
    )


if __name__ == "__main__":
    main()
