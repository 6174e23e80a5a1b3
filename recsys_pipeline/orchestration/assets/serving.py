"""Serving: what consumers read, published as one immutable release once everything downstream of
the accepted model has materialized and passed its checks."""

import dagster as dg
import pandas as pd
import pydantic

from recsys_pipeline import layout, releases, splits, workflow
from recsys_pipeline.orchestration.automation import ON_ACCEPTED_MODEL_UPDATE
from recsys_pipeline.orchestration.config import ReleaseConfig
from recsys_pipeline.orchestration.io_managers import io_manager_key
from recsys_pipeline.orchestration.metadata import rounded, table_metadata
from recsys_pipeline.orchestration.resources import ReleaseStore, Reproducibility
from recsys_pipeline.settings import RankingSettings
from recsys_pipeline.standardisation import FittedScalers

# Test figures of the accepted model recorded in each release's manifest (and shown by `recsys releases`).
RELEASED_METRICS = ("test_rmse", "test_mae")
DEFAULT_TOP_N = 100


@dg.asset(
    group_name="serving",
    kinds={"json"},
    code_version="1",
    deps=list(layout.RELEASED_ASSETS),
    automation_condition=ON_ACCEPTED_MODEL_UPDATE,
)
def release(context: dg.AssetExecutionContext, config: ReleaseConfig, release_store: ReleaseStore) -> dg.MaterializeResult:
    """Copies every artifact a consumer reads (model, scalers, features, embeddings, similar movies,
    evaluation) into a new immutable release with a manifest of their SHA-256, then makes it current
    in one atomic step. Runs only after all of them materialized and passed their blocking checks,
    so a failed, refused, gated or interrupted run leaves the current release as it was. The
    regression gate compares later candidates with this release's validation RMSE."""
    evaluation = pd.read_parquet(release_store.artifact_path("model_evaluation"))
    accepted = context.instance.get_latest_materialization_event(dg.AssetKey("accepted_model"))
    published = release_store.publish(
        releases.new_release_id(context.run.run_id),
        {
            "published_in_run": context.run.run_id,
            "run_id": accepted.run_id if accepted else context.run.run_id,
            "val_rmse": workflow.model_figure(evaluation, splits.VALIDATION, "rmse"),
            "metrics": {metric: workflow.model_figure(evaluation, splits.TEST, metric.removeprefix("test_")) for metric in RELEASED_METRICS},
        },
        config.keep_releases,
    )
    return dg.MaterializeResult(
        metadata={
            "release_id": published.release_id,
            "files": len(published.manifest["files"]),
            **rounded({"val_rmse": published.manifest["val_rmse"]}),
            "kept_releases": ", ".join(listed.release_id for listed in release_store.list()),
        }
    )


class RecommendationsConfig(dg.Config):
    """How many movies each user's list in user_recommendations holds."""

    top_n: int = pydantic.Field(default=DEFAULT_TOP_N, ge=1)


@dg.asset(
    group_name="serving",
    kinds={"numpy", "tensorflow"},
    io_manager_key=io_manager_key("serving_model"),
    code_version="1",
    automation_condition=ON_ACCEPTED_MODEL_UPDATE,
    pool="training",
)
def serving_model(
    context: dg.AssetExecutionContext,
    reproducibility: Reproducibility,
    accepted_model,
    rating_splits: pd.DataFrame,
    user_genre_averages: pd.DataFrame,
    movie_features: pd.DataFrame,
    fitted_scalers: dict,
) -> dg.MaterializeResult:
    """The ranking head that serves: ranking_model's recipe refitted on EVERY rating (train, validation
    and test) for the number of epochs early stopping chose there, so served lists learn from all
    that is known. Its quality was measured on the split by model_evaluation; bench/quality.py shows
    what the refit gains on ratings the pipeline never saw."""
    chosen = context.instance.get_latest_materialization_event(dg.AssetKey("ranking_model"))
    if chosen is None:
        raise dg.Failure("No materialization of ranking_model in this Dagster instance: materialize ranking_model first.")
    epochs = int(chosen.asset_materialization.metadata["best_epoch"].value)
    settings = RankingSettings(seed=reproducibility.seed, epochs=epochs)
    candidate = workflow.train_ranking_model(
        accepted_model, rating_splits, rating_splits, user_genre_averages, movie_features, FittedScalers.from_dict(fitted_scalers), settings, validate_on=None
    )
    return dg.MaterializeResult(
        value=candidate.model,
        metadata={"epochs": epochs, "ratings": len(rating_splits), **rounded({"training_seconds": candidate.training_seconds})},
    )


@dg.asset(group_name="serving", kinds={"pandas", "parquet"}, code_version="1", automation_condition=ON_ACCEPTED_MODEL_UPDATE)
def user_recommendations(
    config: RecommendationsConfig, serving_model, rating_splits: pd.DataFrame, user_genre_averages: pd.DataFrame, movie_features: pd.DataFrame, fitted_scalers: dict
) -> dg.MaterializeResult[pd.DataFrame]:
    """For every user, the top_n movies they have not rated (no rating in any split), best first:
    userId, rank (1 = best), movieId, title, score (the ranking model's unclipped score). What a
    downstream service loads, and what `recsys recommend --user` prints."""
    table = workflow.recommendations(serving_model, rating_splits, user_genre_averages, movie_features, FittedScalers.from_dict(fitted_scalers), config.top_n)
    return dg.MaterializeResult(
        value=table,
        metadata={**table_metadata(table), "users": int(table["userId"].nunique()), "distinct_movies": int(table["movieId"].nunique()), "top_n": config.top_n},
    )
