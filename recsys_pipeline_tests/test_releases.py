"""Releases: consumers read one immutable, verified release, switched atomically; a failed, refused,
gated or killed run leaves every answer of the `recsys` command byte-identical, and calls made while
a retrain runs are all answered."""

import json
import os
import shutil
import signal
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from recsys_pipeline import cli, layout, releases
from recsys_pipeline.definitions import build_definitions
from recsys_pipeline.synthetic import SyntheticSpec, write_movielens
from recsys_pipeline_tests.conftest import SMALL_RANKING_CONFIG

from .test_reliability_pipeline import start_run

pytestmark = pytest.mark.slow

# --- the release store on its own ---------------------------------------------------------------


def _artifacts(folder: Path, tag: str) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name in ("model.keras", "table.parquet"):
        (folder / name).write_text(f"{name} of {tag}")
        files[name] = folder / name
    return files


def test_publishing_makes_a_verified_release_current_and_keeps_the_last_few(tmp_path):
    store = tmp_path / "releases"
    published = [releases.publish(store, _artifacts(tmp_path / f"a{n}", str(n)), f"r{n}", {"val_rmse": 0.9 - n / 100}, keep=3) for n in range(5)]
    assert releases.current_id(store) == "r4"
    assert [release.release_id for release in releases.list_releases(store)] == ["r2", "r3", "r4"]
    assert (store / "r4" / "model.keras").read_text() == "model.keras of 4"
    manifest = published[-1].manifest
    assert manifest["files"]["model.keras"]["sha256"] == releases.file_sha256(store / "r4" / "model.keras")
    assert manifest["val_rmse"] == pytest.approx(0.86)
    # Rolling back keeps the old release current through later pruning.
    releases.make_current(store, "r2")
    releases.prune(store, keep=1)
    assert [release.release_id for release in releases.list_releases(store)] == ["r2"]


def test_a_failed_publish_leaves_the_current_release_and_no_staging_folder(tmp_path):
    store = tmp_path / "releases"
    releases.publish(store, _artifacts(tmp_path / "good", "good"), "r1", {})
    files = _artifacts(tmp_path / "bad", "bad")
    files["gone.npy"] = tmp_path / "bad" / "gone.npy"
    with pytest.raises(releases.ReleaseError, match="missing artifact"):
        releases.publish(store, files, "r2", {})
    assert releases.current_id(store) == "r1"
    assert sorted(path.name for path in store.iterdir()) == ["current.json", "r1"]


def test_a_corrupt_release_is_refused_as_a_rollback_target_and_a_corrupt_pointer_is_named(tmp_path):
    store = tmp_path / "releases"
    releases.publish(store, _artifacts(tmp_path / "a", "a"), "r1", {})
    releases.publish(store, _artifacts(tmp_path / "b", "b"), "r2", {})
    (store / "r1" / "model.keras").write_text("changed")
    with pytest.raises(releases.ReleaseError, match="r1/model.keras does not match"):
        releases.make_current(store, "r1")
    assert releases.current_id(store) == "r2"
    (store / releases.CURRENT).write_text("{not json")
    with pytest.raises(releases.ReleaseError, match="current.json is unreadable.*recsys rollback"):
        releases.current(store)


# --- through the pipeline and the recsys command --------------------------------------------------

ONE_EPOCH = {"ops": {"trained_model": {"config": {"epochs": 1}}, "ranking_model": {"config": SMALL_RANKING_CONFIG}}}
# Far worse than the first model: the regression gate refuses it.
DEGRADED = {"ops": {"trained_model": {"config": {"epochs": 1, "learning_rate": 1e-6}}, "ranking_model": {"config": SMALL_RANKING_CONFIG}}}


def run_graph(source: Path, data_dir: Path, run_config: dict, seed: int | None = None) -> dg.ExecuteInProcessResult:
    defs = build_definitions(str(source), data_dir, **({} if seed is None else {"seed": seed}))
    return defs.resolve_implicit_global_asset_job_def().execute_in_process(run_config=run_config, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)


def answers(data_dir: Path, capsys) -> list[str]:
    """What a user sees for each kind of question (stdout, then stderr), as text."""
    movies = pd.read_parquet(releases.current(layout.releases_dir(data_dir)).path("movie_features.parquet"))
    questions = [
        ["similar", str(movies["movieId"].iloc[0])],
        ["similar", str(movies["movieId"].iloc[-1]), "-k", "5", "--json"],
        ["recommend", "--user", "1"],
        ["recommend", "--genres", f"{movies['genres'].iloc[0].split('|')[0]}=5", "--json"],
        ["releases", "--json"],
    ]
    capsys.readouterr()  # drop what the pipeline printed before
    seen = []
    for question in questions:
        status = cli.main([*question, "--data-dir", str(data_dir)])
        out, err = capsys.readouterr()
        seen.append(f"{status}\n{out}\n{err}")
    return seen


@pytest.fixture(scope="module")
def released(synthetic_movielens_dir, tmp_path_factory) -> Path:
    data_dir = tmp_path_factory.mktemp("released")
    assert run_graph(synthetic_movielens_dir, data_dir, ONE_EPOCH).success
    return data_dir


@pytest.fixture
def data_dir(released, tmp_path) -> Path:
    return Path(shutil.copytree(released, tmp_path / "data"))


def test_a_gate_rejected_retrain_with_another_seed_changes_no_answer(synthetic_movielens_dir, data_dir, capsys):
    before = answers(data_dir, capsys)
    retrain = run_graph(synthetic_movielens_dir, data_dir, DEGRADED, seed=3)
    assert not retrain.success
    rewritten = {event.asset_key.to_user_string() for event in retrain.get_asset_materialization_events()}
    assert {"rating_splits", "fitted_scalers", "trained_model"} <= rewritten and "release" not in rewritten
    assert answers(data_dir, capsys) == before


def test_a_refused_tiny_source_changes_no_answer(data_dir, tmp_path, capsys):
    tiny = write_movielens(SyntheticSpec(n_users=2, n_movies=5, n_ratings=5, n_tags=0, seed=1), tmp_path / "tiny")
    before = answers(data_dir, capsys)
    assert not run_graph(tiny, data_dir, ONE_EPOCH).success
    assert answers(data_dir, capsys) == before


def test_every_call_during_a_retrain_is_answered_and_a_killed_retrain_changes_no_answer(synthetic_movielens_dir, data_dir, capsys):
    before = answers(data_dir, capsys)
    run = start_run(synthetic_movielens_dir, data_dir, epochs=500)
    calls = 0
    try:
        assert run.stdout is not None
        for line in run.stdout:
            # Asked while the retrain rewrites ingest, features, scalers and trains.
            assert answers(data_dir, capsys) == before
            calls += 1
            if "epoch 3/500" in line:
                break
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait(timeout=30)
    assert calls >= 3
    assert answers(data_dir, capsys) == before


def test_a_successful_retrain_publishes_a_new_release_and_keeps_the_old_one(synthetic_movielens_dir, data_dir, capsys):
    folder = layout.releases_dir(data_dir)
    first = releases.current_id(folder)
    # The same seed and settings give the same validation RMSE, which the gate accepts.
    assert run_graph(synthetic_movielens_dir, data_dir, ONE_EPOCH).success
    second = releases.current_id(folder)
    assert second != first
    # What consumers read, nothing per rating (the splits would make every release as large as the data).
    assert set(releases.load(folder, second).manifest["files"]) == {layout.file_name(asset) for asset in layout.RELEASED_ASSETS}
    assert layout.file_name("rating_splits") not in releases.load(folder, second).manifest["files"]
    listed = json.loads(answers(data_dir, capsys)[-1].split("\n", 1)[1].rsplit("\n", 2)[0])
    assert [row["release_id"] for row in listed] == [first, second]
