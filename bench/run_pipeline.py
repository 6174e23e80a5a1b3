"""The whole pipeline from the command line, start to finish, with a fresh DAGSTER_HOME and data dir.

Runs `dagster asset materialize --select '*' -m recsys_pipeline.definitions [-c CONFIG]`, samples
the memory of the whole process tree (the CLI, the forkserver and every step process) twice a second,
and prints the wall time, the peak of the tree's summed proportional set size (PSS: shared pages are
split between the processes sharing them, so forked steps are not double counted), and the per-step
table of bench/asset_table.py.

    python -m bench.run_pipeline MOVIELENS_DIR [--config bench/scale_run_config.yaml] [--keep DIR]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DAGSTER = Path(sys.executable).with_name("dagster")


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                parent = int(Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def pss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class TreeMemorySampler(threading.Thread):
    def __init__(self, root: int, interval: float = 0.5):
        super().__init__(daemon=True)
        self.root, self.interval, self.peak, self.done = root, interval, 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, sum(pss_bytes(pid) for pid in descendants(self.root)))
            self.done.wait(self.interval)


def dagster_home(workdir: Path) -> Path:
    return workdir / "dagster_home"


def run_pipeline(movielens: str, config: str | None, workdir: Path, nice: int = 0, select: str = "*") -> tuple[float, int, int]:
    """Wall seconds, peak tree PSS in bytes and exit status of one CLI run of the assets `select`
    names (with their checks) in a fresh `workdir`; its Dagster instance is `workdir`/dagster_home."""
    home = dagster_home(workdir)
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text("")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "RECSYS_MOVIELENS": movielens,
        "RECSYS_DATA_DIR": str(workdir / "data"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    command = [str(DAGSTER), "asset", "materialize", "--select", select, "-m", "recsys_pipeline.definitions"]
    if config:
        command += ["-c", config]
    started = time.perf_counter()
    with open(workdir / "run.log", "wb") as log:
        process = subprocess.Popen(["nice", "-n", str(nice), *command], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        sampler = TreeMemorySampler(process.pid)
        sampler.start()
        status = process.wait()
    elapsed = time.perf_counter() - started
    sampler.done.set()
    sampler.join()
    return elapsed, sampler.peak, status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("movielens")
    parser.add_argument("--config")
    parser.add_argument("--keep", help="work in this (new) directory and keep it, instead of a temporary one")
    parser.add_argument("--nice", type=int, default=0)
    args = parser.parse_args()
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="recsys_pipeline_run."))
    try:
        elapsed, peak, status = run_pipeline(str(Path(args.movielens).resolve()), args.config, workdir, args.nice)
        print(f"pipeline CLI: {elapsed:.1f} s wall, peak memory of the process tree {peak / 2**30:.2f} GiB (PSS), exit status {status}")
        env = {**os.environ, "DAGSTER_HOME": str(dagster_home(workdir)), "PYTHONPATH": str(REPO)}
        subprocess.run([sys.executable, str(REPO / "bench" / "asset_table.py")], env=env, check=True)
        if status:
            print((workdir / "run.log").read_text()[-3000:])
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
