"""Serving: what consumers read, published as one immutable release once everything downstream of
the accepted model has materialized and passed its checks."""

import math

import dagster as dg
import pandas as pd

from recsys_pipeline import layout, releases, splits, workflow
from recsys_pipeline.orchestration.automation import ON_ACCEPTED_MODEL_UPDATE
from recsys_pipeline.orchestration.config import RecommendationsConfig, ReleaseConfig
from recsys_pipeline.orchestration.metadata import rounded, table_metadata
from recsys_pipeline.orchestration.resources import ReleaseStore
from recsys_pipeline.standardisation import FittedScalers

# Test figures of the accepted model recorded in each release's manifest (and shown by `recsys releases`).
RELEASED_METRICS = ("test_rmse", "test_mae")


@dg.asset(
    group_name="serving",
    kinds={"json"},
    code_version="3",
    # rating_splits is read for the validation fingerprint the manifest records, not released.
    deps=[*layout.RELEASED_ASSETS, "rating_splits"],
    automation_condition=ON_ACCEPTED_MODEL_UPDATE,
)
def release(context: dg.AssetExecutionContext, config: ReleaseConfig, release_store: ReleaseStore) -> dg.MaterializeResult:
    """Copies every artifact a consumer reads (layout.RELEASED_ASSETS: features, scalers, the models,
    embeddings, similar movies, evaluation, the served lists) into a new immutable release with a manifest of their SHA-256, then makes it current
    in one atomic step. Runs only after all of them materialized and passed their blocking checks,
    so a failed, refused, gated or interrupted run leaves the current release as it was. The
    regression gate compares later candidates with this release's validation RMSE, the global
    mean's RMSE on the same validation ratings and their fingerprint, all recorded in the manifest
    (from the evaluation and the splits in the artifacts folder, refused if those two disagree; the
    splits themselves are not released)."""
    evaluation = pd.read_parquet(release_store.artifact_path("model_evaluation"))
    reference = workflow.validation_reference(pd.read_parquet(release_store.artifact_path("rating_splits")))
    global_mean_val_rmse = workflow.model_figure(evaluation, splits.VALIDATION, "rmse", workflow.GLOBAL_MEAN)
    if not math.isclose(global_mean_val_rmse, reference.global_mean_rmse, rel_tol=1e-9, abs_tol=1e-9):
        # The evaluation and the splits beside it describe different data: a manifest of them would lie to the gate.
        raise dg.Failure(
            description="model_evaluation and rating_splits in the artifacts folder come from different data "
            f"(global-mean validation RMSE {global_mean_val_rmse:.6f} vs {reference.global_mean_rmse:.6f}); rematerialize everything downstream of rating_splits.",
            allow_retries=False,
        )
    accepted = context.instance.get_latest_materialization_event(dg.AssetKey("accepted_model"))
    published = release_store.publish(
        releases.new_release_id(context.run.run_id),
        {
            "published_in_run": context.run.run_id,
            "run_id": accepted.run_id if accepted else context.run.run_id,
            "val_rmse": workflow.model_figure(evaluation, splits.VALIDATION, "rmse"),
            # What the regression gate needs to compare like with like (checks.REGRESSION_GATE_RULE).
            "global_mean_val_rmse": global_mean_val_rmse,
            "val_fingerprint": reference.fingerprint,
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


@dg.asset(group_name="serving", kinds={"pandas", "parquet"}, code_version="4", automation_condition=ON_ACCEPTED_MODEL_UPDATE)
def user_recommendations(
    config: RecommendationsConfig, ranking_model, rating_splits: pd.DataFrame, user_genre_averages: pd.DataFrame, movie_features: pd.DataFrame, fitted_scalers: dict
) -> dg.MaterializeResult[pd.DataFrame]:
    """For every user, the top_n movies they have not rated (no rating in any split), best first:
    userId, rank (1 = best), movieId, title, score (the served, unclipped score). What a downstream
    service loads, and what `recsys recommend --user` prints. The same ranker model_evaluation
    measured, fed with every rating: each user's history in order (their latest ratings included)
    and the item-item term come from all the ratings of the source, not only the training split."""
    table = workflow.recommendations(ranking_model, rating_splits, user_genre_averages, movie_features, FittedScalers.from_dict(fitted_scalers), config.top_n)
    return dg.MaterializeResult(
        value=table,
        metadata={**table_metadata(table), "users": int(table["userId"].nunique()), "distinct_movies": int(table["movieId"].nunique()), "top_n": config.top_n},
    )
