"""Shared helpers of the benchmark scripts: timing, medians, the data location and the printed figures."""

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The pipeline's own variable; a benchmark needs a local directory of the CSVs.
ML_LATEST_SMALL = Path(os.environ.get("RECSYS_MOVIELENS", REPO.parent / "shared" / "movielens" / "ml-latest-small"))


def timed(function: Callable, *args, **kwargs) -> tuple[float, object]:
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - started, result


def median_seconds(function: Callable, repeats: int) -> tuple[float, list[float], object]:
    """Median wall time of `repeats` calls, every time, and the last call's result."""
    times, result = [], None
    for _ in range(repeats):
        seconds, result = timed(function)
        times.append(seconds)
    return statistics.median(times), times, result


def report(name: str, baseline: float, ours: float, baseline_label: str, ours_label: str) -> None:
    print(f"{name}: {baseline_label} {baseline:.2f} s, {ours_label} {ours:.3f} s -> {baseline / ours:.1f}x faster")


def machine() -> str:
    cores = os.cpu_count()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = os.getloadavg()
    return f"{cores} cores, {memory:.0f} GiB RAM, load average {load[0]:.1f} at start"
