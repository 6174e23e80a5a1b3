"""The model option switch: the pure content model and the hybrid both build, train, save and reload."""

import numpy as np
import pytest

from recsys_pipeline import two_tower
from recsys_pipeline.model_inputs import RatingRows, SideInputs
from recsys_pipeline.settings import TrainingSettings


def _inputs(rng: np.random.Generator, blocks: int = 3):
    n_users, n_movies = 12, 20
    users = SideInputs(rng.normal(size=(blocks, n_users, 5)).astype("float32"), np.append(np.arange(n_users - 1), n_users).astype("int32"))
    movies = SideInputs(rng.normal(size=(blocks, n_movies, 4)).astype("float32"), np.arange(n_movies, dtype="int32"))
    n = 300
    rows = RatingRows(
        rng.integers(0, n_users, n).astype("int32"),
        rng.integers(0, n_movies, n).astype("int32"),
        rng.integers(0, blocks, n).astype("int32"),
        rng.choice(np.arange(1, 11) / 2, n).astype("float32"),
    )
    validation = RatingRows(rows.user_rows[:50], rows.movie_rows[:50], np.zeros(50, dtype="int32"), rows.targets[:50])
    return users, movies, rows, validation


@pytest.mark.slow
@pytest.mark.parametrize("hybrid", [False, True])
def test_content_and_hybrid_models_train_and_reload_in_safe_mode(tmp_path, hybrid):
    users, movies, train, validation = _inputs(np.random.default_rng(0))
    settings = TrainingSettings(epochs=1, batch_size=64, seed=1, tower_widths=(8,), embedding_size=4, hybrid=hybrid)
    model, history = two_tower.train_two_tower(users, movies, train, validation, 3.5, settings)
    assert len(history["loss"]) == 1 and "learning_rate" not in history
    assert two_tower.is_hybrid(model) == hybrid
    assert (two_tower.USER_ID in model.input) == hybrid

    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = two_tower.load_model(str(path))
    batch, _ = two_tower.RatingBatches(users, movies, validation, 64, hybrid)[0]
    np.testing.assert_allclose(reloaded.predict(batch, verbose=0), model.predict(batch, verbose=0), atol=1e-6)

    # The numpy scorer built from the two sides equals the whole network on block-0 rows.
    from recsys_pipeline.model_inputs import ModelInputs

    inputs = ModelInputs(np.arange(12), users, np.arange(20), movies)
    scorer = two_tower.scorer(reloaded, inputs)
    np.testing.assert_allclose(scorer.predict(validation), reloaded.predict(batch, verbose=0).ravel(), atol=1e-4)


@pytest.mark.slow
def test_hybrid_zeroes_the_out_of_vocabulary_rows_so_unseen_users_get_content_only():
    users, movies, train, validation = _inputs(np.random.default_rng(1))
    settings = TrainingSettings(epochs=1, batch_size=64, seed=1, tower_widths=(8,), embedding_size=4, hybrid=True)
    model, _ = two_tower.train_two_tower(users, movies, train, validation, 3.5, settings)
    for side in (two_tower.USER_TOWER, two_tower.MOVIE_TOWER):
        for layer in ("id_embedding", "id_bias"):
            weights = model.get_layer(side).get_layer(f"{side}_{layer}").get_weights()[0]
            assert np.all(weights[-1] == 0) and np.any(weights[:-1] != 0)


@pytest.mark.slow
def test_the_graph_runs_the_content_model_on_the_chronological_split(synthetic_movielens_dir, tmp_path):
    import dagster as dg
    import pandas as pd

    from recsys_pipeline.definitions import build_definitions

    run_config = {
        "ops": {
            "rating_splits": {"config": {"method": "chronological"}},
            "trained_model": {"config": {"epochs": 1, "hybrid": False, "tower_widths": [16], "embedding_size": 8}},
        }
    }
    job = build_definitions(str(synthetic_movielens_dir), tmp_path).resolve_job_def("recsys_pipeline")
    result = job.execute_in_process(run_config=run_config, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert result.success
    assert [e.check_name for e in result.get_asset_check_evaluations() if not e.passed] == []
    metadata = {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert metadata["rating_splits"]["method"].value == "chronological"
    assert {"test_precision_at_10", "test_ndcg_at_10", "baseline_popularity_ndcg_at_10"} <= set(metadata["model_evaluation"])

    labelled = pd.read_parquet(tmp_path / "artifacts" / "rating_splits.parquet")
    latest_train = labelled[labelled["split"] == "train"].groupby("userId")["timestamp"].max()
    earliest_test = labelled[labelled["split"] == "test"].groupby("userId")["timestamp"].min()
    assert (earliest_test >= latest_train.reindex(earliest_test.index)).all()
    model = two_tower.load_model(str(tmp_path / "artifacts" / "accepted_model.keras"))
    assert not two_tower.is_hybrid(model)
