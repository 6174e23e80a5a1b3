"""Every blocking check holds on every legitimate input: subsets of the ratings or the users, rows
shuffled, earlier slices of time, users with very few ratings (recsys_pipeline.subsets), under
both split methods. A check that fails on such data stops a good run (issue 18)."""

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from recsys_pipeline import splits, subsets, workflow
from recsys_pipeline.definitions import build_definitions
from recsys_pipeline.orchestration import checks


@pytest.fixture(scope="module", params=sorted(subsets.VARIANTS))
def variant_dir(request, synthetic_movielens_dir, tmp_path_factory):
    return subsets.write_variant(synthetic_movielens_dir, tmp_path_factory.mktemp(request.param), request.param, seed=3)


@pytest.mark.parametrize("method", splits.METHODS)
def test_every_blocking_check_before_the_model_passes_on_a_legitimate_variant(variant_dir, method):
    ingested = workflow.ingest(variant_dir)
    features = workflow.build_features(ingested, seed=5, method=method)
    results = {
        "ratings_on_half_star_scale": checks.ratings_on_half_star_scale(ingested.ratings),
        "movie_features_finite": checks.movie_features_finite(features.movie_features),
        "movie_features_one_row_per_movie": checks.movie_features_one_row_per_movie(movie_features=features.movie_features, raw_movies=ingested.movies),
        "user_genre_averages_finite": checks.user_genre_averages_finite(features.user_features),
        "scaled_training_inputs_finite": checks.scaled_training_inputs_finite(
            fitted_scalers=features.scalers.to_dict(),
            rating_splits=features.labelled,
            user_genre_averages=features.user_features,
            movie_features=features.movie_features,
        ),
    }
    assert {name: result.metadata for name, result in results.items() if not result.passed} == {}
    assert splits.partition_problems(features.labelled, len(ingested.ratings), splits.DEFAULT_FRACTIONS, method) == []


def test_the_variants_are_what_their_names_say(synthetic_movielens_dir):
    movies, ratings = (pd.read_csv(synthetic_movielens_dir / name) for name in ("movies.csv", "ratings.csv"))
    few_movies, few = subsets.variant(movies, ratings, "at_most_3_ratings_per_user")
    assert few.groupby("userId").size().max() == 3 and set(few_movies["movieId"]) == set(few["movieId"])
    _, early = subsets.variant(movies, ratings, "before_first_quartile_time")
    assert early["timestamp"].max() < ratings["timestamp"].quantile(0.25)
    _, shuffled = subsets.variant(movies, ratings, "shuffled_rows")
    assert not shuffled.index.equals(ratings.index) and shuffled.sort_index().equals(ratings)
    _, half = subsets.variant(movies, ratings, "half_the_users")
    assert half["userId"].nunique() == ratings["userId"].nunique() // 2


@pytest.mark.parametrize("method", splits.METHODS)
def test_split_shares_allow_for_rounding_but_not_for_a_skewed_split(method):
    # 11 users with 1 to 11 ratings: the chronological split puts a user's only rating in train,
    # and 13 ratings cannot be split 70/15/15 to within one point; both are legitimate.
    users = np.repeat(np.arange(11), np.arange(1, 12))
    ratings = pd.DataFrame({"userId": users, "movieId": np.arange(len(users)), "rating": 3.0, "timestamp": np.arange(len(users))})
    for rows in (ratings, ratings.iloc[:13]):
        labelled = splits.assign_splits(rows, 47005, splits.DEFAULT_FRACTIONS, method)
        assert splits.partition_problems(labelled, len(rows), splits.DEFAULT_FRACTIONS, method) == []
    # A split that labels half of the ratings test is caught whatever the rounding.
    skewed = splits.assign_splits(ratings, 47005, splits.DEFAULT_FRACTIONS, method)
    skewed["split"] = pd.Categorical(np.where(np.arange(len(ratings)) % 2 == 0, "test", "train"), categories=list(splits.SPLITS))
    problems = splits.partition_problems(skewed, len(ratings), splits.DEFAULT_FRACTIONS, method)
    assert any(problem.startswith("test holds 50") for problem in problems), problems


@pytest.mark.slow
@pytest.mark.real_data
def test_every_check_passes_on_half_the_users_of_the_real_data(real_movielens_dir, tmp_path):
    """The whole graph on half of the users (a subset of the kind on which another machine's BLAS
    made the distance matrix asymmetric): every asset materializes and every check passes."""
    source = subsets.write_variant(real_movielens_dir, tmp_path / "movielens", "half_the_users", seed=0)
    job = build_definitions(str(source), tmp_path / "data").resolve_job_def("recsys_pipeline")
    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert [event.check_name for event in result.get_asset_check_evaluations() if not event.passed] == []
    assert result.success
