"""Model: a rating model trained on the training rows, accepted only through the regression gate, and
the accepted model's movie embeddings; and the time-aware ranking model that orders what users see."""

import dagster as dg
import numpy as np
import pandas as pd

from recsys_pipeline import workflow
from recsys_pipeline.orchestration.automation import ON_ACCEPTED_MODEL_UPDATE, ON_UPSTREAM_UPDATE
from recsys_pipeline.orchestration.checks import REGRESSION_GATE, REGRESSION_GATE_RULE, regression_gate_result
from recsys_pipeline.orchestration.config import RankingConfig, TrainingConfig, ranking_settings, training_settings
from recsys_pipeline.orchestration.io_managers import io_manager_key
from recsys_pipeline.orchestration.metadata import line_chart, rounded
from recsys_pipeline.orchestration.resources import ModelGate, Reproducibility
from recsys_pipeline.standardisation import FittedScalers

BEATS_GLOBAL_MEAN = "beats_global_mean_on_validation"


def gate_result(candidate, accepted: dict | None, tolerance: float) -> dg.AssetCheckResult:
    """The regression gate for a candidate (a workflow.Candidate in trained_model, the stored
    two_tower.StoredCandidate in accepted_model: the same figures, by the same names)."""
    return regression_gate_result(
        candidate.val_rmse,
        accepted,
        tolerance,
        global_mean_val_rmse=candidate.global_mean_val_rmse,
        val_fingerprint=candidate.val_fingerprint,
    )


@dg.asset(
    group_name="model",
    kinds={"keras", "tensorflow"},
    io_manager_key=io_manager_key("trained_model"),
    code_version="4",
    automation_condition=ON_UPSTREAM_UPDATE,
    pool="training",  # one training at a time where the instance limits pools (see dagster.yaml)
    check_specs=[
        dg.AssetCheckSpec(
            BEATS_GLOBAL_MEAN,
            asset="trained_model",
            blocking=True,
            description="The candidate's validation RMSE is lower than predicting the training mean for every rating.",
        ),
        dg.AssetCheckSpec(
            REGRESSION_GATE,
            asset="trained_model",
            blocking=True,
            description="The regression gate, against the current release's model. " + REGRESSION_GATE_RULE,
        ),
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
    from recsys_pipeline.two_tower import StoredCandidate  # TensorFlow only in steps that need it

    settings = training_settings(config, reproducibility.seed)

    def log_epoch(epoch: int, logs: dict[str, float]) -> None:
        context.log.info(f"epoch {epoch + 1}/{settings.epochs}: loss {logs.get('loss', np.nan):.4f}, val_loss {logs.get('val_loss', np.nan):.4f}")

    candidate = workflow.train_candidate(
        rating_splits, user_genre_averages, movie_features, FittedScalers.from_dict(fitted_scalers), settings, on_epoch_end=log_epoch
    )
    history = candidate.history
    return dg.MaterializeResult(
        value=StoredCandidate(candidate.model, candidate.val_rmse, context.run.run_id, candidate.global_mean_val_rmse, candidate.val_fingerprint),
        metadata={
            # Exact, as the regression gate compares them (accepted_model reads them from the stored candidate).
            "val_rmse": candidate.val_rmse,
            "global_mean_val_rmse": candidate.global_mean_val_rmse,
            "val_fingerprint": candidate.val_fingerprint,
            **rounded(
                {
                    "epochs_run": len(history["loss"]),
                    "best_epoch": candidate.best_epoch,
                    "best_val_loss": min(history["val_loss"]),
                    "training_seconds": candidate.training_seconds,
                    "parameters": int(candidate.model.count_params()),
                }
            ),
            "loss_curve": line_chart(
                {"training": history["loss"], "validation": history["val_loss"]}, "Loss per epoch", "epoch", "MSE in stars² (training: with regularisation)"
            ),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=BEATS_GLOBAL_MEAN,
                passed=bool(candidate.val_rmse < candidate.global_mean_val_rmse),
                metadata=rounded({"val_rmse": candidate.val_rmse, "global_mean_val_rmse": candidate.global_mean_val_rmse}),
            ),
            gate_result(candidate, model_gate.accepted(), model_gate.rmse_tolerance),
        ],
    )


@dg.asset(
    group_name="model",
    kinds={"keras", "tensorflow"},
    io_manager_key=io_manager_key("accepted_model"),
    code_version="2",
    automation_condition=ON_UPSTREAM_UPDATE,
)
def accepted_model(model_gate: ModelGate, trained_model):
    """The model that embeddings, similarity, evaluation and recommendations use: the latest
    trained_model that passed its blocking checks, the regression gate among them. When a retrained
    model fails them, this asset and everything downstream keep the previous model's artifacts, and
    the current release is untouched. It is published (and so becomes the gate's reference) by `release`.
    The candidate's validation RMSE, run, global-mean RMSE and validation fingerprint come with the
    stored candidate itself, not from the instance's history, so they always describe the model
    being accepted; the gate is re-evaluated on them by the same rule as the blocking check."""
    candidate = trained_model
    previous = model_gate.accepted()
    # The blocking check stops this step inside a run; this guards a materialization of this asset alone.
    gate = gate_result(candidate, previous, model_gate.rmse_tolerance)
    if not gate.passed:
        raise dg.Failure(f"trained_model from run {candidate.run_id} fails the regression gate: {gate.description}", metadata=gate.metadata)
    return dg.MaterializeResult(
        value=candidate.model,
        metadata={
            **rounded({"val_rmse": candidate.val_rmse, **({"previous_val_rmse": float(previous["val_rmse"])} if previous else {})}),
            "trained_in_run": candidate.run_id,
            "gate_comparison": str(gate.metadata["comparison"].value) if "comparison" in gate.metadata else "first model",
        },
    )


@dg.asset(
    group_name="model", kinds={"numpy"}, io_manager_key=io_manager_key("movie_embeddings"), code_version="2", automation_condition=ON_ACCEPTED_MODEL_UPDATE
)
def movie_embeddings(accepted_model, movie_features: pd.DataFrame, fitted_scalers: dict) -> dg.MaterializeResult[np.ndarray]:
    """Every movie's vector from the movie side (content tower plus ID embedding in the hybrid),
    L2-normalised to unit length for similarity; row i is movie_features row i."""
    embeddings = workflow.movie_embeddings(accepted_model, movie_features, FittedScalers.from_dict(fitted_scalers))
    return dg.MaterializeResult(value=embeddings, metadata={"movies": embeddings.shape[0], "dimensions": embeddings.shape[1]})


RANKING_MODEL_DESCRIPTION = (
    "What a person watches next, as served: a time-aware two-tower (recsys_pipeline.sequential) whose user tower reads "
    "each user's latest rated movies in order, with their recency, beside the seed's per-genre averages, and whose movie "
    "tower reads the seed's movie features and an ID embedding; trained to predict each user's next movies (softmax over "
    "each batch's target movies, log-Q corrected), stopped early on validation NDCG@10, refitted on training and validation "
    "ratings and then trained on every rating, so the towers know the latest ratings as the item-item term does. With a "
    "share of the movies' log popularity added back to their biases, and the item-item term blended into the served score "
    "(EASE fed a recency-weighted history, plus what people rated next), every weight chosen on validation NDCG@10. "
    "Numpy arrays: serving never imports TensorFlow. user_recommendations and the release serve it."
)
HELD_OUT_RANKING_MODEL_DESCRIPTION = (
    "ranking_model before its epochs on the test ratings, with the same choices: what model_evaluation measures on the "
    "test split (a model that has seen the test ratings cannot be measured on them)."
)


def _ranking_model_out(asset: str, code_version: str, description: str) -> dg.AssetOut:
    return dg.AssetOut(
        kinds={"numpy", "tensorflow"},
        io_manager_key=io_manager_key(asset),
        code_version=code_version,
        description=description,
        automation_condition=ON_ACCEPTED_MODEL_UPDATE,
    )


@dg.multi_asset(
    group_name="model",
    outs={
        "ranking_model": _ranking_model_out("ranking_model", "11", RANKING_MODEL_DESCRIPTION),
        "held_out_ranking_model": _ranking_model_out("held_out_ranking_model", "1", HELD_OUT_RANKING_MODEL_DESCRIPTION),
    },
    # It reads no rating model, but a retrain whose rating model fails the regression gate must not
    # change what is served either: it runs after accepted_model, like everything it publishes with.
    deps=["accepted_model"],
    pool="training",
)
def ranking_model(
    context: dg.AssetExecutionContext,
    config: RankingConfig,
    reproducibility: Reproducibility,
    rating_splits: pd.DataFrame,
    user_genre_averages: pd.DataFrame,
    movie_features: pd.DataFrame,
    fitted_scalers: dict,
):
    """Train the time-aware ranking model once; store the model served and the held-out model evaluated."""
    settings = ranking_settings(config, reproducibility.seed)

    def log_epoch(epoch: int, loss: float, val_ndcg: float | None) -> None:
        context.log.info(f"epoch {epoch + 1}/{settings.epochs}: loss {loss:.4f}, validation NDCG@10 {val_ndcg:.4f}")

    candidate = workflow.train_ranking_model(rating_splits, user_genre_averages, movie_features, FittedScalers.from_dict(fitted_scalers), settings, log_epoch)
    yield dg.MaterializeResult(asset_key="held_out_ranking_model", value=candidate.model, metadata={"serving_epochs_after_it": settings.serving_epochs})
    yield dg.MaterializeResult(
        asset_key="ranking_model",
        value=candidate.served,
        metadata={
            "best_epoch": candidate.best_epoch,
            "epochs_run": len(candidate.history["loss"]),
            "popularity_weight": candidate.popularity_weight,
            # Text: either may be infinite (plain EASE; the item-item term alone), which JSON cannot hold.
            "item_item_half_life": f"{candidate.model.item_item_half_life:g}",
            "item_item_weight": f"{candidate.model.item_item_weight:g}",
            "item_item_l2": candidate.model.item_item_l2,
            "transition_weight": candidate.model.transition_weight,
            "item_item_weight_rule": candidate.item_item_weight_rule,
            **rounded(
                {
                    "best_val_ndcg_at_10": max(candidate.history["val_ndcg_at_10"]),
                    "served_val_ndcg_at_10": candidate.served_val_ndcg,
                    "training_seconds": candidate.training_seconds,
                }
            ),
            "val_ndcg_by_choice": dg.MetadataValue.md(
                "| popularity weight | validation NDCG@10 of the towers |\n|---:|---:|\n"
                + "\n".join(f"| {weight:g} | {ndcg:.4f} |" for weight, ndcg in candidate.val_ndcg_by_popularity_weight.items())
                + "\n\n| EASE half-life (ratings) | validation NDCG@10 of recency-weighted EASE |\n|---:|---:|\n"
                + "\n".join(f"| {half_life:g} | {ndcg:.4f} |" for half_life, ndcg in candidate.val_ndcg_by_half_life.items())
                + "\n\n| transition weight | validation NDCG@10 of the item-item term |\n|---:|---:|\n"
                + "\n".join(f"| {weight:g} | {ndcg:.4f} |" for weight, ndcg in candidate.val_ndcg_by_transition_weight.items())
                + "\n\n| item-item weight | validation NDCG@10 of the served blend |\n|---:|---:|\n"
                + "\n".join(f"| {weight:g} | {ndcg:.4f} |" for weight, ndcg in candidate.val_ndcg_by_item_item_weight.items())
            ),
            "validation_ndcg": line_chart({"validation NDCG@10 (towers)": candidate.history["val_ndcg_at_10"]}, "Validation NDCG@10 per epoch", "epoch", "NDCG@10"),
        },
    )
