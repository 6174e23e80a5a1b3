"""The retraining schedule, the content-hash sensor and the declarative automation conditions.

Nothing here trains: the sensor and the conditions are evaluated against files and instance
events, so the whole module runs in seconds.
"""

import hashlib
import json
import os
import shutil
from datetime import datetime, timezone

import dagster as dg
import pytest

from recsys_pipeline.definitions import build_definitions, definitions_from_environment
from recsys_pipeline.movielens import MOVIES_FILE, RATINGS_FILE
from recsys_pipeline.orchestration.automation import SOURCE_SHA256_TAG, source_data_changed
from recsys_pipeline.orchestration.checks import REGRESSION_GATE
from recsys_pipeline.orchestration.resources import MovieLensSource

RETRAIN_JOB = "recsys_pipeline"
ASSETS_WITHOUT_CONDITION = {"raw_movies", "raw_ratings"}  # roots: the sensor and the schedule refresh them
MODEL_SIDE = {
    "accepted_model", "movie_embeddings", "embedding_distance_matrix", "similar_movies", "model_evaluation",
    "ranking_model", "held_out_ranking_model", "user_recommendations", "release",
}


@pytest.fixture
def defs(synthetic_movielens_dir, tmp_path):
    return build_definitions(str(synthetic_movielens_dir), tmp_path / "data")


# --- schedule -------------------------------------------------------------------------------------


def test_schedule_cron_and_timezone_come_from_the_environment(synthetic_movielens_dir, tmp_path):
    environ = {
        "RECSYS_MOVIELENS": str(synthetic_movielens_dir),
        "RECSYS_DATA_DIR": str(tmp_path),
        "RECSYS_RETRAIN_CRON": "30 4 * * 2",
        "RECSYS_RETRAIN_TIMEZONE": "Europe/Paris",
    }
    schedule = definitions_from_environment(environ).resolve_schedule_def("retrain_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("30 4 * * 2", "Europe/Paris")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.job_name == RETRAIN_JOB

    tick = schedule.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=datetime(2026, 12, 1, 4, 30, tzinfo=timezone.utc)))
    assert [request.job_name or schedule.job_name for request in tick.run_requests] == [RETRAIN_JOB]


def test_schedule_is_weekly_in_utc_by_default(tmp_path):
    schedule = definitions_from_environment({"RECSYS_DATA_DIR": str(tmp_path)}).resolve_schedule_def("retrain_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 3 * * 1", "UTC")


def test_retraining_job_selects_every_asset_from_the_raw_data(defs):
    job = defs.resolve_job_def(RETRAIN_JOB)
    assert job.asset_layer.selected_asset_keys == set(defs.resolve_all_asset_keys())


# --- sensor ---------------------------------------------------------------------------------------


@pytest.fixture
def source_dir(synthetic_movielens_dir, tmp_path):
    """A private copy of the source, so the test may rewrite its files."""
    copy = tmp_path / "source"
    copy.mkdir()
    for name in (MOVIES_FILE, RATINGS_FILE):
        shutil.copy2(synthetic_movielens_dir / name, copy / name)
    return copy


def expected_run_key(source_dir) -> str:
    digest = hashlib.sha256()
    for name in (MOVIES_FILE, RATINGS_FILE):
        digest.update(name.encode() + b"\0" + (source_dir / name).read_bytes())
    return digest.hexdigest()


def evaluate_sensor(location, cursor):
    context = dg.build_sensor_context(cursor=cursor, resources={"movielens_source": MovieLensSource(location=str(location))})
    return source_data_changed.evaluate_tick(context)


def move_mtime_forward(path, seconds=10):
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + seconds * 1_000_000_000))


def test_sensor_requests_one_run_per_content(source_dir):
    first = evaluate_sensor(source_dir, None)
    [request] = first.run_requests
    assert request.run_key == expected_run_key(source_dir)
    assert request.tags[SOURCE_SHA256_TAG] == request.run_key
    assert json.loads(first.cursor)["sha256"] == request.run_key

    unchanged = evaluate_sensor(source_dir, first.cursor)
    assert not unchanged.run_requests and "unchanged" in unchanged.skip_message

    # Touched without a change of content: hashed, recognised, no run.
    move_mtime_forward(source_dir / RATINGS_FILE)
    touched = evaluate_sensor(source_dir, unchanged.cursor or first.cursor)
    assert not touched.run_requests and "content is unchanged" in touched.skip_message
    assert json.loads(touched.cursor)["sha256"] == request.run_key

    # Same size, different bytes: a rating's half star moves (x.5 -> x.0 keeps the length).
    ratings = source_dir / RATINGS_FILE
    text = ratings.read_text()
    position = text.index(".5,")
    ratings.write_text(text[:position] + ".0," + text[position + 3 :])
    assert ratings.stat().st_size == len(text.encode())
    move_mtime_forward(ratings, seconds=20)
    changed = evaluate_sensor(source_dir, touched.cursor)
    [new_request] = changed.run_requests
    assert new_request.run_key == expected_run_key(source_dir) != request.run_key


def test_sensor_skips_remote_and_missing_sources(tmp_path):
    remote = evaluate_sensor("https://example.org/ml-latest-small.zip", None)
    assert not remote.run_requests and "remote" in remote.skip_message
    missing = evaluate_sensor(tmp_path, None)
    assert not missing.run_requests and RATINGS_FILE in missing.skip_message


def test_sensors_run_without_anyone_switching_them_on(defs):
    for name in ("source_data_changed", "recsys_automation"):
        assert defs.resolve_sensor_def(name).default_status == dg.DefaultSensorStatus.RUNNING


# --- declarative automation, code versions, pool --------------------------------------------------


def condition_labels(condition: dg.AutomationCondition) -> set[str]:
    labels = {condition.get_label()} - {None}
    for child in condition.children:
        labels |= condition_labels(child)
    return labels


def test_downstream_assets_rebuild_eagerly_behind_blocking_checks(defs):
    specs = {spec.key.to_user_string(): spec for spec in defs.resolve_all_asset_specs()}
    for name in ("movie_features", "trained_model", "embedding_distance_matrix"):
        assert {"eager", "all_deps_blocking_checks_passed"} <= condition_labels(specs[name].automation_condition), name
    assert {name for name, spec in specs.items() if spec.automation_condition is None} == ASSETS_WITHOUT_CONDITION


def test_every_asset_has_a_code_version_and_training_has_a_pool(defs):
    assert {spec.key.to_user_string(): spec.code_version for spec in defs.resolve_all_asset_specs() if not spec.code_version} == {}
    assert defs.resolve_assets_def("trained_model").op.pool == "training"


def _report_materialization(instance, defs, name, failed_checks=frozenset()):
    """Record that `name` was materialized and its checks ran, all passing but `failed_checks`."""
    instance.report_runless_asset_event(dg.AssetMaterialization(name))
    for check_key in defs.resolve_asset_graph().asset_check_keys:
        if check_key.asset_key == dg.AssetKey(name):
            passed = check_key.name not in failed_checks
            instance.report_runless_asset_event(dg.AssetCheckEvaluation(asset_key=check_key.asset_key, check_name=check_key.name, passed=passed))


def _requested(result) -> set[str]:
    return {key.to_user_string() for key in {r.key for r in result.results} if result.get_num_requested(key)}


def test_new_raw_data_flows_to_the_model_and_stops_at_a_failed_gate(defs):
    everything = [key.to_user_string() for key in defs.resolve_all_asset_keys()]
    with dg.instance_for_test() as instance:
        for name in everything:
            _report_materialization(instance, defs, name)
        settled = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        settled = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=settled.cursor)
        assert _requested(settled) == set()

        _report_materialization(instance, defs, "raw_ratings")
        after_new_data = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=settled.cursor)
        assert _requested(after_new_data) == set(everything) - {"raw_movies", "raw_ratings"}

        # Requests are not repeated while the run they launched works.
        meanwhile = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=after_new_data.cursor)
        assert _requested(meanwhile) == set()

        # That run rebuilt the features and the candidate, whose regression gate failed.
        for name in ("rating_splits", "movie_features", "user_genre_averages", "fitted_scalers"):
            _report_materialization(instance, defs, name)
        _report_materialization(instance, defs, "trained_model", failed_checks={REGRESSION_GATE})
        after_failed_gate = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=meanwhile.cursor)
        # New features alone do not rebuild the previous model's embeddings or similarity tables.
        assert _requested(after_failed_gate) & MODEL_SIDE == set()

        # A later candidate that passes is accepted, and everything downstream follows.
        _report_materialization(instance, defs, "trained_model")
        after_passing = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=after_failed_gate.cursor)
        assert _requested(after_passing) == MODEL_SIDE
