"""Shared fixtures: the real MovieLens copy, small synthetic datasets in MovieLens format, and the
whole graph materialized once from the synthetic data.

Test tiers (markers registered in pyproject.toml): `real_data` is added here to every test that
reads ml-latest-small; `distributed`, `browser` and `slow` are set by the tests themselves.
`make test-fast` deselects all four.
"""

import os
from pathlib import Path

import dagster as dg
import pytest

from recsys_pipeline.definitions import build_definitions
from recsys_pipeline.synthetic import SyntheticSpec, write_movielens

REPO_ROOT = Path(__file__).resolve().parents[1]
# The reference copy sits beside the checkout on every developer machine and in CI; RECSYS_MOVIELENS,
# the pipeline's own variable, may name another directory holding it.
REAL_MOVIELENS = Path(os.environ.get("RECSYS_MOVIELENS", REPO_ROOT.parent / "shared" / "movielens" / "ml-latest-small"))
SMALL_SPEC = SyntheticSpec(n_users=60, n_movies=120, n_ratings=3_000, n_tags=50, seed=7)
# Small models for tests that need a trained graph but not a good one.
SMALL_RANKING_CONFIG = {"epochs": 2, "patience": 1}
SMALL_RUN_CONFIG = {"ops": {"trained_model": {"config": {"epochs": 2}}, "ranking_model": {"config": SMALL_RANKING_CONFIG}}}


def pytest_collection_modifyitems(items):
    for item in items:
        if "real_movielens_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.real_data)


@pytest.fixture(scope="session")
def real_movielens_dir() -> Path:
    """ml-latest-small; a missing copy fails the test loudly instead of skipping it."""
    if not (REAL_MOVIELENS / "ratings.csv").is_file():
        pytest.fail(
            f"MovieLens ml-latest-small not found at {REAL_MOVIELENS}. Put it there (see ../shared/movielens/README.md) "
            "or point RECSYS_MOVIELENS at a directory holding ratings.csv and movies.csv."
        )
    return REAL_MOVIELENS


@pytest.fixture(scope="session")
def synthetic_movielens_dir(tmp_path_factory) -> Path:
    """A small synthetic MovieLens-shaped dataset, written once per test session."""
    return write_movielens(SMALL_SPEC, tmp_path_factory.mktemp("synthetic_movielens"))


@pytest.fixture(scope="session")
def materialized_data_dir(synthetic_movielens_dir, tmp_path_factory) -> Path:
    """Every asset of the graph materialized once per session from the synthetic data with small
    models (SMALL_RUN_CONFIG): artifacts and a current release. Read it; copy it before changing it."""
    data_dir = tmp_path_factory.mktemp("recsys_data")
    defs = build_definitions(str(synthetic_movielens_dir), data_dir)
    result = defs.resolve_job_def("recsys_pipeline").execute_in_process(run_config=SMALL_RUN_CONFIG, instance=dg.DagsterInstance.ephemeral())
    assert result.success
    return data_dir
