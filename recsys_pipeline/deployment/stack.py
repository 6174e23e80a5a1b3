"""The multi-process deployment on one machine, every process started and stopped by the project:

- PostgreSQL: the Dagster instance (runs, event logs, schedules, sensors, concurrency slots);
- Redis: the Celery broker and result backend;
- `dagster-celery worker` processes (one step at a time each) that execute the steps;
- `dagster-daemon`: schedules, sensors, declarative automation and the run queue, which applies the
  `recsys/retrain` tag limit and the `training` pool of dagster.yaml across every worker;
- `dagster-webserver`: the UI and the GraphQL API runs are submitted through;
- `recsys serve`: the HTTP recommendation service on the current release of the deployment's data.

Everything listens on 127.0.0.1 only, on free ports, and keeps its state under one root folder
(`.distributed/` for `make distributed-up`). Every process started carries a marker in its
environment, so stopping finds and ends all of them, the run and code-server processes the daemon
and webserver start included. docs/deploy.md describes the layout and the commands.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from recsys_pipeline.deployment.servers import LOOPBACK, DeploymentError, Postgres, Redis, free_port, wait_until
from recsys_pipeline.orchestration.celery_workers import BACKEND_VARIABLE, BROKER_VARIABLE

MARKER_VARIABLE = "RECSYS_DEPLOYMENT"
PASSWORD_VARIABLE = "RECSYS_POSTGRES_PASSWORD"
LOCATION = "recsys_pipeline"  # workspace.yaml's location_name
REPOSITORY = "__repository__"  # the repository Dagster makes of a module's `defs`
START_TIMEOUT_SECONDS = 240
STOP_GRACE_SECONDS = 20
# Names of the processes (and of their logs) besides the workers.
WEBSERVER, DAEMON, REDIS, SERVICE = "webserver", "daemon", "redis", "service"


@dataclass(frozen=True)
class StackState:
    """What a later `down` needs: written to <root>/state.json (readable by its owner only)."""

    marker: str
    postgres_port: int
    redis_port: int
    webserver_port: int
    postgres_password: str
    # 0 in a state file written before the service was part of the deployment.
    service_port: int = 0


class Stack:
    """The deployment rooted at `root`, run from `workdir` (the checkout, holding `workspace`).

    `instance_settings` is the repository's dagster.yaml (run queue, tag limits, pools); the instance
    file written to <root>/dagster_home adds PostgreSQL storage to it. `env` adds to the environment
    every process gets (RECSYS_MOVIELENS, RECSYS_RETRAIN_CRON, ...).
    """

    def __init__(self, root: Path, workdir: Path, workspace: Path, instance_settings: Path, workers: int = 2, env: dict[str, str] | None = None):
        if workers < 1:
            raise DeploymentError(f"workers={workers}: at least one Celery worker is needed")
        self.root = root.resolve()
        self.workdir = workdir.resolve()
        self.workspace = workspace.resolve()
        self.instance_settings = instance_settings.resolve()
        self.workers = workers
        self.extra_env = dict(env or {})
        self._processes: dict[str, subprocess.Popen] = {}
        self.state = self._load_state()

    # --- layout -----------------------------------------------------------------------------------

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def data_dir(self) -> Path:
        return Path(self.environment()["RECSYS_DATA_DIR"])

    @property
    def postgres(self) -> Postgres:
        return Postgres(self.root / "postgres", self.state.postgres_port, self.state.postgres_password)

    @property
    def redis(self) -> Redis:
        return Redis(self.root / "redis", self.state.redis_port)

    @property
    def webserver_url(self) -> str:
        return f"http://{LOOPBACK}:{self.state.webserver_port}"

    @property
    def service_url(self) -> str:
        return f"http://{LOOPBACK}:{self.state.service_port}"

    def worker_names(self) -> list[str]:
        return [f"worker-{number}" for number in range(1, self.workers + 1)]

    def environment(self) -> dict[str, str]:
        """The environment of every process of the deployment."""
        programs = str(Path(sys.executable).parent)
        return {
            **os.environ,
            "RECSYS_DATA_DIR": str(self.root / "data"),
            **self.extra_env,
            "DAGSTER_HOME": str(self.dagster_home),
            "RECSYS_EXECUTOR": "celery",
            BROKER_VARIABLE: self.redis.url(0),
            BACKEND_VARIABLE: self.redis.url(1),
            MARKER_VARIABLE: self.state.marker,
            PASSWORD_VARIABLE: self.state.postgres_password,
            "PATH": f"{programs}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
        }

    # --- start ------------------------------------------------------------------------------------

    def start(self, stopped_automation: Iterable[str] = ()) -> None:
        """Start every process and wait until each is ready. Sensors and schedules named in
        `stopped_automation` are switched off before the daemon starts, so they never tick."""
        if self.running_processes():
            raise DeploymentError(f"a deployment is already running from {self.root}: stop it first (make distributed-down)")
        self.state = self._fresh_state()
        for folder in (self.dagster_home, self.logs, self.data_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._write_instance_file()
        env = self.environment()
        try:
            self.postgres.start(env)
            self._create_instance_tables()
            self._spawn(REDIS, self.redis.command())
            wait_until(self.redis.answers, "Redis", START_TIMEOUT_SECONDS)
            celery_config = self._write_celery_config()
            for name in self.worker_names():
                # One step at a time per worker: the number of workers is the number of parallel steps.
                command = ["dagster-celery", "worker", "start", "-A", "dagster_celery.app", "-y", str(celery_config), "--name", name]
                self._spawn(name, [*command, "--", "--concurrency=1", "--without-gossip", "--without-mingle"])
            self._spawn(WEBSERVER, ["dagster-webserver", "-w", str(self.workspace), "-h", LOOPBACK, "-p", str(self.state.webserver_port)])
            wait_until(self._location_loaded, "the webserver and its code location", START_TIMEOUT_SECONDS, interval=1)
            for name in stopped_automation:
                self.stop_automation(name)
            self._spawn(DAEMON, ["dagster-daemon", "run", "-w", str(self.workspace)])
            wait_until(self._workers_answer, f"{self.workers} Celery workers", START_TIMEOUT_SECONDS, interval=1)
            wait_until(self._daemon_alive, "dagster-daemon", START_TIMEOUT_SECONDS, interval=1)
            # It serves the current release of the data dir once the graph has published one, and
            # every later one as it is published (/readyz says which).
            serve = [sys.executable, "-m", "recsys_pipeline.cli", "serve", "--host", LOOPBACK, "--port", str(self.state.service_port)]
            self._spawn(SERVICE, [*serve, "--data-dir", str(self.data_dir)])
            wait_until(self._service_alive, "the recommendation service", START_TIMEOUT_SECONDS, interval=1)
        except BaseException:
            self.stop()
            raise

    def _fresh_state(self) -> StackState:
        # The password is kept with the cluster it was created with; ports are chosen afresh.
        password = self.state.postgres_password if self.state else secrets.token_urlsafe(24)
        state = StackState(uuid.uuid4().hex, free_port(), free_port(), free_port(), password, free_port())
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)  # PostgreSQL, running as its own user, must reach its folder inside
        state_file = self.root / "state.json"
        state_file.write_text(json.dumps(asdict(state), indent=2))
        state_file.chmod(0o600)
        return state

    def _load_state(self) -> StackState | None:
        state_file = self.root / "state.json"
        return StackState(**json.loads(state_file.read_text())) if state_file.is_file() else None

    def _write_instance_file(self) -> None:
        storage = {
            "storage": {
                "postgres": {
                    "postgres_db": {
                        "hostname": LOOPBACK,
                        "port": self.state.postgres_port,
                        "username": "dagster",
                        # From the environment, so no command line or Celery message carries it.
                        "password": {"env": PASSWORD_VARIABLE},
                        "db_name": "dagster",
                        # psycopg2 comes with dagster-postgres; SQLAlchemy 2.1 would pick psycopg 3 otherwise.
                        "scheme": "postgresql+psycopg2",
                    }
                }
            }
        }
        instance_file = self.dagster_home / "dagster.yaml"
        header = f"# Written by recsys_pipeline.deployment: {self.instance_settings.name} plus PostgreSQL storage.\n"
        instance_file.write_text(header + self.instance_settings.read_text() + "\n" + yaml.safe_dump(storage, sort_keys=False))
        instance_file.chmod(0o600)

    def _write_celery_config(self) -> Path:
        # The config block the executor gets, for the workers to listen on the same broker.
        config = {"execution": {"config": {"broker": self.redis.url(0), "backend": self.redis.url(1)}}}
        path = self.root / "celery.yaml"
        path.write_text(json.dumps(config, indent=2) + "\n")
        return path

    def _create_instance_tables(self) -> None:
        # Once, before several processes would race to create them.
        with self.instance() as instance:
            instance.get_runs_count()
            instance.all_instigator_state()
            instance.get_daemon_heartbeats()

    def _spawn(self, name: str, command: Sequence[str]) -> None:
        log = open(self.logs / f"{name}.log", "ab")
        try:
            process = subprocess.Popen(
                list(command), cwd=self.workdir, env=self.environment(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            log.close()
        self._processes[name] = process

    def _location_loaded(self) -> bool:
        try:
            entries = self.graphql("{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus locationOrLoadError { __typename } } } } }")
        except (urllib.error.URLError, ConnectionError, DeploymentError):
            return False
        for entry in entries["workspaceOrError"].get("locationEntries", []):
            if entry["name"] == LOCATION and entry["loadStatus"] == "LOADED":
                if entry["locationOrLoadError"]["__typename"] == "PythonError":
                    raise DeploymentError(f"the code location failed to load; see {self.logs / 'webserver.log'}")
                return True
        return False

    def _workers_answer(self) -> bool:
        from celery import Celery

        app = Celery(broker=self.redis.url(0))
        try:
            replies = app.control.ping(timeout=1.0)
        finally:
            app.close()
        answered = {name.split("@")[0] for reply in replies for name in reply}
        return set(self.worker_names()) <= answered

    def _service_alive(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.service_url}/healthz", timeout=5) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError):
            return False

    def _daemon_alive(self) -> bool:
        with self.instance() as instance:
            beating = instance.get_daemon_heartbeats()
            return set(instance.get_required_daemon_types()) <= set(beating)

    # --- use --------------------------------------------------------------------------------------

    def instance(self):
        """The deployment's Dagster instance (PostgreSQL), for reading runs and event logs."""
        import dagster as dg

        os.environ[PASSWORD_VARIABLE] = self.state.postgres_password  # the instance file refers to it
        return dg.DagsterInstance.from_config(str(self.dagster_home))

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        request = urllib.request.Request(
            f"{self.webserver_url}/graphql", data=json.dumps({"query": query, "variables": variables or {}}).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
        if answer.get("errors"):
            raise DeploymentError(f"GraphQL error: {answer['errors']}")
        return answer["data"]

    def submit(self, job: str, run_config: dict | None = None, tags: dict[str, str] | None = None) -> str:
        """Queue a run of `job` through the webserver; the daemon's run queue launches it."""
        params = {
            "selector": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "jobName": job},
            "runConfigData": run_config or {},
            "executionMetadata": {"tags": [{"key": key, "value": value} for key, value in (tags or {}).items()]},
        }
        launched = self.graphql(
            "mutation($p: ExecutionParams!) { launchPipelineExecution(executionParams: $p) { __typename"
            " ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } ... on RunConfigValidationInvalid { errors { message } } } }",
            {"p": params},
        )["launchPipelineExecution"]
        return _run_id(launched)

    def reexecute_from_failure(self, run_id: str) -> str:
        """Queue a re-execution of `run_id`'s failed and unfinished steps, reusing its stored outputs."""
        launched = self.graphql(
            "mutation($p: ReexecutionParams!) { launchRunReexecution(reexecutionParams: $p) { __typename"
            " ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }",
            {"p": {"parentRunId": run_id, "strategy": "FROM_FAILURE"}},
        )["launchRunReexecution"]
        return _run_id(launched)

    def stop_automation(self, name: str) -> None:
        """Switch off the sensor or schedule `name` (its state is kept in the instance)."""
        selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}
        sensor = self.graphql(
            "query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) { __typename ... on Sensor { id } } }", {"s": {**selector, "sensorName": name}}
        )["sensorOrError"]
        if sensor["__typename"] == "Sensor":
            self.graphql("mutation($id: String) { stopSensor(id: $id) { __typename } }", {"id": sensor["id"]})
            return
        schedule = self.graphql(
            "query($s: ScheduleSelector!) { scheduleOrError(scheduleSelector: $s) { __typename ... on Schedule { id } } }", {"s": {**selector, "scheduleName": name}}
        )["scheduleOrError"]
        if schedule["__typename"] != "Schedule":
            raise DeploymentError(f"{name}: no such sensor or schedule in {LOCATION}")
        self.graphql("mutation($id: String) { stopRunningSchedule(id: $id) { __typename } }", {"id": schedule["id"]})

    def wait_for_run(self, run_id: str, timeout: float):
        """The run's final status, waiting up to `timeout` seconds for it to finish."""
        with self.instance() as instance:
            return wait_until(lambda: _finished_status(instance, run_id), f"run {run_id}", timeout, interval=2)

    # --- stop -------------------------------------------------------------------------------------

    def running_processes(self) -> list[int]:
        """Every live process of this deployment (they carry its marker), PostgreSQL's included."""
        if self.state is None:
            return []
        return [pid for pid in _all_pids() if _environment_has(pid, MARKER_VARIABLE, self.state.marker)]

    def stop(self) -> int:
        """Stop every process of the deployment; returns how many were still alive afterwards (0)."""
        if self.state is None:
            return 0
        env = self.environment()
        postgres_processes, redis = set(self._postgres_processes()), self._pid(REDIS)
        # Dagster's processes first (they write their last events to PostgreSQL), then Redis, then PostgreSQL.
        self._terminate(lambda pid: pid not in postgres_processes and pid != redis)
        self._terminate(lambda pid: pid not in postgres_processes)
        try:
            self.postgres.stop(env)
        except DeploymentError:
            pass  # killed below
        self._terminate(lambda pid: True, grace=5)
        return len(self.running_processes())

    def _terminate(self, selected, grace: float = STOP_GRACE_SECONDS) -> None:
        targets = [pid for pid in self.running_processes() if selected(pid)]
        for pid in targets:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(pid in self.running_processes() for pid in targets):
            self._reap()
            time.sleep(0.3)
        for pid in set(targets) & set(self.running_processes()):  # still carrying the marker: not a reused pid
            _signal(pid, signal.SIGKILL)
        time.sleep(0.2)
        self._reap()

    def _reap(self) -> None:
        for process in self._processes.values():
            process.poll()

    def _pid(self, name: str) -> int | None:
        process = self._processes.get(name)
        if process is not None:
            return process.pid
        # Another command started it (make distributed-up): find it by its command line.
        for pid in self.running_processes():
            if name == REDIS and Path(command_line(pid).split(" ")[0]).name == "redis-server":
                return pid
        return None

    def _postgres_processes(self) -> list[int]:
        pid_file = self.postgres.data / "postmaster.pid"
        try:
            postmaster = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        return [pid for pid in self.running_processes() if pid == postmaster or parent_pid(pid) == postmaster]


def _run_id(launched: dict) -> str:
    if launched["__typename"] != "LaunchRunSuccess":
        raise DeploymentError(f"run not launched: {launched}")
    return launched["run"]["runId"]


def _finished_status(instance, run_id: str):
    run = instance.get_run_by_id(run_id)
    return run.status if run is not None and run.is_finished else None


def _all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _environment_has(pid: int, name: str, value: str) -> bool:
    try:
        environment = Path(f"/proc/{pid}/environ").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z" and f"{name}={value}".encode() in environment.split(b"\0")


def parent_pid(pid: int) -> int | None:
    """The parent of process `pid`, None once it is gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def command_line(pid: int) -> str:
    """The command line of process `pid`, "" once it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _signal(pid: int, signal_number: int) -> None:
    try:
        os.kill(pid, signal_number)
    except ProcessLookupError:
        pass
