"""The whole asset graph, end to end: from the dagster CLI on synthetic data, and on the real ml-latest-small."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from recsys_pipeline.definitions import build_definitions

DAGSTER = str(Path(sys.executable).with_name("dagster"))
ARTIFACTS = {
    "raw_movies.parquet", "raw_ratings.parquet", "rating_splits.parquet", "movie_features.parquet",
    "user_genre_averages.parquet", "fitted_scalers.json", "trained_model.keras", "accepted_model.keras", "movie_embeddings.npy",
    "embedding_distance_matrix.npy", "similar_movies.parquet", "model_evaluation.parquet",
}
UPSTREAM_OF_MODEL = ["raw_movies.parquet", "raw_ratings.parquet", "rating_splits.parquet", "movie_features.parquet", "user_genre_averages.parquet", "fitted_scalers.json"]
ONE_EPOCH = "ops:\n  trained_model:\n    config:\n      epochs: 1\n"


def _materialize(selection: str, source: Path, data_dir: Path, dagster_home: Path, config: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "RECSYS_MOVIELENS": str(source), "RECSYS_DATA_DIR": str(data_dir), "DAGSTER_HOME": str(dagster_home)}
    command = [DAGSTER, "asset", "materialize", "-m", "recsys_pipeline.definitions", "--select", selection, "-c", str(config)]
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600)


def _written(artifacts: Path) -> dict[str, int]:
    return {path.name: path.stat().st_mtime_ns for path in artifacts.iterdir() if path.suffix != ".json" or path.name == "fitted_scalers.json"}


def test_cli_selections_rebuild_exactly_what_they_name(synthetic_movielens_dir, tmp_path):
    """`*` builds everything; `trained_model*` retrains and rebuilds everything downstream from the
    stored features; `raw_ratings+` (one asset of the ingest step and its children) reingests the
    ratings and resplits, nothing else."""
    dagster_home, data_dir, config = tmp_path / "dagster_home", tmp_path / "data", tmp_path / "one_epoch.yaml"
    dagster_home.mkdir()
    config.write_text(ONE_EPOCH)

    first = _materialize("*", synthetic_movielens_dir, data_dir, dagster_home, config)
    assert first.returncode == 0, first.stderr[-3000:]
    artifacts = data_dir / "artifacts"
    assert ARTIFACTS <= {path.name for path in artifacts.iterdir()}
    assert "STEP_FAILURE" not in first.stderr

    for selection, rebuilt in [
        ("trained_model*", ARTIFACTS - set(UPSTREAM_OF_MODEL)),
        ("raw_ratings+", {"raw_ratings.parquet", "rating_splits.parquet"}),
    ]:
        before = _written(artifacts)
        run = _materialize(selection, synthetic_movielens_dir, data_dir, dagster_home, config)
        assert run.returncode == 0, run.stderr[-3000:]
        after = _written(artifacts)
        assert {name for name in ARTIFACTS if after[name] != before[name]} == rebuilt, selection


@pytest.fixture(scope="module")
def real_run(real_movielens_dir, tmp_path_factory) -> dg.ExecuteInProcessResult:
    data_dir = tmp_path_factory.mktemp("real_run")
    job = build_definitions(str(real_movielens_dir), data_dir).resolve_job_def("recsys_pipeline")
    return job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return {key: value.value for key, value in event.materialization.metadata.items()}


def test_real_data_every_check_passes(real_run):
    assert real_run.success
    evaluations = real_run.get_asset_check_evaluations()
    assert len(evaluations) >= 10
    assert [e.check_name for e in evaluations if not e.passed] == []


def test_real_data_beats_the_honest_notebook_and_reports_baselines(real_run):
    metrics = _metadata(real_run, "model_evaluation")
    # 0.873 is the notebook's design computed honestly on this split; the default model must beat
    # every published peer on it (best: item-kNN with baseline, 0.854).
    assert metrics["test_rmse"] <= 0.850
    assert metrics["test_rmse"] < metrics["baseline_global_mean_rmse"]
    # The baselines land on the published peers' figures, which shows the split is theirs.
    assert metrics["baseline_global_mean_rmse"] == pytest.approx(1.038, abs=0.002)
    assert metrics["baseline_bias_rmse"] == pytest.approx(0.874, abs=0.004)
    assert {"test_mae", "val_rmse"} <= set(metrics)
    # The ranking head keeps the rating head's accuracy (issue 9: within 0.01 of 0.8185).
    assert metrics["test_rmse"] <= 0.8285
    # The served top 10 clearly ahead of recommending the most popular movies (0.109 / 0.129 here).
    assert metrics["baseline_popularity_precision_at_10"] == pytest.approx(0.107, abs=0.005)
    assert metrics["test_precision_at_10"] >= metrics["baseline_popularity_precision_at_10"] + 0.04
    assert metrics["test_ndcg_at_10"] >= metrics["baseline_popularity_ndcg_at_10"] + 0.05
    assert metrics["test_recall_at_20"] > metrics["baseline_popularity_recall_at_20"]


def test_real_data_features_cover_every_movie_and_user(real_run):
    assert _metadata(real_run, "movie_features")["dagster/row_count"] == 9742
    assert _metadata(real_run, "user_genre_averages")["dagster/row_count"] == 610
    assert _metadata(real_run, "raw_ratings")["dagster/row_count"] == 100_836
    assert _metadata(real_run, "similar_movies")["dagster/row_count"] == 97_420


def test_real_data_served_ranking_is_level_with_ease_and_above_the_head_alone(real_run):
    """The served list measured beside EASE (lambda 100, the brief's strongest peer) and beside the
    ranking head alone, in the same run and on the same split, by the same protocol.

    Margins are what holds on any CPU (TensorFlow's arithmetic differs between them), not what one
    machine measured. Served minus EASE was +0.001 to +0.004 P@10 over three seeds here and -0.001
    on another machine (0.1942 against 0.1951): 0.01 is twice that spread, yet fails if the
    item-item term were lost. The head alone was 0.034 P@10 and 0.045 NDCG@10 below: 0.01 is
    "clearly below" with room. The head's gain over the item-item term alone (+0.002 to +0.003) is
    smaller than the differences between machines, so docs/quality.md reports it, unasserted."""
    import dataclasses

    from recsys_pipeline import evaluation, ranking, splits, workflow
    from recsys_pipeline.model_inputs import ModelInputs, rating_rows
    from recsys_pipeline.standardisation import FittedScalers

    model = real_run.output_for_node("ranking_model")
    labelled, users, movies = (real_run.output_for_node(name) for name in ("rating_splits", "user_genre_averages", "movie_features"))
    scalers = FittedScalers.from_dict(real_run.output_for_node("fitted_scalers"))
    served = workflow.ranking_report(model, labelled, users, movies, scalers)
    assert served["test_precision_at_10"] == pytest.approx(_metadata(real_run, "model_evaluation")["test_precision_at_10"], abs=1e-4)
    head_alone = workflow.ranking_report(dataclasses.replace(model, item_item_weight=0.0), labelled, users, movies, scalers)

    inputs = ModelInputs(users["userId"].to_numpy(), None, movies["movieId"].to_numpy(), None)
    train, test = rating_rows(splits.training_rows(labelled), inputs), rating_rows(labelled[labelled["split"] == splits.TEST], inputs)
    train_pairs, test_pairs = (train.user_rows, train.movie_rows), (test.user_rows, test.movie_rows)
    ease = evaluation.ranking_metrics(ranking.item_item_scorer(*train_pairs, len(users), len(movies), 100.0), train_pairs, test_pairs, len(movies))
    for metric in ("precision_at_10", "ndcg_at_10"):
        assert served[f"test_{metric}"] >= ease[metric] - 0.01, metric
        assert served[f"test_{metric}"] >= head_alone[f"test_{metric}"] + 0.01, metric
