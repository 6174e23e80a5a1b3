"""The regression gate compares like with like: RMSE in stars on the same validation ratings, skill
over the global mean when the data changed (checks.REGRESSION_GATE_RULE).

The pipeline test trains on synthetic data, then appends ratings from the future that make every
user's validation ratings clearly harder (the old gate, in stars, would refuse any model on them),
and checks that a degraded retrain is still refused while a good one is accepted and released."""

import json
import shutil
import zipfile

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from recsys_pipeline import releases, splits
from recsys_pipeline.definitions import build_definitions
from recsys_pipeline.layout import releases_dir
from recsys_pipeline.orchestration.checks import RMSE_ONLY, REGRESSION_GATE, SAME_RATINGS, SKILL, regression_gate_result
from recsys_pipeline.orchestration.resources import ModelGate
from recsys_pipeline_tests.conftest import SMALL_RUN_CONFIG

JOB = "recsys_pipeline"
TOLERANCE = 0.01
# SMALL_RUN_CONFIG's ranking model; the rating model gets 4 epochs, so that it beats the global mean.
GOOD = {"ops": {**SMALL_RUN_CONFIG["ops"], "trained_model": {"config": {"epochs": 4}}}}
DEGRADED = {"ops": {**SMALL_RUN_CONFIG["ops"], "trained_model": {"config": {"epochs": 1, "learning_rate": 1e-6}}}}
FP_A, FP_B = "a" * 64, "b" * 64


# --- the rule ------------------------------------------------------------------------------------


def gate(val_rmse, accepted, global_mean=None, fingerprint=None):
    return regression_gate_result(val_rmse, accepted, TOLERANCE, global_mean_val_rmse=global_mean, val_fingerprint=fingerprint)


def test_same_validation_ratings_compare_rmse_in_stars():
    accepted = {"val_rmse": 0.90, "global_mean_val_rmse": 1.00, "val_fingerprint": FP_A}
    assert gate(0.909, accepted, 1.00, FP_A).passed
    result = gate(0.911, accepted, 1.00, FP_A)
    assert not result.passed
    assert result.metadata["comparison"].value == SAME_RATINGS and result.metadata["validation_ratings"].value == "same"


def test_changed_validation_ratings_compare_skill_over_the_global_mean():
    accepted = {"val_rmse": 0.90, "global_mean_val_rmse": 1.00, "val_fingerprint": FP_A}  # skill 0.10
    # Harder ratings: 1.08 stars is 0.18 worse, but skill 1 - 1.08/1.20 = 0.10 is the accepted model's.
    harder = gate(1.08, accepted, 1.20, FP_B)
    assert harder.passed and harder.metadata["comparison"].value == SKILL
    assert harder.metadata["validation_ratings"].value == "changed"
    assert harder.metadata["skill_tolerance"].value == pytest.approx(TOLERANCE / 1.00)
    # Tolerance: 0.01 stars on the accepted ratings, i.e. skill may drop by 0.01 / 1.00.
    assert gate(1.20 * (1 - 0.10 + 0.0099), accepted, 1.20, FP_B).passed
    assert not gate(1.20 * (1 - 0.10 + 0.0101), accepted, 1.20, FP_B).passed
    # Easier ratings do not let a worse model through: 0.79 stars is better, but skill 0.0125 is not.
    easier = gate(0.79, accepted, 0.80, FP_B)
    assert not easier.passed and easier.metadata["val_rmse_at_accepted_difficulty"].value == pytest.approx(0.79 / 0.80)


def test_on_the_same_difficulty_the_skill_rule_is_the_rule_in_stars():
    accepted = {"val_rmse": 0.90, "global_mean_val_rmse": 1.10, "val_fingerprint": FP_A}
    for val_rmse in np.linspace(0.85, 0.95, 41):
        assert gate(val_rmse, accepted, 1.10, FP_B).passed == gate(val_rmse, accepted, 1.10, FP_A).passed


def test_a_release_without_fingerprint_counts_as_changed_data_and_says_so():
    older = {"val_rmse": 0.90, "global_mean_val_rmse": 1.00, "run_id": "r1"}
    result = gate(1.08, older, 1.20, FP_A)
    assert result.passed and result.metadata["comparison"].value == SKILL
    assert "older version" in result.metadata["validation_ratings"].value
    assert "older version" in result.metadata["accepted_val_fingerprint"].value


def test_a_candidate_without_fingerprint_counts_as_changed_data_and_says_so():
    accepted = {"val_rmse": 0.90, "global_mean_val_rmse": 1.00, "val_fingerprint": FP_A}
    result = gate(1.08, accepted, 1.20, None)
    assert result.passed and "candidate was stored by an older version" in result.metadata["validation_ratings"].value


def test_without_global_mean_rmse_skill_cannot_be_measured_and_stars_are_compared():
    result = gate(0.95, {"val_rmse": 0.90}, None, FP_A)
    assert not result.passed and result.metadata["comparison"].value == RMSE_ONLY
    assert gate(0.905, {"val_rmse": 0.90}, 1.0, FP_A).passed


def test_validation_fingerprint_depends_only_on_the_validation_ratings():
    rng = np.random.default_rng(0)
    n = 200
    labelled = pd.DataFrame(
        {
            "userId": rng.integers(1, 20, n),
            "movieId": rng.integers(1, 50, n),
            "rating": rng.integers(1, 11, n) / 2,
            "timestamp": rng.integers(0, 10**9, n),
            "split": pd.Categorical(rng.choice(splits.SPLITS, n), categories=splits.SPLITS),
        }
    )
    fingerprint = splits.validation_fingerprint(labelled)
    assert len(fingerprint) == 64
    assert splits.validation_fingerprint(labelled.sample(frac=1.0, random_state=1)) == fingerprint
    others = labelled["split"] != splits.VALIDATION
    changed_elsewhere = labelled.copy()
    changed_elsewhere.loc[others, "rating"] = 5.0
    assert splits.validation_fingerprint(changed_elsewhere) == fingerprint
    first_validation = labelled.index[labelled["split"] == splits.VALIDATION][0]
    for column, value in (("rating", 0.25), ("timestamp", -1), ("movieId", 10**6), ("userId", 10**6)):
        changed = labelled.copy()
        changed.loc[first_validation, column] = value
        assert splits.validation_fingerprint(changed) != fingerprint


def test_an_older_candidate_record_loads_with_an_unknown_fingerprint(tmp_path):
    keras = pytest.importorskip("keras")
    from recsys_pipeline.two_tower import CANDIDATE_RECORD, StoredCandidate, load_candidate, save_candidate

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    save_candidate(StoredCandidate(model, 0.9, "run-new", 1.1, FP_A), str(tmp_path / "new.keras"))
    new = load_candidate(str(tmp_path / "new.keras"))
    assert (new.val_rmse, new.run_id, new.global_mean_val_rmse, new.val_fingerprint) == (0.9, "run-new", 1.1, FP_A)

    model.save(tmp_path / "old.keras")
    with zipfile.ZipFile(tmp_path / "old.keras", "a") as archive:  # the record as older versions wrote it
        archive.writestr(CANDIDATE_RECORD, json.dumps({"val_rmse": 0.9, "run_id": "run-old"}))
    old = load_candidate(str(tmp_path / "old.keras"))
    assert (old.val_rmse, old.run_id, old.global_mean_val_rmse, old.val_fingerprint) == (0.9, "run-old", None, None)


# --- the pipeline --------------------------------------------------------------------------------


def future_ratings(ratings: pd.DataFrame, movies: pd.DataFrame) -> pd.DataFrame:
    """Every user's ratings again, after the last timestamp of the source, onto a movie of like
    quality (movies ranked by mean rating, neighbours swapped) and further from the mean (x1.5, to
    half stars): every user's validation ratings become these, clearly harder to predict."""
    means = ratings.groupby("movieId")["rating"].mean().reindex(movies["movieId"]).fillna(ratings["rating"].mean())
    ranked = means.sort_values(kind="stable").index.to_numpy()
    paired = len(ranked) // 2 * 2
    partner = ranked.copy()
    partner[0:paired:2], partner[1:paired:2] = ranked[1:paired:2], ranked[0:paired:2]
    mean = ratings["rating"].mean()
    later = ratings.assign(
        movieId=ratings["movieId"].map(dict(zip(ranked, partner))),
        timestamp=ratings["timestamp"] + (ratings["timestamp"].max() - ratings["timestamp"].min()) + 86_400,
        rating=np.clip(np.round((mean + 1.5 * (ratings["rating"] - mean)) * 2) / 2, 0.5, 5.0),
    )
    return pd.concat([ratings, later], ignore_index=True).drop_duplicates(["userId", "movieId"], keep="first")


def gate_evaluation(result) -> dg.AssetCheckEvaluation:
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == REGRESSION_GATE]
    return evaluation


@pytest.fixture(scope="module")
def changed_data_pipeline(synthetic_movielens_dir, tmp_path_factory):
    """A first accepted and released model; then new ratings from the future in the same source;
    then, on the same instance, a degraded retrain and a good one."""
    source = tmp_path_factory.mktemp("growing_source")
    for name in ("movies.csv", "ratings.csv"):
        shutil.copy(synthetic_movielens_dir / name, source / name)
    data_dir = tmp_path_factory.mktemp("changed_data")
    job = build_definitions(str(source), data_dir, rmse_tolerance=TOLERANCE).resolve_job_def(JOB)
    with dg.instance_for_test() as instance:
        first = job.execute_in_process(instance=instance, run_config=GOOD)
        first_release = releases.current(releases_dir(data_dir))
        older_releases = tmp_path_factory.mktemp("older") / "releases"
        shutil.copytree(releases_dir(data_dir), older_releases)
        ratings, movies = pd.read_csv(source / "ratings.csv"), pd.read_csv(source / "movies.csv")
        future_ratings(ratings, movies).to_csv(source / "ratings.csv", index=False)
        degraded = job.execute_in_process(instance=instance, run_config=DEGRADED, raise_on_error=False)
        after_degraded = releases.current(releases_dir(data_dir))
        good = job.execute_in_process(instance=instance, run_config=GOOD, raise_on_error=False)
        yield {
            "data_dir": data_dir, "first": first, "first_release": first_release, "older_releases": older_releases,
            "degraded": degraded, "after_degraded": after_degraded, "good": good,
        }


def test_the_first_release_records_the_validation_fingerprint_and_global_mean(changed_data_pipeline):
    first, release = changed_data_pipeline["first"], changed_data_pipeline["first_release"]
    assert first.success and gate_evaluation(first).passed
    trained = first.asset_materializations_for_node("trained_model")[0].metadata
    assert release.manifest["val_fingerprint"] == trained["val_fingerprint"].value
    assert release.manifest["global_mean_val_rmse"] == pytest.approx(trained["global_mean_val_rmse"].value, abs=1e-9)
    assert release.manifest["val_rmse"] == pytest.approx(trained["val_rmse"].value, abs=1e-6)


def test_a_degraded_retrain_on_changed_data_is_still_refused(changed_data_pipeline):
    degraded = changed_data_pipeline["degraded"]
    gate_result = gate_evaluation(degraded)
    assert not degraded.success and not gate_result.passed
    assert gate_result.metadata["comparison"].value == SKILL
    assert gate_result.metadata["validation_ratings"].value == "changed"
    materialized = {event.asset_key.to_user_string() for event in degraded.get_asset_materialization_events()}
    assert "accepted_model" not in materialized and "release" not in materialized
    assert changed_data_pipeline["after_degraded"].release_id == changed_data_pipeline["first_release"].release_id


def test_a_good_retrain_on_clearly_harder_new_ratings_is_accepted_and_released(changed_data_pipeline):
    good, first_release = changed_data_pipeline["good"], changed_data_pipeline["first_release"]
    gate_result = gate_evaluation(good)
    metadata = {key: value.value for key, value in gate_result.metadata.items()}
    assert gate_result.passed and good.success, metadata
    assert metadata["comparison"] == SKILL and metadata["validation_ratings"] == "changed"
    # The old gate, in stars, would have refused it: the new validation ratings are clearly harder.
    assert metadata["val_rmse"] > metadata["accepted_val_rmse"] + TOLERANCE
    assert metadata["global_mean_val_rmse"] > metadata["accepted_global_mean_val_rmse"] + TOLERANCE
    release = releases.current(releases_dir(changed_data_pipeline["data_dir"]))
    assert release.release_id != first_release.release_id
    trained = good.asset_materializations_for_node("trained_model")[0].metadata
    assert release.manifest["val_fingerprint"] == trained["val_fingerprint"].value != first_release.manifest["val_fingerprint"]
    assert release.manifest["global_mean_val_rmse"] == pytest.approx(trained["global_mean_val_rmse"].value, abs=1e-9)


def test_a_release_written_before_fingerprints_gives_the_gate_its_global_mean_from_its_evaluation(changed_data_pipeline):
    """An older manifest (no fingerprint, no global-mean RMSE): ModelGate reads the global mean's
    validation RMSE from the release's model_evaluation.parquet, and the gate compares skill."""
    folder = changed_data_pipeline["older_releases"]
    release = releases.current(folder)
    manifest_path = release.directory / releases.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    recorded = manifest.pop("global_mean_val_rmse")
    manifest.pop("val_fingerprint")
    manifest_path.write_text(json.dumps(manifest))
    accepted = ModelGate(releases_dir=str(folder)).accepted()
    assert "val_fingerprint" not in accepted
    assert accepted["global_mean_val_rmse"] == pytest.approx(recorded, abs=1e-9)
    result = regression_gate_result(accepted["val_rmse"], accepted, TOLERANCE, global_mean_val_rmse=recorded, val_fingerprint=FP_A)
    assert result.passed and result.metadata["comparison"].value == SKILL
    assert "older version" in result.metadata["validation_ratings"].value
