"""Evaluation: the accepted rating model and the served ranking beside their baselines, on the same split, in the same run."""

import dagster as dg
import pandas as pd

from recsys_pipeline import workflow
from recsys_pipeline.orchestration.automation import ON_ACCEPTED_MODEL_UPDATE
from recsys_pipeline.orchestration.metadata import rounded
from recsys_pipeline.standardisation import FittedScalers


@dg.asset(group_name="evaluation", kinds={"pandas", "parquet"}, code_version="3", automation_condition=ON_ACCEPTED_MODEL_UPDATE)
def model_evaluation(
    accepted_model, ranking_model, rating_splits: pd.DataFrame, user_genre_averages: pd.DataFrame, movie_features: pd.DataFrame, fitted_scalers: dict
) -> dg.MaterializeResult[pd.DataFrame]:
    """Validation and test error of the accepted model in stars (and MSE on the [-1, 1] scale), beside a
    global-mean and a user+item bias baseline fitted on the same training ratings; and top-10
    ranking quality on test (precision and NDCG at 10, recall at 20; relevant = rated in test,
    candidates = every movie not rated in training) of ranking_model, ordered by the ranker that
    serves (recsys_pipeline.ranking), beside the most-popular baseline.

    The stored table holds the exact figures; the UI shows them rounded."""
    result = workflow.evaluate(accepted_model, ranking_model, rating_splits, user_genre_averages, movie_features, FittedScalers.from_dict(fitted_scalers))
    return dg.MaterializeResult(
        value=result.table,
        metadata={**rounded(result.metrics), "comparison": dg.MetadataValue.md(result.table.round(4).to_markdown(index=False))},
    )
