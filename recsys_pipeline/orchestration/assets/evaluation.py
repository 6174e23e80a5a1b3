"""Evaluation: the accepted rating model and the served ranking beside their baselines, on the same split, in the same run."""

import dagster as dg
import pandas as pd

from recsys_pipeline import workflow
from recsys_pipeline.orchestration.automation import ON_ACCEPTED_MODEL_UPDATE
from recsys_pipeline.orchestration.metadata import rounded
from recsys_pipeline.standardisation import FittedScalers


# The ranking figures shown side by side: the served list, its ingredients alone, the peers.
RANKED = {"test": "served (towers + item-item)", "towers": "time-aware towers alone", "item_item": "item-item term alone", "transitions": "what people rated next alone", "baseline_ease": "EASE (lambda 100)", "baseline_popularity": "most popular"}
RANKING_METRICS = ("precision_at_10", "ndcg_at_10", "recall_at_20", "coverage_at_10")


@dg.asset(group_name="evaluation", kinds={"pandas", "parquet"}, code_version="5", automation_condition=ON_ACCEPTED_MODEL_UPDATE)
def model_evaluation(
    context: dg.AssetExecutionContext,
    accepted_model,
    held_out_ranking_model,
    rating_splits: pd.DataFrame,
    user_genre_averages: pd.DataFrame,
    movie_features: pd.DataFrame,
    fitted_scalers: dict,
) -> dg.MaterializeResult[pd.DataFrame]:
    """Validation and test error of the accepted rating model in stars (and MSE on the [-1, 1] scale),
    beside a global-mean and a user+item bias baseline fitted on the same training ratings; and the
    served ranking on test (precision and NDCG at 10, recall at 20, coverage: the ranking model
    before its epochs on the test ratings, held_out_ranking_model), each user known by
    every rating before test, as serving knows them (candidates: movies rated in neither; relevant:
    rated in test), beside the towers alone, the item-item term alone, its transition term alone,
    EASE and most popular. With
    the default chronological split, test is each user's latest ratings: what they watched next.

    The stored table holds the exact figures; the UI shows them rounded."""
    result = workflow.evaluate(accepted_model, held_out_ranking_model, rating_splits, user_genre_averages, movie_features, FittedScalers.from_dict(fitted_scalers))
    splits_event = context.instance.get_latest_materialization_event(dg.AssetKey("rating_splits"))
    split_method = splits_event.asset_materialization.metadata["method"].value if splits_event else "unknown"
    ranking_table = "| ranking on test | " + " | ".join(RANKING_METRICS) + " |\n|---|" + "---:|" * len(RANKING_METRICS) + "\n" + "\n".join(
        f"| {label} | " + " | ".join(f"{result.metrics[f'{prefix}_{metric}']:.4f}" for metric in RANKING_METRICS) + " |" for prefix, label in RANKED.items()
    )
    return dg.MaterializeResult(
        value=result.table,
        metadata={
            **rounded(result.metrics),
            "split_method": split_method,
            "comparison": dg.MetadataValue.md(result.table.round(4).to_markdown(index=False)),
            "ranking_comparison": dg.MetadataValue.md(ranking_table),
        },
    )
