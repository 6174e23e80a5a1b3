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


@pytest.mark.slow
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
    """The whole graph on ml-latest-small with its defaults: each user's latest ratings held out."""
    data_dir = tmp_path_factory.mktemp("real_run")
    job = build_definitions(str(real_movielens_dir), data_dir).resolve_job_def("recsys_pipeline")
    return job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)


@pytest.fixture(scope="module")
def real_random_run(real_movielens_dir, tmp_path_factory) -> dg.ExecuteInProcessResult:
    """The whole graph on the seed's and the published peers' protocol: a random 70/15/15 split."""
    data_dir = tmp_path_factory.mktemp("real_random_run")
    job = build_definitions(str(real_movielens_dir), data_dir).resolve_job_def("recsys_pipeline")
    return job.execute_in_process(run_config=RANDOM_SPLIT, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)


RANDOM_SPLIT = {"ops": {"rating_splits": {"config": {"method": "random"}}}}


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return {key: value.value for key, value in event.materialization.metadata.items()}


def test_real_data_every_check_passes(real_run):
    assert real_run.success
    evaluations = real_run.get_asset_check_evaluations()
    assert len(evaluations) >= 10
    assert [e.check_name for e in evaluations if not e.passed] == []


def test_real_data_random_split_beats_the_honest_notebook_and_reports_baselines(real_random_run):
    assert real_random_run.success
    metrics = _metadata(real_random_run, "model_evaluation")
    assert metrics["split_method"] == "random"
    # 0.873 is the notebook's design computed honestly on this split; the default model must beat
    # every published peer on it (best: item-kNN with baseline, 0.854).
    assert metrics["test_rmse"] <= 0.850
    assert metrics["test_rmse"] < metrics["baseline_global_mean_rmse"]
    # The baselines land on the published peers' figures, which shows the split is theirs.
    assert metrics["baseline_global_mean_rmse"] == pytest.approx(1.038, abs=0.002)
    assert metrics["baseline_bias_rmse"] == pytest.approx(0.874, abs=0.004)
    assert {"test_mae", "val_rmse"} <= set(metrics)
    # The rating model's accuracy as accepted in issue 9 (within 0.01 of 0.8185).
    assert metrics["test_rmse"] <= 0.8285
    # The served top 10 clearly ahead of recommending the most popular movies, and not behind EASE
    # (a margin for TensorFlow's arithmetic, which differs between CPUs).
    assert metrics["test_precision_at_10"] >= metrics["baseline_popularity_precision_at_10"] + 0.04
    assert metrics["test_ndcg_at_10"] >= metrics["baseline_popularity_ndcg_at_10"] + 0.05
    assert metrics["test_recall_at_20"] > metrics["baseline_popularity_recall_at_20"]
    assert metrics["test_ndcg_at_10"] >= metrics["baseline_ease_ndcg_at_10"] - 0.01


def test_real_data_features_cover_every_movie_and_user(real_run):
    assert _metadata(real_run, "movie_features")["dagster/row_count"] == 9742
    assert _metadata(real_run, "user_genre_averages")["dagster/row_count"] == 610
    assert _metadata(real_run, "raw_ratings")["dagster/row_count"] == 100_836
    assert _metadata(real_run, "similar_movies")["dagster/row_count"] == 97_420


def test_real_data_served_ranking_beats_ease_on_each_users_future(real_run):
    """model_evaluation's served list on each user's latest ratings (the default chronological split)
    beside EASE (lambda 100, the strongest peer) and most popular, measured in the same run on the
    same users and candidates. The margins leave room for TensorFlow's arithmetic, which differs
    between CPUs: the towers' share of the score moves a little from machine to machine, the
    item-item term (numpy, float64) does not. On this machine over three seeds: NDCG@10 1.46x EASE's,
    P@10 1.33x; what people rated next alone (numpy, no learning) NDCG@10 1.29x."""
    figures = _metadata(real_run, "model_evaluation")
    assert figures["split_method"] == "chronological"
    assert figures["test_ndcg_at_10"] >= 1.3 * figures["baseline_ease_ndcg_at_10"]
    assert figures["test_precision_at_10"] >= 1.15 * figures["baseline_ease_precision_at_10"]
    assert figures["transitions_ndcg_at_10"] >= 1.2 * figures["baseline_ease_ndcg_at_10"]
    assert figures["test_ndcg_at_10"] >= figures["towers_ndcg_at_10"] + 0.01
    assert figures["towers_ndcg_at_10"] >= figures["baseline_popularity_ndcg_at_10"] + 0.01
