"""Assigning every rating to train, validation or test before any feature is computed."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pandas as pd

from recsys_pipeline.settings import DEFAULT_SEED

TRAIN, VALIDATION, TEST = "train", "validation", "test"
SPLITS = (TRAIN, VALIDATION, TEST)
DEFAULT_FRACTIONS = (0.70, 0.15, 0.15)


def random_split(n_ratings: int, seed: int = DEFAULT_SEED, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS) -> pd.Categorical:
    """Label each of `n_ratings` rows train, validation or test at random.

    The notebook's two successive `train_test_split` calls with the same seed, row for row, so that
    the split (and every figure measured on it) matches the published peers' split.
    """
    train_fraction, validation_fraction, test_fraction = fractions
    if min(fractions) <= 0 or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"split fractions must be positive and sum to 1, got {fractions}")
    # Rounded so that 1 - 0.7 is exactly the notebook's 0.3: one ulp more moves a row between splits.
    held_out_fraction = round(1.0 - train_fraction, 9)
    held_out = _held_out_rows(np.arange(n_ratings), held_out_fraction, seed)
    test = _held_out_rows(held_out, round(test_fraction / held_out_fraction, 9), seed)
    labels = np.zeros(n_ratings, dtype=np.int8)
    labels[held_out] = 1
    labels[test] = 2
    return pd.Categorical.from_codes(labels, categories=list(SPLITS))


def _held_out_rows(rows: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """The rows scikit-learn's `train_test_split(rows, test_size=fraction, random_state=seed)` returns
    as its test part: the first ceil(fraction·n) of a `RandomState(seed)` permutation. Computed here
    rather than imported, because importing scikit-learn takes longer than the whole split."""
    n_held_out = math.ceil(fraction * len(rows))
    if not 0 < n_held_out < len(rows):
        raise ValueError(f"cannot hold out {fraction:.0%} of {len(rows)} ratings and keep some for training")
    return rows[np.random.RandomState(seed).permutation(len(rows))[:n_held_out]]


RANDOM = "random"
CHRONOLOGICAL = "chronological"
METHODS = (RANDOM, CHRONOLOGICAL)


def chronological_split(ratings: pd.DataFrame, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS) -> pd.Categorical:
    """Label each user's ratings by time: the earliest train, then validation, the latest test.

    Rating i of a user's n (0-based, ordered by timestamp, then movieId: a quarter of ml-latest-small's
    ratings share their user's timestamp second, and the movieId orders them the same way for any row
    order of the file, as the ranking model reads them) goes to test when i >= n·(train + validation),
    to validation when i >= n·train, else to train, so the model is measured on each user's future,
    never fitted on it.

    A user needs 4 ratings for a validation rating and 7 for a test one (at 70/15/15). Where no user
    has enough, so that a split would be empty, the timeline is cut instead: all ratings ordered by
    (timestamp, userId, movieId), the earliest 70% train, the latest 15% test. Still no rating is
    fitted on that is later than one measured on.
    """
    if min(fractions) <= 0 or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"split fractions must be positive and sum to 1, got {fractions}")
    order = np.lexsort((ratings["movieId"].to_numpy(), ratings["timestamp"].to_numpy(), ratings["userId"].to_numpy()))
    users = ratings["userId"].to_numpy()[order]
    first = np.r_[0, np.flatnonzero(users[1:] != users[:-1]) + 1]
    counts = np.diff(np.r_[first, len(users)])
    position = np.arange(len(users)) - np.repeat(first, counts)
    size = np.repeat(counts, counts)
    labels_in_order = np.where(position >= size * (fractions[0] + fractions[1]), 2, np.where(position >= size * fractions[0], 1, 0))
    labels = np.empty(len(ratings), dtype=np.int8)
    labels[order] = labels_in_order
    if len(np.unique(labels)) < len(SPLITS):
        timeline = np.lexsort((ratings["movieId"].to_numpy(), ratings["userId"].to_numpy(), ratings["timestamp"].to_numpy()))
        place = np.empty(len(ratings), dtype="int64")
        place[timeline] = np.arange(len(ratings))
        labels = np.where(place >= len(ratings) * (fractions[0] + fractions[1]), 2, np.where(place >= len(ratings) * fractions[0], 1, 0)).astype(np.int8)
    return pd.Categorical.from_codes(labels, categories=list(SPLITS))


def assign_splits(
    ratings: pd.DataFrame, seed: int = DEFAULT_SEED, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS, method: str = RANDOM
) -> pd.DataFrame:
    """The ratings with a `split` column (`method` random or chronological per user); row order is kept."""
    if method == RANDOM:
        return ratings.assign(split=random_split(len(ratings), seed, fractions))
    if method == CHRONOLOGICAL:
        return ratings.assign(split=chronological_split(ratings, fractions))
    raise ValueError(f"unknown split method '{method}', expected one of {', '.join(METHODS)}")


def training_rows(splits: pd.DataFrame) -> pd.DataFrame:
    return splits[splits["split"] == TRAIN]


def share_after_training(splits: pd.DataFrame, split: str = VALIDATION) -> float:
    """The share of the `split` ratings that come after every training rating of their user, in
    (timestamp, movieId) order: 1 for the chronological split (held-out ratings follow the known ones,
    as when serving), near 0 for the random split (interleaved: 0.009 on ml-latest-small). NaN when
    `split` has no rating."""
    held = (splits["split"] == split).to_numpy()
    if not held.any():
        return math.nan
    # Each user's latest training rating in (timestamp, movieId) order, from three columns of the
    # training rows (no copy of the whole table: at 25M ratings each column is 70-140 MB).
    trained = (splits["split"] == TRAIN).to_numpy()
    users, times, movies = (splits[column].to_numpy()[trained] for column in ("userId", "timestamp", "movieId"))
    latest_time = pd.Series(times).groupby(users).max()
    at_latest = times == latest_time.reindex(users).to_numpy()
    latest_movie = pd.Series(movies[at_latest]).groupby(users[at_latest]).max()
    held_users = splits["userId"].to_numpy()[held]
    known_time, known_movie = latest_time.reindex(held_users).to_numpy(), latest_movie.reindex(held_users).to_numpy()
    held_times, held_movies = splits["timestamp"].to_numpy()[held], splits["movieId"].to_numpy()[held]
    later = (held_times > known_time) | ((held_times == known_time) & (held_movies > known_movie)) | np.isnan(known_time.astype("float64"))
    return float(np.mean(later))


def validation_fingerprint(splits: pd.DataFrame) -> str:
    """SHA-256 (hex) of the validation ratings: their (userId, movieId, rating, timestamp) rows,
    sorted in that column order, as little-endian int64, int64, float64, int64. The same validation
    ratings give the same fingerprint whatever the row order or the other splits; the regression
    gate compares RMSEs in stars only between models measured on the same fingerprint."""
    rows = splits[splits["split"] == VALIDATION]
    columns = [
        rows["userId"].to_numpy(dtype="<i8"),
        rows["movieId"].to_numpy(dtype="<i8"),
        rows["rating"].to_numpy(dtype="<f8"),
        rows["timestamp"].to_numpy(dtype="<i8"),
    ]
    order = np.lexsort(columns[::-1])
    table = np.empty(len(order), dtype=[("userId", "<i8"), ("movieId", "<i8"), ("rating", "<f8"), ("timestamp", "<i8")])
    for name, column in zip(table.dtype.names, columns):
        table[name] = column[order]
    return hashlib.sha256(table.tobytes()).hexdigest()


def partition_problems(
    labelled: pd.DataFrame, n_ratings: int, fractions: tuple[float, float, float], method: str = RANDOM, tolerance: float = 0.01
) -> list[str]:
    """What, if anything, keeps `labelled` from being a clean partition of `n_ratings` ratings.

    Each rating must carry exactly one label (so the splits are disjoint), every rating must be
    present, and each split's share must be within `tolerance` of its configured fraction, beyond
    what `method` rounds to whole ratings (`rounding_slack`): few ratings, or many users with few
    ratings each, are legitimate data and must not fail.
    """
    problems = []
    if len(labelled) != n_ratings:
        problems.append(f"{len(labelled)} labelled rows for {n_ratings} ratings")
    unlabelled = int(labelled["split"].isna().sum())
    if unlabelled:
        problems.append(f"{unlabelled} ratings carry no split label")
    if labelled.duplicated(["userId", "movieId"]).any():
        problems.append("a (userId, movieId) rating appears more than once")
    counts = labelled["split"].value_counts()
    empty = [name for name in SPLITS if not counts.get(name, 0)]
    if empty and len(labelled):
        problems.append(
            f"{' and '.join(empty)} hold{'s' if len(empty) == 1 else ''} no rating: {len(labelled)} ratings are too few to split "
            f"{fractions[0]:.0%}/{fractions[1]:.0%}/{fractions[2]:.0%} (nothing to stop training on or to measure)"
        )
    slack = rounding_slack(labelled, method)
    for name, fraction in zip(SPLITS, fractions, strict=True):
        count = int(counts.get(name, 0))
        if abs(count - fraction * len(labelled)) > tolerance * len(labelled) + slack:
            share = count / max(len(labelled), 1)
            problems.append(f"{name} holds {share:.2%} of ratings, expected {fraction:.0%} ± {tolerance:.0%} and {slack} ratings of rounding")
    return problems


def rounding_slack(labelled: pd.DataFrame, method: str) -> int:
    """How many ratings a split's count may differ from its exact share by rounding alone.

    The random split rounds two counts up (the held-out rows, then the test rows among them), so
    each split is within 2 ratings of its share. The chronological split rounds each user's two
    boundaries, so each split is within one rating per user (a user with one rating is all train).
    """
    return int(labelled["userId"].nunique()) if method == CHRONOLOGICAL else 2
