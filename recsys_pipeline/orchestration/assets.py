"""The asset graph, one step of the story per asset: ingest, features, model, similarity, evaluation.

Each body calls the pure domain modules; TensorFlow is imported only inside the steps that train
or embed, so loading these definitions stays fast. Bump an asset's `code_version` when a change alters
what it computes: the UI then marks it and everything downstream as stale.
"""

import time
from datetime import datetime, timezone

import dagster as dg
import numpy as np
import pandas as pd

from recsys_pipeline import evaluation, features, movielens, similarity, splits
from recsys_pipeline.model_inputs import rating_rows, scaled_inputs, side_inputs
from recsys_pipeline.orchestration.automation import ON_ACCEPTED_MODEL_UPDATE, ON_UPSTREAM_UPDATE
from recsys_pipeline.orchestration.checks import REGRESSION_GATE, regression_gate_result
from recsys_pipeline.orchestration.metadata import line_chart, table_metadata
from recsys_pipeline.orchestration.resources import ModelGate, MovieLensSource, Reproducibility
from recsys_pipeline.scaling import FittedScalers, fit_scalers

NEIGHBOURS = 10
TWO_TOWER = "two_tower"
# Shown with their nearest movies in similar_movies' metadata when the catalogue has them.
WELL_KNOWN_TITLES = (
    "Toy Story (1995)",
    "Matrix, The (1999)",
    "Pulp Fiction (1994)",
    "Forrest Gump (1994)",
    "Star Wars: Episode IV - A New Hope (1977)",
)
EXAMPLE_NEIGHBOURS = 5


# --- ingest ---------------------------------------------------------------------------------------


RATINGS_NEEDED_NO_REPAIR = "ratings_needed_no_repair"


@dg.multi_asset(
    group_name="ingest",
    outs={
        "raw_movies": dg.AssetOut(
            kinds={"pandas", "parquet"},
            code_version="1",
            description="movies.csv, typed and validated: one row per movieId with its title and pipe-separated genres.",
        ),
        "raw_ratings": dg.AssetOut(
            kinds={"pandas", "parquet"},
            code_version="1",
            description="ratings.csv in file order, typed and validated: half-star ratings of movies listed in movies.csv.",
        ),
    },
    check_specs=[
        dg.AssetCheckSpec(
            RATINGS_NEEDED_NO_REPAIR,
            asset="raw_ratings",
            description="Warns when duplicate ratings or ratings of unknown movies had to be dropped.",
        )
    ],
)
def raw_movielens(movielens_source: MovieLensSource):
    """Read and validate both CSVs before writing either, so a bad source changes no artifact.

    Malformed input raises MovieLensError naming the file, column and lines. Duplicate ratings and
    ratings of unknown movies are dropped up to 1% of the ratings (and counted), beyond that refused.
    """
    source = movielens_source.directory()
    movies = movielens.read_movies(source)
    ratings, repairs = movielens.repair_ratings(movielens.read_ratings(source), movies, source / movielens.RATINGS_FILE)
    repair_metadata = {
        "duplicate_ratings_dropped": repairs.duplicates_dropped,
        "unknown_movie_ratings_dropped": repairs.unknown_movies_dropped,
    }
    yield dg.MaterializeResult(asset_key="raw_movies", value=movies, metadata={**table_metadata(movies), "source": str(source)})
    yield dg.MaterializeResult(
        asset_key="raw_ratings",
        value=ratings,
        metadata={
            **table_metadata(ratings),
            "source": str(source),
            "users": int(ratings["userId"].nunique()),
            "rated_movies": int(ratings["movieId"].nunique()),
            **repair_metadata,
        },
    )
    yield dg.AssetCheckResult(
        asset_key="raw_ratings",
        check_name=RATINGS_NEEDED_NO_REPAIR,
        passed=repairs.rows_dropped == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            **repair_metadata,
            "duplicate_lines": str(list(repairs.duplicate_lines)),
            "unknown_movie_lines": str(list(repairs.unknown_movie_lines)),
        },
    )


# --- features -------------------------------------------------------------------------------------


class SplitConfig(dg.Config):
    """Fractions of ratings assigned to train, validation and test; `method` "random" (the peers'
    split) or "chronological" (each user's latest ratings in test, the previous ones in validation)."""

    method: str = splits.RANDOM
    train_fraction: float = splits.DEFAULT_FRACTIONS[0]
    validation_fraction: float = splits.DEFAULT_FRACTIONS[1]
    test_fraction: float = splits.DEFAULT_FRACTIONS[2]


@dg.asset(
    group_name="features",
    kinds={"pandas", "parquet"},
    code_version="1",
    automation_condition=ON_UPSTREAM_UPDATE,
    check_specs=[dg.AssetCheckSpec("partition_of_ratings", asset="rating_splits", blocking=True)],
)
def rating_splits(config: SplitConfig, reproducibility: Reproducibility, raw_ratings: pd.DataFrame):
    """Every rating labelled train, validation or test before any feature is computed.

    Nothing downstream is fitted on validation or test rows: they only measure.
    """
    fractions = (config.train_fraction, config.validation_fraction, config.test_fraction)
    labelled = splits.assign_splits(raw_ratings, reproducibility.seed, fractions, config.method)
    counts = labelled["split"].value_counts()
    problems = splits.partition_problems(labelled, len(raw_ratings), fractions)
    return dg.MaterializeResult(
        value=labelled,
        metadata={**table_metadata(labelled), "seed": reproducibility.seed, "method": config.method, **{f"{name}_ratings": int(counts[name]) for name in splits.SPLITS}},
        check_results=[
            dg.AssetCheckResult(
                check_name="partition_of_ratings",
                passed=not problems,
                description="Disjoint splits covering every rating in the configured proportions.",
                metadata={"problems": "; ".join(problems) or "none"},
            )
        ],
    )


@dg.asset(group_name="features", kinds={"pandas", "parquet"}, code_version="2", automation_condition=ON_UPSTREAM_UPDATE)
def movie_features(raw_movies: pd.DataFrame, rating_splits: pd.DataFrame) -> dg.MaterializeResult[pd.DataFrame]:
    """One row per movie: release year (imputed and flagged where the title has none), one-hot genres,
    and from training ratings only its rating count, average, shrunk mean and spread."""
    table = features.build_movie_features(raw_movies, splits.training_rows(rating_splits))
    return dg.MaterializeResult(
        value=table,
        metadata={
            **table_metadata(table, ["movieId", "title", "year", "average_rating", "rating_count"]),
            "years_imputed": int(table["year_imputed"].sum()),
            "movies_without_training_ratings": int((table["rating_count"] == 0).sum()),
            "genres": len(features.genre_columns(table)),
        },
    )


@dg.asset(group_name="features", kinds={"pandas", "parquet"}, code_version="2", automation_condition=ON_UPSTREAM_UPDATE)
def user_genre_averages(rating_splits: pd.DataFrame, movie_features: pd.DataFrame) -> dg.MaterializeResult[pd.DataFrame]:
    """One row per user from training ratings: count, average, shrunk mean and spread; per genre the
    average (the user's own where they rated no movie of the genre), the share of their ratings and
    the shrunk preference."""
    users = np.unique(rating_splits["userId"].to_numpy())
    table = features.build_user_genre_averages(users, splits.training_rows(rating_splits), movie_features)
    return dg.MaterializeResult(
        value=table,
        metadata={
            **table_metadata(table, ["userId", "rating_count", "average_rating"]),
            "users_without_training_ratings": int((table["rating_count"] == 0).sum()),
        },
    )


@dg.asset(
    group_name="features", kinds={"json"}, io_manager_key="json_io_manager", code_version="2", automation_condition=ON_UPSTREAM_UPDATE
)
def fitted_scalers(rating_splits: pd.DataFrame, user_genre_averages: pd.DataFrame, movie_features: pd.DataFrame) -> dg.MaterializeResult[dict]:
    """Standardisation of the user and movie inputs and min-max scaling of ratings to [-1, 1],
    fitted on training ratings only and stored as plain JSON parameters."""
    scalers = fit_scalers(
        splits.training_rows(rating_splits),
        user_genre_averages,
        features.user_input_columns(user_genre_averages),
        movie_features,
        features.movie_input_columns(movie_features),
    )
    return dg.MaterializeResult(
        value=scalers.to_dict(),
        metadata={
            "user_inputs": len(scalers.user.columns),
            "movie_inputs": len(scalers.movie.columns),
            "target_range_stars": f"{scalers.target.minimum} .. {scalers.target.maximum}",
        },
    )


# --- model ----------------------------------------------------------------------------------------


class TrainingConfig(dg.Config):
    """Settings of the two-tower network and its training; the seed comes from the `reproducibility`
    resource. `hybrid` adds learned user and movie ID embeddings and biases beside the content
    towers; False is the pure content model (the notebook's two towers on the richer features),
    the path that also serves cold starts."""

    epochs: int = 30
    batch_size: int = 1024
    learning_rate: float = 5e-3
    early_stopping_patience: int = 4
    lr_reduction_factor: float = 0.3
    lr_reduction_patience: int = 1
    tower_widths: list[int] = [128, 64]
    embedding_size: int = 32
    dropout: float = 0.2
    id_embedding_l2: float = 1e-3
    id_bias_l2: float = 1e-5
    hybrid: bool = True
    out_of_fold_folds: int = 5


@dg.asset(
    group_name="model",
    kinds={"keras", "tensorflow"},
    io_manager_key="candidate_io_manager",
    code_version="3",
    automation_condition=ON_UPSTREAM_UPDATE,
    pool="training",  # one training at a time where the instance limits pools (see dagster.yaml)
    check_specs=[
        dg.AssetCheckSpec("beats_global_mean_on_validation", asset="trained_model", blocking=True),
        dg.AssetCheckSpec(REGRESSION_GATE, asset="trained_model", blocking=True),
    ],
)
def trained_model(
    context: dg.AssetExecutionContext,
    config: TrainingConfig,
    reproducibility: Reproducibility,
    model_gate: ModelGate,
    rating_splits: pd.DataFrame,
    user_genre_averages: pd.DataFrame,
    movie_features: pd.DataFrame,
    fitted_scalers: dict,
):
    """The candidate model: two towers (Dense 128-64-32 with dropout per side, plus ID embeddings
    in the hybrid) whose free dot product, scaled, plus biases predicts stars. Training ratings read
    their rating statistics out of fold (computed without their own fold), so the network learns to
    trust them as much as they deserve on unseen ratings. Early stopping on validation loss. It is
    stored with its validation RMSE and becomes accepted_model only if its blocking checks pass."""
    from recsys_pipeline import two_tower

    scalers = FittedScalers.from_dict(fitted_scalers)
    train = splits.training_rows(rating_splits)
    validation = rating_splits[rating_splits["split"] == "validation"]
    settings = two_tower.TrainingSettings(
        epochs=config.epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        patience=config.early_stopping_patience,
        lr_factor=config.lr_reduction_factor,
        lr_patience=config.lr_reduction_patience,
        seed=reproducibility.seed,
        hidden_units=tuple(config.tower_widths),
        embedding_size=config.embedding_size,
        dropout=config.dropout,
        id_l2=config.id_embedding_l2,
        id_bias_l2=config.id_bias_l2,
        hybrid=config.hybrid,
    )

    def log_epoch(epoch: int, logs: dict[str, float]) -> None:
        context.log.info(f"epoch {epoch + 1}/{settings.epochs}: loss {logs.get('loss', np.nan):.4f}, val_loss {logs.get('val_loss', np.nan):.4f}")

    started = time.perf_counter()
    model, history, inputs = two_tower.train_on_ratings(
        train, validation, user_genre_averages, movie_features, scalers, settings, config.out_of_fold_folds, on_epoch_end=log_epoch
    )
    training_seconds = time.perf_counter() - started

    predicted = evaluation.clip_stars(two_tower.scorer(model, inputs).predict(rating_rows(validation, inputs)))
    val_rmse = evaluation.rmse(predicted, validation["rating"])
    global_mean_rmse = evaluation.rmse(np.full(len(validation), train["rating"].mean()), validation["rating"])
    best_epoch = int(np.argmin(history["val_loss"])) + 1
    return dg.MaterializeResult(
        value=two_tower.Candidate(model, val_rmse, context.run.run_id),
        metadata={
            "val_rmse": val_rmse,
            "epochs_run": len(history["loss"]),
            "best_epoch": best_epoch,
            "best_val_loss": float(min(history["val_loss"])),
            "training_seconds": training_seconds,
            "parameters": int(model.count_params()),
            "loss_curve": line_chart(
                {"training": history["loss"], "validation": history["val_loss"]}, "Loss per epoch", "epoch", "MSE in stars² (training: with regularisation)"
            ),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="beats_global_mean_on_validation",
                passed=bool(val_rmse < global_mean_rmse),
                metadata={"val_rmse": val_rmse, "global_mean_val_rmse": global_mean_rmse},
            ),
            regression_gate_result(val_rmse, model_gate.accepted(), model_gate.rmse_tolerance),
        ],
    )


@dg.asset(
    group_name="model",
    kinds={"keras", "tensorflow"},
    io_manager_key="keras_io_manager",
    code_version="1",
    automation_condition=ON_UPSTREAM_UPDATE,
)
def accepted_model(model_gate: ModelGate, trained_model):
    """The model that embeddings, similarity, evaluation and recommendations use: the latest
    trained_model that passed its blocking checks, the regression gate among them. When a retrained
    model fails them, this asset and everything downstream keep the previous model's artifacts.
    The candidate's validation RMSE and run come with the candidate itself, not from the instance's
    history, so they always describe the model being accepted."""
    candidate = trained_model
    previous = model_gate.accepted()
    # The blocking check stops this step inside a run; this guards a materialization of this asset alone.
    gate = regression_gate_result(candidate.val_rmse, previous, model_gate.rmse_tolerance)
    if not gate.passed:
        raise dg.Failure(f"trained_model from run {candidate.run_id} fails the regression gate: {gate.description}", metadata=gate.metadata)
    model_gate.record_acceptance(
        {"val_rmse": candidate.val_rmse, "run_id": candidate.run_id, "accepted_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    )
    return dg.MaterializeResult(
        value=candidate.model,
        metadata={
            "val_rmse": candidate.val_rmse,
            **({"previous_val_rmse": float(previous["val_rmse"])} if previous else {}),
            "trained_in_run": candidate.run_id,
        },
    )


@dg.asset(
    group_name="model", kinds={"numpy"}, io_manager_key="numpy_io_manager", code_version="2", automation_condition=ON_ACCEPTED_MODEL_UPDATE
)
def movie_embeddings(accepted_model, movie_features: pd.DataFrame, fitted_scalers: dict) -> dg.MaterializeResult[np.ndarray]:
    """Every movie's vector from the movie side (content tower plus ID embedding in the hybrid),
    L2-normalised to unit length for similarity; row i is movie_features row i."""
    from recsys_pipeline import two_tower

    scalers = FittedScalers.from_dict(fitted_scalers)
    vectors = two_tower.embed(accepted_model, two_tower.MOVIE_TOWER, side_inputs([movie_features], scalers.movie)).vectors
    embeddings = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return dg.MaterializeResult(value=embeddings, metadata={"movies": embeddings.shape[0], "dimensions": embeddings.shape[1]})


# --- similarity -----------------------------------------------------------------------------------


class DistanceMatrixConfig(dg.Config):
    """The dense matrix grows with the square of the number of movies: 1.6 GB at 20,000 movies,
    15.6 GB at MovieLens 25M's 62,423. Above `max_movies` it is not written; `similar_movies`
    (blocked exact search, memory linear in movies) serves similar movies at any size."""

    max_movies: int = similarity.DEFAULT_MAX_MATRIX_MOVIES


@dg.asset(
    group_name="similarity",
    kinds={"numpy"},
    io_manager_key="numpy_io_manager",
    output_required=False,
    code_version="1",
    automation_condition=ON_ACCEPTED_MODEL_UPDATE,
)
def embedding_distance_matrix(context: dg.AssetExecutionContext, config: DistanceMatrixConfig, movie_embeddings: np.ndarray):
    """Squared Euclidean distances between all movie embeddings (float32, rows and columns in
    movie_features order), from blocked matrix products rather than a Python double loop, streamed
    into a memory-mapped file. Not materialized above `max_movies` movies (see the config)."""
    matrix = similarity.DistanceMatrixFile(np.asarray(movie_embeddings))
    metadata = {"movies": matrix.shape[0], "max_movies": config.max_movies, "megabytes": round(matrix.nbytes / 1e6, 1)}
    if matrix.shape[0] > config.max_movies:
        context.log_event(
            dg.AssetObservation(
                asset_key=context.asset_key,
                metadata={**metadata, "skipped": f"{matrix.shape[0]} movies exceed max_movies={config.max_movies}; use similar_movies"},
            )
        )
        return
    yield dg.MaterializeResult(value=matrix, metadata={**metadata, "shape": str(matrix.shape)})


@dg.asset(group_name="similarity", kinds={"pandas", "parquet"}, code_version="1", automation_condition=ON_ACCEPTED_MODEL_UPDATE)
def similar_movies(movie_embeddings: np.ndarray, movie_features: pd.DataFrame) -> dg.MaterializeResult[pd.DataFrame]:
    """For every movie, its 10 nearest other movies by embedding distance, with rank and distance.

    Found by exact blocked search over the embeddings, the same distances as the distance matrix."""
    neighbours, distances = similarity.nearest_neighbours(np.asarray(movie_embeddings), NEIGHBOURS)
    table = similarity.similar_movies_table(movie_features, neighbours, distances)
    return dg.MaterializeResult(value=table, metadata={**table_metadata(table), "examples": _example_neighbours(table, movie_features)})


def _example_neighbours(table: pd.DataFrame, movie_features: pd.DataFrame) -> dg.MetadataValue:
    """The nearest movies of a few well-known titles, or of the most-rated movies when none is present."""
    titles = set(movie_features["title"])
    examples = [title for title in WELL_KNOWN_TITLES if title in titles]
    if not examples:
        examples = movie_features.nlargest(len(WELL_KNOWN_TITLES), "rating_count", keep="first")["title"].tolist()
    nearest = table[table["rank"] <= EXAMPLE_NEIGHBOURS]
    lines = [f"- **{title}**: {'; '.join(nearest.loc[nearest['title'] == title, 'similar_title'])}" for title in examples]
    return dg.MetadataValue.md("\n".join(lines))


# --- evaluation -----------------------------------------------------------------------------------


@dg.asset(group_name="evaluation", kinds={"pandas", "parquet"}, code_version="2", automation_condition=ON_ACCEPTED_MODEL_UPDATE)
def model_evaluation(
    accepted_model, rating_splits: pd.DataFrame, user_genre_averages: pd.DataFrame, movie_features: pd.DataFrame, fitted_scalers: dict
) -> dg.MaterializeResult[pd.DataFrame]:
    """Validation and test error of the accepted model in stars (and MSE on the [-1, 1] scale), beside a
    global-mean and a user+item bias baseline fitted on the same training ratings; and top-10
    ranking quality on test (precision and NDCG, relevant = rated in test, candidates = every movie
    not rated in training) of the model's blended score beside the most-popular baseline."""
    from recsys_pipeline import two_tower

    scalers = FittedScalers.from_dict(fitted_scalers)
    inputs = scaled_inputs(user_genre_averages, movie_features, scalers)
    train = splits.training_rows(rating_splits)
    scorer = two_tower.scorer(accepted_model, inputs)
    held_out = rating_splits[rating_splits["split"] != "train"]
    bias = evaluation.fit_bias_baseline(train)
    table = evaluation.error_table(
        held_out,
        {
            TWO_TOWER: evaluation.clip_stars(scorer.predict(rating_rows(held_out, inputs))),
            "global_mean": np.full(len(held_out), train["rating"].mean()),
            "user_item_bias": evaluation.clip_stars(bias.predict(held_out)),
        },
        scalers.target.to_unit,
    )
    ranking = _ranking(scorer, inputs, train, rating_splits[rating_splits["split"] == "test"], user_genre_averages, movie_features)
    metric = table.set_index(["model", "split"])
    return dg.MaterializeResult(
        value=table,
        metadata={
            "test_rmse": float(metric.loc[(TWO_TOWER, "test"), "rmse"]),
            "test_mae": float(metric.loc[(TWO_TOWER, "test"), "mae"]),
            "test_mse_scaled": float(metric.loc[(TWO_TOWER, "test"), "mse_scaled"]),
            "val_rmse": float(metric.loc[(TWO_TOWER, "validation"), "rmse"]),
            "baseline_global_mean_rmse": float(metric.loc[("global_mean", "test"), "rmse"]),
            "baseline_bias_rmse": float(metric.loc[("user_item_bias", "test"), "rmse"]),
            **ranking,
            "comparison": dg.MetadataValue.md(table.round(4).to_markdown(index=False)),
        },
    )


def _ranking(scorer, inputs, train: pd.DataFrame, test: pd.DataFrame, user_features: pd.DataFrame, movie_features: pd.DataFrame) -> dict[str, float]:
    train_rows, test_rows = rating_rows(train, inputs), rating_rows(test, inputs)
    return evaluation.ranking_report(
        scorer.scores,
        (train_rows.user_rows, train_rows.movie_rows),
        (test_rows.user_rows, test_rows.movie_rows),
        movie_features["rating_count"].to_numpy(),
        user_features[features.user_share_columns(user_features)].to_numpy(),
        movie_features[features.genre_columns(movie_features)].to_numpy(),
    )
