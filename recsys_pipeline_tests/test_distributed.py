"""The multi-process deployment for real: a PostgreSQL instance, two Celery workers on a Redis broker,
the daemon and the webserver, all started here on loopback and stopped at the end (docs/deploy.md).

One scenario on a small synthetic dataset drives it through the webserver and the daemon:
- the source sensor's first tick launches a retraining run (the whole graph, through the workers);
- a second retraining request, submitted while that run trains, waits in the queue;
- the ratings change: the sensor's next tick requests a run for the new content (cancelled while
  queued, to keep the test short), and the every-minute schedule's first tick launches a run;
- the queued request's training step is killed mid-epoch (SIGKILL to the worker process running
  it, by a watcher as soon as it logs an epoch, whatever the scenario waits for then): its run fails, every artifact of the model side keeps its bytes, and a re-execution from the
  failure succeeds, on the other artifacts as stored.
The tests below then check what each part left in the instance's event log. Several minutes.
"""

import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from recsys_pipeline.atomic import write_bytes_atomically
from recsys_pipeline.definitions import build_definitions
from recsys_pipeline.deployment.runs import run_summary, step_pids
from recsys_pipeline.deployment.servers import accepts_connections, wait_until
from recsys_pipeline.deployment.stack import Stack, command_line, parent_pid
from recsys_pipeline.layout import artifacts_dir, releases_dir
from recsys_pipeline.movielens import RATINGS_FILE
from recsys_pipeline.orchestration.automation import (
    AUTOMATION_SENSOR,
    RETRAIN_JOB,
    RETRAIN_TAG,
    SOURCE_SHA256_TAG,
    content_sha256,
    source_data_changed,
    watched_files,
)
from recsys_pipeline.synthetic import write_movielens
from recsys_pipeline_tests.conftest import REPO_ROOT, SMALL_SPEC

pytestmark = pytest.mark.distributed

WORKERS = 2
SENSOR_TAG, SCHEDULE_TAG = "dagster/sensor_name", "dagster/schedule_name"
SCHEDULE, SENSOR = "retrain_schedule", source_data_changed.name
# Long enough to be killed mid-training (an epoch of the small dataset takes 0.02-0.1 s; the killer
# polls every 0.1 s), short enough for the re-execution, which trains as long: no early stop for 100 epochs.
LONG_TRAINING = {"ops": {"trained_model": {"config": {"epochs": 100, "early_stopping_patience": 100}}}}
MODEL_SIDE_FILES = (
    "trained_model.keras",
    "accepted_model.keras",
    "movie_embeddings.npy",
    "embedding_distance_matrix.npy",
    "similar_movies.parquet",
    "model_evaluation.parquet",
)
UPSTREAM_STEPS = {"raw_movielens", "rating_splits", "movie_features", "user_genre_averages", "fitted_scalers"}
RUN_TIMEOUT = 900
Status = dg.DagsterRunStatus


@pytest.fixture(scope="module")
def scenario():
    # Under /tmp itself: PostgreSQL runs as its own user and must traverse every parent folder.
    root = Path(tempfile.mkdtemp(prefix="recsys-deployment-"))
    root.chmod(0o755)
    source = write_movielens(SMALL_SPEC, root / "movielens")
    env = {
        "RECSYS_MOVIELENS": str(source),
        "RECSYS_RETRAIN_CRON": "* * * * *",  # its first tick comes within a minute; then it is switched off
        "RECSYS_RMSE_TOLERANCE": "10",  # the gate is tested elsewhere; here every retrain must be accepted
    }
    stack = Stack(root / "deployment", REPO_ROOT, REPO_ROOT / "workspace.yaml", REPO_ROOT / "dagster.yaml", workers=WORKERS, env=env)
    observed = {"started": time.monotonic()}
    try:
        # Declarative automation off: it would add runs of its own after each materialization.
        stack.start(stopped_automation=[AUTOMATION_SENSOR.name])
        observed["up_seconds"] = time.monotonic() - observed["started"]
        with stack.instance() as instance:
            _drive(stack, instance, source, observed)
    finally:
        observed["processes_left"] = stack.stop()
        observed["survivors"] = stack.running_processes()
        if stack.state:  # independently of the marker: nothing answers on the deployment's ports
            ports = (stack.state.postgres_port, stack.state.redis_port, stack.state.webserver_port, stack.state.service_port)
            observed["ports_answering"] = [port for port in ports if accepts_connections(port)]
        observed["seconds"] = time.monotonic() - observed["started"]
        shutil.rmtree(root, ignore_errors=True)
    print(f"\ndistributed scenario: up {observed['up_seconds']:.0f} s, all {observed['seconds']:.0f} s")
    return observed


def _drive(stack: Stack, instance: dg.DagsterInstance, source: Path, observed: dict) -> None:
    observed["initial_sha256"] = content_sha256(watched_files(str(source)))

    # The sensor's first tick sees content it never saw and requests a retraining run.
    sensor_run = wait_until(lambda: _first_run_tagged(instance, SENSOR_TAG, SENSOR), "a run from the source sensor", 180)
    # Each step's process is looked up as the step starts: a pool process may later run the queued
    # run's training and be killed with it, after which its parent can no longer be read.
    observed["step_parents"] = {}
    parents = threading.Thread(target=_record_step_parents, args=(stack, sensor_run, observed), daemon=True)
    parents.start()
    wait_until(lambda: _step_started(instance, sensor_run, "trained_model") or _finished(instance, sensor_run), "the sensor's run to start training", RUN_TIMEOUT)
    assert _step_started(instance, sensor_run, "trained_model"), _failure(instance, sensor_run)

    # A second retraining request while that one trains: it must wait (the run records show whether it did).
    killed_run = stack.submit(RETRAIN_JOB.name, LONG_TRAINING)
    # Its training is killed the moment it logs an epoch, by a watcher of its own: this thread may
    # still be waiting for a schedule or sensor tick then, and the training lasts only seconds.
    killer = threading.Thread(target=_kill_training_mid_epoch, args=(stack, killed_run, observed), daemon=True)
    killer.start()

    # New content: one rating changes, replaced atomically so that no step reads half a file.
    ratings = pd.read_csv(source / RATINGS_FILE)
    ratings.loc[0, "rating"] = 5.0 if ratings.loc[0, "rating"] != 5.0 else 0.5
    write_bytes_atomically(source / RATINGS_FILE, ratings.to_csv(index=False).encode())
    observed["changed_sha256"] = content_sha256(watched_files(str(source)))

    scheduled_run = wait_until(lambda: _first_run_tagged(instance, SCHEDULE_TAG, SCHEDULE), "a run from the schedule", 150)
    stack.stop_automation(SCHEDULE)  # one scheduled run is enough
    changed_run = wait_until(lambda: _run_for_content(instance, observed["changed_sha256"]), "the sensor's run for the new content", 180)
    # The sensor creates the run, then submits it to the queue, where it waits behind the others.
    observed["changed_run_status_when_seen"] = wait_until(lambda: _status(instance, changed_run) != Status.NOT_STARTED and _status(instance, changed_run), "the queued run", 60)
    cancelled = stack.graphql("mutation($id: String!) { terminateRun(runId: $id) { __typename } }", {"id": changed_run})
    assert cancelled["terminateRun"]["__typename"] == "TerminateRunSuccess", cancelled

    assert wait_until(lambda: _finished(instance, sensor_run), "the sensor's run", RUN_TIMEOUT) == Status.SUCCESS, _failure(instance, sensor_run)
    observed["sensor_summary"] = run_summary(instance, sensor_run)
    parents.join(RUN_TIMEOUT)

    killer.join(RUN_TIMEOUT)
    assert not killer.is_alive(), "the queued run's training was not killed"
    if "killer_error" in observed:
        raise observed["killer_error"]

    rerun = stack.reexecute_from_failure(killed_run)
    observed["rerun_status"] = wait_until(lambda: _finished(instance, rerun), "the re-execution", RUN_TIMEOUT)
    observed["scheduled_status"] = wait_until(lambda: _finished(instance, scheduled_run), "the scheduled run", RUN_TIMEOUT)
    observed["rerun_steps"] = step_pids(instance, rerun)
    accepted = instance.get_latest_materialization_event(dg.AssetKey("accepted_model"))
    observed["rerun_acceptance"] = (accepted.run_id == rerun, set(accepted.asset_materialization.metadata))

    runs = {"sensor": sensor_run, "killed": killed_run, "scheduled": scheduled_run, "changed": changed_run, "rerun": rerun}
    observed["runs"] = {name: instance.get_run_record_by_id(run_id) for name, run_id in runs.items()}
    observed["training_windows"] = {name: _step_window(instance, runs[name], "trained_model") for name in ("sensor", "killed", "scheduled", "rerun")}


def _record_step_parents(stack: Stack, run_id: str, observed: dict) -> None:
    """The command line of the parent of every step process of `run_id`, read while the run goes on."""
    with stack.instance() as instance:

        def recorded() -> bool:
            for pid in set(step_pids(instance, run_id).values()) - set(observed["step_parents"]):
                observed["step_parents"][pid] = command_line(parent_pid(pid))
            return _finished(instance, run_id) is not None

        wait_until(recorded, "the sensor's run", RUN_TIMEOUT, interval=0.1)
        recorded()  # the steps that started in the last interval


def _kill_training_mid_epoch(stack: Stack, run_id: str, observed: dict) -> None:
    """SIGKILL the worker process training `run_id`'s model as soon as it logs an epoch; then record
    whether the step was still training, and whether the artifacts kept their bytes once the run ended."""
    try:
        with stack.instance() as instance:
            artifacts, releases = artifacts_dir(stack.data_dir), releases_dir(stack.data_dir)
            wait_until(lambda: any(entry.user_message.startswith("epoch ") for entry in instance.all_logs(run_id)), "training to log its first epoch", RUN_TIMEOUT, interval=0.1)
            before = _snapshot(artifacts, releases)
            observed["victim"] = victim = step_pids(instance, run_id)["trained_model"]
            observed["victim_parent"] = command_line(parent_pid(victim))
            os.kill(victim, signal.SIGKILL)
            observed["killed_status"] = wait_until(lambda: _finished(instance, run_id), "the killed run", RUN_TIMEOUT)
            # Had training ended before the signal, the kill would have hit whatever that process ran next.
            observed["training_ended_before_the_kill"] = _step_ended(instance, run_id, "trained_model")
            observed["intact"] = _snapshot(artifacts, releases) == before
            observed["leftover_temporaries"] = sorted(path.name for path in artifacts.iterdir() if path.name.startswith("."))
    except Exception as error:  # re-raised by the scenario's thread
        observed["killer_error"] = error


# --- what the scenario must show ------------------------------------------------------------------


def test_the_whole_graph_runs_through_celery_workers_on_a_postgres_instance(scenario):
    summary = scenario["sensor_summary"]
    assert summary["status"] == "SUCCESS" and summary["failed_checks"] == []
    assert summary["instance_storage"] == "postgres" and summary["executor"] == "celery"
    assert summary["assets_materialized"] == len(build_definitions(str(REPO_ROOT), REPO_ROOT / "data").resolve_all_asset_keys())
    # Steps spread over both workers, each in a worker's pool process, none in the run's own process.
    assert summary["workers"] == WORKERS and summary["worker_processes"] >= 2
    assert all("celery" in parent and "worker" in parent for parent in scenario["step_parents"].values()), scenario["step_parents"]


def test_a_sensor_tick_and_a_scheduled_tick_each_launch_a_run_through_the_daemon(scenario):
    runs = scenario["runs"]
    sensor, changed, scheduled = (runs[name].dagster_run for name in ("sensor", "changed", "scheduled"))
    assert sensor.tags[SENSOR_TAG] == changed.tags[SENSOR_TAG] == SENSOR
    # One run per content: the first for the files as written, the next for the changed rating.
    assert sensor.tags[SOURCE_SHA256_TAG] == scenario["initial_sha256"]
    assert changed.tags[SOURCE_SHA256_TAG] == scenario["changed_sha256"] != scenario["initial_sha256"]
    assert scenario["changed_run_status_when_seen"] == Status.QUEUED  # behind the runs already requested
    assert scheduled.tags[SCHEDULE_TAG] == SCHEDULE and scenario["scheduled_status"] == Status.SUCCESS
    assert all(run.tags[RETRAIN_TAG] == "true" for run in (sensor, changed, scheduled))


def test_retraining_requests_queue_instead_of_training_in_parallel(scenario):
    sensor, killed = scenario["runs"]["sensor"], scenario["runs"]["killed"]
    # Requested while the sensor's run trained, started only once it had ended.
    assert killed.create_timestamp.timestamp() < sensor.end_time <= killed.start_time
    started = sorted((record for record in scenario["runs"].values() if record.start_time), key=lambda record: record.start_time)
    assert len(started) == 4  # the cancelled request never started
    for previous, following in zip(started, started[1:]):
        assert following.start_time >= previous.end_time, "two retraining runs overlapped"
    # At least two of them were requested while another one was running, and waited.
    waited = [following for previous, following in zip(started, started[1:]) if following.create_timestamp.timestamp() < previous.end_time]
    assert len(waited) >= 2
    # Each retraining run trained (a window from its STEP_START), and no two trainings overlapped.
    missing = {name: window for name, window in scenario["training_windows"].items() if isinstance(window, str)}
    assert missing == {}, missing
    windows = sorted(scenario["training_windows"].values())
    assert all(later[0] >= earlier[1] for earlier, later in zip(windows, windows[1:])), windows


def test_killing_a_worker_mid_step_leaves_artifacts_intact_and_a_rerun_succeeds(scenario):
    assert "celery" in scenario["victim_parent"]  # the step ran in a Celery worker's pool process
    assert scenario["training_ended_before_the_kill"] is False
    assert scenario["killed_status"] == Status.FAILURE
    assert scenario["intact"], "an artifact of the model side or a release changed although its writer was killed"
    assert scenario["leftover_temporaries"] == []
    assert scenario["rerun_status"] == Status.SUCCESS
    rerun_steps = scenario["rerun_steps"]
    # From the failure on: the stored features were reused, the model retrained in a live process.
    assert "trained_model" in rerun_steps and rerun_steps["trained_model"] != scenario["victim"]
    assert UPSTREAM_STEPS.isdisjoint(rerun_steps)
    # The gate's reference, the release published by an earlier run's worker process, was found.
    accepted_by_rerun, metadata = scenario["rerun_acceptance"]
    assert accepted_by_rerun and "previous_val_rmse" in metadata


def test_stopping_leaves_no_process_running(scenario):
    # Every process of the deployment (servers, workers, daemon, webserver, the run and code-server
    # processes they started) carries the deployment's marker in its environment.
    assert scenario["processes_left"] == 0 and scenario["survivors"] == []
    assert scenario["ports_answering"] == []


# --- helpers --------------------------------------------------------------------------------------


def _first_run_tagged(instance: dg.DagsterInstance, tag: str, value: str) -> str | None:
    runs = instance.get_runs(filters=dg.RunsFilter(tags={tag: value}))  # newest first
    return runs[-1].run_id if runs else None


def _run_for_content(instance: dg.DagsterInstance, sha256: str) -> str | None:
    runs = instance.get_runs(filters=dg.RunsFilter(tags={SOURCE_SHA256_TAG: sha256}))
    return runs[0].run_id if runs else None


def _status(instance: dg.DagsterInstance, run_id: str) -> Status:
    return instance.get_run_by_id(run_id).status


def _finished(instance: dg.DagsterInstance, run_id: str) -> Status | None:
    run = instance.get_run_by_id(run_id)
    return run.status if run.is_finished else None


def _failure(instance: dg.DagsterInstance, run_id: str) -> str:
    return "\n".join(entry.user_message for entry in instance.all_logs(run_id) if entry.level >= 40)


def _step_started(instance: dg.DagsterInstance, run_id: str, step_key: str) -> bool:
    return step_key in step_pids(instance, run_id)


def _step_ended(instance: dg.DagsterInstance, run_id: str, step_key: str) -> bool:
    ends = (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE)
    return any(entry.step_key == step_key and entry.dagster_event and entry.dagster_event.event_type in ends for entry in instance.all_logs(run_id))


def _step_window(instance: dg.DagsterInstance, run_id: str, step_key: str) -> tuple[float, float] | str:
    """From the step's start to its last event or log line (a killed step has no end event); where
    the step never started, what the run's events say about it instead, for the test to report."""
    entries = [entry for entry in instance.all_logs(run_id) if entry.step_key == step_key]
    starts = [entry.timestamp for entry in entries if entry.dagster_event and entry.dagster_event.event_type == dg.DagsterEventType.STEP_START]
    if not starts:
        said = [entry.dagster_event.event_type_value if entry.dagster_event else entry.user_message for entry in entries]
        return f"run {run_id} ({_status(instance, run_id).value}): no STEP_START for {step_key}; its events: {said}"
    return (min(starts), max(entry.timestamp for entry in entries))


def _snapshot(artifacts: Path, releases: Path) -> dict[str, bytes]:
    """The model side's artifacts, and every file of every release (the gate's reference among them)."""
    released = {str(path): path.read_bytes() for path in releases.rglob("*") if path.is_file()}
    return {**{name: (artifacts / name).read_bytes() for name in MODEL_SIDE_FILES}, **released}
