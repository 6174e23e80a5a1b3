"""Asset checks. The blocking ones stop bad data before it reaches the model or the similarity tables."""

import dagster as dg
import numpy as np
import pandas as pd

from recsys_pipeline import movielens, splits
from recsys_pipeline.model_inputs import rating_rows, scaled_inputs
from recsys_pipeline.standardisation import FittedScalers
from recsys_pipeline.similarity import MAX_SQUARED_DISTANCE, exact_top_k

SAMPLED_PAIRS = 2_000
MATRIX_BLOCK_ROWS = 256
# Above this many movies, similar_movies is checked against brute force on a seeded sample of movies
# (brute force over ml-latest-small's 9,742 took 3.7 s of a 60 s run; a sample of 2,000 still meets any
# systematic error, and the search itself is tested against brute force on every row).
CHECKED_MOVIES = 2_000
TOLERANCE = 1e-5


def non_finite_counts(values: pd.DataFrame) -> dict[str, int]:
    """NaN and infinity counts per numeric column, only for columns that have any."""
    counts = {}
    for column in values.select_dtypes("number").columns:
        bad = int((~np.isfinite(values[column].to_numpy(dtype="float64"))).sum())
        if bad:
            counts[str(column)] = bad
    return counts


def _finite_result(table: pd.DataFrame) -> dg.AssetCheckResult:
    bad = non_finite_counts(table)
    return dg.AssetCheckResult(
        passed=not bad,
        metadata={"non_finite_values": sum(bad.values()), "columns_with_non_finite": str(bad or "none")},
    )


REGRESSION_GATE = "no_regression_against_accepted_model"
# How the gate compared the two models (metadata "comparison").
SAME_RATINGS = "rmse_in_stars"
SKILL = "skill_over_global_mean"
RMSE_ONLY = "rmse_in_stars_without_skill"
REGRESSION_GATE_RULE = (
    "Same validation ratings (equal fingerprints): the candidate's validation RMSE may exceed the "
    "accepted model's by at most RECSYS_RMSE_TOLERANCE (t) stars. Different or unknown fingerprints "
    "(the data changed, or a record written before fingerprints): each model's skill on its own "
    "validation ratings, 1 - val_rmse / global_mean_val_rmse, is compared instead, and the candidate's "
    "may fall below the accepted model's by at most t / (the accepted model's global_mean_val_rmse): "
    "t stars of RMSE on the accepted model's ratings expressed as skill; equivalently, the candidate's "
    "RMSE scaled to the accepted ratings' difficulty (x accepted / candidate global-mean RMSE) may "
    "exceed the accepted RMSE by at most t."
)


def _positive(value) -> float | None:
    return None if value is None or not float(value) > 0 else float(value)


def regression_gate_result(
    val_rmse: float,
    accepted: dict | None,
    tolerance: float,
    *,
    global_mean_val_rmse: float | None = None,
    val_fingerprint: str | None = None,
) -> dg.AssetCheckResult:
    """Pass when no model was accepted yet, or when the candidate (validation RMSE `val_rmse`, the
    global mean's `global_mean_val_rmse` on the same ratings, their `val_fingerprint`) is no worse
    than the accepted model (a release manifest: `val_rmse`, `global_mean_val_rmse`,
    `val_fingerprint`, `run_id`) by the rule in REGRESSION_GATE_RULE. A missing fingerprint on
    either side counts as changed data; when the global-mean RMSE of either side is missing too,
    skill cannot be measured and the RMSEs are compared in stars, as the metadata says. Blocking: a
    failure keeps the accepted model and everything downstream of it as they were."""
    if accepted is None:
        return dg.AssetCheckResult(
            check_name=REGRESSION_GATE,
            passed=True,
            description="No model accepted yet: the first model is accepted.",
            metadata={"val_rmse": val_rmse, "tolerance": tolerance, "val_fingerprint": val_fingerprint or "unknown", "rule": REGRESSION_GATE_RULE},
        )
    accepted_rmse = float(accepted["val_rmse"])
    accepted_fingerprint = accepted.get("val_fingerprint")
    metadata = {
        "val_rmse": val_rmse,
        "accepted_val_rmse": accepted_rmse,
        "regression": val_rmse - accepted_rmse,
        "tolerance": tolerance,
        "accepted_in_run": str(accepted.get("run_id", "unknown")),
        "val_fingerprint": val_fingerprint or "unknown (candidate stored by an older version)",
        "accepted_val_fingerprint": accepted_fingerprint or "unknown (release written by an older version)",
        "rule": REGRESSION_GATE_RULE,
    }
    if val_fingerprint is not None and val_fingerprint == accepted_fingerprint:
        return dg.AssetCheckResult(
            check_name=REGRESSION_GATE,
            passed=bool(val_rmse <= accepted_rmse + tolerance),
            description=(
                f"Same validation ratings: validation RMSE may exceed the accepted model's ({accepted_rmse:.4f}) by at most {tolerance} stars."
            ),
            metadata={**metadata, "validation_ratings": "same", "comparison": SAME_RATINGS},
        )
    if accepted_fingerprint is None:
        why = "unknown: the accepted release was written by an older version without a fingerprint, so the data is treated as changed"
    elif val_fingerprint is None:
        why = "unknown: the candidate was stored by an older version without a fingerprint, so the data is treated as changed"
    else:
        why = "changed"
    candidate_mean, accepted_mean = _positive(global_mean_val_rmse), _positive(accepted.get("global_mean_val_rmse"))
    metadata["validation_ratings"] = why
    if candidate_mean is None or accepted_mean is None:
        return dg.AssetCheckResult(
            check_name=REGRESSION_GATE,
            passed=bool(val_rmse <= accepted_rmse + tolerance),
            description=(
                f"Validation ratings {why.split(':')[0]}, and a global-mean RMSE is missing, so skill cannot be measured: "
                f"validation RMSE may exceed the accepted model's ({accepted_rmse:.4f}) by at most {tolerance} stars."
            ),
            metadata={**metadata, "comparison": RMSE_ONLY},
        )
    skill, accepted_skill = 1.0 - val_rmse / candidate_mean, 1.0 - accepted_rmse / accepted_mean
    skill_tolerance = tolerance / accepted_mean
    return dg.AssetCheckResult(
        check_name=REGRESSION_GATE,
        passed=bool(skill >= accepted_skill - skill_tolerance),
        description=(
            f"Validation ratings {why.split(':')[0]}: skill over the global mean (1 - val_rmse / global_mean_val_rmse, each on its own "
            f"validation ratings) may fall below the accepted model's ({accepted_skill:.4f}) by at most "
            f"{tolerance} / {accepted_mean:.4f} = {skill_tolerance:.4f}."
        ),
        metadata={
            **metadata,
            "comparison": SKILL,
            "global_mean_val_rmse": candidate_mean,
            "accepted_global_mean_val_rmse": accepted_mean,
            "skill": skill,
            "accepted_skill": accepted_skill,
            "skill_tolerance": skill_tolerance,
            "val_rmse_at_accepted_difficulty": val_rmse * accepted_mean / candidate_mean,
        },
    )


@dg.asset_check(asset="raw_ratings", blocking=True)
def ratings_on_half_star_scale(raw_ratings: pd.DataFrame) -> dg.AssetCheckResult:
    """Every rating is a half star from 0.5 to 5."""
    rating = raw_ratings["rating"].to_numpy()
    off_scale = int(((rating < movielens.MIN_RATING) | (rating > movielens.MAX_RATING) | (rating * 2 != np.round(rating * 2))).sum())
    return dg.AssetCheckResult(passed=off_scale == 0, metadata={"off_scale_ratings": off_scale})


@dg.asset_check(asset="movie_features", blocking=True)
def movie_features_finite(movie_features: pd.DataFrame) -> dg.AssetCheckResult:
    """No NaN or infinity in any numeric movie feature."""
    return _finite_result(movie_features)


@dg.asset_check(asset="movie_features", blocking=True, additional_ins={"raw_movies": dg.AssetIn("raw_movies")})
def movie_features_one_row_per_movie(movie_features: pd.DataFrame, raw_movies: pd.DataFrame) -> dg.AssetCheckResult:
    """Exactly one feature row for every movie in movies.csv."""
    same_movies = bool(np.array_equal(movie_features["movieId"].to_numpy(), np.sort(raw_movies["movieId"].to_numpy())))
    return dg.AssetCheckResult(passed=same_movies, metadata={"feature_rows": len(movie_features), "movies": len(raw_movies)})


@dg.asset_check(asset="user_genre_averages", blocking=True)
def user_genre_averages_finite(user_genre_averages: pd.DataFrame) -> dg.AssetCheckResult:
    """No NaN or infinity in any user feature."""
    return _finite_result(user_genre_averages)


@dg.asset_check(
    asset="fitted_scalers",
    blocking=True,
    additional_ins={name: dg.AssetIn(name) for name in ("rating_splits", "user_genre_averages", "movie_features")},
)
def scaled_training_inputs_finite(
    fitted_scalers: dict, rating_splits: pd.DataFrame, user_genre_averages: pd.DataFrame, movie_features: pd.DataFrame
) -> dg.AssetCheckResult:
    """The scaled inputs the network trains on are finite, and scaled targets lie in [-1, 1]."""
    scalers = FittedScalers.from_dict(fitted_scalers)
    inputs = scaled_inputs(user_genre_averages, movie_features, scalers)
    targets = scalers.target.to_unit(rating_rows(splits.training_rows(rating_splits), inputs).targets)
    bad_inputs = int((~np.isfinite(inputs.users.matrix)).sum() + (~np.isfinite(inputs.movies.matrix)).sum())
    targets_out_of_range = int(((targets < -1 - TOLERANCE) | (targets > 1 + TOLERANCE)).sum())
    return dg.AssetCheckResult(
        passed=bad_inputs == 0 and targets_out_of_range == 0,
        metadata={"non_finite_inputs": bad_inputs, "targets_out_of_range": targets_out_of_range},
    )


@dg.asset_check(asset="movie_embeddings", blocking=True, additional_ins={"movie_features": dg.AssetIn("movie_features")})
def movie_embeddings_unit_length(movie_embeddings: np.ndarray, movie_features: pd.DataFrame) -> dg.AssetCheckResult:
    """One finite, unit-length embedding per movie."""
    norms = np.linalg.norm(np.asarray(movie_embeddings, dtype="float64"), axis=1)
    worst = float(np.max(np.abs(norms - 1.0))) if len(norms) else 0.0
    return dg.AssetCheckResult(
        passed=len(norms) == len(movie_features) and bool(np.isfinite(norms).all()) and worst < 1e-3,
        metadata={"embeddings": len(norms), "movies": len(movie_features), "largest_norm_error": worst},
    )


@dg.asset_check(asset="embedding_distance_matrix", blocking=True)
def distance_matrix_well_formed(embedding_distance_matrix: np.ndarray) -> dg.AssetCheckResult:
    """Square, exactly symmetric, zero on the diagonal, finite and within [0, 4].

    Read in row blocks from the memory-mapped file, so memory stays at a block, not the matrix."""
    matrix = embedding_distance_matrix
    square = matrix.ndim == 2 and matrix.shape[0] == matrix.shape[1]
    problems = set() if square else {f"shape {matrix.shape} is not square"}
    for start in range(0, matrix.shape[0] if square else 0, MATRIX_BLOCK_ROWS):
        rows = np.asarray(matrix[start : start + MATRIX_BLOCK_ROWS])
        if not np.isfinite(rows).all():
            problems.add("non-finite distances")
        elif rows.min() < 0 or rows.max() > MAX_SQUARED_DISTANCE:
            problems.add(f"distances outside [0, {MAX_SQUARED_DISTANCE}]")
        if np.any(np.diagonal(rows, offset=start) != 0):
            problems.add("non-zero diagonal")
        if not np.array_equal(rows, matrix[:, start : start + MATRIX_BLOCK_ROWS].T):
            problems.add("not symmetric")
    return dg.AssetCheckResult(passed=not problems, metadata={"shape": str(matrix.shape), "problems": "; ".join(sorted(problems)) or "none"})


@dg.asset_check(asset="embedding_distance_matrix", blocking=True, additional_ins={"movie_embeddings": dg.AssetIn("movie_embeddings")})
def distance_matrix_matches_embeddings(embedding_distance_matrix: np.ndarray, movie_embeddings: np.ndarray) -> dg.AssetCheckResult:
    """Sampled entries equal |a - b|^2 computed directly from the embeddings."""
    embeddings = np.asarray(movie_embeddings, dtype="float64")
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, len(embeddings), size=(2, SAMPLED_PAIRS))
    direct = np.sum((embeddings[i] - embeddings[j]) ** 2, axis=1)
    worst = float(np.max(np.abs(np.asarray(embedding_distance_matrix)[i, j] - direct)))
    return dg.AssetCheckResult(passed=worst < TOLERANCE * 10, metadata={"sampled_pairs": SAMPLED_PAIRS, "largest_difference": worst})


@dg.asset_check(
    asset="similar_movies",
    additional_ins={"movie_embeddings": dg.AssetIn("movie_embeddings"), "movie_features": dg.AssetIn("movie_features")},
)
def similar_movies_are_nearest(similar_movies: pd.DataFrame, movie_embeddings: np.ndarray, movie_features: pd.DataFrame) -> dg.AssetCheckResult:
    """Each movie's listed neighbours are distinct, nearest first, and its nearest others by brute
    force over the embeddings (similarity.exact_top_k), at the listed distances: every movie when
    there are at most CHECKED_MOVIES, a seeded sample above."""
    embeddings = np.asarray(movie_embeddings, dtype="float64")
    n = len(embeddings)
    k = int(similar_movies["rank"].max())
    if len(similar_movies) != n * k:
        return dg.AssetCheckResult(passed=False, metadata={"rows": len(similar_movies), "expected_rows": n * k})
    checked = np.arange(n) if n <= CHECKED_MOVIES else np.sort(np.random.default_rng(0).choice(n, CHECKED_MOVIES, replace=False))
    # similar_movies lists each movie's k neighbours in movie_features order, nearest first.
    listed_ids = similar_movies["similar_movieId"].to_numpy().reshape(n, k)[checked]
    listed_distances = similar_movies["distance"].to_numpy().reshape(n, k)[checked]
    sources_in_order = bool(np.array_equal(similar_movies["movieId"].to_numpy()[::k], movie_features["movieId"].to_numpy()))
    targets = pd.Index(movie_features["movieId"]).get_indexer(listed_ids.ravel()).reshape(len(checked), k)
    unknown = int((targets < 0).sum())
    sorted_ids = np.sort(listed_ids, axis=1)
    malformed = int((np.any(sorted_ids[:, 1:] == sorted_ids[:, :-1], axis=1) | np.any(np.diff(listed_distances, axis=1) < 0, axis=1)).sum())
    actual = np.sum((embeddings[checked, None, :] - embeddings[np.maximum(targets, 0)]) ** 2, axis=2)
    largest_difference = float(np.max(np.abs(actual - listed_distances)[targets >= 0], initial=0.0))
    _, nearest_distances = exact_top_k(embeddings, k, rows=checked)
    violations = int((nearest_distances[:, -1] < listed_distances[:, -1] - TOLERANCE).sum())
    return dg.AssetCheckResult(
        passed=sources_in_order and unknown == 0 and malformed == 0 and largest_difference < TOLERANCE * 10 and violations == 0,
        metadata={
            "checked_movies": len(checked),
            "unknown_neighbour_ids": unknown,
            "movies_with_repeated_or_unordered_neighbours": malformed,
            "movies": n,
            "largest_distance_difference": largest_difference,
            "movies_with_a_closer_unlisted_movie": violations,
        },
    )


CHECKS = [
    ratings_on_half_star_scale,
    movie_features_finite,
    movie_features_one_row_per_movie,
    user_genre_averages_finite,
    scaled_training_inputs_finite,
    movie_embeddings_unit_length,
    distance_matrix_well_formed,
    distance_matrix_matches_embeddings,
    similar_movies_are_nearest,
]
