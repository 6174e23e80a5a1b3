"""What a run did, read back from the Dagster instance's event log: which process and which Celery
worker ran each step, what was materialized, which checks failed."""

from __future__ import annotations

import dagster as dg

CELERY_WORKER = "Celery worker"  # dagster-celery's engine-event metadata key naming the worker


def _events(instance: dg.DagsterInstance, run_id: str, event_type: dg.DagsterEventType) -> list[dg.DagsterEvent]:
    return [record.event_log_entry.dagster_event for record in instance.get_records_for_run(run_id, of_type=event_type).records]


def step_pids(instance: dg.DagsterInstance, run_id: str) -> dict[str, int]:
    """Step key -> id of the process that ran it (for a Celery step: the worker's pool process)."""
    return {event.step_key: event.pid for event in _events(instance, run_id, dg.DagsterEventType.STEP_START)}


def step_workers(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    """Step key -> the Celery worker (name@host) that took it from the queue."""
    workers = {}
    for event in _events(instance, run_id, dg.DagsterEventType.ENGINE_EVENT):
        metadata = event.engine_event_data.metadata if event.engine_event_data else {}
        if event.step_key and CELERY_WORKER in metadata:
            workers[event.step_key] = str(metadata[CELERY_WORKER].value)
    return workers


def instance_storage(instance: dg.DagsterInstance) -> str:
    """"postgres" for dagster-postgres storage, "sqlite" for the embedded default."""
    module = type(instance.run_storage).__module__
    return "postgres" if module.startswith("dagster_postgres") else "sqlite" if "sqlite" in module else module


def run_summary(instance: dg.DagsterInstance, run_id: str) -> dict:
    """The figures `make distributed-run` prints: status, storage, executor, workers, step processes."""
    run = instance.get_run_by_id(run_id)
    pids = step_pids(instance, run_id)
    workers = step_workers(instance, run_id)
    materialized = {event.asset_key.to_user_string() for event in _events(instance, run_id, dg.DagsterEventType.ASSET_MATERIALIZATION)}
    failed_checks = sorted(
        f"{event.asset_check_evaluation_data.asset_key.to_user_string()}:{event.asset_check_evaluation_data.check_name}"
        for event in _events(instance, run_id, dg.DagsterEventType.ASSET_CHECK_EVALUATION)
        if not event.asset_check_evaluation_data.passed
    )
    return {
        "status": run.status.value,
        "run_id": run_id,
        "instance_storage": instance_storage(instance),
        # Every step was handed to a Celery worker, or some ran elsewhere.
        "executor": "celery" if pids and set(pids) <= set(workers) else "not celery",
        "workers": len(set(workers.values())),
        "worker_processes": len(set(pids.values())),
        "steps": len(pids),
        "assets_materialized": len(materialized),
        "failed_checks": failed_checks,
        "step_pids": pids,
    }
