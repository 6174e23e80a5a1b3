"""`python -m recsys_pipeline.deployment up|down|run`: the Makefile's distributed-up, -down and -run.

- up: start the deployment and leave it running (UI on the printed address); automation on.
- down: stop every process of the deployment started from the same root.
- run: start it with schedules and sensors off, materialize the whole graph through the Celery
  workers, check the result, stop everything, and print one JSON line of figures last.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

import yaml

from recsys_pipeline.deployment.runs import run_summary
from recsys_pipeline.deployment.servers import DeploymentError
from recsys_pipeline.deployment.stack import Stack
from recsys_pipeline.orchestration.automation import AUTOMATION_SENSOR, RETRAIN_JOB, source_data_changed

# Off for a one-shot run: the source sensor would retrain on its first tick, automation would react.
AUTOMATION = (source_data_changed.name, AUTOMATION_SENSOR.name, "retrain_schedule")
RUN_TIMEOUT_SECONDS = 3600


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recsys_pipeline.deployment", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "run"])
    parser.add_argument("--root", type=Path, default=Path(".distributed"), help="where every server keeps its state (default .distributed)")
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes, one step at a time each (default 2)")
    parser.add_argument("--workspace", type=Path, default=Path("workspace.yaml"))
    parser.add_argument("--instance-settings", type=Path, default=Path("dagster.yaml"), help="run queue, tag limits and pools (default dagster.yaml)")
    parser.add_argument("--config", type=Path, help="run config YAML for `run` (e.g. fewer epochs)")
    arguments = parser.parse_args(argv)
    stack = Stack(arguments.root, Path.cwd(), arguments.workspace, arguments.instance_settings, workers=arguments.workers)
    try:
        if arguments.command == "down":
            left = stack.stop()
            print(f"stopped; {left} process(es) left")
            return 0 if left == 0 else 1
        if arguments.command == "up":
            stack.start()
            print(
                f"up: UI {stack.webserver_url}, recommendation service {stack.service_url} (OpenAPI at /docs), {stack.workers} Celery workers, "
                f"DAGSTER_HOME={stack.dagster_home}, logs in {stack.logs}"
            )
            return 0
        run_config = yaml.safe_load(arguments.config.read_text()) if arguments.config else {}
        return _run(stack, run_config)
    except DeploymentError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _run(stack: Stack, run_config: dict) -> int:
    started = time.monotonic()
    # A Ctrl-C or `kill` still stops every process.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    summary: dict = {"status": "NOT_STARTED"}
    try:
        stack.start(stopped_automation=AUTOMATION)
        run_id = stack.submit(RETRAIN_JOB.name, run_config)
        stack.wait_for_run(run_id, RUN_TIMEOUT_SECONDS)
        with stack.instance() as instance:
            summary = run_summary(instance, run_id)
    finally:
        summary["processes_left"] = stack.stop()
        summary["wall_seconds"] = round(time.monotonic() - started, 1)
        summary["data_dir"] = str(stack.data_dir)
        print(json.dumps(summary), flush=True)
    ok = summary["status"] == "SUCCESS" and summary.get("executor") == "celery" and not summary.get("failed_checks") and summary["processes_left"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
