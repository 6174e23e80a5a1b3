"""The regression gate: a retrained model that is worse than the accepted one never replaces it.

One small synthetic pipeline is trained once for the module, then retrained badly on purpose.
"""

import base64

import dagster as dg
import pytest

from recsys_pipeline.definitions import build_definitions
from recsys_pipeline import releases
from recsys_pipeline.layout import ARTIFACTS_DIR, releases_dir
from recsys_pipeline.orchestration.checks import REGRESSION_GATE, regression_gate_result
from recsys_pipeline_tests.conftest import SMALL_RANKING_CONFIG

pytestmark = pytest.mark.slow

RETRAIN_JOB = "recsys_pipeline"
GOOD_TRAINING = {"epochs": 4}
# One epoch at a learning rate too small to move the weights: far worse than the first model.
DEGRADED_TRAINING = {"epochs": 1, "learning_rate": 1e-6}
# What the accepted model feeds: none of these may change when the gate fails.
PROTECTED = (
    "accepted_model.keras",
    "movie_embeddings.npy",
    "embedding_distance_matrix.npy",
    "similar_movies.parquet",
    "model_evaluation.parquet",
)
ACCEPTED_SIDE = {"accepted_model", "movie_embeddings", "embedding_distance_matrix", "similar_movies", "model_evaluation"}


def training_run_config(settings: dict) -> dict:
    return {"ops": {"trained_model": {"config": settings}, "ranking_model": {"config": SMALL_RANKING_CONFIG}}}


def snapshot(artifacts, names) -> dict[str, bytes]:
    return {name: (artifacts / name).read_bytes() for name in names}


def release_snapshot(data_dir) -> dict[str, bytes]:
    """Every file of every release, and the pointer to the current one."""
    folder = releases_dir(data_dir)
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def pipeline(synthetic_movielens_dir, tmp_path_factory):
    """A trained and accepted pipeline, then a degraded retrain on the same instance."""
    data_dir = tmp_path_factory.mktemp("gated_pipeline")
    defs = build_definitions(str(synthetic_movielens_dir), data_dir, rmse_tolerance=0.01)
    job = defs.resolve_job_def(RETRAIN_JOB)
    artifacts = data_dir / ARTIFACTS_DIR
    with dg.instance_for_test() as instance:
        good = job.execute_in_process(instance=instance, run_config=training_run_config(GOOD_TRAINING))
        before = snapshot(artifacts, PROTECTED + ("trained_model.keras",))
        released = release_snapshot(data_dir)
        degraded = job.execute_in_process(instance=instance, run_config=training_run_config(DEGRADED_TRAINING), raise_on_error=False)
        yield {
            "defs": defs, "instance": instance, "data_dir": data_dir, "artifacts": artifacts,
            "good": good, "degraded": degraded, "before": before, "released": released,
        }


def gate_evaluation(result) -> dg.AssetCheckEvaluation:
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == REGRESSION_GATE]
    return evaluation


def test_first_model_is_accepted_and_published_as_the_current_release(pipeline):
    assert gate_evaluation(pipeline["good"]).passed
    release = releases.current(releases_dir(pipeline["data_dir"]))
    trained = pipeline["good"].asset_materializations_for_node("trained_model")[0]
    assert release.manifest["val_rmse"] == pytest.approx(trained.metadata["val_rmse"].value, abs=1e-6)
    assert release.manifest["run_id"] == pipeline["good"].run_id
    release.verify()


def test_gate_is_a_blocking_check_on_the_candidate(pipeline):
    specs = {spec.name: spec for spec in pipeline["defs"].resolve_assets_def("trained_model").check_specs}
    assert specs[REGRESSION_GATE].blocking


def test_degraded_retrain_fails_the_gate_and_leaves_downstream_bytes_untouched(pipeline):
    degraded, artifacts, before = pipeline["degraded"], pipeline["artifacts"], pipeline["before"]
    gate = gate_evaluation(degraded)
    assert not gate.passed
    assert gate.metadata["val_rmse"].value > gate.metadata["accepted_val_rmse"].value + gate.metadata["tolerance"].value
    assert not degraded.success
    materialized = {event.asset_key.to_user_string() for event in degraded.get_asset_materialization_events()}
    assert "trained_model" in materialized and materialized.isdisjoint(ACCEPTED_SIDE)
    # The candidate was stored (it is the asset that failed its check) ...
    assert (artifacts / "trained_model.keras").read_bytes() != before["trained_model.keras"]
    # ... but the accepted model and everything it feeds are byte-for-byte the previous ones,
    # and so is every release.
    assert snapshot(artifacts, PROTECTED) == {name: before[name] for name in PROTECTED}
    assert release_snapshot(pipeline["data_dir"]) == pipeline["released"]


def test_accepting_the_rejected_candidate_alone_is_refused(pipeline):
    """Materializing accepted_model by itself re-applies the gate instead of copying the candidate."""
    job = pipeline["defs"].resolve_implicit_global_asset_job_def()
    attempt = job.execute_in_process(instance=pipeline["instance"], asset_selection=[dg.AssetKey("accepted_model")], raise_on_error=False)
    assert not attempt.success
    [failure] = [event for event in attempt.all_events if event.is_step_failure]
    assert "regression gate" in failure.step_failure_data.error.message
    assert snapshot(pipeline["artifacts"], PROTECTED) == {name: pipeline["before"][name] for name in PROTECTED}


def test_the_candidate_brings_its_own_validation_rmse_whatever_the_instance(pipeline):
    """In an instance that never saw trained_model materialize (another deployment's, or a CLI run's
    throwaway one), accepted_model still judges the stored candidate by the RMSE stored with it."""
    job = pipeline["defs"].resolve_implicit_global_asset_job_def()
    with dg.instance_for_test() as fresh:
        attempt = job.execute_in_process(instance=fresh, asset_selection=[dg.AssetKey("accepted_model")], raise_on_error=False)
    [failure] = [event for event in attempt.all_events if event.is_step_failure]
    message = failure.step_failure_data.error.message
    assert f"trained_model from run {pipeline['degraded'].run_id} fails the regression gate" in message
    assert snapshot(pipeline["artifacts"], PROTECTED) == {name: pipeline["before"][name] for name in PROTECTED}


def test_training_logs_each_epoch_and_shows_its_loss_curve_and_similar_movies_show_examples(pipeline):
    good = pipeline["good"]
    loss_curve = good.asset_materializations_for_node("trained_model")[0].metadata["loss_curve"].value
    prefix = "data:image/png;base64,"
    png = base64.b64decode(loss_curve[loss_curve.index(prefix) + len(prefix) : loss_curve.rindex(")")])
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5_000

    epochs_run = good.asset_materializations_for_node("trained_model")[0].metadata["epochs_run"].value
    epoch_lines = [
        entry.user_message
        for entry in pipeline["instance"].all_logs(good.run_id)
        if entry.step_key == "trained_model" and entry.user_message.startswith("epoch ")
    ]
    assert [line.split(":")[0] for line in epoch_lines] == [f"epoch {n}/{GOOD_TRAINING['epochs']}" for n in range(1, epochs_run + 1)]

    examples = good.asset_materializations_for_node("similar_movies")[0].metadata["examples"].value.splitlines()
    assert len(examples) == 5  # no well-known title in synthetic data: the five most-rated movies
    for line in examples:
        assert line.startswith("- **") and len(line.split("**: ")[1].split("; ")) == 5


@pytest.mark.parametrize(
    ("val_rmse", "accepted", "passed"),
    [
        (1.20, None, True),  # nothing accepted yet
        (0.90, {"val_rmse": 0.90}, True),
        (0.909, {"val_rmse": 0.90}, True),  # within the tolerance
        (0.911, {"val_rmse": 0.90}, False),
        (0.70, {"val_rmse": 0.90}, True),
    ],
)
def test_gate_tolerance(val_rmse, accepted, passed):
    assert regression_gate_result(val_rmse, accepted, tolerance=0.01).passed is passed
