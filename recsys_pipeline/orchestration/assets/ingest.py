"""Ingest: the two MovieLens files, validated together."""

import dagster as dg

from recsys_pipeline import workflow
from recsys_pipeline.orchestration.metadata import table_metadata
from recsys_pipeline.orchestration.resources import MovieLensSource

RATINGS_NEEDED_NO_REPAIR = "ratings_needed_no_repair"


@dg.multi_asset(
    group_name="ingest",
    outs={
        "raw_movies": dg.AssetOut(
            kinds={"pandas", "parquet"},
            code_version="1",
            description="movies.csv, typed and validated: one row per movieId with its title and pipe-separated genres.",
            is_required=False,
        ),
        "raw_ratings": dg.AssetOut(
            kinds={"pandas", "parquet"},
            code_version="1",
            description="ratings.csv in file order, typed and validated: half-star ratings of movies listed in movies.csv.",
            is_required=False,
        ),
    },
    check_specs=[
        dg.AssetCheckSpec(
            RATINGS_NEEDED_NO_REPAIR,
            asset="raw_ratings",
            description="Warns when duplicate ratings or ratings of unknown movies had to be dropped.",
        )
    ],
    can_subset=True,
)
def raw_movielens(context: dg.AssetExecutionContext, movielens_source: MovieLensSource):
    """Read and validate both CSVs before writing either, so a bad source changes no artifact.

    Either asset may be materialized alone: ratings are validated against the movies either way.
    """
    source = movielens_source.directory()
    ingested = workflow.ingest(source)
    repairs = ingested.repairs
    repair_metadata = {
        "duplicate_ratings_dropped": repairs.duplicates_dropped,
        "unknown_movie_ratings_dropped": repairs.unknown_movies_dropped,
    }
    selected = context.selected_asset_keys
    if dg.AssetKey("raw_movies") in selected:
        yield dg.MaterializeResult(asset_key="raw_movies", value=ingested.movies, metadata={**table_metadata(ingested.movies), "source": str(source)})
    if dg.AssetKey("raw_ratings") in selected:
        ratings = ingested.ratings
        yield dg.MaterializeResult(
            asset_key="raw_ratings",
            value=ratings,
            metadata={
                **table_metadata(ratings),
                "source": str(source),
                "users": int(ratings["userId"].nunique()),
                "rated_movies": int(ratings["movieId"].nunique()),
                **repair_metadata,
            },
        )
    if dg.AssetCheckKey(dg.AssetKey("raw_ratings"), RATINGS_NEEDED_NO_REPAIR) in context.selected_asset_check_keys:
        yield dg.AssetCheckResult(
            asset_key="raw_ratings",
            check_name=RATINGS_NEEDED_NO_REPAIR,
            passed=repairs.rows_dropped == 0,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                **repair_metadata,
                "duplicate_lines": str(list(repairs.duplicate_lines)),
                "unknown_movie_lines": str(list(repairs.unknown_movie_lines)),
            },
        )
