"""The asset graph, one step of the story per asset: ingest, features, model, similarity, evaluation.

Each body calls the pure domain modules; TensorFlow is imported only inside the steps that train
or embed, so loading these definitions stays fast.
"""

import time

import dagster as dg
import numpy as np
import pandas as pd

from recsys_pipeline import evaluation, features, movielens, similarity, splits
from recsys_pipeline.model_inputs import predict_scaled, rating_rows, scaled_inputs
from recsys_pipeline.orchestration.metadata import table_metadata
from recsys_pipeline.orchestration.resources import MovieLensSource, Reproducibility
from recsys_pipeline.scaling import FittedScalers, fit_scalers

NEIGHBOURS = 10
TWO_TOWER = "two_tower"


# --- ingest ---------------------------------------------------------------------------------------


@dg.asset(group_name="ingest", kinds={"pandas", "parquet"})
def raw_movies(movielens_source: MovieLensSource) -> dg.MaterializeResult[pd.DataFrame]:
    """movies.csv, typed and validated: one row per movieId with its title and pipe-separated genres."""
    source = movielens_source.directory()
    movies = movielens.read_movies(source)
    return dg.MaterializeResult(value=movies, metadata={**table_metadata(movies), "source": str(source)})


@dg.asset(group_name="ingest", kinds={"pandas", "parquet"})
def raw_ratings(movielens_source: MovieLensSource, raw_movies: pd.DataFrame) -> dg.MaterializeResult[pd.DataFrame]:
    """ratings.csv in file order, typed and validated: half-star ratings of movies listed in movies.csv."""
    source = movielens_source.directory()
    ratings = movielens.read_ratings(source)
    movielens.check_known_movies(ratings, raw_movies)
    return dg.MaterializeResult(
        value=ratings,
        metadata={
            **table_metadata(ratings),
            "source": str(source),
            "users": int(ratings["userId"].nunique()),
            "rated_movies": int(ratings["movieId"].nunique()),
        },
    )


# --- features -------------------------------------------------------------------------------------


class SplitConfig(dg.Config):
    """Fractions of ratings assigned at random to train, validation and test."""

    train_fraction: float = splits.DEFAULT_FRACTIONS[0]
    validation_fraction: float = splits.DEFAULT_FRACTIONS[1]
    test_fraction: float = splits.DEFAULT_FRACTIONS[2]


@dg.asset(
    group_name="features",
    kinds={"pandas", "parquet"},
    check_specs=[dg.AssetCheckSpec("partition_of_ratings", asset="rating_splits", blocking=True)],
)
def rating_splits(config: SplitConfig, reproducibility: Reproducibility, raw_ratings: pd.DataFrame):
    """Every rating labelled train, validation or test before any feature is computed.

    Nothing downstream is fitted on validation or test rows: they only measure.
    """
    fractions = (config.train_fraction, config.validation_fraction, config.test_fraction)
    labelled = splits.assign_splits(raw_ratings, reproducibility.seed, fractions)
    counts = labelled["split"].value_counts()
    problems = splits.partition_problems(labelled, len(raw_ratings), fractions)
    return dg.MaterializeResult(
        value=labelled,
        metadata={**table_metadata(labelled), "seed": reproducibility.seed, **{f"{name}_ratings": int(counts[name]) for name in splits.SPLITS}},
        check_results=[
            dg.AssetCheckResult(
                check_name="partition_of_ratings",
                passed=not problems,
                description="Disjoint splits covering every rating in the configured proportions.",
                metadata={"problems": "; ".join(problems) or "none"},
            )
        ],
    )


@dg.asset(group_name="features", kinds={"pandas", "parquet"})
def movie_features(raw_movies: pd.DataFrame, rating_splits: pd.DataFrame) -> dg.MaterializeResult[pd.DataFrame]:
    """One row per movie: release year (imputed and flagged where the title has none), one-hot genres,
    and average rating and rating count from training ratings only."""
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


@dg.asset(group_name="features", kinds={"pandas", "parquet"})
def user_genre_averages(rating_splits: pd.DataFrame, movie_features: pd.DataFrame) -> dg.MaterializeResult[pd.DataFrame]:
    """One row per user: average training rating overall and per genre (the user's own average
    where they rated no movie of a genre)."""
    users = np.unique(rating_splits["userId"].to_numpy())
    table = features.build_user_genre_averages(users, splits.training_rows(rating_splits), movie_features)
    return dg.MaterializeResult(
        value=table,
        metadata={
            **table_metadata(table, ["userId", "rating_count", "average_rating"]),
            "users_without_training_ratings": int((table["rating_count"] == 0).sum()),
        },
    )


@dg.asset(group_name="features", kinds={"json"}, io_manager_key="json_io_manager")
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
    """Training settings of the two-tower network; the seed comes from the `reproducibility` resource."""

    epochs: int = 30
    batch_size: int = 512
    learning_rate: float = 1e-3
    early_stopping_patience: int = 3


@dg.asset(
    group_name="model",
    kinds={"keras", "tensorflow"},
    io_manager_key="keras_io_manager",
    check_specs=[dg.AssetCheckSpec("beats_global_mean_on_validation", asset="trained_model", blocking=True)],
)
def trained_model(
    context: dg.AssetExecutionContext,
    config: TrainingConfig,
    reproducibility: Reproducibility,
    rating_splits: pd.DataFrame,
    user_genre_averages: pd.DataFrame,
    movie_features: pd.DataFrame,
    fitted_scalers: dict,
):
    """The notebook's two-tower network (Dense 256-128-32 per tower, unit-normalised, dot product),
    trained on training ratings with early stopping on validation loss."""
    from recsys_pipeline import two_tower

    scalers = FittedScalers.from_dict(fitted_scalers)
    inputs = scaled_inputs(user_genre_averages, movie_features, scalers)
    train = splits.training_rows(rating_splits)
    validation = rating_splits[rating_splits["split"] == "validation"]
    settings = two_tower.TrainingSettings(
        epochs=config.epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        patience=config.early_stopping_patience,
        seed=reproducibility.seed,
    )

    def log_epoch(epoch: int, logs: dict[str, float]) -> None:
        context.log.info(f"epoch {epoch + 1}/{settings.epochs}: loss {logs.get('loss', np.nan):.4f}, val_loss {logs.get('val_loss', np.nan):.4f}")

    started = time.perf_counter()
    model, history = two_tower.train_two_tower(
        inputs.user_matrix,
        inputs.movie_matrix,
        rating_rows(train, inputs, scalers),
        rating_rows(validation, inputs, scalers),
        settings,
        on_epoch_end=log_epoch,
    )
    training_seconds = time.perf_counter() - started

    user_embeddings = two_tower.embed(model, two_tower.USER_TOWER, inputs.user_matrix)
    movie_embeddings = two_tower.embed(model, two_tower.MOVIE_TOWER, inputs.movie_matrix)
    predicted = evaluation.clip_stars(
        scalers.target.to_stars(predict_scaled(user_embeddings, movie_embeddings, rating_rows(validation, inputs, scalers)))
    )
    val_rmse = evaluation.rmse(predicted, validation["rating"])
    global_mean_rmse = evaluation.rmse(np.full(len(validation), train["rating"].mean()), validation["rating"])
    best_epoch = int(np.argmin(history["val_loss"])) + 1
    return dg.MaterializeResult(
        value=model,
        metadata={
            "val_rmse": val_rmse,
            "epochs_run": len(history["loss"]),
            "best_epoch": best_epoch,
            "best_val_loss": float(min(history["val_loss"])),
            "training_seconds": training_seconds,
            "parameters": int(model.count_params()),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="beats_global_mean_on_validation",
                passed=bool(val_rmse < global_mean_rmse),
                metadata={"val_rmse": val_rmse, "global_mean_val_rmse": global_mean_rmse},
            )
        ],
    )


@dg.asset(group_name="model", kinds={"numpy"}, io_manager_key="numpy_io_manager")
def movie_embeddings(trained_model, movie_features: pd.DataFrame, fitted_scalers: dict) -> dg.MaterializeResult[np.ndarray]:
    """The unit-length embedding of every movie from the movie tower; row i is movie_features row i."""
    from recsys_pipeline import two_tower

    scalers = FittedScalers.from_dict(fitted_scalers)
    embeddings = two_tower.embed(trained_model, two_tower.MOVIE_TOWER, scalers.movie.transform(movie_features))
    return dg.MaterializeResult(value=embeddings, metadata={"movies": embeddings.shape[0], "dimensions": embeddings.shape[1]})


# --- similarity -----------------------------------------------------------------------------------


class DistanceMatrixConfig(dg.Config):
    """The dense matrix grows with the square of the number of movies: 1.6 GB at 20,000 movies,
    15.6 GB at MovieLens 25M's 62,423. Above `max_movies` it is not written; `similar_movies`
    (blocked exact search, memory linear in movies) serves similar movies at any size."""

    max_movies: int = similarity.DEFAULT_MAX_MATRIX_MOVIES


@dg.asset(group_name="similarity", kinds={"numpy"}, io_manager_key="numpy_io_manager", output_required=False)
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


@dg.asset(group_name="similarity", kinds={"pandas", "parquet"})
def similar_movies(movie_embeddings: np.ndarray, movie_features: pd.DataFrame) -> dg.MaterializeResult[pd.DataFrame]:
    """For every movie, its 10 nearest other movies by embedding distance, with rank and distance.

    Found by exact blocked search over the embeddings, the same distances as the distance matrix."""
    neighbours, distances = similarity.nearest_neighbours(np.asarray(movie_embeddings), NEIGHBOURS)
    table = similarity.similar_movies_table(movie_features, neighbours, distances)
    return dg.MaterializeResult(value=table, metadata=table_metadata(table))


# --- evaluation -----------------------------------------------------------------------------------


@dg.asset(group_name="evaluation", kinds={"pandas", "parquet"})
def model_evaluation(
    trained_model, rating_splits: pd.DataFrame, user_genre_averages: pd.DataFrame, movie_features: pd.DataFrame, fitted_scalers: dict
) -> dg.MaterializeResult[pd.DataFrame]:
    """Validation and test error of the model in stars (and MSE on the [-1, 1] scale), beside a
    global-mean and a user+item bias baseline fitted on the same training ratings."""
    from recsys_pipeline import two_tower

    scalers = FittedScalers.from_dict(fitted_scalers)
    inputs = scaled_inputs(user_genre_averages, movie_features, scalers)
    train = splits.training_rows(rating_splits)
    user_embeddings = two_tower.embed(trained_model, two_tower.USER_TOWER, inputs.user_matrix)
    movie_embeddings = two_tower.embed(trained_model, two_tower.MOVIE_TOWER, inputs.movie_matrix)
    held_out = rating_splits[rating_splits["split"] != "train"]
    model_stars = scalers.target.to_stars(predict_scaled(user_embeddings, movie_embeddings, rating_rows(held_out, inputs, scalers)))
    bias = evaluation.fit_bias_baseline(train)
    table = evaluation.error_table(
        held_out,
        {
            TWO_TOWER: evaluation.clip_stars(model_stars),
            "global_mean": np.full(len(held_out), train["rating"].mean()),
            "user_item_bias": evaluation.clip_stars(bias.predict(held_out)),
        },
        scalers.target.to_unit,
    )
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
            "comparison": dg.MetadataValue.md(table.round(4).to_markdown(index=False)),
        },
    )
