"""The Dagster code location: `dagster dev -w workspace.yaml` or `dagster asset materialize -m recsys_pipeline.definitions`.

Configured by environment variables, read when the definitions load:
- RECSYS_MOVIELENS: a directory of MovieLens CSVs, a local .zip, or an https URL of a .zip
  (default: the GroupLens ml-latest-small zip, downloaded once into the data directory);
- RECSYS_MOVIELENS_SHA256: the SHA-256 the .zip must have (optional; see docs/reliability.md);
- RECSYS_DATA_DIR: where every artifact is written (default ./data);
- RECSYS_SEED: the seed of the split, the initialisation and the shuffling (default 47005);
- RECSYS_RETRAIN_CRON / RECSYS_RETRAIN_TIMEZONE: when the retraining schedule runs
  (default "0 3 * * 1", Mondays 03:00, in UTC);
- RECSYS_RMSE_TOLERANCE: how many stars of validation RMSE a retrained model may lose against the
  accepted one before the regression gate keeps the accepted one (default 0.01);
- RECSYS_EXECUTOR: `in_process` (default), `multiprocess` (see EXECUTORS) or `celery` (steps on
  Celery workers, with RECSYS_CELERY_BROKER and RECSYS_CELERY_BACKEND; needs the `distributed`
  extra; see docs/deploy.md).
"""

import os
from collections.abc import Mapping
from pathlib import Path

import dagster as dg

from recsys_pipeline import layout
from recsys_pipeline.orchestration.assets import ASSETS
from recsys_pipeline.orchestration.automation import (
    AUTOMATION_SENSOR,
    RETRAIN_JOB,
    retraining_schedule,
    source_data_changed,
)
from recsys_pipeline.orchestration.checks import CHECKS
from recsys_pipeline.orchestration.io_managers import IO_MANAGER_KEYS, ArtifactStore
from recsys_pipeline.orchestration.resources import ModelGate, MovieLensSource, ReleaseStore, Reproducibility
from recsys_pipeline.settings import (
    DEFAULT_RETRAIN_CRON,
    DEFAULT_RETRAIN_TIMEZONE,
    DEFAULT_RMSE_TOLERANCE,
    DEFAULT_SEED,
    EnvironmentSettings,
    SettingsError,
)

EXECUTORS = {
    # One process runs every step in turn: TensorFlow is imported once, not by each of the three steps
    # that need it, and no step pays a process start (about 2 s each here). Best for a small dataset.
    "in_process": dg.in_process_executor,
    # A process per step, two or more at a time, isolated from each other: for large datasets, where
    # steps take minutes. Steps fork from a server that has already imported these definitions (not
    # TensorFlow) instead of each starting a fresh interpreter.
    "multiprocess": dg.multiprocess_executor.configured(
        {"start_method": {"forkserver": {"preload_modules": ["recsys_pipeline.definitions"]}}},
        name="forkserver_multiprocess",
    ),
}


# Steps on Celery workers over a broker (docs/deploy.md); not in EXECUTORS because it needs the
# `distributed` extra.
CELERY = "celery"


def build_definitions(
    source: str,
    data_dir: str | Path,
    seed: int = DEFAULT_SEED,
    source_sha256: str | None = None,
    retrain_cron: str = DEFAULT_RETRAIN_CRON,
    retrain_timezone: str = DEFAULT_RETRAIN_TIMEZONE,
    rmse_tolerance: float = DEFAULT_RMSE_TOLERANCE,
    executor: dg.ExecutorDefinition = EXECUTORS["in_process"],
    artifacts_base_path: str | None = None,
) -> dg.Definitions:
    """Definitions reading MovieLens from `source` and writing artifacts under `data_dir`, run by `executor`.

    A distributed deployment (docs/scaling.md) passes e.g. dagster_k8s.k8s_job_executor and an
    object-store `artifacts_base_path` such as s3://bucket/recsys, which every step can reach.
    """
    data_dir = Path(data_dir).expanduser().resolve()
    if source.strip() and "://" not in source:  # an empty source is refused when read, not taken for the current folder
        source = str(Path(source).expanduser().resolve())
    artifacts = artifacts_base_path or str(layout.artifacts_dir(data_dir))
    return dg.Definitions(
        assets=ASSETS,
        asset_checks=CHECKS,
        executor=executor,
        jobs=[RETRAIN_JOB],
        schedules=[retraining_schedule(retrain_cron, retrain_timezone)],
        sensors=[source_data_changed, AUTOMATION_SENSOR],
        resources={
            "movielens_source": MovieLensSource(location=source, cache_dir=str(data_dir), sha256=source_sha256),
            "reproducibility": Reproducibility(seed=seed),
            "model_gate": ModelGate(releases_dir=str(layout.releases_dir(data_dir)), rmse_tolerance=rmse_tolerance),
            "release_store": ReleaseStore(artifacts_base_path=artifacts, releases_dir=str(layout.releases_dir(data_dir))),
            **{key: ArtifactStore(base_path=artifacts, format=format) for format, key in IO_MANAGER_KEYS.items()},
        },
    )


def _executor_named(name: str, environ: Mapping[str, str]) -> dg.ExecutorDefinition:
    if name == CELERY:
        # Imported only when chosen: dagster-celery is in the optional `distributed` extra.
        from recsys_pipeline.orchestration.celery_workers import celery_executor_from_environment

        return celery_executor_from_environment(environ)
    if name not in EXECUTORS:
        raise SettingsError(f"RECSYS_EXECUTOR={name!r}: expected one of {', '.join([*EXECUTORS, CELERY])}")
    return EXECUTORS[name]


def definitions_from_environment(environ: Mapping[str, str]) -> dg.Definitions:
    """The code location as configured by the RECSYS_* variables in `environ`; a bad one is refused
    here, with one line naming it, before anything runs."""
    settings = EnvironmentSettings.from_environment(environ)
    executor = _executor_named(settings.executor, environ)
    return build_definitions(
        source=settings.source,
        data_dir=settings.data_dir,
        seed=settings.seed,
        source_sha256=settings.source_sha256,
        retrain_cron=settings.retrain_cron,
        retrain_timezone=settings.retrain_timezone,
        rmse_tolerance=settings.rmse_tolerance,
        executor=executor,
    )


try:
    defs = definitions_from_environment(os.environ)
except SettingsError as error:
    # One line naming the variable, not a loader traceback: nothing can run with this setting.
    raise SystemExit(f"recsys_pipeline: {error}") from None
