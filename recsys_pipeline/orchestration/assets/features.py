"""Features: the split first, then everything learned from its training rows only."""

import dagster as dg
import pandas as pd

from recsys_pipeline import features, splits, workflow
from recsys_pipeline.orchestration.automation import ON_UPSTREAM_UPDATE
from recsys_pipeline.orchestration.config import SplitConfig
from recsys_pipeline.orchestration.io_managers import io_manager_key
from recsys_pipeline.orchestration.metadata import table_metadata
from recsys_pipeline.orchestration.resources import Reproducibility

PARTITION_OF_RATINGS = "partition_of_ratings"


@dg.asset(
    group_name="features",
    kinds={"pandas", "parquet"},
    code_version="4",
    automation_condition=ON_UPSTREAM_UPDATE,
    check_specs=[
        dg.AssetCheckSpec(
            PARTITION_OF_RATINGS,
            asset="rating_splits",
            blocking=True,
            description="Disjoint splits covering every rating, each within one point of its configured share.",
        )
    ],
)
def rating_splits(config: SplitConfig, reproducibility: Reproducibility, raw_ratings: pd.DataFrame):
    """Every rating labelled train, validation or test before any feature is computed.

    Nothing downstream is fitted on validation or test rows: they only measure.
    """
    labelled = splits.assign_splits(raw_ratings, reproducibility.seed, config.fractions, config.method)
    counts = labelled["split"].value_counts()
    problems = splits.partition_problems(labelled, len(raw_ratings), config.fractions, config.method)
    return dg.MaterializeResult(
        value=labelled,
        metadata={
            **table_metadata(labelled),
            "seed": reproducibility.seed,
            "method": config.method,
            **{f"{name}_ratings": int(counts[name]) for name in splits.SPLITS},
        },
        check_results=[dg.AssetCheckResult(check_name=PARTITION_OF_RATINGS, passed=not problems, metadata={"problems": "; ".join(problems) or "none"})],
    )


@dg.asset(group_name="features", kinds={"pandas", "parquet"}, code_version="2", automation_condition=ON_UPSTREAM_UPDATE)
def movie_features(raw_movies: pd.DataFrame, rating_splits: pd.DataFrame) -> dg.MaterializeResult[pd.DataFrame]:
    """One row per movie: release year (imputed and flagged where the title has none), one-hot genres,
    and from training ratings only its rating count, average, shrunk mean and spread."""
    table = workflow.build_movie_features(raw_movies, rating_splits)
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
    table = workflow.build_user_features(rating_splits, movie_features)
    return dg.MaterializeResult(
        value=table,
        metadata={
            **table_metadata(table, ["userId", "rating_count", "average_rating"]),
            "users_without_training_ratings": int((table["rating_count"] == 0).sum()),
        },
    )


@dg.asset(
    group_name="features", kinds={"json"}, io_manager_key=io_manager_key("fitted_scalers"), code_version="2", automation_condition=ON_UPSTREAM_UPDATE
)
def fitted_scalers(rating_splits: pd.DataFrame, user_genre_averages: pd.DataFrame, movie_features: pd.DataFrame) -> dg.MaterializeResult[dict]:
    """Standardisation of the user and movie inputs and min-max scaling of ratings to [-1, 1],
    fitted on training ratings only and stored as plain JSON parameters."""
    scalers = workflow.fit_feature_scalers(rating_splits, user_genre_averages, movie_features)
    return dg.MaterializeResult(
        value=scalers.to_dict(),
        metadata={
            "user_inputs": len(scalers.user.columns),
            "movie_inputs": len(scalers.movie.columns),
            "target_range_stars": f"{scalers.target.minimum} .. {scalers.target.maximum}",
        },
    )
