"""The two servers a multi-process deployment needs, run by the project itself on the loopback address:
PostgreSQL for the Dagster instance (runs, event logs, schedules, concurrency slots) and Redis as
the Celery broker and result backend.

PostgreSQL refuses to run as root: as root its programs run as the `postgres` system user
(`runuser`), with a data directory owned by that user. Both come from Debian's `postgresql` and
`redis-server` packages (`make distributed-up` installs them when missing).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"
POSTGRES_SYSTEM_USER = "postgres"
DATABASE = "dagster"
DATABASE_USER = "dagster"
POSTGRES_INSTALL = Path("/usr/lib/postgresql")


class DeploymentError(RuntimeError):
    """The deployment cannot start or stop; the message says what to do."""


def free_port() -> int:
    """A TCP port on the loopback address that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def accepts_connections(port: int) -> bool:
    """Whether something listens on LOOPBACK:`port`."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1):
            return True
    except OSError:
        return False


def wait_until(ready, what: str, timeout: float, interval: float = 0.5):
    """Poll `ready()` until it returns something truthy; raise naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = ready()
        if outcome:
            return outcome
        if time.monotonic() > deadline:
            raise DeploymentError(f"{what} not ready after {timeout:.0f} s")
        time.sleep(interval)


def postgres_programs() -> Path:
    """The newest installed PostgreSQL's bin directory (Debian keeps them out of PATH)."""
    installed = sorted(POSTGRES_INSTALL.glob("*/bin/pg_ctl"), key=lambda pg_ctl: int(pg_ctl.parts[-3]))
    if not installed:
        raise DeploymentError(f"PostgreSQL not found under {POSTGRES_INSTALL}/*/bin: apt-get install postgresql")
    return installed[-1].parent


def redis_program() -> str:
    program = shutil.which("redis-server")
    if program is None:
        raise DeploymentError("redis-server not found: apt-get install redis-server")
    return program


def _as_postgres_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", POSTGRES_SYSTEM_USER, "--", *command] if os.geteuid() == 0 else command


def _hand_to_postgres_user(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, POSTGRES_SYSTEM_USER, POSTGRES_SYSTEM_USER)


@dataclass(frozen=True)
class Postgres:
    """A PostgreSQL cluster in `directory` (data/, its socket and log), listening on LOOPBACK:`port`,
    with one database `dagster` owned by the password-protected role `dagster`."""

    directory: Path
    port: int
    password: str

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def url(self) -> str:
        return f"postgresql://{DATABASE_USER}:{self.password}@{LOOPBACK}:{self.port}/{DATABASE}"

    def start(self, env: dict[str, str]) -> None:
        """Create the cluster on first use, start it and wait until it accepts connections."""
        self._initialise(env)
        options = f"-c listen_addresses={LOOPBACK} -p {self.port} -c unix_socket_directories={self.directory}"
        self._pg_ctl(["start", "-w", "-t", "120", "-l", str(self.directory / "postgres.log"), "-o", options], env)
        self._create_database()

    def stop(self, env: dict[str, str]) -> None:
        if (self.data / "postmaster.pid").exists():
            self._pg_ctl(["stop", "-m", "fast", "-w", "-t", "60"], env)

    def _initialise(self, env: dict[str, str]) -> None:
        if (self.data / "PG_VERSION").exists():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        _hand_to_postgres_user(self.directory)
        reachable = subprocess.run(_as_postgres_user(["test", "-w", str(self.directory)]), env=env).returncode == 0
        if not reachable:
            raise DeploymentError(f"{self.directory}: the {POSTGRES_SYSTEM_USER} user cannot write here; every parent directory must be traversable (chmod o+x)")
        password_file = self.directory / "initial_password"
        password_file.write_text(self.password)
        password_file.chmod(0o600)
        _hand_to_postgres_user(password_file)
        try:
            initdb = str(postgres_programs() / "initdb")
            command = [initdb, "-D", str(self.data), "-U", DATABASE_USER, f"--pwfile={password_file}", "--auth=scram-sha-256", "-E", "UTF8", "--no-sync"]
            _run(_as_postgres_user(command), env, "initdb")
        finally:
            password_file.unlink(missing_ok=True)

    def _pg_ctl(self, arguments: list[str], env: dict[str, str]) -> None:
        _run(_as_postgres_user([str(postgres_programs() / "pg_ctl"), "-D", str(self.data), *arguments]), env, f"pg_ctl {arguments[0]}")

    def _create_database(self) -> None:
        import psycopg2  # from dagster-postgres, in the `distributed` extra

        connection = psycopg2.connect(host=LOOPBACK, port=self.port, user=DATABASE_USER, password=self.password, dbname="postgres")
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
                if cursor.fetchone() is None:
                    cursor.execute(f"CREATE DATABASE {DATABASE}")
        finally:
            connection.close()


@dataclass(frozen=True)
class Redis:
    """A Redis server on LOOPBACK:`port` that keeps nothing on disk: queued steps live only as long as it runs."""

    directory: Path
    port: int

    def url(self, database: int) -> str:
        return f"redis://{LOOPBACK}:{self.port}/{database}"

    def command(self) -> list[str]:
        self.directory.mkdir(parents=True, exist_ok=True)
        return [
            redis_program(), "--bind", LOOPBACK, "--port", str(self.port), "--protected-mode", "yes",
            "--save", "", "--appendonly", "no", "--dir", str(self.directory),
            # Redis would otherwise rewrite its title over its environment, hiding the deployment's marker.
            "--set-proc-title", "no",
        ]  # fmt: skip

    def answers(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=1) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith(b"+PONG")
        except OSError:
            return False


def _run(command: list[str], env: dict[str, str], what: str) -> None:
    finished = subprocess.run(command, env=env, capture_output=True, text=True)
    if finished.returncode != 0:
        raise DeploymentError(f"{what} failed ({finished.returncode}): {(finished.stderr or finished.stdout).strip()[-2000:]}")
