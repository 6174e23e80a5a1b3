"""The one ranker: which movies a user sees, in which order, in numpy (no TensorFlow).

The served score of a movie for a user is the time-aware two-tower's score (recsys_pipeline.sequential,
the user known by their rated movies in order) blended with an item-item term, EASE (Steck 2019) fed
the user's ratings weighted by recency:

    served(user, movie) = standardised towers(user, .) + item_item_weight · standardised item_item(user, .)
    item_item(user, .)  = standardised ease(user, .) + transition_weight · standardised next(user, .)
    ease(user, .)       = (0.5 ^ (age rank / half-life) of each movie the user rated) · B
    next(user, .)       = (0.5 ^ (age rank / TRANSITION_HALF_LIFE) of the user's latest movies) · T

each standardised per user over the catalogue; B are EASE's movie-to-movie weights fitted on who
rated what, T the transition weights fitted on what each user rated next (`Transitions`), age rank 0
is the user's latest rating, and the ridge penalty, the half-life and both weights are chosen on
validation NDCG@10 (`workflow.train_ranking_model`); a transition weight of 0 leaves EASE alone. `Ranker` computes it for users known by a
table of ratings; `model_evaluation`, the `user_recommendations` asset, the `recsys` command, the
HTTP service and the benchmarks all order movies with `top_movies` on its scores, so the figure in
the UI is the figure of the list a person gets. A visitor known only by genre ratings or a handful of
movies is scored by the towers alone (`visitor_scores`): they have no item-item row.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys_pipeline.sequential import SequentialModel, Sequences, user_sequences

# Weights of the item-item term tried on validation (0: the towers alone; inf: the item-item term alone).
ITEM_ITEM_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, math.inf)
# The half-lives (in ratings; inf: plain EASE) of EASE's recency weighting, then its ridge penalties,
# tried on validation.
HALF_LIVES = (2.0, 3.0, 5.0, 7.0, 10.0, 20.0, 40.0, math.inf)
ITEM_ITEM_L2S = (100.0, 200.0, 400.0)
# The penalty at which the half-lives are compared; the penalties are then compared at the chosen
# half-life, since the best penalty depends on it (on ml-latest-small 400 at half-life 5, 100 for plain EASE).
REFERENCE_L2 = 200.0
# Above this many users x movies the scores are not held whole: the weights are solved for the most
# rated movies (at most ITEM_ITEM_MAX_MOVIES, a movies x movies matrix) and applied user batch by batch.
DENSE_SCORES_LIMIT = 50_000_000
ITEM_ITEM_MAX_MOVIES = 12_000
GRAM_BLOCK_RATINGS = 4_000_000
# The transition term (`Transitions`): each position of a user's ratings in order reads the
# TRANSITION_WINDOW ratings up to it and predicts the TRANSITION_TARGETS after it, both weighted
# 0.5 ^ (distance / TRANSITION_HALF_LIFE), over the TRANSITION_MAX_MOVIES most rated movies. Fixed,
# not chosen: on ml-latest-small's validation a longer window, half-life 10, penalty 300, 20 targets or
# 4,000 movies move NDCG@10 by at most 0.002, a shorter window, half-life 3 or 1,000 movies cost
# 0.005-0.008 (bench/transitions.py); only its weight is chosen.
TRANSITION_WINDOW = 20
TRANSITION_TARGETS = 10
TRANSITION_HALF_LIFE = 5.0
TRANSITION_L2 = 100.0
TRANSITION_MAX_MOVIES = 2_000
TRANSITION_WEIGHTS = (0.0, 0.5, 1.0, 2.0)
# Weights of the log training popularity added to the towers' movie biases (`SequentialModel.with_popularity`),
# chosen on validation NDCG@10 of the towers alone before the item-item term is chosen: in-batch negatives'
# log-Q correction takes popularity out of the towers' scores (weight 0 keeps them as trained, 1 puts it all back).
POPULARITY_WEIGHTS = (0.0, 0.25, 0.5, 1.0)
# Positions whose sources and targets are built at once (each reads TRANSITION_WINDOW + TRANSITION_TARGETS cells),
# and the most positions fitted: above it every k-th position (a regression on an even sample of its rows).
TRANSITION_BLOCK_POSITIONS = 250_000
TRANSITION_MAX_POSITIONS = 5_000_000


class Ranker:
    """The served ranking of the users of `user_features` over the movies of `movie_features` (columns,
    looked up by ID), each user known by their ratings in `known` (userId, movieId, timestamp):
    evaluation passes the ratings before the held-out ones, serving every rating."""

    def __init__(self, model: SequentialModel, known: pd.DataFrame, user_features: pd.DataFrame, movie_features: pd.DataFrame, scalers, item_item_weight: float | None = None):
        self.model = model
        self.item_item_weight = model.item_item_weight if item_item_weight is None else item_item_weight
        movie_ids = movie_features["movieId"].to_numpy()
        self._columns = model.movie_rows(movie_ids)
        if (self._columns < 0).any():
            raise ValueError(f"the ranking model knows {int((self._columns >= 0).sum())} of the {len(movie_ids)} movies of movie_features")
        user_ids = user_features["userId"].to_numpy()
        self._user_content = scalers.user.transform(user_features).astype("float32")
        self._known_users = _rows_of(user_ids, known["userId"].to_numpy(), "user_features", "userId")
        self._known_movies = _rows_of(movie_ids, known["movieId"].to_numpy(), "movie_features", "movieId")
        self._sequences = user_sequences(self._known_users, self._columns[self._known_movies], known["timestamp"].to_numpy(), len(user_ids), model.movie_ids)
        self._ages = age_ranks(self._known_users, known["timestamp"].to_numpy(), known["movieId"].to_numpy())
        self._n_movies = len(movie_ids)
        self._item_item = None
        self._item_item_rows = {}
        self._transitions = None
        self._only_penalties: tuple[float, ...] | None = None
        self._batch: tuple[bytes, dict] = (b"", {})

    def _of_batch(self, part, user_rows: np.ndarray, compute):
        """`compute()`, remembered while the same user batch is asked for: evaluation asks every
        scorer (served, towers alone, item-item alone, ...) for one batch in turn, and they share parts.
        Remembered arrays are read-only, so no caller can change what another is given."""
        key = np.asarray(user_rows).tobytes()
        if self._batch[0] != key:
            self._batch = (key, {})
        parts = self._batch[1]
        if part not in parts:
            parts[part] = compute()
            for array in (parts[part].values, parts[part].background) if isinstance(parts[part], ColumnScores) else (parts[part],):
                array.flags.writeable = False
        return parts[part]

    @property
    def known_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(user row, movie row) of every known rating: what a user's list never shows."""
        return self._known_users, self._known_movies

    @property
    def sequences(self) -> Sequences:
        """Each user's rated movies in order, as rows of the model's tables."""
        return self._sequences

    def model_scores(self, user_rows: np.ndarray) -> np.ndarray:
        """Users x movies scores of the time-aware towers alone (read-only)."""
        return self._of_batch(
            # np.take keeps the rows C-ordered (scores[:, columns] lays them out by column): each is ranked on its own.
            "towers", user_rows, lambda: np.take(self.model.scores(self.model.user_vectors(self._sequences, user_rows, self._user_content)), self._columns, axis=1)
        )

    def item_item_columns(self, user_rows: np.ndarray) -> ColumnScores:
        """The item-item term: recency-weighted EASE plus the model's transition weight times the
        transition term, each standardised (EASE alone at weight 0), held narrow."""
        ease = self._ease_columns(user_rows)
        if self.model.transition_weight == 0:
            return ease
        transitions = self._of_batch("transitions", user_rows, lambda: self._fitted_transitions().kept_scores(user_rows))
        return ease.standardised().plus(transitions.standardised(), self.model.transition_weight)

    def item_item_scores(self, user_rows: np.ndarray) -> np.ndarray:
        """Users x movies scores of the item-item term alone."""
        return self.item_item_columns(user_rows).dense()

    def ease_scores(self, user_rows: np.ndarray, half_life: float | None = None, l2: float | None = None) -> np.ndarray:
        """Users x movies scores of recency-weighted EASE (its Gram matrix built once, on first use),
        with the model's half-life and ridge penalty or `half_life` and `l2`."""
        return self._ease_columns(user_rows, half_life, l2).dense()

    def _ease_columns(self, user_rows: np.ndarray, half_life: float | None = None, l2: float | None = None) -> ColumnScores:
        half_life = self.model.item_item_half_life if half_life is None else half_life
        l2 = self.model.item_item_l2 if l2 is None else l2
        if self._item_item is None:
            self._item_item = ItemItem(self._known_users, self._known_movies, len(self._user_content), self._n_movies, self.model.item_item_l2)
            self._item_item.only_penalties = self._only_penalties
        if (half_life, l2) not in self._item_item_rows:
            self._item_item_rows[half_life, l2] = self._item_item.column_scorer(recency_weights(self._ages, half_life), l2)
        return self._of_batch(("ease", half_life, l2), user_rows, lambda: self._item_item_rows[half_life, l2](user_rows))

    def transition_scores(self, user_rows: np.ndarray) -> np.ndarray:
        """Users x movies scores of the transition term alone."""
        return self._of_batch("transitions", user_rows, lambda: self._fitted_transitions().kept_scores(user_rows)).dense()

    def _fitted_transitions(self) -> Transitions:
        if self._transitions is None:  # fitted once, on first use
            self._transitions = Transitions(self._known_users, self._known_movies, self._ages, len(self._user_content), self._n_movies)
        return self._transitions

    def solve_only(self, l2s) -> None:
        """Say that the item-item term will be asked for these ridge penalties only, so its Gram
        matrix is freed once they are solved (serving and evaluation know theirs; at 12,000 movies
        it is 0.58 GB)."""
        self._only_penalties = tuple(l2s)
        if self._item_item is not None:
            self._item_item.only_penalties = self._only_penalties

    def forget_penalties_except(self, l2: float) -> None:
        """Free what the item-item term holds for every ridge penalty but `l2` (after choosing it)."""
        if self._item_item is not None:
            self._item_item.forget_penalties_except(l2)
        for key in [key for key in self._item_item_rows if key[1] != l2]:
            del self._item_item_rows[key]

    def using(self, model: SequentialModel) -> Ranker:
        """The same users and ratings ranked by `model` (its item-item half-life, penalty and weight),
        sharing what was prepared: the sequences and the item-item term's Gram matrix and solutions."""
        ranker = copy.copy(self)
        ranker.model, ranker.item_item_weight = model, model.item_item_weight
        ranker._batch = (b"", {})  # the towers' scores are the model's
        return ranker

    def score_rows(self, user_rows: np.ndarray) -> np.ndarray:
        """Users x movies served scores, unclipped: `blend` of the towers and the item-item term, the
        narrow item-item term added to the wide towers' scores in place (the same sum, one wide array)."""
        if self.item_item_weight == 0:
            return blend(self.model_scores(user_rows), None, 0.0)
        item_item = self.item_item_columns(user_rows).standardised()
        if math.isinf(self.item_item_weight):
            return item_item.dense()
        return item_item.added_to(standardised(self.model_scores(user_rows)), self.item_item_weight)

    def ease_rows_by_half_life(self, half_lives) -> dict[float, object]:
        """`score_rows` of recency-weighted EASE alone at each half-life (for choosing it)."""
        return {half_life: (lambda user_rows, h=half_life: self.ease_scores(user_rows, h)) for half_life in half_lives}

    def item_item_rows_by_transition_weight(self, weights) -> dict[float, object]:
        """`score_rows` of the item-item term at each transition weight, sharing each user batch's two scores."""
        return blends_by_weight(self.ease_scores, self.transition_scores, weights)

    def score_rows_by_weight(self, weights) -> dict[float, object]:
        """`score_rows` at each item-item weight, sharing each user batch's two scores (for choosing the weight)."""
        return blends_by_weight(self.model_scores, self.item_item_scores, weights)


def visitor_scores(model: SequentialModel, liked_movie_ids, scaled_visitor: np.ndarray | None, movie_ids: np.ndarray) -> np.ndarray:
    """A visitor's towers score of each of `movie_ids` (-inf where the model does not know the movie),
    from the movies they named in the order they watched them (oldest first; unknown ones skipped)
    and their scaled features (None: none)."""
    columns = model.movie_rows(movie_ids)
    scores = model.visitor_scores(np.asarray(liked_movie_ids, dtype="int64"), content=scaled_visitor)
    return np.where(columns >= 0, scores[columns], -np.inf)


def _rows_of(ids: np.ndarray, wanted: np.ndarray, table: str, column: str) -> np.ndarray:
    """The position of each of `wanted` in `ids` (int32: at 25M ratings every copy counts); every one must be there."""
    rows = pd.Index(ids).get_indexer(wanted)
    if (rows < 0).any():
        missing = np.unique(np.asarray(wanted)[rows < 0])
        raise ValueError(f"{len(missing)} {column}s of the known ratings have no row in {table} (first: {missing[:5].tolist()})")
    return rows.astype("int32")


class ItemItem:
    """EASE: ridge regression of each movie's column on the others' (zero diagonal), fitted on the
    (user row, movie row) pairs of who rated what, each counting 1. `scorer(input_weights, l2)` scores
    the same users with each rated movie weighted (e.g. `recency_weights`), so recent ratings can
    count more than old ones without refitting; the Gram matrix is built once and each ridge penalty
    `l2` solved from it once (choosing the penalty, and EASE beside the served term, share it).

    Where users x movies is small and users are fewer than movies, scores come from the users x users
    form (Woodbury identity); otherwise the movies x movies weights are solved for the
    ITEM_ITEM_MAX_MOVIES most rated movies (others score 0), in float32, and applied per batch.
    """

    def __init__(self, rated_users: np.ndarray, rated_movies: np.ndarray, n_users: int, n_movies: int, l2: float):
        import scipy.sparse as sp  # imported here: only the ranking steps need it

        self._pairs = (np.asarray(rated_users), np.asarray(rated_movies))
        self._shape = (n_users, n_movies)
        self.l2 = l2
        rated = sp.csr_matrix((np.ones(len(rated_users), dtype="float32"), self._pairs), shape=self._shape)
        rated.data[:] = 1.0  # a movie rated twice by one user counts once
        self._dense = n_users <= n_movies and n_users * n_movies <= DENSE_SCORES_LIMIT
        self._solved: dict[float, tuple[np.ndarray, ...]] = {}
        self.only_penalties: tuple[float, ...] | None = None  # once these are solved the Gram matrix is freed
        if self._dense:
            self._rated = rated.toarray().astype("float64")
            self._gram = self._rated @ self._rated.T  # users x users
        else:
            counts = np.asarray(rated.sum(axis=0)).ravel()
            del rated  # at 25M ratings each array here is 100-200 MB: freed or kept int32 where it can be
            self._kept = np.sort(np.argsort(-counts, kind="stable")[: min(ITEM_ITEM_MAX_MOVIES, n_movies)])
            # The (user, kept movie) cells in CSR order, and each fitted pair's cell: every scorer reuses
            # this structure with its own weights (a movie rated twice by a user adds up in its cell).
            kept_column = np.full(n_movies, -1, dtype="int32")
            kept_column[self._kept] = np.arange(len(self._kept))
            columns = kept_column[self._pairs[1]]
            self._in_kept = columns >= 0
            cells = self._pairs[0][self._in_kept].astype("int64") * len(self._kept)
            cells += columns[self._in_kept]
            del columns
            cells, cell_of_pair = np.unique(cells, return_inverse=True)
            self._cell_of_pair = cell_of_pair.astype("int32")
            del cell_of_pair
            self._kept_indices = (cells % len(self._kept)).astype("int32")
            self._kept_indptr = np.searchsorted(cells // len(self._kept), np.arange(n_users + 1)).astype("int64")
            kept_rated = self._kept_scoring(np.ones(len(cells), dtype="float32"))
            # Movies x movies co-rating counts (exact in float32), added up over blocks of users holding
            # GRAM_BLOCK_RATINGS ratings: a sparse product of all of them at once peaks at several times the result.
            self._gram = np.zeros((len(self._kept), len(self._kept)), dtype="float32")
            bounds = np.unique(np.r_[np.searchsorted(self._kept_indptr, np.arange(0, len(cells), GRAM_BLOCK_RATINGS)), n_users])
            for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
                block = kept_rated[start:stop]
                self._gram += (block.T @ block).toarray()

    def _kept_scoring(self, cell_values: np.ndarray):
        import scipy.sparse as sp

        return sp.csr_matrix((cell_values, self._kept_indices, self._kept_indptr), shape=(self._shape[0], len(self._kept)))

    def forget_penalties_except(self, l2: float) -> None:
        """Free the solutions of every ridge penalty but `l2` (each is movies x movies)."""
        self._solved = {penalty: solution for penalty, solution in self._solved.items() if penalty == l2}

    def _solution(self, l2: float) -> tuple[np.ndarray, ...]:
        if l2 not in self._solved:
            if self._gram is None:
                raise RuntimeError(f"the item-item term was solved for ridge penalties {sorted(self._solved)} only, not {l2}")
            last = self.only_penalties is not None and set(self.only_penalties) <= {*self._solved, l2}
            if self._dense:
                spread = np.linalg.inv(l2 * np.eye(len(self._gram)) + self._gram) @ self._rated
                self._solved[l2] = (spread, np.maximum((1.0 - (self._rated * spread).sum(axis=0)) / l2, 1e-12))
            else:
                work = _penalised(self._gram, l2)
                if last:  # freed before the factorisation, the step's largest moment
                    self._gram = None
                self._solved[l2] = (_ease_weights_of(work, l2),)
            if last:
                self._gram = None
        return self._solved[l2]

    def scorer(self, input_weights: np.ndarray | None = None, l2: float | None = None):
        """`score_rows(user rows) -> users x movies` item-item scores, each rated movie counting its
        input weight (one per fitted pair, in their order; None: 1), with ridge penalty `l2` (None: self.l2)."""
        column_scores = self.column_scorer(input_weights, l2)
        return lambda user_rows: column_scores(user_rows).dense()

    def column_scorer(self, input_weights: np.ndarray | None = None, l2: float | None = None):
        """`scorer`'s scores held narrow (`ColumnScores`: the kept movies' columns, 0 elsewhere)."""
        import scipy.sparse as sp

        l2 = self.l2 if l2 is None else l2
        weights = np.ones(len(self._pairs[0])) if input_weights is None else np.asarray(input_weights, dtype="float64")
        if self._dense:
            scoring = sp.csr_matrix((weights, self._pairs), shape=self._shape)
            spread, diagonal = self._solution(l2)
            # Z·B = Z - Z·P / diag(P), P = (X'X + l2 I)^-1 = (I - X'(l2 I + XX')^-1 X) / l2.
            scores = scoring.toarray()
            # Z - (Z - Z·X'·spread) / l2 / diag(P), computed in place: the same numbers, one users x
            # movies temporary instead of four.
            correction = (scoring @ self._rated.T) @ spread
            correction -= scores
            correction /= l2
            correction /= diagonal
            scores += correction
            every_movie = np.arange(self._shape[1])
            return lambda user_rows: ColumnScores.of(every_movie, scores[user_rows], self._shape[1])
        (movie_weights,) = self._solution(l2)
        kept_scoring = self._kept_scoring(np.bincount(self._cell_of_pair, weights=weights[self._in_kept], minlength=len(self._kept_indices)).astype("float32"))
        return lambda user_rows: ColumnScores.of(self._kept, (kept_scoring[user_rows] @ movie_weights).astype("float64"), self._shape[1])


class Transitions:
    """What people rated next: SLIT, the transition half of SLIST (Choi et al., WWW 2021,
    "Session-aware Linear Item-Item Models"). Every position of every user's ratings in order (by
    timestamp, then movieId: `age_ranks`) is one row of a ridge regression whose input is the
    TRANSITION_WINDOW ratings up to it and whose output is the TRANSITION_TARGETS after it, each
    weighted 0.5 ^ (distance / TRANSITION_HALF_LIFE):

        T = (S'S + TRANSITION_L2 I)^-1 S'N     (S: inputs, N: outputs, positions x movies)

    over the TRANSITION_MAX_MOVIES most rated movies (the others score 0), from at most
    TRANSITION_MAX_POSITIONS positions. A user is scored from their latest TRANSITION_WINDOW ratings
    weighted as an input row is, so the latest counts most. S'S and S'N are added up over blocks of
    TRANSITION_BLOCK_POSITIONS positions, so memory holds a block, not every position's window."""

    def __init__(self, rated_users: np.ndarray, rated_movies: np.ndarray, ages: np.ndarray, n_users: int, n_movies: int):
        import scipy.sparse as sp
        from scipy.linalg import lapack

        rated_users, rated_movies, ages = (np.asarray(values) for values in (rated_users, rated_movies, ages))
        counts = np.bincount(rated_movies, minlength=n_movies)
        self._kept = np.sort(np.argsort(-counts, kind="stable")[: min(TRANSITION_MAX_MOVIES, n_movies)])
        kept_column = np.full(n_movies, -1, dtype="int32")
        kept_column[self._kept] = np.arange(len(self._kept))
        self._shape = (n_users, n_movies)
        # Each user's ratings oldest first; a position reads the same user's neighbours only. At 25M
        # ratings every array here is 100-200 MB, so they are int32 where they can be and freed early.
        order = np.lexsort((-ages, rated_users))
        columns = kept_column[rated_movies[order]]
        sorted_users = rated_users[order]
        del order
        first = np.r_[0, np.flatnonzero(sorted_users[1:] != sorted_users[:-1]) + 1]
        del sorted_users
        lengths = np.diff(np.r_[first, len(columns)])
        user_of = np.repeat(np.arange(len(first), dtype="int32"), lengths)
        start_of_user, stop_of_user = first, first + lengths
        decay = 0.5 ** (np.arange(max(TRANSITION_WINDOW, TRANSITION_TARGETS)) / TRANSITION_HALF_LIFE)
        fitted = np.flatnonzero(np.arange(1, len(columns) + 1) < stop_of_user[user_of])  # a user's latest rating has no next one
        fitted = fitted[:: max(1, -(-len(fitted) // TRANSITION_MAX_POSITIONS))].copy()
        inputs = np.zeros((len(self._kept),) * 2)
        outputs = np.zeros((len(self._kept),) * 2)
        for start in range(0, len(fitted), TRANSITION_BLOCK_POSITIONS):
            positions = fitted[start : start + TRANSITION_BLOCK_POSITIONS]

            def cells(offsets: np.ndarray, weights: np.ndarray):
                """(positions x kept movies) with each position's neighbour at each offset, weighted."""
                rows, cols, values = [], [], []
                starts, stops = start_of_user[user_of[positions]], stop_of_user[user_of[positions]]
                for offset, weight in zip(offsets, weights, strict=True):
                    neighbour = positions + offset
                    valid = (neighbour >= starts) & (neighbour < stops)
                    valid[valid] = columns[neighbour[valid]] >= 0
                    rows.append(np.flatnonzero(valid))
                    cols.append(columns[neighbour[valid]])
                    values.append(np.full(len(rows[-1]), weight))
                return sp.csr_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=(len(positions), len(self._kept)))

            source = cells(-np.arange(TRANSITION_WINDOW), decay[:TRANSITION_WINDOW])
            following = cells(np.arange(1, TRANSITION_TARGETS + 1), decay[:TRANSITION_TARGETS])
            inputs += (source.T @ source).toarray()
            outputs += (source.T @ following).toarray()
        inputs[np.diag_indices_from(inputs)] += TRANSITION_L2
        factor, info = lapack.dpotrf(inputs, lower=True, overwrite_a=True)
        if info == 0:
            self._weights, info = lapack.dpotrs(factor, outputs, lower=True, overwrite_b=True)
        if info != 0:
            raise np.linalg.LinAlgError(f"the transition term's input Gram matrix plus {TRANSITION_L2} I is not positive definite (LAPACK info {info})")
        # The user's input row: the latest TRANSITION_WINDOW ratings, weighted as a position's source.
        recent = (ages < TRANSITION_WINDOW) & (kept_column[rated_movies] >= 0)
        self._user_inputs = sp.csr_matrix(
            (decay[ages[recent]], (rated_users[recent], kept_column[rated_movies[recent]])), shape=(n_users, len(self._kept))
        )

    def kept_scores(self, user_rows: np.ndarray) -> ColumnScores:
        """The users' scores of the kept movies (every other movie scores 0)."""
        return ColumnScores.of(self._kept, self._user_inputs[user_rows] @ self._weights, self._shape[1])

    def scores(self, user_rows: np.ndarray) -> np.ndarray:
        return self.kept_scores(user_rows).dense()


def _ease_weights(gram: np.ndarray, l2: float) -> np.ndarray:
    """EASE's B = -P / diag(P) with a zero diagonal, P = (gram + l2 I)^-1, as float32. P comes from a
    Cholesky factorisation in one working copy (the matrix is symmetric positive definite): at 12,000
    movies that is about half the time and a third of the memory of numpy's general inverse."""
    return _ease_weights_of(_penalised(gram, l2), l2)


def _penalised(gram: np.ndarray, l2: float) -> np.ndarray:
    """gram + l2 I, a float64 copy: `_ease_weights_of` works in it."""
    work = gram.astype("float64")
    work[np.diag_indices_from(work)] += l2
    return work


def _ease_weights_of(work: np.ndarray, l2: float) -> np.ndarray:
    """`_ease_weights` from `work` = gram + l2 I (float64, overwritten)."""
    from scipy.linalg import lapack

    # LAPACK works on the Fortran-ordered transpose, the same symmetric matrix: its upper triangle is our lower one.
    factor, info = lapack.dpotrf(work.T, lower=False, overwrite_a=True, clean=False)
    if info == 0:
        factor, info = lapack.dpotri(factor, lower=False, overwrite_c=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"the item-item Gram matrix plus {l2} I is not positive definite (LAPACK info {info})")
    precision = factor.T  # our lower triangle holds P
    for start in range(0, len(precision), 2048):  # mirror the lower triangle into the upper, a block of rows at a time
        stop = min(start + 2048, len(precision))
        precision[start:stop, stop:] = precision[stop:, start:stop].T
        block = precision[start:stop, start:stop]
        block[np.triu_indices(stop - start, 1)] = block.T[np.triu_indices(stop - start, 1)]
    diagonal = precision.diagonal().copy()
    precision /= -diagonal[None, :]
    np.fill_diagonal(precision, 0.0)
    del factor
    return _as_float32_in_place(work, precision)


def _as_float32_in_place(work: np.ndarray, values: np.ndarray) -> np.ndarray:
    """`values` (a square view of `work`, which owns its float64 buffer) as float32, written row block
    by row block into the front half of that buffer, which is then shrunk: at 12,000 movies a float32
    copy beside the float64 matrix would peak 0.58 GB higher. Every float64 row a block overwrites
    lies before the block's end, so it has been read."""
    n = len(values)
    packed = work.reshape(-1).view("float32")[: n * n].reshape(n, n)
    for start in range(0, n, 1024):
        stop = min(start + 1024, n)
        packed[start:stop] = values[start:stop].astype("float32")
    del packed, values
    work.resize(-(-n * n // 2), refcheck=False)  # the float64 rows left are read; glibc shrinks it in place
    return work.view("float32")[: n * n].reshape(n, n)


def age_ranks(user_ids: np.ndarray, timestamps: np.ndarray, movie_ids: np.ndarray) -> np.ndarray:
    """Each rating's age rank among its user's ratings: 0 for the latest, 1 for the one before, ...

    Ratings are ordered by (timestamp, movieId), as the towers read them: a quarter of ml-latest-small's
    ratings share their user's timestamp second with another, and the movieId makes their order the
    same on every run and every row order of the file.
    """
    user_ids, timestamps, movie_ids = (np.asarray(values) for values in (user_ids, timestamps, movie_ids))
    order = np.lexsort((-movie_ids, -timestamps, user_ids))  # each user's latest first
    users = user_ids[order]
    first = np.r_[0, np.flatnonzero(users[1:] != users[:-1]) + 1]
    ranks = np.empty(len(order), dtype="int64")
    ranks[order] = np.arange(len(order)) - np.repeat(first, np.diff(np.r_[first, len(order)]))
    return ranks


def recency_weights(age_ranks: np.ndarray, half_life: float) -> np.ndarray:
    """0.5 ** (age rank / half_life): the latest rating counts 1, one `half_life` ratings older 0.5;
    an infinite half-life weighs every rating 1 (plain EASE)."""
    if math.isinf(half_life):
        return np.ones(len(age_ranks))
    return 0.5 ** (np.asarray(age_ranks, dtype="float64") / half_life)


def standardised(scores: np.ndarray) -> np.ndarray:
    """Each row shifted and scaled to mean 0 and standard deviation 1, so two scorers can be added
    (a new array; one centred copy, scaled in place: at MovieLens 25M's shape a row is 62,423 wide)."""
    scores = np.asarray(scores, dtype="float64")
    centred = scores - scores.mean(axis=1, keepdims=True)
    centred /= _spread(np.einsum("ij,ij->i", centred, centred)[:, None] / scores.shape[1])
    return centred


def _spread(variance: np.ndarray) -> np.ndarray:
    return np.maximum(np.sqrt(variance), 1e-12)


@dataclass(frozen=True)
class ColumnScores:
    """Users x `n_columns` scores held narrow: each row is `values` (users x len(columns)) in the sorted
    `columns` and its `background` (users x 1) in every other column. The item-item term scores only
    the movies it kept (12,000 of 62,423 at MovieLens 25M's shape), so it is standardised and added up
    narrow, and only the served blend is as wide as the catalogue."""

    columns: np.ndarray
    values: np.ndarray
    background: np.ndarray
    n_columns: int

    @classmethod
    def of(cls, columns: np.ndarray, values: np.ndarray, n_columns: int) -> ColumnScores:
        """Rows that are 0 outside `columns`."""
        return cls(columns, values, np.zeros((len(values), 1)), n_columns)

    def standardised(self) -> ColumnScores:
        """`standardised` of the wide rows, from the narrow ones."""
        others = self.n_columns - len(self.columns)
        mean = (self.values.sum(axis=1, keepdims=True) + others * self.background) / self.n_columns
        centred = self.values - mean
        spread = _spread((np.einsum("ij,ij->i", centred, centred)[:, None] + others * (self.background - mean) ** 2) / self.n_columns)
        centred /= spread
        return ColumnScores(self.columns, centred, (self.background - mean) / spread, self.n_columns)

    def plus(self, other: ColumnScores, weight: float) -> ColumnScores:
        """These scores plus `weight` times `other`'s, over both's columns."""
        columns = self.columns if np.array_equal(self.columns, other.columns) else np.union1d(self.columns, other.columns)
        return ColumnScores(columns, self._over(columns) + weight * other._over(columns), self.background + weight * other.background, self.n_columns)

    def _over(self, columns: np.ndarray) -> np.ndarray:
        """The values over `columns`, a sorted superset of this one's."""
        if len(columns) == len(self.columns):
            return self.values
        values = np.repeat(self.background, len(columns), axis=1)
        values[:, np.searchsorted(columns, self.columns)] = self.values
        return values

    def added_to(self, scores: np.ndarray, weight: float) -> np.ndarray:
        """`scores` (wide, modified) plus `weight` times these scores."""
        scores += weight * self.background
        scores[:, self.columns] += weight * (self.values - self.background)
        return scores

    def dense(self) -> np.ndarray:
        """The wide rows."""
        scores = np.repeat(self.background, self.n_columns, axis=1)
        scores[:, self.columns] = self.values
        return scores


def blend(two_tower_scores: np.ndarray, item_item: np.ndarray | None, weight: float) -> np.ndarray:
    """The served score: the two towers' score plus `weight` times the item-item score, each
    standardised per user; an infinite weight is the item-item score alone."""
    if item_item is None or weight == 0:
        return standardised(two_tower_scores)
    return _weighted_sum(standardised(two_tower_scores), standardised(item_item), weight)


def _weighted_sum(two_tower: np.ndarray, item_item: np.ndarray, weight: float) -> np.ndarray:
    if weight == 0:
        return two_tower
    return item_item if math.isinf(weight) else two_tower + weight * item_item


def blends_by_weight(two_tower_rows, item_item_rows, weights) -> dict[float, object]:
    """`score_rows` of `blend` for each weight. A user batch's two standardised scores are computed
    once and shared by every weight (evaluation.ranking_metrics_by_scorer asks for each batch in turn)."""
    last: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}

    def parts(user_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        key = np.asarray(user_rows).tobytes()
        if key not in last:
            last.clear()
            last[key] = standardised(two_tower_rows(user_rows)), standardised(item_item_rows(user_rows))
        return last[key]

    def scorer(weight: float):
        def score_rows(user_rows: np.ndarray) -> np.ndarray:
            return _weighted_sum(*parts(user_rows), weight)

        return score_rows

    return {weight: scorer(weight) for weight in weights}


def top_movies(scores: np.ndarray, k: int, excluded: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k best movie columns, best first, and their scores; `excluded` (bool, same shape) are never listed.

    Equal scores go to the lower column, so the order is deterministic; scores are never clipped.
    """
    scores = np.array(scores, dtype="float64", ndmin=2, order="C")  # a row's selection reads it contiguously: 2x faster
    if excluded is not None:
        scores[np.asarray(excluded, dtype=bool)] = -np.inf
    k = min(k, scores.shape[1])
    if k == 0:
        return np.zeros((len(scores), 0), dtype="int64"), np.zeros((len(scores), 0))
    # The k-th best score of each row, selected from the negated scores with a small kth: numpy's
    # selection near the far end of a row with many equal scores (movies outside the item-item
    # term, excluded ones at -inf) took up to 20x longer.
    negated = np.negative(scores)
    negated.partition(k - 1, axis=1)  # in place: one copy of the scores, not two
    kth = -negated[:, k - 1 : k]
    chosen = scores >= kth
    # Only where more movies tie at the k-th score than slots remain are the lower columns kept.
    crowded = np.flatnonzero(chosen.sum(axis=1) > k)
    if len(crowded):
        tied = scores[crowded] == kth[crowded]
        above = chosen[crowded] & ~tied
        needed = k - above.sum(axis=1, keepdims=True)
        chosen[crowded] = above | (tied & (np.cumsum(tied, axis=1) <= needed))
    columns = np.nonzero(chosen)[1].reshape(len(scores), k)
    order = np.lexsort((columns, -np.take_along_axis(scores, columns, axis=1)), axis=1)
    columns = np.take_along_axis(columns, order, axis=1)
    return columns, np.take_along_axis(scores, columns, axis=1)
