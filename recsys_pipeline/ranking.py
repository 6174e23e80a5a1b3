"""The one ranker: which movies a user sees, in which order, from the exported ranking model in numpy.

The ranking model (trained by recsys_pipeline.retrieval, exported as plain arrays in an .npz) scores
a user against every movie with a dot product of two vectors plus a movie bias:

    score(user, movie) = user_vector · movie_vector + movie_bias
    user_vector = content_projection · user_tower(user's features) + history_projection · mean(history rows of the movies they rated)

The served score blends it with an item-item term (EASE, Steck 2019, on the movies the user rated):

    served(user, movie) = standardised score(user, .) + item_item_weight · standardised item_item(user, .)

each standardised per user over the catalogue, the weight chosen on validation NDCG@10. `Ranker`
computes it; `model_evaluation`, the `user_recommendations` asset and the `recsys` command all order
movies with `top_movies` on its scores, so the figure in the UI is the figure of the list a person
gets. Nothing here imports TensorFlow: the user tower's Dense layers are evaluated in numpy.

Rows are looked up by ID: the model carries its movieId vocabulary (row i of every movie table is
`movie_ids[i]`), and a movie unknown to it cannot be scored or shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

# Arrays of the .npz; the user tower's layers are tower_kernel_0, tower_bias_0, tower_kernel_1, ...
MOVIE_IDS = "movie_ids"
MOVIE_VECTORS = "movie_vectors"
MOVIE_BIASES = "movie_biases"
HISTORY_EMBEDDINGS = "history_embeddings"
HISTORY_PROJECTION = "history_projection"
CONTENT_PROJECTION = "content_projection"
TOWER_KERNEL = "tower_kernel_"
TOWER_BIAS = "tower_bias_"
ITEM_ITEM_WEIGHT = "item_item_weight"
ITEM_ITEM_L2 = "item_item_l2"
# The item-item term (EASE, Steck 2019): closed-form movie-to-movie weights from who rated what.
DEFAULT_ITEM_ITEM_L2 = 200.0
# Weights of the item-item term tried on validation (0: the two towers alone).
ITEM_ITEM_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
# The two standardised scores counting equally: kept unless validation clearly prefers another weight.
EQUAL_WEIGHT = 1.0
# Above this many users x movies the scores are not held whole: the weights are solved for the most
# rated movies (at most ITEM_ITEM_MAX_MOVIES, a movies x movies matrix) and applied user batch by batch.
DENSE_SCORES_LIMIT = 50_000_000
ITEM_ITEM_MAX_MOVIES = 12_000


@dataclass(frozen=True)
class RankingModel:
    """The exported ranking model: every array the numpy scorer needs, and nothing else."""

    movie_ids: np.ndarray
    movie_vectors: np.ndarray
    movie_biases: np.ndarray
    history_embeddings: np.ndarray
    history_projection: np.ndarray
    content_projection: np.ndarray
    tower_kernels: tuple[np.ndarray, ...]
    tower_biases: tuple[np.ndarray, ...]
    # Served score = standardised two-tower score + item_item_weight x standardised item-item score,
    # the weight chosen on validation (see `blend`).
    item_item_weight: float = 0.0
    item_item_l2: float = DEFAULT_ITEM_ITEM_L2

    def arrays(self) -> dict[str, np.ndarray]:
        named = {
            MOVIE_IDS: self.movie_ids,
            MOVIE_VECTORS: self.movie_vectors,
            MOVIE_BIASES: self.movie_biases,
            HISTORY_EMBEDDINGS: self.history_embeddings,
            HISTORY_PROJECTION: self.history_projection,
            CONTENT_PROJECTION: self.content_projection,
            ITEM_ITEM_WEIGHT: np.asarray(self.item_item_weight),
            ITEM_ITEM_L2: np.asarray(self.item_item_l2),
        }
        for layer, (kernel, bias) in enumerate(zip(self.tower_kernels, self.tower_biases, strict=True)):
            named[f"{TOWER_KERNEL}{layer}"] = kernel
            named[f"{TOWER_BIAS}{layer}"] = bias
        return named

    @classmethod
    def from_arrays(cls, arrays) -> RankingModel:
        layers = sum(1 for name in arrays if name.startswith(TOWER_KERNEL))
        return cls(
            movie_ids=np.asarray(arrays[MOVIE_IDS]),
            movie_vectors=np.asarray(arrays[MOVIE_VECTORS]),
            movie_biases=np.asarray(arrays[MOVIE_BIASES]),
            history_embeddings=np.asarray(arrays[HISTORY_EMBEDDINGS]),
            history_projection=np.asarray(arrays[HISTORY_PROJECTION]),
            content_projection=np.asarray(arrays[CONTENT_PROJECTION]),
            tower_kernels=tuple(np.asarray(arrays[f"{TOWER_KERNEL}{i}"]) for i in range(layers)),
            tower_biases=tuple(np.asarray(arrays[f"{TOWER_BIAS}{i}"]) for i in range(layers)),
            item_item_weight=float(arrays[ITEM_ITEM_WEIGHT]),
            item_item_l2=float(arrays[ITEM_ITEM_L2]),
        )

    def save(self, path: Path) -> None:
        with open(path, "wb") as file:
            np.savez(file, **self.arrays())

    @classmethod
    def load(cls, path: Path) -> RankingModel:
        with np.load(path, allow_pickle=False) as arrays:
            return cls.from_arrays(arrays)

    def movie_rows(self, movie_ids) -> np.ndarray:
        """Row of each movieId in this model's tables, -1 where the model does not know the movie."""
        order = np.argsort(self.movie_ids, kind="stable")
        position = np.searchsorted(self.movie_ids, movie_ids, sorter=order)
        position = np.minimum(position, len(order) - 1)
        rows = order[position]
        return np.where(self.movie_ids[rows] == np.asarray(movie_ids), rows, -1)

    def content_vectors(self, scaled_user_features: np.ndarray) -> np.ndarray:
        return content_vectors(self.tower_kernels, self.tower_biases, scaled_user_features)

    def user_vectors(self, scaled_user_features: np.ndarray, history_rows: list[np.ndarray]) -> np.ndarray:
        """Each user's vector from their scaled features and the model rows of the movies they rated (may be empty)."""
        history = np.zeros((len(history_rows), self.history_embeddings.shape[1]), dtype="float32")
        for user, rows in enumerate(history_rows):
            if len(rows):
                history[user] = self.history_embeddings[rows].mean(axis=0)
        return self.content_vectors(scaled_user_features) @ self.content_projection + history @ self.history_projection

    def scores(self, user_vectors: np.ndarray) -> np.ndarray:
        """Users × movies scores, unclipped (float64, so near-equal scores stay apart)."""
        return np.asarray(user_vectors, dtype="float64") @ self.movie_vectors.T.astype("float64") + self.movie_biases


class Ranker:
    """The served ranking, the one way `model_evaluation`, `user_recommendations`, the `recsys`
    command and the benchmarks score users: for each user of `user_features`, the ranking model's
    score of every movie of `movie_features` (columns, looked up by ID) blended with the item-item
    score of the movies the user rated in `known` (`blend`, weight `item_item_weight`, default the
    model's own). `known` holds the ratings users are known by (userId, movieId); evaluation passes
    the training ratings, serving every rating."""

    def __init__(self, model: RankingModel, known, user_features, movie_features, scalers, item_item_weight: float | None = None):
        self.model = model
        self.item_item_weight = model.item_item_weight if item_item_weight is None else item_item_weight
        movie_ids = movie_features["movieId"].to_numpy()
        self._columns = model.movie_rows(movie_ids)
        if (self._columns < 0).any():
            raise ValueError(f"the ranking model knows {int((self._columns >= 0).sum())} of the {len(movie_ids)} movies of movie_features")
        user_ids = user_features["userId"].to_numpy()
        self._scaled_users = scalers.user.transform(user_features)
        self._histories = history_rows(model, user_ids, known["userId"].to_numpy(), known["movieId"].to_numpy())
        self._known_pairs = (_rows_of(user_ids, known["userId"].to_numpy()), _rows_of(movie_ids, known["movieId"].to_numpy()), len(user_ids), len(movie_ids))
        self._item_item = None

    def model_scores(self, user_rows: np.ndarray) -> np.ndarray:
        """Users x movies scores of the ranking model alone (the towers)."""
        vectors = self.model.user_vectors(self._scaled_users[user_rows], [self._histories[row] for row in user_rows])
        return self.model.scores(vectors)[:, self._columns]

    def item_item_scores(self, user_rows: np.ndarray) -> np.ndarray:
        """Users x movies scores of the item-item term alone (its weights solved once, on first use)."""
        if self._item_item is None:
            self._item_item = item_item_scorer(*self._known_pairs, self.model.item_item_l2)
        return self._item_item(user_rows)

    def score_rows(self, user_rows: np.ndarray) -> np.ndarray:
        """Users x movies served scores, unclipped."""
        if self.item_item_weight == 0:
            return blend(self.model_scores(user_rows), None, 0.0)
        return blend(self.model_scores(user_rows), self.item_item_scores(user_rows), self.item_item_weight)

    def score_rows_by_weight(self, weights) -> dict[float, object]:
        """`score_rows` at each item-item weight, sharing each user batch's two scores (for choosing the weight)."""
        return blends_by_weight(self.model_scores, self.item_item_scores, weights)


def visitor_scores(model: RankingModel, scaled_visitor: np.ndarray, liked_movie_ids, movie_ids: np.ndarray) -> np.ndarray:
    """One visitor's ranking-model score of each of `movie_ids` (-inf for a movie the model does not
    know), from their scaled features and the movies they named; they have no item-item term."""
    columns = model.movie_rows(movie_ids)
    liked = model.movie_rows(np.asarray(liked_movie_ids, dtype="int64"))
    scores = model.scores(model.user_vectors(scaled_visitor, [liked[liked >= 0]]))[0]
    return np.where(columns >= 0, scores[columns], -np.inf)


def _rows_of(ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """The position of each of `wanted` in `ids`; every one must be there."""
    rows = pd.Index(ids).get_indexer(wanted)
    if (rows < 0).any():
        raise ValueError("some ratings refer to users or movies that have no feature row")
    return rows


def standardised(scores: np.ndarray) -> np.ndarray:
    """Each row shifted and scaled to mean 0 and standard deviation 1, so two scorers can be added."""
    scores = np.asarray(scores, dtype="float64")
    return (scores - scores.mean(axis=1, keepdims=True)) / np.maximum(scores.std(axis=1, keepdims=True), 1e-12)


def blend(two_tower_scores: np.ndarray, item_item: np.ndarray | None, weight: float) -> np.ndarray:
    """The served score: the two towers' score plus `weight` times the item-item score, each standardised per user."""
    if item_item is None or weight == 0:
        return standardised(two_tower_scores)
    return standardised(two_tower_scores) + weight * standardised(item_item)


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
            two_tower, item_item = parts(user_rows)
            return two_tower if weight == 0 else two_tower + weight * item_item

        return score_rows

    return {weight: scorer(weight) for weight in weights}


def chosen_item_item_weight(ndcg_by_weight: dict[float, np.ndarray]) -> float:
    """The item-item weight to serve, from each weight's per-user validation NDCG (the same users in
    the same order for every weight): the best weight when it beats EQUAL_WEIGHT by more than one
    standard error of the paired per-user difference, else EQUAL_WEIGHT.

    Between neighbouring weights validation NDCG@10 often differs by less than its noise (0.228 to
    0.229 over 0.25..8 on ml-latest-small), and taking the noisy maximum then picks a weight at
    random; the two scores counting equally is the choice that needs no evidence.
    """
    means = {weight: float(np.mean(values)) for weight, values in ndcg_by_weight.items()}
    best = max(means, key=means.get)
    if best == EQUAL_WEIGHT or EQUAL_WEIGHT not in ndcg_by_weight:
        return best
    gain = np.asarray(ndcg_by_weight[best], dtype="float64") - np.asarray(ndcg_by_weight[EQUAL_WEIGHT], dtype="float64")
    standard_error = gain.std(ddof=1) / np.sqrt(len(gain)) if len(gain) > 1 else 0.0
    return best if gain.mean() > standard_error else EQUAL_WEIGHT


def item_item_scorer(
    rated_users: np.ndarray, rated_movies: np.ndarray, n_users: int, n_movies: int, l2: float = DEFAULT_ITEM_ITEM_L2, input_weights: np.ndarray | None = None
):
    """`score_rows(user rows) -> users x movies` item-item scores (EASE: ridge regression of each
    movie's column on the others', zero diagonal), from the (user row, movie row) pairs a user rated.

    The weights are fitted on who rated what (each pair counts 1); `input_weights` (one per pair,
    e.g. `recency_weights`) weigh each rated movie's contribution when a user is scored, so recent
    ratings can count more than old ones.

    Where users x movies is small and users are fewer than movies, every score is computed at once
    through the users x users form (Woodbury identity); otherwise the movies x movies weights are
    solved for the ITEM_ITEM_MAX_MOVIES most rated movies (others score 0) and applied per batch.
    """
    import scipy.sparse as sp  # imported here: only the ranking steps need it

    rated = sp.csr_matrix((np.ones(len(rated_users)), (rated_users, rated_movies)), shape=(n_users, n_movies))
    rated.data[:] = 1.0  # a movie rated twice by one user counts once
    scoring = rated
    if input_weights is not None:
        scoring = sp.csr_matrix((np.asarray(input_weights, dtype="float64"), (rated_users, rated_movies)), shape=(n_users, n_movies))
    if n_users <= n_movies and n_users * n_movies <= DENSE_SCORES_LIMIT:
        dense = rated.toarray()
        inverse = np.linalg.inv(l2 * np.eye(n_users) + dense @ dense.T)
        spread = inverse @ dense
        diagonal = (1.0 - (dense * spread).sum(axis=0)) / l2
        scored = dense if input_weights is None else scoring.toarray()
        scores = scored - (scored - (scored @ dense.T) @ spread) / l2 / np.maximum(diagonal, 1e-12)
        return lambda user_rows: scores[user_rows]
    counts = np.asarray(rated.sum(axis=0)).ravel()
    kept = np.sort(np.argsort(-counts, kind="stable")[: min(ITEM_ITEM_MAX_MOVIES, n_movies)])
    kept_rated = rated[:, kept].tocsc().tocsr()
    kept_scoring = scoring[:, kept].tocsc().tocsr()
    precision = np.linalg.inv((kept_rated.T @ kept_rated).toarray() + l2 * np.eye(len(kept)))
    weights = -precision / np.diag(precision)
    np.fill_diagonal(weights, 0.0)

    def score_rows(user_rows: np.ndarray) -> np.ndarray:
        scores = np.zeros((len(user_rows), n_movies))
        scores[:, kept] = kept_scoring[user_rows] @ weights
        return scores

    return score_rows


def age_ranks(user_ids: np.ndarray, timestamps: np.ndarray, movie_ids: np.ndarray) -> np.ndarray:
    """Each rating's age rank among its user's ratings: 0 for the latest, 1 for the one before, ...

    Ratings are ordered by (timestamp, movieId): a quarter of ml-latest-small's ratings share their
    user's timestamp second with another, and the movieId makes their order the same on every run
    and every row order of the file.
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
    an infinite half-life weighs every rating 1."""
    if np.isinf(half_life):
        return np.ones(len(age_ranks))
    return 0.5 ** (np.asarray(age_ranks, dtype="float64") / half_life)


def content_vectors(kernels, biases, scaled_user_features: np.ndarray) -> np.ndarray:
    """The user tower's content vector (Dense ReLU layers, then a linear one) of each row of scaled features."""
    hidden = np.asarray(scaled_user_features, dtype="float32")
    last = len(kernels) - 1
    for layer, (kernel, bias) in enumerate(zip(kernels, biases, strict=True)):
        hidden = hidden @ kernel + bias
        if layer < last:
            hidden = np.maximum(hidden, 0.0)
    return hidden


def history_rows(model: RankingModel, user_ids: np.ndarray, rated_user_ids: np.ndarray, rated_movie_ids: np.ndarray) -> list[np.ndarray]:
    """For each of `user_ids`, the model rows of the movies they rated (pairs of rated_user_ids, rated_movie_ids)."""
    rows = model.movie_rows(rated_movie_ids)
    known = rows >= 0
    users, rows = np.asarray(rated_user_ids)[known], rows[known]
    order = np.argsort(users, kind="stable")
    users, rows = users[order], rows[order]
    starts = np.searchsorted(users, user_ids, side="left")
    ends = np.searchsorted(users, user_ids, side="right")
    return [rows[start:end] for start, end in zip(starts, ends, strict=True)]


def top_movies(scores: np.ndarray, k: int, excluded: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k best movie columns, best first, and their scores; `excluded` (bool, same shape) are never listed.

    Equal scores go to the lower column, so the order is deterministic; scores are never clipped.
    """
    scores = np.array(scores, dtype="float64", ndmin=2)
    if excluded is not None:
        scores[np.asarray(excluded, dtype=bool)] = -np.inf
    k = min(k, scores.shape[1])
    position = scores.shape[1] - k
    kth = np.partition(scores, position, axis=1)[:, position : position + 1]
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
