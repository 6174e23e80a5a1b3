"""The HTTP service (`recsys serve`), through real HTTP against a started server process: every endpoint
answers as the `recsys` command does, bad requests get problem details, and releases swap whole under
concurrent requests while a corrupt one is refused."""

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from recsys_pipeline import cli, layout, recommend, releases
from recsys_pipeline.atomic import write_json_atomically
from recsys_pipeline.sequential import SequentialModel

REPO_ROOT = Path(__file__).resolve().parents[1]
# Generous deadlines for a busy machine; every wait ends as soon as its event happens.
START_SECONDS = 120
EVENT_SECONDS = 60
PROBLEM_KEYS = {"type", "title", "status", "detail"}
VISITOR_GENRES = {"Drama": 4.5, "Comedy": 2.0}


# --- a server process -----------------------------------------------------------------------------


@dataclass
class Service:
    url: str
    client: httpx.Client
    log: list[str] = field(default_factory=list)
    logged: threading.Condition = field(default_factory=threading.Condition)

    def wait_for_log(self, text: str, times: int = 1) -> str:
        with self.logged:
            found = self.logged.wait_for(lambda: sum(text in line for line in self.log) >= times, EVENT_SECONDS)
            assert found, f"not {times} log line(s) with {text!r}: {self.log}"
            return next(line for line in self.log if text in line)

    def wait_for_readiness(self, wanted) -> dict:
        """Poll /readyz until its answer satisfies `wanted` (the watcher looks every 250 ms)."""
        waited = threading.Event()
        for _ in range(EVENT_SECONDS * 20):
            ready = self.client.get("/readyz")
            if ready.status_code == 200 and wanted(ready.json()):
                return ready.json()
            waited.wait(0.05)
        raise AssertionError(f"/readyz never answered as wanted: {ready.text}")

    def wait_until_serving(self, release_id: str) -> None:
        self.wait_for_readiness(lambda ready: ready["release_id"] == release_id)


@contextmanager
def running_service(data_dir: Path, wait_ready: bool = True, workers: int = 1) -> Iterator[Service]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "recsys_pipeline.cli", "serve", "--port", "0", "--workers", str(workers), "--data-dir", str(data_dir)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    try:
        first = process.stderr.readline()
        address = re.search(r"http://127\.0\.0\.1:\d+", first)
        assert address, f"no address in the first line of `recsys serve`: {first!r}"
        service = Service(address.group(0), httpx.Client(base_url=address.group(0), timeout=EVENT_SECONDS))

        def drain() -> None:
            for line in process.stderr:
                with service.logged:
                    service.log.append(line)
                    service.logged.notify_all()

        threading.Thread(target=drain, daemon=True).start()
        service.wait_for_log("Application startup complete", times=workers)
        if wait_ready:
            assert service.client.get("/readyz").status_code == 200, service.log
        yield service
        service.client.close()
    finally:
        process.terminate()
        process.wait(timeout=EVENT_SECONDS)


@pytest.fixture(scope="module")
def service(materialized_data_dir) -> Iterator[Service]:
    with running_service(materialized_data_dir) as started:
        yield started


# --- what each release answers, computed from its files without the service -----------------------


def rows(listing: pd.DataFrame) -> list[dict]:
    return json.loads(json.dumps(listing.to_dict(orient="records")))


def expected_answers(release: releases.Release, user_id: int, liked: list[int]) -> dict[str, list[dict]]:
    files = release
    movies = files.table("movie_features")
    return {
        "user": rows(recommend.served_listing(files.table("user_recommendations"), movies, user_id, 5)),
        "visitor": rows(recommend.visitor_listing(files.ranking_model(), files.scalers(), movies, 5, list(VISITOR_GENRES.items()), liked)),
        "similar": rows(recommend.similar_movies(movies, files.array("movie_embeddings"), liked[0], 5)),
    }


def current_release(data_dir: Path) -> releases.Release:
    return releases.current(layout.releases_dir(data_dir))


@pytest.fixture(scope="module")
def release(materialized_data_dir) -> releases.Release:
    return current_release(materialized_data_dir)


@pytest.fixture(scope="module")
def movie_features(release) -> pd.DataFrame:
    return release.table("movie_features")


@pytest.fixture(scope="module")
def user_id(release) -> int:
    return int(release.table("user_recommendations")["userId"].iloc[0])


def unambiguous_title(movie_features: pd.DataFrame) -> tuple[int, str]:
    """A movie whose title is part of no other title and holds no comma (`--movies` splits on commas)."""
    lowercase = movie_features["title"].str.lower()
    for movie_id, title in movie_features[["movieId", "title"]].itertuples(index=False):
        if "," not in title and lowercase.str.contains(title.lower(), regex=False).sum() == 1:
            return int(movie_id), title
    raise AssertionError("every synthetic title is part of another")


def recsys_json(capsys, data_dir: Path, *argv: str) -> list[dict]:
    status = cli.main([*argv, "--json", "--data-dir", str(data_dir)])
    out, err = capsys.readouterr()
    assert status == 0, err
    return json.loads(out)


def items_of(response: httpx.Response, release_id: str) -> list[dict]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert response.headers["x-release-id"] == body["release_id"] == release_id
    return body["items"]


# --- every endpoint -------------------------------------------------------------------------------


def test_a_known_user_gets_the_cli_served_list(service, release, materialized_data_dir, movie_features, user_id, capsys):
    threshold = int(movie_features["rating_count"].median())
    for k, min_ratings in [(10, 0), (7, threshold), (100, 0)]:
        answered = items_of(service.client.get(f"/v1/users/{user_id}/recommendations", params={"k": k, "min_ratings": min_ratings}), release.release_id)
        served = release.table("user_recommendations")
        assert answered == rows(recommend.served_listing(served, movie_features, user_id, k, min_ratings))
    assert items_of(service.client.get(f"/v1/users/{user_id}/recommendations"), release.release_id) == recsys_json(
        capsys, materialized_data_dir, "recommend", "--user", str(user_id)
    )


def test_a_visitor_by_genres_gets_the_new_user_list(service, release, materialized_data_dir, capsys):
    answered = items_of(service.client.post("/v1/recommendations", json={"genres": {"animation": 5, "Horror": 1}, "k": 6}), release.release_id)
    assert len(answered) == 6
    assert answered == recsys_json(capsys, materialized_data_dir, "recommend", "--genres", "animation=5,Horror=1", "-k", "6")


def test_a_visitor_by_liked_movies_never_gets_them_back_and_matches_the_cli(service, release, materialized_data_dir, movie_features, capsys):
    movie_id, title = unambiguous_title(movie_features)
    other = int(movie_features["movieId"].iloc[3])
    answered = items_of(service.client.post("/v1/recommendations", json={"movies": [title, other], "k": 20}), release.release_id)
    assert len(answered) == 20 and not {movie_id, other} & {movie["movieId"] for movie in answered}
    assert answered == recsys_json(capsys, materialized_data_dir, "recommend", "--movies", f"{title},{other}", "-k", "20")
    files = release
    assert answered == rows(recommend.visitor_listing(files.ranking_model(), files.scalers(), movie_features, 20, liked_movie_ids=[movie_id, other]))
    # Liked movies move the list: it is not the list of a visitor who liked nothing but these genres.
    both = items_of(service.client.post("/v1/recommendations", json={"genres": VISITOR_GENRES, "movies": [other]}), release.release_id)
    genres_only = items_of(service.client.post("/v1/recommendations", json={"genres": VISITOR_GENRES}), release.release_id)
    assert other not in {movie["movieId"] for movie in both} and both != genres_only


def test_similar_movies_and_the_title_lookup_answer_as_the_cli(service, release, materialized_data_dir, movie_features, capsys):
    movie_id, title = unambiguous_title(movie_features)
    answered = items_of(service.client.get(f"/v1/movies/{movie_id}/similar", params={"k": 12}), release.release_id)
    assert answered == recsys_json(capsys, materialized_data_dir, "similar", str(movie_id), "-k", "12")
    genres = movie_features.set_index("movieId").loc[movie_id, "genres"]
    assert items_of(service.client.get("/v1/movies", params={"q": title.upper()}), release.release_id) == [{"movieId": movie_id, "title": title, "genres": genres}]


def test_release_health_readiness_and_metrics(service, release):
    described = service.client.get("/v1/release")
    assert described.headers["x-release-id"] == release.release_id
    assert described.json() == {
        "release_id": release.release_id,
        "created_at": release.manifest["created_at"],
        "val_rmse": release.manifest["val_rmse"],
        "metrics": release.manifest["metrics"],
    }
    assert service.client.get("/healthz").json() == {"status": "alive"}
    assert service.client.get("/readyz").json() == {"status": "ready", "release_id": release.release_id, "refused": None}
    assert service.client.get("/v1/ping").status_code == 200
    assert service.client.get("/v1/users/-5/recommendations").status_code == 404
    assert "Swagger UI" in service.client.get("/docs").text
    assert "/v1/recommendations" in service.client.get("/openapi.json").json()["paths"]
    exposed = service.client.get("/metrics").text
    assert f'recsys_release_info{{release_id="{release.release_id}"}} 1.0' in exposed
    assert re.search(r'recsys_http_requests_total\{endpoint="/v1/ping",method="GET",status="200"\} [1-9]', exposed)
    assert re.search(r'recsys_http_requests_total\{endpoint="/v1/users/\{user_id\}/recommendations",method="GET",status="404"\} [1-9]', exposed)
    assert re.search(r'recsys_http_request_duration_seconds_count\{endpoint="/v1/ping"\} [1-9]', exposed)


def test_the_service_imports_neither_tensorflow_nor_dagster(materialized_data_dir):
    program = (
        "import sys\n"
        "from pathlib import Path\n"
        "from recsys_pipeline.service import create_app\n"
        f"create_app(Path({str(materialized_data_dir)!r}))\n"
        "print(sorted({'tensorflow', 'keras', 'dagster'} & {name.split('.')[0] for name in sys.modules}))\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_two_worker_processes_share_the_port_and_serve_the_release(materialized_data_dir, release, user_id):
    with running_service(materialized_data_dir, workers=2) as service:
        assert len({line for line in service.log if "Started server process" in line}) == 2
        # A new connection per request, so that the kernel hands requests to both workers.
        with httpx.Client(base_url=service.url, timeout=EVENT_SECONDS, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            for _ in range(10):
                assert client.get(f"/v1/users/{user_id}/recommendations").headers["x-release-id"] == release.release_id


# --- bad requests ---------------------------------------------------------------------------------


def assert_problem(response: httpx.Response, status: int, *details: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert PROBLEM_KEYS <= set(body) and body["status"] == status and body["type"].startswith("/problems/")
    for detail in details:
        assert detail in body["detail"], body
    return body


def test_an_unknown_user_is_a_404_naming_the_known_range(service, release):
    served = release.table("user_recommendations")["userId"]
    response = service.client.get("/v1/users/99999/recommendations")
    assert_problem(response, 404, f"no user 99999 in user_recommendations (users {served.min()}..{served.max()}, {served.nunique()} in all)")
    assert response.headers["x-release-id"] == release.release_id


def test_ambiguous_and_unknown_titles_are_400s_with_candidates(service, movie_features):
    sharing = movie_features[movie_features["title"].str.lower().str.contains("the")]
    listed = f"[movieId {sharing['movieId'].iloc[0]}]"
    assert_problem(service.client.get("/v1/movies", params={"q": "the"}), 400, f"matches {len(sharing)} movies", listed)
    assert_problem(service.client.post("/v1/recommendations", json={"movies": ["the"]}), 400, f"matches {len(sharing)} movies", listed)
    _, title = unambiguous_title(movie_features)
    misspelt = title[:2] + title[3] + title[2] + title[4:]
    assert_problem(service.client.get("/v1/movies", params={"q": misspelt}), 400, f"no movie titled '{misspelt}'", "Close matches:", title)
    assert_problem(service.client.post("/v1/recommendations", json={"movies": [10**9]}), 400, f"no movie with movieId {10**9}")
    assert_problem(service.client.get(f"/v1/movies/{10**9}/similar"), 404, f"no movie with movieId {10**9}")


@pytest.mark.parametrize(
    ("body", "details"),
    [
        ({"genres": {"Animaton": 5}}, ["no genre 'Animaton'. Close matches: Animation", "Genres: "]),
        ({"genres": {"Drama": 9}}, ["genre 'Drama' rated 9.0: ratings lie between"]),
        ({"genres": {"Drama": 4, "drama": 3}}, ["genre 'Drama' is rated twice"]),
        ({}, ["describe the visitor by 'genres'"]),
        ({"movies": ["Heat"] * 11}, ["at most 10 movies by title per request"]),
    ],
)
def test_bad_visitor_values_are_400s_with_the_cli_message(service, body, details):
    assert_problem(service.client.post("/v1/recommendations", json=body), 400, *details)


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "details"),
    [
        ("GET", "/v1/users/1/recommendations", {"params": {"k": 0}}, ["query.k"]),
        ("GET", "/v1/users/1/recommendations", {"params": {"k": 101}}, ["query.k", "less than or equal to 100"]),
        ("GET", "/v1/users/1/recommendations", {"params": {"min_ratings": -1}}, ["query.min_ratings"]),
        ("GET", "/v1/users/someone/recommendations", {}, ["path.user_id"]),
        ("GET", "/v1/movies/1/similar", {"params": {"k": 1000}}, ["query.k"]),
        ("GET", "/v1/movies", {}, ["query.q", "Field required"]),
        ("POST", "/v1/recommendations", {"json": {"genres": {"Drama": 4}, "k": 0}}, ["body.k"]),
        ("POST", "/v1/recommendations", {"json": {"genres": {"Drama": 4}, "path": "/etc/passwd"}}, ["body.path", "Extra inputs"]),
        ("POST", "/v1/recommendations", {"json": {"movies": [1] * 51}}, ["body.movies"]),
        ("POST", "/v1/recommendations", {"content": b"{not json", "headers": {"content-type": "application/json"}}, ["JSON decode error"]),
    ],
)
def test_malformed_requests_are_422s_naming_the_field(service, method, path, kwargs, details):
    assert_problem(service.client.request(method, path, **kwargs), 422, *details)


def test_oversized_bodies_are_413s_with_or_without_a_length(service):
    padding = {"genres": {"Drama": 4}, "movies": ["x" * 200] * 50, "k": 5, "min_ratings": 0}
    declared = service.client.post("/v1/recommendations", json={**padding, "pad": "y" * 20_000})
    assert_problem(declared, 413, "at most 16384 bytes")
    chunked = service.client.post("/v1/recommendations", content=iter([b'{"genres": {"Drama": 4}, "pad": "', b"y" * 20_000, b'"}']))
    assert_problem(chunked, 413, "at most 16384 bytes")


def test_unknown_routes_and_methods_are_problem_details(service):
    assert_problem(service.client.get("/v1/nothing/here"), 404, "Not Found")
    assert_problem(service.client.delete("/v1/release"), 405, "Method Not Allowed")


# --- release swaps --------------------------------------------------------------------------------


def publish_variant(data_dir: Path, base: releases.Release, release_id: str, seed: int) -> releases.Release:
    """A release with other answers for every endpoint, as a retrain would publish: shifted served
    scores, perturbed movie biases, rotated embeddings."""
    scratch = data_dir / f"scratch-{release_id}"
    scratch.mkdir()
    files = {name: base.directory / name for name in base.manifest["files"]}
    served = pd.read_parquet(files["user_recommendations.parquet"])
    served["score"] += seed
    served.to_parquet(files_entry(files, scratch, "user_recommendations.parquet"))
    model = SequentialModel.load(files["ranking_model.npz"])
    noise = np.random.default_rng(seed).normal(0, 1, len(model.movie_biases)).astype(model.movie_biases.dtype)
    dataclasses.replace(model, movie_biases=model.movie_biases + noise).save(files_entry(files, scratch, "ranking_model.npz"))
    embeddings = np.load(files["movie_embeddings.npy"])
    np.save(files_entry(files, scratch, "movie_embeddings.npy"), np.roll(embeddings, seed, axis=0))
    published = releases.publish(layout.releases_dir(data_dir), files, release_id, {"val_rmse": 0.8, "metrics": {}})
    shutil.rmtree(scratch)
    return published


def files_entry(files: dict[str, Path], scratch: Path, name: str) -> Path:
    files[name] = scratch / name
    return files[name]


@pytest.fixture
def own_data_dir(materialized_data_dir, tmp_path) -> Path:
    """A copy of the materialized data directory that a test may publish into."""
    shutil.copytree(layout.releases_dir(materialized_data_dir), layout.releases_dir(tmp_path))
    return tmp_path


def test_releases_swap_whole_under_concurrent_requests(own_data_dir, movie_features, user_id, capsys):
    first = current_release(own_data_dir)
    liked = [int(movie_features["movieId"].iloc[1]), int(movie_features["movieId"].iloc[2])]
    requests = {
        "user": ("GET", f"/v1/users/{user_id}/recommendations", {"params": {"k": 5}}),
        "visitor": ("POST", "/v1/recommendations", {"json": {"genres": VISITOR_GENRES, "movies": liked, "k": 5}}),
        "similar": ("GET", f"/v1/movies/{liked[0]}/similar", {"params": {"k": 5}}),
    }
    answers: list[tuple[str, str, list[dict]]] = []
    failures: list[str] = []
    seen = threading.Condition()
    stop = threading.Event()

    def hammer(service: Service, kind: str) -> None:
        method, path, kwargs = requests[kind]
        with httpx.Client(base_url=service.url, timeout=EVENT_SECONDS) as client:
            while not stop.is_set():
                try:
                    response = client.request(method, path, **kwargs)
                    body = response.json()
                    answered = (kind, body["release_id"], body["items"]) if response.status_code == 200 else None
                except (httpx.HTTPError, ValueError, KeyError) as error:
                    answered, response = None, error
                with seen:
                    if answered is None:
                        failures.append(f"{kind}: {response}")
                    else:
                        answers.append(answered)
                    seen.notify_all()

    def wait_for_answers_from(release_id: str) -> None:
        with seen:
            assert seen.wait_for(lambda: {kind for kind, answered, _ in answers if answered == release_id} == set(requests), EVENT_SECONDS)

    with running_service(own_data_dir) as service:
        threads = [threading.Thread(target=hammer, args=(service, kind)) for kind in requests for _ in range(2)]
        for thread in threads:
            thread.start()
        try:
            wait_for_answers_from(first.release_id)
            second = publish_variant(own_data_dir, first, "29990101T000000Z-second", seed=1)
            service.wait_until_serving(second.release_id)
            wait_for_answers_from(second.release_id)
            third = publish_variant(own_data_dir, first, "29990102T000000Z-third", seed=2)
            service.wait_until_serving(third.release_id)
            wait_for_answers_from(third.release_id)
            assert cli.main(["rollback", first.release_id, "--data-dir", str(own_data_dir)]) == 0
            capsys.readouterr()
            service.wait_until_serving(first.release_id)
            with seen:
                answered_before_rollback = len(answers)
            with seen:
                assert seen.wait_for(lambda: any(answered == first.release_id for _, answered, _ in answers[answered_before_rollback:]), EVENT_SECONDS)
        finally:
            stop.set()
            for thread in threads:
                thread.join()

    assert failures == []
    expected = {release.release_id: expected_answers(release, user_id, liked) for release in (first, second, third)}
    # The three releases answer each question differently, so a mixed answer could not pass.
    for kind in requests:
        assert len({json.dumps(answers_of[kind]) for answers_of in expected.values()}) == 3
    mixed = [(kind, release_id) for kind, release_id, items in answers if items != expected[release_id][kind]]
    assert mixed == []
    assert {release_id for _, release_id, _ in answers} == set(expected)


def test_a_corrupt_new_release_is_refused_and_the_old_one_keeps_serving(own_data_dir, user_id, capsys):
    good = current_release(own_data_dir)
    folder = layout.releases_dir(own_data_dir)
    # A release whose file no longer matches its manifest (a bad disk, a partial copy), made current
    # by writing the pointer directly, as make_current (which verifies) never would.
    shutil.copytree(good.directory, folder / "29990101T000000Z-corrupt")
    manifest = {**good.manifest, "release_id": "29990101T000000Z-corrupt"}
    write_json_atomically(folder / "29990101T000000Z-corrupt" / releases.MANIFEST, manifest)
    damaged = folder / "29990101T000000Z-corrupt" / "user_recommendations.parquet"
    damaged.write_bytes(damaged.read_bytes()[:-10])
    with running_service(own_data_dir) as service:
        before = service.client.get(f"/v1/users/{user_id}/recommendations").json()
        write_json_atomically(folder / releases.CURRENT, {"release_id": "29990101T000000Z-corrupt"})
        # The refusal is logged before /readyz shows it: wait for /readyz, then the line is there.
        ready = service.wait_for_readiness(lambda ready: ready["refused"] is not None)
        assert ready["release_id"] == good.release_id and str(damaged) in ready["refused"]["reason"]
        line = service.wait_for_log("refused the new current release")
        assert good.release_id in line and str(damaged) in line and "corrupt" in line
        assert service.client.get(f"/v1/users/{user_id}/recommendations").json() == before
        assert re.search(r"recsys_release_refusals_total 1\.0", service.client.get("/metrics").text)
        # Rolling back to the release served clears the refusal.
        assert cli.main(["rollback", good.release_id, "--data-dir", str(own_data_dir)]) == 0
        assert service.wait_for_readiness(lambda ready: ready["refused"] is None)["release_id"] == good.release_id


def test_without_a_release_it_is_alive_not_ready_and_serves_the_first_one_published(materialized_data_dir, tmp_path, user_id):
    with running_service(tmp_path, wait_ready=False) as service:
        assert service.client.get("/healthz").status_code == 200
        assert_problem(service.client.get("/readyz"), 503, "no release published yet")
        assert_problem(service.client.get(f"/v1/users/{user_id}/recommendations"), 503, "no release published yet")
        source = current_release(materialized_data_dir)
        published = releases.publish(layout.releases_dir(tmp_path), {name: source.directory / name for name in source.manifest["files"]}, "29990101T000000Z-first", {})
        service.wait_until_serving(published.release_id)
        assert service.client.get(f"/v1/users/{user_id}/recommendations").headers["x-release-id"] == published.release_id


# --- the same visitor from the command line -------------------------------------------------------


def test_recommend_movies_names_ambiguous_and_unknown_titles(materialized_data_dir, movie_features, capsys):
    sharing = movie_features[movie_features["title"].str.lower().str.contains("the")]
    status = cli.main(["recommend", "--movies", "the", "--data-dir", str(materialized_data_dir)])
    out, err = capsys.readouterr()
    assert status == 1 and out == "" and f"matches {len(sharing)} movies" in err and f"[movieId {sharing['movieId'].iloc[0]}]" in err
    _, title = unambiguous_title(movie_features)
    misspelt = title[:2] + title[3] + title[2] + title[4:]
    status = cli.main(["recommend", "--movies", f"{title},{misspelt}", "--data-dir", str(materialized_data_dir)])
    out, err = capsys.readouterr()
    assert status == 1 and f"no movie titled '{misspelt}'" in err and "Close matches:" in err


def test_recommend_movies_prints_a_table_imports_no_tensorflow_and_nothing_on_stderr(materialized_data_dir, movie_features):
    _, title = unambiguous_title(movie_features)
    other_id, other_title = movie_features[movie_features["title"] != title][["movieId", "title"]].iloc[0]
    program = (
        "import sys\n"
        "from recsys_pipeline.cli import main\n"
        f"assert main(['recommend', '--movies', {title + ',' + str(other_id)!r}, '-k', '3', '--data-dir', {str(materialized_data_dir)!r}]) == 0\n"
        "assert not {'tensorflow', 'keras', 'dagster'} & set(sys.modules), sorted({'tensorflow', 'keras', 'dagster'} & set(sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"The 3 best-ranked movies for a visitor who liked {title}, {other_title} (those are left out):"
    assert lines[1].split() == ["rank", "movieId", "title", "genres", "score"] and len(lines) == 5
