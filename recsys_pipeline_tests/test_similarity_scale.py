"""Similarity at scale: blocked exact top-k, the memory-mapped distance matrix and its size limit."""

from contextlib import contextmanager

import dagster as dg
import fsspec
import numpy as np
import pandas as pd
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from upath import UPath

from recsys_pipeline.orchestration import checks
from recsys_pipeline.orchestration.assets.similarity import embedding_distance_matrix
from recsys_pipeline.orchestration.io_managers import ArtifactStore
from recsys_pipeline.similarity import DistanceMatrixFile, exact_top_k, nearest_neighbours, similar_movies_table, squared_distance_matrix

ML_LATEST_SMALL_SHAPE = (9_742, 32)


def unit_vectors(n: int, dimensions: int = 32, seed: int = 0, duplicates: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dimensions)).astype("float32")
    if duplicates:  # movies with identical features get identical embeddings: exact ties
        vectors[rng.choice(n, duplicates, replace=False)] = vectors[0]
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_exact_top_k_orders_by_distance_with_ties_to_the_lower_row():
    # Movies 1 and 3 are the same vector; 2 and 4 lie at the same angle (0.3 rad) either side of movie 0.
    embeddings = unit_vectors_at([0.0, 1.0, 0.3, 1.0, -0.3])
    neighbours, distances = exact_top_k(embeddings, 3)
    np.testing.assert_array_equal(neighbours[0], [2, 4, 1])
    np.testing.assert_array_equal(neighbours[1], [3, 2, 0])
    assert distances[1, 0] == 0.0 and distances[3, 0] == 0.0
    np.testing.assert_allclose(distances[0], [2 - 2 * np.cos(0.3)] * 2 + [2 - 2 * np.cos(1.0)])
    only, only_distances = exact_top_k(embeddings, 3, rows=np.array([4, 1]))
    np.testing.assert_array_equal(only, neighbours[[4, 1]])
    np.testing.assert_array_equal(only_distances, distances[[4, 1]])


def unit_vectors_at(angles: list[float]) -> np.ndarray:
    return np.column_stack([np.cos(angles), np.sin(angles)])


@pytest.mark.slow
def test_top_10_identical_to_brute_force_at_ml_latest_small_shape():
    embeddings = unit_vectors(*ML_LATEST_SMALL_SHAPE, duplicates=300)
    neighbours, distances = nearest_neighbours(embeddings, 10)
    np.testing.assert_array_equal(neighbours, exact_top_k(embeddings, 10)[0])
    direct = np.sum((embeddings[:, None, :].astype("float64") - embeddings[neighbours].astype("float64")) ** 2, axis=2)
    np.testing.assert_allclose(distances, direct, atol=1e-5)


@pytest.mark.parametrize("duplicates", [0, 40])
@pytest.mark.parametrize("block_elements", [1, 997, 50_000])
def test_blocked_top_k_equals_brute_force_for_any_block_size(block_elements, duplicates):
    embeddings = unit_vectors(500, 8, seed=3, duplicates=duplicates)
    neighbours, _ = nearest_neighbours(embeddings, 7, block_elements=block_elements)
    np.testing.assert_array_equal(neighbours, exact_top_k(embeddings, 7)[0])
    np.testing.assert_array_equal(neighbours, exact_top_k(embeddings, 7, block_elements=block_elements)[0])


def test_memory_mapped_matrix_equals_in_memory_matrix(tmp_path):
    embeddings = unit_vectors(1_500, seed=5)
    path = tmp_path / "matrix.npy"
    DistanceMatrixFile(embeddings, block_rows=256).write_npy(path)
    stored = np.load(path, mmap_mode="r")
    expected = squared_distance_matrix(embeddings)
    assert stored.dtype == np.float32 and stored.shape == (1_500, 1_500)
    np.testing.assert_array_equal(stored, expected)
    np.testing.assert_array_equal(stored, stored.T)


@dg.asset(name="movie_embeddings", io_manager_key="numpy_io_manager")
def fixed_movie_embeddings() -> np.ndarray:
    return unit_vectors(300, seed=11)


def materialize_matrix(tmp_path, max_movies: int, base_path: str | None = None) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [fixed_movie_embeddings, embedding_distance_matrix, checks.distance_matrix_well_formed, checks.distance_matrix_matches_embeddings],
        resources={"numpy_io_manager": ArtifactStore(base_path=base_path or str(tmp_path), format="npy")},
        run_config={"ops": {"embedding_distance_matrix": {"config": {"max_movies": max_movies}}}},
    )


def test_distance_matrix_is_written_up_to_max_movies_and_checked(tmp_path):
    result = materialize_matrix(tmp_path, max_movies=300)
    assert result.success
    stored = np.load(tmp_path / "embedding_distance_matrix.npy")
    np.testing.assert_array_equal(stored, squared_distance_matrix(unit_vectors(300, seed=11)))
    evaluations = result.get_asset_check_evaluations()
    assert {e.check_name for e in evaluations} == {"distance_matrix_well_formed", "distance_matrix_matches_embeddings"}
    assert all(e.passed for e in evaluations)


class StreamingOnlyFileSystem(MemoryFileSystem):
    """fsspec's in-memory filesystem standing in for s3:// or gs:// (docs/scaling.md), on which only
    put_file and get_file may open a file: reading or writing an artifact whole (`read_bytes`,
    `write_bytes`) would hold it in memory."""

    protocol = "streamingonly"
    store: dict = {}
    pseudo_dirs = [""]
    streaming = False

    def put_file(self, lpath, rpath, **kwargs):
        with self._streaming():
            return super().put_file(lpath, rpath, **kwargs)

    def get_file(self, rpath, lpath, **kwargs):
        with self._streaming():
            return super().get_file(rpath, lpath, **kwargs)

    @contextmanager
    def _streaming(self):
        self.streaming = True
        try:
            yield
        finally:
            self.streaming = False

    def _open(self, path, mode="rb", **kwargs):
        if not self.streaming:
            raise AssertionError(f"{path} opened ({mode}) to be read or written whole instead of streamed")
        return super()._open(path, mode, **kwargs)


fsspec.register_implementation(StreamingOnlyFileSystem.protocol, StreamingOnlyFileSystem, clobber=True)


def test_distance_matrix_streams_to_an_object_store_path(tmp_path):
    # Written with put_file, and read back with get_file by the two checks, never whole in memory.
    result = materialize_matrix(tmp_path, max_movies=300, base_path="streamingonly://recsys_test/artifacts")
    assert result.success and len(result.get_asset_check_evaluations()) == 2
    assert all(e.passed for e in result.get_asset_check_evaluations())
    stored, local = UPath("streamingonly://recsys_test/artifacts/embedding_distance_matrix.npy"), tmp_path / "downloaded.npy"
    stored.fs.get_file(stored.path, str(local))
    np.testing.assert_array_equal(np.load(local), squared_distance_matrix(unit_vectors(300, seed=11)))
    with pytest.raises(AssertionError, match="instead of streamed"):  # the guard itself works
        stored.read_bytes()


def test_distance_matrix_above_max_movies_is_not_written_and_says_why(tmp_path):
    result = materialize_matrix(tmp_path, max_movies=299)
    assert result.success
    assert not (tmp_path / "embedding_distance_matrix.npy").exists()
    assert [m.asset_key for m in result.get_asset_materialization_events()] == [dg.AssetKey("movie_embeddings")]
    observations = [e.asset_observation_data.asset_observation for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"]
    assert len(observations) == 1 and "exceed max_movies=299" in observations[0].metadata["skipped"].value
    assert result.get_asset_check_evaluations() == []


def similar_movies_fixture(n: int = 400, k: int = 5):
    embeddings = unit_vectors(n, 16, seed=21, duplicates=10)
    movie_features = pd.DataFrame({"movieId": np.arange(1, n + 1) * 3, "title": [f"Movie {i}" for i in range(n)]})
    neighbours, distances = nearest_neighbours(embeddings, k)
    return similar_movies_table(movie_features, neighbours, distances), embeddings, movie_features


@pytest.mark.parametrize("checked_movies", [10_000, 50])
def test_similar_movies_check_passes_on_exact_neighbours(monkeypatch, checked_movies):
    monkeypatch.setattr(checks, "CHECKED_MOVIES", checked_movies)
    table, embeddings, movie_features = similar_movies_fixture()
    result = checks.similar_movies_are_nearest(similar_movies=table, movie_embeddings=embeddings, movie_features=movie_features)
    assert result.passed
    assert result.metadata["checked_movies"].value == min(checked_movies, 400)


def test_similar_movies_check_fails_when_a_closer_movie_is_left_out(monkeypatch):
    monkeypatch.setattr(checks, "CHECKED_MOVIES", 50)
    _, embeddings, movie_features = similar_movies_fixture()
    # Each movie lists its 2nd..6th nearest: distinct, correct distances, but the nearest is missing.
    neighbours, distances = nearest_neighbours(embeddings, 6)
    table = similar_movies_table(movie_features, neighbours[:, 1:], distances[:, 1:])
    result = checks.similar_movies_are_nearest(similar_movies=table, movie_embeddings=embeddings, movie_features=movie_features)
    assert not result.passed
    assert result.metadata["movies_with_a_closer_unlisted_movie"].value > 0


def test_similar_movies_check_fails_on_a_repeated_neighbour(monkeypatch):
    table, embeddings, movie_features = similar_movies_fixture()
    table.loc[table["rank"] == 2, ["similar_movieId", "distance"]] = table.loc[table["rank"] == 1, ["similar_movieId", "distance"]].to_numpy()
    result = checks.similar_movies_are_nearest(similar_movies=table, movie_embeddings=embeddings, movie_features=movie_features)
    assert not result.passed
    assert result.metadata["movies_with_repeated_or_unordered_neighbours"].value == 400
