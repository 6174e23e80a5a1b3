"""Error metrics and the baselines every model is compared with, fitted on training ratings only."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd


def rmse(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(predicted, "float64") - np.asarray(actual, "float64")) ** 2)))


def mae(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(predicted, "float64") - np.asarray(actual, "float64"))))


@dataclass(frozen=True)
class BiasBaseline:
    """rating ~ global mean + user bias + movie bias, the "user+item bias" peer."""

    global_mean: float
    user_bias: pd.Series
    movie_bias: pd.Series

    def predict(self, ratings: pd.DataFrame) -> np.ndarray:
        user = self.user_bias.reindex(ratings["userId"]).fillna(0.0).to_numpy()
        movie = self.movie_bias.reindex(ratings["movieId"]).fillna(0.0).to_numpy()
        return self.global_mean + user + movie


def fit_bias_baseline(train_ratings: pd.DataFrame, user_reg: float = 15.0, movie_reg: float = 10.0, iterations: int = 10) -> BiasBaseline:
    """Regularised biases by alternating least squares (the scheme and defaults of Surprise's BaselineOnly)."""
    users, user_codes = np.unique(train_ratings["userId"].to_numpy(), return_inverse=True)
    movies, movie_codes = np.unique(train_ratings["movieId"].to_numpy(), return_inverse=True)
    ratings = train_ratings["rating"].to_numpy(dtype="float64")
    global_mean = float(ratings.mean())
    user_counts = np.bincount(user_codes, minlength=len(users))
    movie_counts = np.bincount(movie_codes, minlength=len(movies))
    user_bias = np.zeros(len(users))
    movie_bias = np.zeros(len(movies))
    for _ in range(iterations):
        residual = ratings - global_mean - user_bias[user_codes]
        movie_bias = np.bincount(movie_codes, weights=residual, minlength=len(movies)) / (movie_reg + movie_counts)
        residual = ratings - global_mean - movie_bias[movie_codes]
        user_bias = np.bincount(user_codes, weights=residual, minlength=len(users)) / (user_reg + user_counts)
    return BiasBaseline(global_mean, pd.Series(user_bias, index=users), pd.Series(movie_bias, index=movies))


def clip_stars(predicted: np.ndarray, minimum: float = 0.5, maximum: float = 5.0) -> np.ndarray:
    return np.clip(predicted, minimum, maximum)


def error_table(ratings: pd.DataFrame, predictions: dict[str, np.ndarray], to_unit) -> pd.DataFrame:
    """RMSE and MAE in stars, and MSE on the [-1, 1] training scale, per model and split.

    `predictions` maps a model name to its predicted stars for every row of `ratings`, which
    carries the true `rating` and its `split`.
    """
    rows = []
    actual = ratings["rating"].to_numpy()
    for model, predicted in predictions.items():
        for split in ratings["split"].cat.categories:
            mask = (ratings["split"] == split).to_numpy()
            if not mask.any():
                continue
            scaled_error = to_unit(predicted[mask]) - to_unit(actual[mask])
            rows.append(
                {
                    "model": model,
                    "split": split,
                    "ratings": int(mask.sum()),
                    "rmse": rmse(predicted[mask], actual[mask]),
                    "mae": mae(predicted[mask], actual[mask]),
                    "mse_scaled": float(np.mean(np.square(scaled_error, dtype="float64"))),
                }
            )
    return pd.DataFrame(rows)


# --- ranking --------------------------------------------------------------------------------------

RANKING_CUTOFF = 10
RECALL_CUTOFF = 20
# Ranking scores users × all movies; above this many test users (MovieLens 25M has 162k) a seeded
# sample keeps evaluation to minutes. ml-latest-small's 610 users are all ranked.
RANKED_USERS_LIMIT = 20_000


def popularity_scores(rating_counts: np.ndarray) -> np.ndarray:
    """log(1 + training ratings) per movie: the most-popular baseline's score."""
    return np.log1p(np.asarray(rating_counts, dtype="float64"))


def ranking_metrics(score_rows, train_pairs: tuple[np.ndarray, np.ndarray], test_pairs: tuple[np.ndarray, np.ndarray], n_movies: int, **options) -> dict[str, float]:
    """Mean precision@k, NDCG@k (binary relevance), recall@recall_k and catalogue coverage@k over the users with a test
    rating (a seeded sample of `max_users` of them when there are more: every user scores every movie).

    `score_rows(user_rows)` returns a users × movies score matrix; each user's candidates are all
    movies but those they rated in training, ordered by recsys_pipeline.ranking.top_movies (the
    served order); a movie is relevant when the user rated it in test. Recall divides by
    min(recall_k, relevant movies). Pairs are (user rows, movie rows). `options` (k, recall_k,
    batch, max_users) are those of per_user_ranking_metrics.
    """
    return ranking_metrics_by_scorer({None: score_rows}, train_pairs, test_pairs, n_movies, **options)[None]


def ranking_metrics_by_scorer(scorers: Mapping[Hashable, Callable[[np.ndarray], np.ndarray]], train_pairs, test_pairs, n_movies: int, **options) -> dict[Hashable, dict[str, float]]:
    """`ranking_metrics` of each scorer, by its key, in one pass over the user batches."""
    per_user = per_user_ranking_metrics(scorers, train_pairs, test_pairs, n_movies, **options)
    return {key: {name: float(np.mean(values)) for name, values in figures.items()} for key, figures in per_user.items()}


def per_user_ranking_metrics(
    scorers: Mapping[Hashable, Callable[[np.ndarray], np.ndarray]],
    train_pairs: tuple[np.ndarray, np.ndarray],
    test_pairs: tuple[np.ndarray, np.ndarray],
    n_movies: int,
    k: int = RANKING_CUTOFF,
    recall_k: int = RECALL_CUTOFF,
    batch: int = 256,
    max_users: int = RANKED_USERS_LIMIT,
) -> dict[Hashable, dict[str, np.ndarray]]:
    """The figures of `ranking_metrics` for each scorer before averaging: precision, NDCG and recall per
    ranked user (the same users, in the same order, for every scorer) and coverage as one number.
    Every scorer is asked for the same user batch in turn, so scorers that share work can reuse it."""
    import scipy.sparse as sp

    from recsys_pipeline.ranking import top_movies

    n_users = int(max(train_pairs[0].max(initial=-1), test_pairs[0].max(initial=-1))) + 1
    seen = sp.csr_matrix((np.ones(len(train_pairs[0]), dtype=bool), train_pairs), shape=(n_users, n_movies))
    relevant = sp.csr_matrix((np.ones(len(test_pairs[0]), dtype=bool), test_pairs), shape=(n_users, n_movies))
    users = np.unique(test_pairs[0])
    if len(users) > max_users:
        users = np.sort(np.random.default_rng(0).choice(users, max_users, replace=False))
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    precision, ndcg, recall = ({key: [] for key in scorers} for _ in range(3))
    shown = {key: np.zeros(n_movies, dtype=bool) for key in scorers}
    for start in range(0, len(users), batch):
        rows = users[start : start + batch]
        seen_rows, relevant_rows = seen[rows].toarray(), relevant[rows].toarray()
        n_relevant = relevant_rows.sum(axis=1)
        ideal = np.cumsum(discount)[np.minimum(n_relevant, k) - 1]
        for key, score_rows in scorers.items():
            top, _ = top_movies(score_rows(rows), max(k, recall_k), seen_rows)
            hits = np.take_along_axis(relevant_rows, top, axis=1).astype("float64")
            at_k = hits[:, :k]
            shown[key][top[:, :k].ravel()] = True
            precision[key].append(at_k.sum(axis=1) / k)
            # Fewer than k movies in the catalogue: the list is shorter, precision still counts k slots.
            ndcg[key].append((at_k * discount[: at_k.shape[1]]).sum(axis=1) / ideal)
            recall[key].append(hits[:, :recall_k].sum(axis=1) / np.minimum(n_relevant, recall_k))
    return {
        key: {
            f"precision_at_{k}": np.concatenate(precision[key]),
            f"ndcg_at_{k}": np.concatenate(ndcg[key]),
            f"recall_at_{recall_k}": np.concatenate(recall[key]),
            # Catalogue coverage: the share of all movies that appear in at least one user's top k.
            f"coverage_at_{k}": np.float64(shown[key].mean()),
        }
        for key in scorers
    }


def ranking_report(
    score_rows,
    train_pairs: tuple[np.ndarray, np.ndarray],
    test_pairs: tuple[np.ndarray, np.ndarray],
    rating_counts: np.ndarray,
) -> dict[str, float]:
    """test_* ranking figures of `score_rows(user_rows)` (users × movies, the served ranking) and
    baseline_popularity_* of ranking by training rating count."""
    popularity = popularity_scores(rating_counts)

    def most_popular(user_rows: np.ndarray) -> np.ndarray:
        return np.broadcast_to(popularity, (len(user_rows), len(popularity)))

    by_scorer = ranking_metrics_by_scorer({"test": score_rows, "baseline_popularity": most_popular}, train_pairs, test_pairs, len(popularity))
    return {f"{prefix}_{name}": value for prefix, figures in by_scorer.items() for name, value in figures.items()}
