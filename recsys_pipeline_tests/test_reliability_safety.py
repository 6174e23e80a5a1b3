"""Nothing untrusted is unpickled or executed, and `dagster dev` listens on loopback only."""

import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_a_keras_file_with_python_code_is_refused(tmp_path: Path) -> None:
    import keras

    from recsys_pipeline.two_tower import load_model

    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    path = tmp_path / "with_code.keras"
    model.save(path)
    with pytest.raises(ValueError, match="safe_mode"):
        load_model(str(path))


def test_no_module_unpickles_or_loads_unsafely() -> None:
    unsafe = re.compile(r"import pickle|from pickle|cloudpickle|joblib\.load|allow_pickle=True|safe_mode=False|pd\.read_pickle|\.to_pickle\(")
    offenders = [
        f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}"
        for path in sorted((REPO_ROOT / "recsys_pipeline").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if unsafe.search(line)
    ]
    assert offenders == []


def _group_pids(group: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group:  # state, parent, process group
            pids.append(int(stat.parent.name))
    return pids


def _listening_addresses(pids: list[int]) -> set[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
    """TCP addresses on which any of `pids` listens, from /proc/net/tcp{,6} and the processes' sockets."""
    inodes = set()
    for pid in pids:
        for descriptor in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                link = os.readlink(descriptor)
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[len("socket:[") : -1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                host, port = fields[1].split(":")
                words = bytes.fromhex(host)
                raw = b"".join(words[i : i + 4][::-1] for i in range(0, len(words), 4))  # little-endian 32-bit words
                found.add((ipaddress.ip_address(raw), int(port, 16)))
    return found


def _code_location_and_daemons_up(port: int) -> bool:
    query = (
        "{ workspaceOrError { ... on Workspace { locationEntries { loadStatus } } }"
        " instance { daemonHealth { allDaemonStatuses { required healthy } } } }"
    )
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", json.dumps({"query": query}).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            data = json.load(response)["data"]
    except (OSError, KeyError, ValueError):
        return False
    locations = data["workspaceOrError"].get("locationEntries") or []
    daemons = [status for status in data["instance"]["daemonHealth"]["allDaemonStatuses"] if status["required"]]
    return bool(locations and daemons) and all(entry["loadStatus"] == "LOADED" for entry in locations) and all(status["healthy"] for status in daemons)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_dagster_dev_listens_on_loopback_only(synthetic_movielens_dir: Path, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dev = subprocess.Popen(
        [Path(sys.executable).with_name("dagster"), "dev", "-w", REPO_ROOT / "workspace.yaml", "-p", str(port)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "DAGSTER_HOME": str(tmp_path), "RECSYS_MOVIELENS": str(synthetic_movielens_dir), "RECSYS_DATA_DIR": str(tmp_path / "data")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        addresses: set = set()
        while time.monotonic() < deadline and port not in {listening_port for _, listening_port in addresses}:
            time.sleep(1)
            addresses = _listening_addresses(_group_pids(dev.pid))
        assert (ipaddress.ip_address("127.0.0.1"), port) in addresses
        # Every server is up once the code location has loaded and every daemon beats: wait for that, not for time.
        while time.monotonic() < deadline and not _code_location_and_daemons_up(port):
            time.sleep(1)
        assert _code_location_and_daemons_up(port), "the code location did not load or a daemon did not start within 120 s"
        addresses = _listening_addresses(_group_pids(dev.pid))
        assert all(address.is_loopback for address, _ in addresses), addresses
    finally:
        os.killpg(dev.pid, signal.SIGKILL)
        dev.wait(timeout=30)
