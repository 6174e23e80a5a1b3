"""Shared fixtures: the real MovieLens copy and small synthetic datasets in MovieLens format."""

import os
from pathlib import Path

import pytest

from recsys_pipeline.synthetic import SyntheticSpec, write_movielens

REPO_ROOT = Path(__file__).resolve().parents[1]
# The reference copy sits beside the checkout on every developer machine and in CI.
REAL_MOVIELENS = Path(os.environ.get("RECSYS_TEST_MOVIELENS", REPO_ROOT.parent / "shared" / "movielens" / "ml-latest-small"))
SMALL_SPEC = SyntheticSpec(n_users=60, n_movies=120, n_ratings=3_000, n_tags=50, seed=7)


@pytest.fixture(scope="session")
def real_movielens_dir() -> Path:
    """ml-latest-small; a missing copy fails the test loudly instead of skipping it."""
    if not (REAL_MOVIELENS / "ratings.csv").is_file():
        pytest.fail(
            f"MovieLens ml-latest-small not found at {REAL_MOVIELENS}. Put it there (see ../shared/movielens/README.md) "
            "or point RECSYS_TEST_MOVIELENS at a directory holding ratings.csv and movies.csv."
        )
    return REAL_MOVIELENS


@pytest.fixture(scope="session")
def synthetic_movielens_dir(tmp_path_factory) -> Path:
    """A small synthetic MovieLens-shaped dataset, written once per test session."""
    return write_movielens(SMALL_SPEC, tmp_path_factory.mktemp("synthetic_movielens"))
