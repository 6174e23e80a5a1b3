"""The Celery executor: each step runs in a `dagster-celery worker` process that takes it from a
broker queue, on this machine or any other (docs/deploy.md). Needs the `distributed` extra.

The broker and result backend URLs are read from the environment when a run starts, so the job
snapshot holds no address or password.
"""

from collections.abc import Mapping

import dagster as dg

from recsys_pipeline.settings import SettingsError

BROKER_VARIABLE = "RECSYS_CELERY_BROKER"
BACKEND_VARIABLE = "RECSYS_CELERY_BACKEND"


def celery_executor_from_environment(environ: Mapping[str, str]) -> dg.ExecutorDefinition:
    """dagster-celery's executor on the broker and backend named by RECSYS_CELERY_BROKER/_BACKEND."""
    missing = [name for name in (BROKER_VARIABLE, BACKEND_VARIABLE) if not environ.get(name)]
    if missing:
        raise SettingsError(f"RECSYS_EXECUTOR=celery needs {' and '.join(missing)} (e.g. redis://127.0.0.1:6379/0); see docs/deploy.md")
    try:
        from dagster_celery import celery_executor
    except ImportError as error:
        raise SettingsError("RECSYS_EXECUTOR=celery needs the distributed extra: pip install -e '.[distributed]'") from error
    return celery_executor.configured({"broker": {"env": BROKER_VARIABLE}, "backend": {"env": BACKEND_VARIABLE}}, name="recsys_celery")
