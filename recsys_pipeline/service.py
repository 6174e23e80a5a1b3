"""The HTTP recommendation service (`recsys serve`): FastAPI on uvicorn, answering from the current release.

Everything a request needs is one immutable `Snapshot` of one verified release, held in memory. A
background thread watches `<releases>/current.json` (its stat, every 250 ms) and, when it names
another release, loads and verifies that release whole and swaps the reference in one assignment:
a request reads the reference once and computes its whole answer from that snapshot, and every
response names it (header `X-Release-Id`, field `release_id`). A release that fails verification
or cannot answer is refused: the previous snapshot keeps serving, and /readyz and the log say why.

The answers are those of the `recsys` command (recsys_pipeline.recommend), rows shaped like its
`--json`. No TensorFlow and no Dagster here: a visitor is scored in numpy by the released ranking
model. Bad requests get 4xx problem details (RFC 9457) with the QueryError message of the CLI.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import uvicorn
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from threadpoolctl import threadpool_limits

from recsys_pipeline import layout, recommend, releases
from recsys_pipeline.sequential import SequentialModel
from recsys_pipeline.settings import data_dir_from_environment
from recsys_pipeline.standardisation import FittedScalers

logger = logging.getLogger(__name__)

RELEASE_HEADER = "X-Release-Id"
POLL_SECONDS = 0.25
DEFAULT_K = 10
# user_recommendations holds each user's top 100; no endpoint lists more.
MAX_K = 100
MAX_BODY_BYTES = 16 * 1024
MAX_LIKED_MOVIES = 50
# A title's first lookup in a release reads every title (recommend.find_movie, 0.1-0.3 s of CPU).
MAX_LIKED_TITLES = 10
MAX_TITLE_LENGTH = 200
# Title lookups remembered per snapshot: recommend.find_movie reads every title on each call.
TITLE_CACHE_SIZE = 4096
PROBLEM_TYPES = "/problems/"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


# Query parameters shared by the endpoints (module level: FastAPI resolves the annotations by name).
K = Annotated[int, Query(ge=1, le=MAX_K, description=f"how many movies (1..{MAX_K})")]
MinRatings = Annotated[int, Query(ge=0, description="only movies with at least this many training ratings")]
TitleQuery = Annotated[str, Query(min_length=1, max_length=MAX_TITLE_LENGTH, description="a movieId, a title or part of one")]


class NotReady(Exception):
    """No verified release is loaded yet; the message says why."""


class BodyTooLarge(StarletteHTTPException):
    """Raised while reading a body past MAX_BODY_BYTES; an HTTPException so that FastAPI's body parsing passes it on."""

    def __init__(self) -> None:
        super().__init__(413, "Request body too large")


# --- one release in memory ------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """Everything a request needs from one release, read once after its manifest was verified. Never changed."""

    release_id: str
    manifest: dict[str, Any]
    movie_features: pd.DataFrame
    movie_embeddings: np.ndarray
    model: SequentialModel
    scalers: FittedScalers
    visitors: recommend.Visitors
    # user_recommendations whole (for recommend.served_listing's error on an unknown user), and
    # indexed: each user's rows in rank order as positions [start, end) of the arrays below.
    served: pd.DataFrame
    user_spans: dict[int, tuple[int, int]]
    served_movie_rows: np.ndarray
    served_scores: np.ndarray
    # Per movie_features row, as Python values, to build response rows without pandas.
    movie_ids: list[int]
    movie_rows: dict[int, int]
    titles: list[str]
    genres: list[str]
    rating_counts: np.ndarray
    find_movie: Callable[[str], int] = field(repr=False)

    def user_recommendations(self, user_id: int, k: int, min_ratings: int) -> list[dict[str, Any]]:
        """recommend.served_listing's rows for a known user, from the index built at load (the tests compare the two)."""
        span = self.user_spans.get(user_id)
        if span is None:  # an unknown user: the CLI's QueryError
            return recommend.served_listing(self.served, self.movie_features, user_id, k, min_ratings).to_dict(orient="records")
        rows, scores = self.served_movie_rows[span[0] : span[1]], self.served_scores[span[0] : span[1]]
        if min_ratings:
            keep = self.rating_counts[rows] >= min_ratings
            rows, scores = rows[keep], scores[keep]
        return self._rows(rows[:k], scores[:k])

    def _rows(self, rows: np.ndarray, scores: np.ndarray) -> list[dict[str, Any]]:
        """recommend's listing rows (rank, movieId, title, genres, score) of movie_features `rows`, without pandas."""
        return [
            {"rank": rank, "movieId": self.movie_ids[row], "title": self.titles[row], "genres": self.genres[row], "score": score}
            for rank, (row, score) in enumerate(zip(rows.tolist(), scores.tolist(), strict=True), start=1)
        ]

    def visitor_recommendations(self, genre_ratings: list[tuple[str, float]], movies: list[int | str], k: int, min_ratings: int) -> list[dict[str, Any]]:
        liked = [movie if isinstance(movie, int) else self.find_movie(movie) for movie in movies]
        rows, scores = self.visitors.rank(k, genre_ratings, liked, min_ratings)
        return self._rows(rows, scores)

    def similar(self, movie_id: int, k: int) -> list[dict[str, Any]]:
        return records(recommend.similar_movies(self.movie_features, self.movie_embeddings, movie_id, k))

    def movie(self, query: str) -> list[dict[str, Any]]:
        row = self.movie_rows[self.find_movie(query)]
        return [{"movieId": self.movie_ids[row], "title": self.titles[row], "genres": self.genres[row]}]

    def description(self) -> dict[str, Any]:
        return {
            "release_id": self.release_id,
            "created_at": self.manifest.get("created_at"),
            "val_rmse": self.manifest.get("val_rmse"),
            "metrics": self.manifest.get("metrics", {}),
        }


def records(listing: pd.DataFrame) -> list[dict[str, Any]]:
    """`listing.to_dict(orient="records")`, built column-wise: about twice as fast for a few rows."""
    columns = [listing[name].tolist() for name in listing.columns]
    return [dict(zip(listing.columns, row, strict=True)) for row in zip(*columns, strict=True)]


def load_snapshot(release: releases.Release) -> Snapshot:
    """Verify every file of `release` against its manifest, read what the answers need, and answer one
    question of each kind; any failure is a ReleaseError naming the release."""
    try:
        release.verify()
        movie_features = release.table("movie_features")
        # Python strings: pandas takes rows of object columns faster than of Arrow strings (every answer does).
        movie_features = movie_features.astype({"title": object, "genres": object})
        movie_embeddings = release.array("movie_embeddings")
        if len(movie_embeddings) != len(movie_features):
            raise ValueError(f"movie_embeddings holds {len(movie_embeddings)} rows for {len(movie_features)} movies")
        model = release.ranking_model()
        scalers = release.scalers()
        served = release.table("user_recommendations").sort_values(["userId", "rank"], kind="stable", ignore_index=True)
        served_movie_rows = pd.Index(movie_features["movieId"]).get_indexer(served["movieId"])
        if (served_movie_rows < 0).any():
            raise ValueError("user_recommendations lists movies that movie_features lacks")
        user_ids = served["userId"].to_numpy()
        firsts = np.flatnonzero(np.r_[True, user_ids[1:] != user_ids[:-1]])
        ends = np.r_[firsts[1:], len(user_ids)]
        snapshot = Snapshot(
            release_id=release.release_id,
            manifest=copy.deepcopy(release.manifest),
            movie_features=movie_features,
            movie_embeddings=movie_embeddings,
            model=model,
            scalers=scalers,
            visitors=recommend.Visitors(movie_features, scalers.target, model, scalers.user),
            served=served,
            user_spans={int(user_ids[first]): (int(first), int(end)) for first, end in zip(firsts, ends, strict=True)},
            served_movie_rows=served_movie_rows,
            served_scores=served["score"].to_numpy(dtype="float64"),
            movie_ids=movie_features["movieId"].astype("int64").tolist(),
            movie_rows={int(movie_id): row for row, movie_id in enumerate(movie_features["movieId"])},
            titles=movie_features["title"].tolist(),
            genres=movie_features["genres"].tolist(),
            rating_counts=movie_features["rating_count"].to_numpy(),
            find_movie=functools.lru_cache(maxsize=TITLE_CACHE_SIZE)(functools.partial(recommend.find_movie, movie_features)),
        )
        # A release that loads but cannot answer is refused as well.
        if snapshot.user_spans:
            snapshot.user_recommendations(next(iter(snapshot.user_spans)), 1, 0)
        snapshot.visitor_recommendations([], [snapshot.movie_ids[0]], 1, 0)
        snapshot.similar(snapshot.movie_ids[0], 1)
    except releases.ReleaseError:
        raise
    except (OSError, ValueError, KeyError, TypeError, IndexError, recommend.QueryError) as error:
        raise releases.ReleaseError(f"release {release.release_id} cannot be served: {type(error).__name__}: {error}") from error
    for array in (movie_embeddings, served_movie_rows, snapshot.served_scores, snapshot.rating_counts):
        array.setflags(write=False)
    return snapshot


NEVER_LOOKED = object()


class ReleaseWatcher:
    """Holds the snapshot of the current release and swaps it when `current.json` names another.

    `snapshot` is replaced by one assignment, never modified: a reader sees the old or the new one.
    """

    def __init__(self, releases_dir: Path, poll_seconds: float = POLL_SECONDS, on_swap: Callable[[Snapshot], None] = lambda _: None, on_refusal: Callable[[], None] = lambda: None):
        self.releases_dir = releases_dir
        self.poll_seconds = poll_seconds
        self.on_swap = on_swap
        self.on_refusal = on_refusal
        self.snapshot: Snapshot | None = None
        self.problem: str | None = f"no release checked yet in {releases_dir}"
        self.refused: dict[str, str] | None = None
        # The pointer file's (inode, mtime, size) at the last look; None while it is missing.
        self._pointer_seen: tuple[int, int, int] | None | object = NEVER_LOOKED
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="release-watcher", daemon=True)

    def start(self) -> None:
        self.check()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.check()
            except Exception:  # the watcher must outlive any one failure; the old snapshot keeps serving
                logger.exception("checking %s for a new release failed", self.releases_dir)

    def check(self) -> None:
        """Load the release `current.json` names if the pointer file changed since the last look."""
        pointer = self.releases_dir / releases.CURRENT
        try:
            status = pointer.stat()
            seen = (status.st_ino, status.st_mtime_ns, status.st_size)
        except FileNotFoundError:
            seen = None
        if seen == self._pointer_seen:
            return
        self._pointer_seen = seen
        try:
            release = releases.current(self.releases_dir)
            if release is None:
                raise releases.ReleaseError(f"no release published yet in {self.releases_dir}")
            if self.snapshot is not None and release.release_id == self.snapshot.release_id:
                self.refused = None  # e.g. `recsys rollback` to the release served after a refusal
                return
            snapshot = load_snapshot(release)
        except releases.ReleaseError as error:
            self._refuse(str(error))
            return
        previous = self.snapshot.release_id if self.snapshot else None
        self.snapshot = snapshot
        self.problem = None
        self.refused = None
        self.on_swap(snapshot)
        logger.info("serving release %s (before: %s)", snapshot.release_id, previous)

    def _refuse(self, reason: str) -> None:
        self.on_refusal()
        # Logged before /readyz shows it, so that whoever sees it there finds it in the log.
        if self.snapshot is None:
            logger.error("no release to serve: %s", reason)
            self.problem = reason
        else:
            logger.error("refused the new current release, still serving %s: %s", self.snapshot.release_id, reason)
            self.refused = {"reason": reason}


# --- HTTP -----------------------------------------------------------------------------------------


def problem(status: int, kind: str, title: str, detail: str, release_id: str | None = None) -> Response:
    """An RFC 9457 problem details response."""
    body = {"type": PROBLEM_TYPES + kind, "title": title, "status": status, "detail": detail}
    headers = {RELEASE_HEADER: release_id} if release_id else None
    return Response(json.dumps(body), status_code=status, media_type="application/problem+json", headers=headers)


def answer(snapshot: Snapshot, items: list[dict[str, Any]]) -> Response:
    body = json.dumps({"release_id": snapshot.release_id, "items": items})
    return Response(body, media_type="application/json", headers={RELEASE_HEADER: snapshot.release_id})


class Visitor(BaseModel):
    """A visitor known by genre ratings and/or movies they liked (movieIds or titles, in order)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"genres": {"Animation": 5, "Horror": 1}, "movies": ["The Matrix", 1200], "k": 10}]})

    genres: dict[Annotated[str, Field(max_length=MAX_TITLE_LENGTH)], float] = Field(default_factory=dict, max_length=100, description="stars per genre (any case)")
    movies: list[int | Annotated[str, Field(max_length=MAX_TITLE_LENGTH)]] = Field(
        default_factory=list, max_length=MAX_LIKED_MOVIES, description="liked movies in the order watched, oldest first: movieIds, or titles as a person writes them"
    )
    k: int = Field(DEFAULT_K, ge=1, le=MAX_K)
    min_ratings: int = Field(0, ge=0, description="only movies with at least this many training ratings")


class Metrics:
    """The Prometheus series of one app (its own registry, so that several apps in one process do not clash)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("recsys_http_requests", "HTTP requests answered", ["endpoint", "method", "status"], registry=self.registry)
        self.latency = Histogram("recsys_http_request_duration_seconds", "Time to answer", ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.release = Gauge("recsys_release_info", "1 for the release being served", ["release_id"], registry=self.registry)
        self.swaps = Counter("recsys_release_swaps", "Releases loaded and swapped in", registry=self.registry)
        self.refusals = Counter("recsys_release_refusals", "Current releases refused (verification or loading failed)", registry=self.registry)

    def swapped(self, snapshot: Snapshot) -> None:
        self.release.clear()
        self.release.labels(snapshot.release_id).set(1)
        self.swaps.inc()


class RequestMetrics:
    """ASGI middleware: counts and times every request by route template, and refuses bodies over MAX_BODY_BYTES."""

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500

        async def send_and_note(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        received = 0

        async def receive_within_limit():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > MAX_BODY_BYTES:
                raise BodyTooLarge
            return message

        try:
            declared = dict(scope["headers"]).get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
                response = body_too_large()
                await response(scope, receive, send_and_note)
            else:
                await self.app(scope, receive_within_limit, send_and_note)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(endpoint, scope["method"], str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)


def body_too_large() -> Response:
    return problem(413, "body-too-large", "Request body too large", f"a request body may hold at most {MAX_BODY_BYTES} bytes")


def create_app(data_dir: Path, poll_seconds: float = POLL_SECONDS) -> FastAPI:
    """The service on the releases of `data_dir` (never a path from a request)."""
    metrics = Metrics()
    watcher = ReleaseWatcher(layout.releases_dir(data_dir), poll_seconds, on_swap=metrics.swapped, on_refusal=metrics.refusals.inc)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        # One BLAS thread per process: a request's products are small, and BLAS threads waiting on
        # each other on a busy machine cost 20 ms a request; more cores are used by more workers.
        threadpool_limits(1)
        watcher.start()
        yield
        watcher.stop()

    app = FastAPI(
        title="recsys",
        description="Movie recommendations from the current release of recsys_pipeline. Every answer names its release (`X-Release-Id`).",
        version="1",
        lifespan=lifespan,
    )
    app.add_middleware(RequestMetrics, metrics=metrics)

    def current() -> Snapshot:
        snapshot = watcher.snapshot
        if snapshot is None:
            raise NotReady(watcher.problem)
        return snapshot

    @app.exception_handler(NotReady)
    async def not_ready(_: Request, error: NotReady) -> Response:
        return problem(503, "not-ready", "No release loaded", str(error))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> Response:
        details = "; ".join(f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}" for item in error.errors())
        return problem(422, "invalid-request", "Invalid request", details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> Response:
        if isinstance(error, BodyTooLarge):
            return body_too_large()
        return problem(error.status_code, "http", str(error.detail), f"{error.detail}: see /docs for the endpoints")

    def query_problem(snapshot: Snapshot, error: recommend.QueryError, status: int = 400, kind: str = "bad-query", title: str = "Cannot answer as asked") -> Response:
        return problem(status, kind, title, str(error), snapshot.release_id)

    @app.get("/v1/users/{user_id}/recommendations", summary="A known user's served list (as `recsys recommend --user`)")
    def user_recommendations(user_id: int, k: K = DEFAULT_K, min_ratings: MinRatings = 0) -> Response:
        snapshot = current()
        try:
            return answer(snapshot, snapshot.user_recommendations(user_id, k, min_ratings))
        except recommend.QueryError as error:
            return query_problem(snapshot, error, 404, "unknown-user", "Unknown user")

    @app.post("/v1/recommendations", summary="A visitor's list from genre ratings and/or liked movies (as `recsys recommend --genres/--movies`)")
    def visitor_recommendations(visitor: Visitor) -> Response:
        snapshot = current()
        if not visitor.genres and not visitor.movies:
            return problem(400, "bad-query", "Cannot answer as asked", "describe the visitor by 'genres' ({\"Comedy\": 4}), 'movies' ([\"The Matrix\"]) or both")
        if sum(isinstance(movie, str) for movie in visitor.movies) > MAX_LIKED_TITLES:
            detail = f"at most {MAX_LIKED_TITLES} movies by title per request (up to {MAX_LIKED_MOVIES} by movieId, e.g. from GET /v1/movies?q=)"
            return problem(400, "bad-query", "Cannot answer as asked", detail)
        try:
            return answer(snapshot, snapshot.visitor_recommendations(list(visitor.genres.items()), visitor.movies, visitor.k, visitor.min_ratings))
        except recommend.QueryError as error:
            return query_problem(snapshot, error)

    @app.get("/v1/movies/{movie_id}/similar", summary="The movies nearest to one movie (as `recsys similar`)")
    def similar(movie_id: int, k: K = DEFAULT_K) -> Response:
        snapshot = current()
        try:
            return answer(snapshot, snapshot.similar(movie_id, k))
        except recommend.QueryError as error:
            return query_problem(snapshot, error, 404, "unknown-movie", "Unknown movie")

    @app.get("/v1/movies", summary="The one movie a title or movieId names (the CLI's lookup); candidates when ambiguous")
    def movies(q: TitleQuery) -> Response:
        snapshot = current()
        try:
            return answer(snapshot, snapshot.movie(q))
        except recommend.QueryError as error:
            return query_problem(snapshot, error, 400, "no-single-movie", "No single movie matches")

    @app.get("/v1/release", summary="The release being served: id, creation time, metrics")
    def release() -> Response:
        snapshot = current()
        return Response(json.dumps(snapshot.description()), media_type="application/json", headers={RELEASE_HEADER: snapshot.release_id})

    @app.get("/v1/ping", summary="An empty answer: the server's own cost, the load test's baseline")
    def ping() -> Response:
        return Response(b"{}", media_type="application/json")

    @app.get("/healthz", summary="The process is alive")
    def healthz() -> Response:
        return Response(b'{"status": "alive"}', media_type="application/json")

    @app.get("/readyz", summary="A verified release is loaded (and why a newer one was refused, if so)")
    def readyz() -> Response:
        snapshot = current()
        body = {"status": "ready", "release_id": snapshot.release_id, "refused": watcher.refused}
        return Response(json.dumps(body), media_type="application/json", headers={RELEASE_HEADER: snapshot.release_id})

    @app.get("/metrics", summary="Prometheus metrics of this process")
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.state.watcher = watcher
    return app


def app_from_environment() -> FastAPI:
    """The app on RECSYS_DATA_DIR: what each worker process of `serve` builds."""
    return create_app(Path(data_dir_from_environment(os.environ)))


def serve(data_dir: Path, host: str, port: int, workers: int) -> None:
    """Listen on host:port (port 0: a free one) and serve with `workers` processes sharing the socket."""
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(2048)
    listener.set_inheritable(True)
    bound = listener.getsockname()[1]
    os.environ["RECSYS_DATA_DIR"] = str(data_dir)
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config["loggers"][__name__] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    config = uvicorn.Config(
        f"{__name__}:app_from_environment", factory=True, workers=workers, access_log=False, log_config=log_config, timeout_graceful_shutdown=5
    )
    print(f"recsys serve: http://{host}:{bound} (OpenAPI at /docs), {workers} worker(s), releases in {layout.releases_dir(data_dir)}", file=sys.stderr, flush=True)
    server = uvicorn.Server(config)
    if workers == 1:
        server.run(sockets=[listener])
    else:
        from uvicorn.supervisors import Multiprocess

        Multiprocess(config, sockets=[listener]).run()
