"""Similarity: movie-to-movie distances in the accepted model's embedding space."""

import dagster as dg
import numpy as np
import pandas as pd

from recsys_pipeline import similarity
from recsys_pipeline.orchestration.automation import ON_ACCEPTED_MODEL_UPDATE
from recsys_pipeline.orchestration.config import DistanceMatrixConfig
from recsys_pipeline.orchestration.io_managers import io_manager_key
from recsys_pipeline.orchestration.metadata import table_metadata

NEIGHBOURS = 10
# Shown with their nearest movies in similar_movies' metadata when the catalogue has them.
WELL_KNOWN_TITLES = (
    "Toy Story (1995)",
    "Matrix, The (1999)",
    "Pulp Fiction (1994)",
    "Forrest Gump (1994)",
    "Star Wars: Episode IV - A New Hope (1977)",
)
EXAMPLE_NEIGHBOURS = 5


@dg.asset(
    group_name="similarity",
    kinds={"numpy"},
    io_manager_key=io_manager_key("embedding_distance_matrix"),
    output_required=False,
    code_version="2",
    automation_condition=ON_ACCEPTED_MODEL_UPDATE,
)
def embedding_distance_matrix(context: dg.AssetExecutionContext, config: DistanceMatrixConfig, movie_embeddings: np.ndarray):
    """Squared Euclidean distances between all movie embeddings (float32, rows and columns in
    movie_features order), from blocked matrix products rather than a Python double loop, streamed
    into a memory-mapped file. Not materialized above `max_movies` movies (see the config)."""
    matrix = similarity.DistanceMatrixFile(np.asarray(movie_embeddings))
    metadata = {"movies": matrix.shape[0], "max_movies": config.max_movies, "megabytes": round(matrix.nbytes / 1e6, 1)}
    if matrix.shape[0] > config.max_movies:
        context.log_event(
            dg.AssetObservation(
                asset_key=context.asset_key,
                metadata={**metadata, "skipped": f"{matrix.shape[0]} movies exceed max_movies={config.max_movies}; use similar_movies"},
            )
        )
        return
    yield dg.MaterializeResult(value=matrix, metadata={**metadata, "shape": str(matrix.shape)})


@dg.asset(group_name="similarity", kinds={"pandas", "parquet"}, code_version="1", automation_condition=ON_ACCEPTED_MODEL_UPDATE)
def similar_movies(movie_embeddings: np.ndarray, movie_features: pd.DataFrame) -> dg.MaterializeResult[pd.DataFrame]:
    """For every movie, its 10 nearest other movies by embedding distance, with rank and distance.

    Found by exact blocked search over the embeddings, the same distances as the distance matrix."""
    neighbours, distances = similarity.nearest_neighbours(np.asarray(movie_embeddings), NEIGHBOURS)
    table = similarity.similar_movies_table(movie_features, neighbours, distances)
    return dg.MaterializeResult(value=table, metadata={**table_metadata(table), "examples": _example_neighbours(table, movie_features)})


def _example_neighbours(table: pd.DataFrame, movie_features: pd.DataFrame) -> dg.MetadataValue:
    """The nearest movies of a few well-known titles, or of the most-rated movies when none is present."""
    titles = set(movie_features["title"])
    examples = [title for title in WELL_KNOWN_TITLES if title in titles]
    if not examples:
        examples = movie_features.nlargest(len(WELL_KNOWN_TITLES), "rating_count", keep="first")["title"].tolist()
    nearest = table[table["rank"] <= EXAMPLE_NEIGHBOURS]
    lines = [f"- **{title}**: {'; '.join(nearest.loc[nearest['title'] == title, 'similar_title'])}" for title in examples]
    return dg.MetadataValue.md("\n".join(lines))
