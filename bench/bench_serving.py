"""Load test of `recsys serve` with wrk, beside the same server's empty endpoint, and releases swapped under load.

    apt-get install -y wrk
    python -m bench.bench_serving --data-dir data [--workers 1 2] [--connections 4] [--seconds 10]

For each worker count: a server on 127.0.0.1 over a scratch copy of the data directory's releases;
per endpoint, 2 s of unmeasured warm-up, then wrk at fixed concurrency for a fixed time (requests per
second, p50/p95/p99 from wrk's own latency record, checked against Little's law in the JSON), the
empty endpoint (GET /v1/ping) measured before and after the others in the same run. Then three wrk processes (known user, visitor, similar) load the server while two
releases are published (releases.publish, as the pipeline does) and one is rolled back
(`recsys rollback`): every response is recorded by its release header and body, and a response
that is not exactly what its named release answers (recomputed here from the release's files with
recsys_pipeline.recommend) counts as mixed. Prints a table and writes every figure as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd

from bench.common import REPO, machine
from recsys_pipeline import layout, recommend, releases
from recsys_pipeline.sequential import SequentialModel

SEED = 47005
POOL = 200
K = 10
POPULAR_TITLES = 20
WARM_UP_SECONDS = 2
LITTLES_LAW_TOLERANCE = 0.25
# wrk's Lua: a pool of prebuilt requests drawn at random; figures (and, in the swap phase, every
# response's status, release and body with its count) written as JSON to $BENCH_OUT at the end.
LUA = r"""
local pool = {POOL}
local built = {}
local threads = {}
counts = {}

setup = function(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end

init = function(args)
  math.randomseed(id * 7919)
  for i, r in ipairs(pool) do
    local headers = {}
    if r[3] then headers["Content-Type"] = "application/json" end
    built[i] = wrk.format(r[1], r[2], headers, r[3])
  end
end

request = function()
  return built[math.random(#built)]
end

{RESPONSE}

local function escape(text)
  return (text:gsub('\\', '\\\\'):gsub('"', '\\"'):gsub('\n', '\\n'):gsub('\t', '\\t'))
end

done = function(summary, latency, requests)
  local out = io.open(os.getenv("BENCH_OUT"), "w")
  local e = summary.errors
  out:write(string.format('{"requests": %d, "duration_us": %d, "p50_us": %.1f, "p95_us": %.1f, "p99_us": %.1f, "max_us": %.1f, "mean_us": %.1f, ',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max, latency.mean))
  out:write(string.format('"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, "responses": [',
    e.connect, e.read, e.write, e.status, e.timeout))
  local first = true
  for _, thread in ipairs(threads) do
    for key, count in pairs(thread:get("counts")) do
      local status, release, body = key:match("^(%d+)\t([^\t]*)\t(.*)$")
      if not first then out:write(", ") end
      first = false
      out:write(string.format('{"count": %d, "status": %s, "release": "%s", "body": "%s"}', count, status, escape(release), escape(body)))
    end
  end
  out:write("]}")
  out:close()
end
"""
RECORD_RESPONSES = """
response = function(status, headers, body)
  local key = status .. "\\t" .. (headers["x-release-id"] or headers["X-Release-Id"] or "") .. "\\t" .. body
  counts[key] = (counts[key] or 0) + 1
end
"""


def lua_pool(requests: list[tuple[str, str, str | None]]) -> str:
    """A Lua table of {method, path, body}; long brackets keep JSON bodies verbatim."""
    def literal(text: str | None) -> str:
        return "nil" if text is None else f"[==[{text}]==]"

    return "{" + ", ".join(f"{{{literal(method)}, {literal(path)}, {literal(body)}}}" for method, path, body in requests) + "}"


def wrk(url: str, requests: list[tuple[str, str, str | None]], connections: int, seconds: float, scratch: Path, name: str, record: bool = False) -> dict:
    script = scratch / f"{name}.lua"
    script.write_text(LUA.replace("{POOL}", lua_pool(requests)).replace("{RESPONSE}", RECORD_RESPONSES if record else ""))
    out = scratch / f"{name}.json"
    command = ["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "--timeout", "5s", "-s", str(script), url]
    done = subprocess.run(command, env={**os.environ, "BENCH_OUT": str(out)}, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not out.is_file():
        raise SystemExit(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    figures = json.loads(out.read_text())
    seconds_run = figures["duration_us"] / 1e6
    failed = sum(figures["errors"].values())
    return {
        "requests": figures["requests"],
        "rps": figures["requests"] / seconds_run,
        "p50_ms": figures["p50_us"] / 1e3,
        "p95_ms": figures["p95_us"] / 1e3,
        "p99_ms": figures["p99_us"] / 1e3,
        "max_ms": figures["max_us"] / 1e3,
        # A check on wrk's latency record: with every connection always busy, the mean latency is
        # connections x duration / requests (Little's law); the two should be close.
        "mean_ms": figures["mean_us"] / 1e3,
        "closed_loop_mean_ms": connections * seconds_run * 1e3 / max(figures["requests"], 1),
        "failed": failed,
        "responses": figures["responses"],
    }


# --- the questions asked --------------------------------------------------------------------------


def workloads(release: releases.Release) -> dict[str, list[tuple[str, str, str | None]]]:
    """Each endpoint's pool of requests, drawn from the release's users and most rated movies."""
    files = release
    movies = files.table("movie_features")
    users = files.table("user_recommendations")["userId"].unique()
    popular = movies.sort_values("rating_count", ascending=False, kind="stable")
    rng = np.random.default_rng(SEED)
    genres = [column.removeprefix("genre_") for column in movies.columns if column.startswith("genre_")]

    def genre_body() -> dict:
        chosen = rng.choice(genres, size=int(rng.integers(2, 5)), replace=False)
        return {str(genre): float(rng.integers(2, 11)) / 2 for genre in chosen}

    def liked() -> list[int]:
        return [int(movie_id) for movie_id in rng.choice(popular["movieId"].head(500), size=int(rng.integers(3, 6)), replace=False)]

    titles = popular["title"].head(POPULAR_TITLES)
    return {
        "empty endpoint (GET /v1/ping)": [("GET", "/v1/ping", None)],
        "known user (GET /v1/users/{id}/recommendations)": [("GET", f"/v1/users/{user}/recommendations?k={K}", None) for user in users],
        "visitor by genres (POST /v1/recommendations)": [("POST", "/v1/recommendations", json.dumps({"genres": genre_body(), "k": K})) for _ in range(POOL)],
        "visitor by liked movies (POST /v1/recommendations)": [("POST", "/v1/recommendations", json.dumps({"movies": liked(), "k": K})) for _ in range(POOL)],
        "similar movies (GET /v1/movies/{id}/similar)": [("GET", f"/v1/movies/{movie_id}/similar?k={K}", None) for movie_id in popular["movieId"].head(POOL)],
        f"title lookup, {POPULAR_TITLES} popular titles (GET /v1/movies?q=)": [("GET", f"/v1/movies?q={quote(title)}", None) for title in titles],
    }


def swap_questions(release: releases.Release) -> dict[str, tuple[str, str, str | None, dict]]:
    """One fixed question per kind for the swap phase: (method, path, body, its parameters)."""
    files = release
    movies = files.table("movie_features").sort_values("rating_count", ascending=False, kind="stable")
    user = int(files.table("user_recommendations")["userId"].iloc[0])
    liked = [int(movie_id) for movie_id in movies["movieId"].head(3)]
    genres = {"Drama": 4.5, "Comedy": 2.0}
    return {
        "user": ("GET", f"/v1/users/{user}/recommendations?k={K}", None, {"user": user}),
        "visitor": ("POST", "/v1/recommendations", json.dumps({"genres": genres, "movies": liked, "k": K}), {"genres": list(genres.items()), "liked": liked}),
        "similar": ("GET", f"/v1/movies/{liked[0]}/similar?k={K}", None, {"movie": liked[0]}),
    }


def expected_items(release: releases.Release, kind: str, parameters: dict) -> list[dict]:
    """What `release` answers, from its files, without the service."""
    files = release
    movies = files.table("movie_features")
    if kind == "user":
        listing = recommend.served_listing(files.table("user_recommendations"), movies, parameters["user"], K)
    elif kind == "visitor":
        listing = recommend.visitor_listing(files.ranking_model(), files.scalers(), movies, K, parameters["genres"], parameters["liked"])
    else:
        embeddings = np.load(release.path(layout.file_name("movie_embeddings")))
        listing = recommend.similar_movies(movies, embeddings, parameters["movie"], K)
    return json.loads(json.dumps(listing.to_dict(orient="records")))


def publish_variant(releases_dir: Path, base: releases.Release, release_id: str, seed: int, scratch: Path) -> releases.Release:
    """A release answering every question differently (a retrain's): shifted served scores, other movie biases, rotated embeddings."""
    folder = scratch / release_id
    folder.mkdir()
    files = {name: base.directory / name for name in base.manifest["files"]}
    served = pd.read_parquet(files["user_recommendations.parquet"])
    served["score"] += seed
    model = SequentialModel.load(files["ranking_model.npz"])
    noise = np.random.default_rng(seed).normal(0, 1, len(model.movie_biases)).astype(model.movie_biases.dtype)
    embeddings = np.roll(np.load(files["movie_embeddings.npy"]), seed, axis=0)
    for name in ("user_recommendations.parquet", "ranking_model.npz", "movie_embeddings.npy"):
        files[name] = folder / name
    served.to_parquet(files["user_recommendations.parquet"])
    dataclasses.replace(model, movie_biases=model.movie_biases + noise).save(files["ranking_model.npz"])
    np.save(files["movie_embeddings.npy"], embeddings)
    details = {key: base.manifest[key] for key in ("val_rmse", "metrics") if key in base.manifest}
    return releases.publish(releases_dir, files, release_id, details)


# --- the server -----------------------------------------------------------------------------------


class Server:
    """`recsys serve --port 0` over `data_dir`, started and waited for through its log."""

    def __init__(self, data_dir: Path, workers: int):
        command = [sys.executable, "-m", "recsys_pipeline.cli", "serve", "--port", "0", "--workers", str(workers), "--data-dir", str(data_dir)]
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=REPO)
        first = self.process.stderr.readline()
        address = re.search(r"http://127\.0\.0\.1:\d+", first)
        if not address:
            raise SystemExit(f"recsys serve did not start: {first}")
        self.url = address.group(0)
        self.log: list[str] = []
        self.started = threading.Condition()
        threading.Thread(target=self._drain, daemon=True).start()
        with self.started:
            self.started.wait_for(lambda: sum("Application startup complete" in line for line in self.log) == workers or self.process.poll() is not None, 300)
            if self.process.poll() is not None or sum("Application startup complete" in line for line in self.log) < workers:
                raise SystemExit("recsys serve: workers did not start:\n" + "".join(self.log))

    def _drain(self) -> None:
        for line in self.process.stderr:
            with self.started:
                self.log.append(line)
                self.started.notify_all()
        with self.started:  # the server exited
            self.started.notify_all()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def wait_until_serving(url: str, release_id: str, workers: int) -> float:
    """Seconds until /readyz names `release_id` on 10 requests per worker in a row, each on a new
    connection (the kernel hands connections to the workers in turn)."""
    import httpx

    started = time.perf_counter()
    in_a_row = 0
    with httpx.Client(base_url=url, timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        while in_a_row < 10 * workers:
            in_a_row = in_a_row + 1 if client.get("/readyz").json().get("release_id") == release_id else 0
            if time.perf_counter() - started > 60:
                raise SystemExit(f"the service never served {release_id}")
    return time.perf_counter() - started


def swap_phase(server: Server, data_dir: Path, workers: int, connections: int, seconds: float, scratch: Path) -> dict:
    releases_dir = layout.releases_dir(data_dir)
    first = releases.current(releases_dir)
    questions = swap_questions(first)
    results: dict[str, dict] = {}

    def load(kind: str) -> None:
        method, path, body, _ = questions[kind]
        results[kind] = wrk(server.url, [(method, path, body)], connections, seconds, scratch, f"swap-{workers}-{kind}", record=True)

    loaders = [threading.Thread(target=load, args=(kind,)) for kind in questions]
    for loader in loaders:
        loader.start()
    pause = threading.Event()
    pause.wait(seconds / 5)
    swaps, published = [], [first]
    for number in (1, 2):
        release = publish_variant(releases_dir, first, f"29990101T00000{number}Z-bench{workers}", number, scratch)
        published.append(release)
        swaps.append({"action": f"publish {release.release_id}", "seconds_to_serve": wait_until_serving(server.url, release.release_id, workers)})
        pause.wait(seconds / 5)
    rolled = subprocess.run([sys.executable, "-m", "recsys_pipeline.cli", "rollback", first.release_id, "--data-dir", str(data_dir)], capture_output=True, text=True, cwd=REPO)
    if rolled.returncode != 0:
        raise SystemExit(f"recsys rollback failed: {rolled.stderr}")
    swaps.append({"action": f"recsys rollback {first.release_id}", "seconds_to_serve": wait_until_serving(server.url, first.release_id, workers)})
    for loader in loaders:
        loader.join()

    expected = {(release.release_id, kind): expected_items(release, kind, questions[kind][3]) for release in published for kind in questions}
    failed = mixed = answered = 0
    by_release: dict[str, int] = {}
    for kind, result in results.items():
        failed += result["failed"]
        for response in result["responses"]:
            answered += response["count"]
            if response["status"] != 200:
                failed += response["count"]
                continue
            body = json.loads(response["body"])
            by_release[response["release"]] = by_release.get(response["release"], 0) + response["count"]
            wanted = expected.get((response["release"], kind))
            if body["release_id"] != response["release"] or body["items"] != wanted:
                mixed += response["count"]
    return {"responses": answered, "failed": failed, "mixed": mixed, "responses_by_release": by_release, "swaps": swaps}


def run(data_dir: Path, workers: int, connections: int, seconds: float, scratch: Path) -> dict:
    served_dir = scratch / f"data-{workers}"
    shutil.copytree(layout.releases_dir(data_dir), layout.releases_dir(served_dir))
    release = releases.current(layout.releases_dir(served_dir))
    server = Server(served_dir, workers)
    try:
        loads = workloads(release)
        endpoints = {}
        baseline_name = next(iter(loads))
        for name, requests in [*loads.items(), (baseline_name + " again", loads[baseline_name])]:
            # Unmeasured first: the first calls of each code path (and each title's first lookup) are slower.
            wrk(server.url, requests, connections, WARM_UP_SECONDS, scratch, f"{workers}-{len(endpoints)}-warm-up")
            measured = wrk(server.url, requests, connections, seconds, scratch, f"{workers}-{len(endpoints)}")
            endpoints[name] = {key: value for key, value in measured.items() if key != "responses"}
        swap = swap_phase(server, served_dir, workers, connections // 2 or 1, max(seconds, 10), scratch)
    finally:
        server.stop()
    return {"workers": workers, "endpoints": endpoints, "swap": swap}


def print_table(result: dict) -> None:
    endpoints = result["endpoints"]
    names = list(endpoints)
    baseline = (endpoints[names[0]]["rps"] + endpoints[names[-1]]["rps"]) / 2
    print(f"\nuvicorn, {result['workers']} worker(s); empty endpoint = mean of its two runs ({baseline:.0f} req/s)")
    print(f"{'endpoint':<66} {'req/s':>8} {'x empty':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'failed':>7}")
    for name in names:
        row = endpoints[name]
        print(f"{name:<66} {row['rps']:>8.0f} {row['rps'] / baseline:>8.2f} {row['p50_ms']:>8.2f} {row['p95_ms']:>8.2f} {row['p99_ms']:>8.2f} {row['failed']:>7}")
        if abs(row["mean_ms"] / row["closed_loop_mean_ms"] - 1) > LITTLES_LAW_TOLERANCE:
            print(f"  ^ wrk's latency record disagrees with Little's law (mean {row['mean_ms']:.2f} ms vs {row['closed_loop_mean_ms']:.2f} ms): its percentiles are suspect")
    swap = result["swap"]
    print(
        f"under load, two publishes and a rollback: {swap['responses']} responses, {swap['failed']} failed, {swap['mixed']} mixed; "
        f"by release {swap['responses_by_release']}; seconds to serve each: {[round(step['seconds_to_serve'], 3) for step in swap['swaps']]}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=REPO / "data", help="a data directory with a current release (make pipeline)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--connections", type=int, default=4, help="wrk's open connections, each one request at a time")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "serving_results.json")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench_serving needs wrk: apt-get install -y wrk")
    if releases.current(layout.releases_dir(args.data_dir)) is None:
        raise SystemExit(f"no release in {layout.releases_dir(args.data_dir)}: run `make pipeline` first")
    report = {"machine": machine(), "generator": f"wrk, 1 thread, {args.connections} connections, {args.seconds:g} s per endpoint, on the same machine", "runs": []}
    print(report["machine"])
    with tempfile.TemporaryDirectory(prefix="bench_serving_") as scratch:
        for workers in args.workers:
            result = run(args.data_dir.resolve(), workers, args.connections, args.seconds, Path(scratch))
            report["runs"].append(result)
            print_table(result)
    report["load_average_at_end"] = os.getloadavg()[0]
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {args.output}")


if __name__ == "__main__":
    main()
