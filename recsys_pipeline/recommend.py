"""Answering one question from a release: movies like this one, movies for this user or visitor, which
movie a title names.

Plain functions on the released tables and arrays that return DataFrames; the `recsys` command
(recsys_pipeline.cli) and the HTTP service (recsys_pipeline.service) load a release and return what
these return. Nothing here imports TensorFlow: a visitor is scored by the released ranking model in
numpy (recsys_pipeline.ranking.visitor_scores).
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from recsys_pipeline import features, similarity
from recsys_pipeline.ranking import top_movies, visitor_scores
from recsys_pipeline.sequential import SequentialModel
from recsys_pipeline.standardisation import FittedScalers, Standardiser, TargetScaler

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


def _suggest(query: str, candidates: Iterable[str] | Mapping[str, str]) -> str:
    """Close matches of `query` among `candidates`; a mapping is compared by its keys and shown by its values."""
    matches = close_matches(query, candidates)
    if isinstance(candidates, Mapping):
        matches = [candidates[match] for match in matches]
    return f"Close matches: {'; '.join(matches)}." if matches else "No close match."


# --- movies ---------------------------------------------------------------------------------------


def find_movie(movie_features: pd.DataFrame, query: str) -> int:
    """The movieId that `query` names, trying in turn: a movieId; the exact title, then in any case; the
    title as a person writes it (`title_names`: "The Matrix" for "Matrix, The (1999)", an alternate
    title in parentheses, accents, punctuation and case ignored), with the year optional ("toy
    story", "Toy Story 1995" or "toy story (1995)"); the title without its moved article
    ("Matrix"); a part of the title.

    The first of these that finds anything decides: several movies there are ambiguous, and the
    error lists the candidates with their ids. An unknown title's error lists close matches.
    """
    query = query.strip()
    if query.isdigit() and (movie_features["movieId"] == int(query)).any():
        return int(query)
    titles = movie_features["title"]
    names = [title_names(title) for title in titles]
    wanted = _query_names(query)
    part = _normalised(query)

    def named(kind: str) -> list[bool]:
        return [any(name in getattr(movie, kind) and year in (None, movie.year) for name, year in wanted) for movie in names]

    for matching in (
        lambda: titles.to_numpy() == query,
        lambda: titles.str.lower().to_numpy() == query.lower(),
        lambda: named("natural"),
        lambda: named("bare"),
        lambda: titles.str.lower().str.contains(query.lower(), regex=False).to_numpy() | [any(part in key for key in movie.natural) for movie in names],
    ):
        found = movie_features.loc[np.asarray(matching(), dtype=bool), ["movieId", "title"]]
        if len(found) == 1:
            return int(found["movieId"].iloc[0])
        if len(found) > 1:
            listed = "; ".join(f"{title} [movieId {movie_id}]" for movie_id, title in found.head(AMBIGUOUS_LISTED).itertuples(index=False))
            more = f" and {len(found) - AMBIGUOUS_LISTED} more" if len(found) > AMBIGUOUS_LISTED else ""
            raise QueryError(f"'{query}' matches {len(found)} movies: {listed}{more}. Give the exact title or the movieId.")
    # Compared with the titles as a person writes them ("The Matrix (1999)"), shown as stored.
    raise QueryError(f"no movie titled '{query}'. {_suggest(query, {_natural_title(title): title for title in titles})}")


# Articles MovieLens moves behind the title ("Matrix, The (1999)", "Misérables, Les (1995)",
# "Avventura, L' (1960)"), in the languages its titles use.
ARTICLES = frozenset(
    "the a an le la les l' un une il lo gli i el los las una uno der die das ein eine de het een den det en ett o os as".split()
)
ALSO_KNOWN_AS = re.compile(r"^(?:a\.k\.a\.|aka)\s+", re.IGNORECASE)
TRAILING_PARENTHESES = re.compile(r"\s*\(([^()]*)\)\s*$")
TITLE_YEAR = re.compile(features.YEAR_PATTERN)
NON_WORD = re.compile(r"[\W_]+")
QUERY_YEAR = re.compile(r"^(.*?)\s*(?:\((\d{4})\)|\b(\d{4}))\s*$")


class TitleNames(NamedTuple):
    """A MovieLens title's year and the names a person may call it by, normalised (`_normalised`):
    its main title and each alternate title in parentheses ("(a.k.a. Se7en)", "(Cité des enfants
    perdus, La)"), `natural` with a moved article put back in front ("the matrix"), `bare` without it ("matrix")."""

    year: int | None
    natural: set[str]
    bare: set[str]


def title_names(title: str) -> TitleNames:
    year, titles = _split_title(title)
    return TitleNames(year, {_normalised(_natural_order(name)) for name in titles}, {_normalised(_without_moved_article(name)) for name in titles})


def _split_title(title: str) -> tuple[int | None, list[str]]:
    """The year at the end of `title` (None without one) and its names: the main title first, then
    the alternate titles in trailing parentheses."""
    year_match = TITLE_YEAR.search(title)
    rest = title[: year_match.start()] if year_match else title
    alternates = []
    while (group := TRAILING_PARENTHESES.search(rest)) and group.start() > 0:
        alternates.insert(0, ALSO_KNOWN_AS.sub("", group.group(1)).strip())
        rest = rest[: group.start()]
    return (int(year_match.group(1)) if year_match else None), [rest.strip(), *alternates]


def _natural_title(title: str) -> str:
    """"Matrix, The (1999)" as a person writes it: "The Matrix (1999)"."""
    year, (name, *_) = _split_title(title)
    return _natural_order(name) + (f" ({year})" if year is not None else "")


def _moved_article(name: str) -> tuple[str, str] | None:
    """("Matrix", "The") for "Matrix, The"; None when the name does not end in an article."""
    head, comma, article = name.rpartition(",")
    return (head.strip(), article.strip()) if comma and article.strip().lower() in ARTICLES else None


def _natural_order(name: str) -> str:
    moved = _moved_article(name)
    if moved is None:
        return name
    head, article = moved
    return f"{article}{head}" if article.endswith("'") else f"{article} {head}"


def _without_moved_article(name: str) -> str:
    moved = _moved_article(name)
    return name if moved is None else moved[0]


def _normalised(text: str) -> str:
    """Lower case without accents, with every run of punctuation and space as one space: "L'Avventura" -> "l avventura"."""
    if not text.isascii():
        text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return " ".join(NON_WORD.sub(" ", text.casefold()).split())


def _query_names(query: str) -> list[tuple[str, int | None]]:
    """The (normalised name, year or None) readings of a query: the whole of it with any year, and
    when it ends in a year ("Toy Story 1995", "toy story (1995)") the rest with that year."""
    readings = [(_normalised(_natural_order(query)), None)]
    year_match = QUERY_YEAR.match(query)
    if year_match and year_match.group(1):
        readings.append((_normalised(_natural_order(year_match.group(1))), int(year_match.group(2) or year_match.group(3))))
    return readings


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


def visitor_features(genre_ratings: Sequence[tuple[str, float]], liked_movie_ids: Sequence[int], movie_features: pd.DataFrame, target: TargetScaler) -> pd.DataFrame:
    """The user_genre_averages row of a visitor known by a rating per genre (names in any case) and/or
    movies they liked (movieIds of movie_features): Visitors.features as a table."""
    return pd.DataFrame({"userId": [GENRE_PROFILE_USER], **Visitors(movie_features, target).features(genre_ratings, liked_movie_ids)})


def served_listing(served: pd.DataFrame, movie_features: pd.DataFrame, user_id: int, k: int, min_ratings: int = 0) -> pd.DataFrame:
    """The first `k` movies of `user_id`'s list in user_recommendations (rank order), with their genres;
    `min_ratings` keeps only movies with at least that many training ratings."""
    listed = served[served["userId"] == user_id].sort_values("rank")
    if listed.empty:
        ids = served["userId"]
        raise QueryError(f"no user {user_id} in user_recommendations (users {ids.min()}..{ids.max()}, {ids.nunique()} in all). {_suggest(str(user_id), ids.drop_duplicates().astype(str))}")
    rows = pd.Index(movie_features["movieId"]).get_indexer(listed["movieId"])
    keep = movie_features["rating_count"].to_numpy()[rows] >= min_ratings
    return _listing(movie_features, rows[keep][:k], "score", listed["score"].to_numpy()[keep][:k])


# A genre rated at least this is loved, below DISLIKED disliked; others are neither (stars).
LOVED = 4.0
DISLIKED = 3.0


class Visitors:
    """Scores visitors known by genre ratings and/or movies they liked. Everything read from the
    released tables is read once here, so a visitor costs only their own arithmetic (the service
    keeps one per release; `visitor_listing` makes one per question)."""

    def __init__(self, movie_features: pd.DataFrame, target: TargetScaler, model: SequentialModel | None = None, user_scaler: Standardiser | None = None):
        self.movie_features = movie_features
        self.target = target
        self.model = model
        self.user_scaler = user_scaler
        self._genre_columns = features.genre_columns(movie_features)
        self.genres = [column.removeprefix(features.GENRE_PREFIX) for column in self._genre_columns]
        self._by_lowercase = {genre.lower(): genre for genre in self.genres}
        self._genre_matrix = movie_features[self._genre_columns].to_numpy(dtype="float64")
        self._movie_ids = movie_features["movieId"].to_numpy()
        self._rows: dict[int, int] = {}
        for row, movie_id in enumerate(self._movie_ids.tolist()):
            self._rows.setdefault(movie_id, row)
        self._rating_counts = movie_features["rating_count"].to_numpy()

    def row(self, movie_id: int) -> int:
        """The movie_features row of `movie_id`."""
        row = self._rows.get(int(movie_id))
        if row is None:
            raise QueryError(f"no movie with movieId {movie_id}.")
        return row

    def _genre(self, name: str) -> str:
        genre = self._by_lowercase.get(name.strip().lower())
        if genre is None:
            raise QueryError(f"no genre '{name}'. {_suggest(name, self.genres)} Genres: {', '.join(self.genres)}.")
        return genre

    def features(self, genre_ratings: Sequence[tuple[str, float]], liked_movie_ids: Sequence[int]) -> dict[str, np.ndarray]:
        """The visitor's user_genre_averages columns (one value each).

        Each rated genre becomes one rating of a stand-in movie of that genre alone, each liked movie a
        rating at the top of the scale, so features.user_rating_statistics builds the row exactly as
        for a real user: a genre gets the average of its ratings, every other genre the user's own average.
        """
        rated: dict[str, float] = {}
        for name, stars in genre_ratings:
            genre = self._genre(name)
            if genre in rated:
                raise QueryError(f"genre '{genre}' is rated twice.")
            if not self.target.minimum <= stars <= self.target.maximum:
                raise QueryError(f"genre '{genre}' rated {stars}: ratings lie between {self.target.minimum} and {self.target.maximum} stars.")
            rated[genre] = float(stars)
        if not rated and not len(liked_movie_ids):
            raise QueryError("rate at least one genre, e.g. 'Comedy=4', or name a movie you liked.")
        stand_ins = np.eye(len(self.genres))[[self.genres.index(genre) for genre in rated]].reshape(len(rated), len(self.genres))
        liked = self._genre_matrix[[self.row(movie_id) for movie_id in liked_movie_ids]]
        genre_rows = np.vstack([stand_ins, liked])
        stars = np.array([*rated.values(), *[self.target.maximum] * len(liked)], dtype="float64")
        statistics = features.user_rating_statistics(np.zeros(len(stars), dtype="int64"), np.arange(len(stars)), stars, genre_rows, 1, self._genre_columns)
        return statistics

    def candidates(self, genre_ratings: Sequence[tuple[str, float]]) -> np.ndarray:
        """Which movies a visitor described by genre ratings may be shown (bool per movie_features row):
        none with a disliked genre (below DISLIKED stars) and, when some genre is loved (LOVED stars or
        more), only movies with a loved genre. Unmentioned genres neither admit nor exclude a movie."""
        stars = {self.genres.index(self._genre(name)): value for name, value in genre_ratings}
        has_genre = self._genre_matrix > 0
        allowed = ~has_genre[:, [column for column, value in stars.items() if value < DISLIKED]].any(axis=1)
        loved = [column for column, value in stars.items() if value >= LOVED]
        if loved:
            allowed &= has_genre[:, loved].any(axis=1)
        return allowed

    def rank(self, k: int, genre_ratings: Sequence[tuple[str, float]] = (), liked_movie_ids: Sequence[int] = (), min_ratings: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The `k` best movies (movie_features rows, best first) and their scores for a visitor: the
        towers' score of a user whose features are `features` and whose history is the liked movies
        (movieIds, in the order they watched them), among the movies `candidates` admits that have at
        least `min_ratings` training ratings, never a liked movie."""
        if self.model is None or self.user_scaler is None:
            raise TypeError("Visitors built without a model cannot rank")
        liked = list(dict.fromkeys(int(movie_id) for movie_id in liked_movie_ids))
        statistics = self.features(genre_ratings, liked)
        scaled_visitor = self.user_scaler.transform_values(np.column_stack([statistics[column] for column in self.user_scaler.columns]))
        allowed = self._rating_counts >= min_ratings
        if genre_ratings:
            allowed &= self.candidates(genre_ratings)
        allowed[[self.row(movie_id) for movie_id in liked]] = False
        scores = visitor_scores(self.model, liked, scaled_visitor[0], self._movie_ids)
        # Ranked among the allowed movies only: a selection over many equal -inf scores is slow.
        allowed_rows = np.flatnonzero(allowed)
        columns, best = top_movies(scores[allowed_rows][None], k)
        keep = np.isfinite(best[0])
        return allowed_rows[columns[0][keep]], best[0][keep]

    def listing(self, k: int, genre_ratings: Sequence[tuple[str, float]] = (), liked_movie_ids: Sequence[int] = (), min_ratings: int = 0) -> pd.DataFrame:
        rows, scores = self.rank(k, genre_ratings, liked_movie_ids, min_ratings)
        return _listing(self.movie_features, rows, "score", scores)


def visitor_listing(
    model: SequentialModel,
    scalers: FittedScalers,
    movie_features: pd.DataFrame,
    k: int,
    genre_ratings: Sequence[tuple[str, float]] = (),
    liked_movie_ids: Sequence[int] = (),
    min_ratings: int = 0,
) -> pd.DataFrame:
    """The `k` best movies for a visitor known by genre ratings and/or movies they liked (Visitors.rank
    as a listing). The `recsys` command calls it; the HTTP service keeps a Visitors per release."""
    return Visitors(movie_features, scalers.target, model, scalers.user).listing(k, genre_ratings, liked_movie_ids, min_ratings)


def ranked_listing(movie_features: pd.DataFrame, scores: np.ndarray, k: int, excluded: np.ndarray | None = None) -> pd.DataFrame:
    """The `k` best movies by `scores` (one per movie_features row) in the served order, never an excluded one."""
    columns, best = top_movies(np.asarray(scores)[None], k, None if excluded is None else np.asarray(excluded)[None])
    keep = np.isfinite(best[0])
    return _listing(movie_features, columns[0][keep], "score", best[0][keep])
