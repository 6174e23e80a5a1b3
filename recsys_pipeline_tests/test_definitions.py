"""The code location loads fast, without TensorFlow, and describes every asset."""

import subprocess
import sys

import dagster as dg

from recsys_pipeline.definitions import build_definitions

EXPECTED_GROUPS = {
    "raw_movies": "ingest",
    "raw_ratings": "ingest",
    "rating_splits": "features",
    "movie_features": "features",
    "user_genre_averages": "features",
    "fitted_scalers": "features",
    "trained_model": "model",
    "movie_embeddings": "model",
    "embedding_distance_matrix": "similarity",
    "similar_movies": "similarity",
    "model_evaluation": "evaluation",
    "release": "serving",
}


def test_loading_the_definitions_does_not_import_tensorflow():
    probe = "import sys, recsys_pipeline.definitions; print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_every_asset_has_its_group_and_a_description(tmp_path):
    graph = build_definitions(str(tmp_path), tmp_path).resolve_asset_graph()
    nodes = {key.to_user_string(): graph.get(key) for key in graph.get_all_asset_keys()}
    assert {name: node.group_name for name, node in nodes.items() if name in EXPECTED_GROUPS} == EXPECTED_GROUPS
    assert all(node.description and len(node.description) > 30 for node in nodes.values())


def test_blocking_checks_guard_features_model_and_distances(tmp_path):
    graph = build_definitions(str(tmp_path), tmp_path).resolve_asset_graph()
    blocking = {(key.asset_key.to_user_string(), key.name) for key in graph.asset_check_keys if graph.get_check_spec(key).blocking}
    for expected in [
        ("movie_features", "movie_features_finite"),
        ("user_genre_averages", "user_genre_averages_finite"),
        ("fitted_scalers", "scaled_training_inputs_finite"),
        ("rating_splits", "partition_of_ratings"),
        ("raw_ratings", "ratings_on_half_star_scale"),
        ("trained_model", "beats_global_mean_on_validation"),
        ("embedding_distance_matrix", "distance_matrix_well_formed"),
    ]:
        assert expected in blocking


def test_environment_configures_source_and_data_dir(tmp_path):
    defs = build_definitions("relative/source", tmp_path / "data", seed=3)
    resources = defs.resources
    assert resources["movielens_source"].location.endswith("relative/source")
    assert resources["movielens_source"].location.startswith("/")
    assert resources["reproducibility"].seed == 3
    assert resources["io_manager"].base_path == str((tmp_path / "data" / "artifacts").resolve())
    assert isinstance(defs.resolve_job_def("recsys_pipeline"), dg.JobDefinition)


def test_every_check_has_a_description(tmp_path):
    graph = build_definitions(str(tmp_path), tmp_path).resolve_asset_graph()
    undescribed = [key.name for key in graph.asset_check_keys if not (graph.get_check_spec(key).description or "").strip()]
    assert undescribed == []
