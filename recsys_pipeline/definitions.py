"""The Dagster code location: `dagster dev -w workspace.yaml` or `dagster asset materialize -m recsys_pipeline.definitions`.

Configured by environment variables, read when the definitions load:
- RECSYS_MOVIELENS: a directory of MovieLens CSVs, a local .zip, or an https URL of a .zip
  (default: the GroupLens ml-latest-small zip, downloaded once into the data directory);
- RECSYS_DATA_DIR: where every artifact is written (default ./data);
- RECSYS_SEED: the seed of the split, the initialisation and the shuffling (default 47005);
- RECSYS_EXECUTOR: `in_process` (default) or `multiprocess` (see EXECUTORS).
"""

import os
from pathlib import Path

import dagster as dg

from recsys_pipeline.movielens import DEFAULT_SOURCE
from recsys_pipeline.orchestration import assets
from recsys_pipeline.orchestration.checks import CHECKS
from recsys_pipeline.orchestration.io_managers import ArtifactStore
from recsys_pipeline.orchestration.resources import MovieLensSource, Reproducibility
from recsys_pipeline.splits import DEFAULT_SEED

ARTIFACTS = "artifacts"
EXECUTORS = {
    # One process runs every step in turn: TensorFlow is imported once, not by each of the three steps
    # that need it, and no step pays a process start (about 2 s each here). Best for a small dataset.
    "in_process": dg.in_process_executor,
    # A process per step, two or more at a time, isolated from each other: for large datasets, where
    # steps take minutes. Steps fork from a server that has already imported these definitions (not
    # TensorFlow) instead of each starting a fresh interpreter.
    "multiprocess": dg.multiprocess_executor.configured(
        {"start_method": {"forkserver": {"preload_modules": ["recsys_pipeline.definitions"]}}},
        name="forkserver_multiprocess",
    ),
}


def build_definitions(
    source: str,
    data_dir: str | Path,
    seed: int = DEFAULT_SEED,
    executor: dg.ExecutorDefinition = EXECUTORS["in_process"],
    artifacts_base_path: str | None = None,
) -> dg.Definitions:
    """Definitions reading MovieLens from `source` and writing artifacts under `data_dir`, run by `executor`.

    A distributed deployment (docs/scaling.md) passes e.g. dagster_k8s.k8s_job_executor and an
    object-store `artifacts_base_path` such as s3://bucket/recsys, which every step can reach.
    """
    data_dir = Path(data_dir).expanduser().resolve()
    if "://" not in source:
        source = str(Path(source).expanduser().resolve())
    artifacts = artifacts_base_path or str(data_dir / ARTIFACTS)
    return dg.Definitions(
        assets=dg.load_assets_from_modules([assets]),
        asset_checks=CHECKS,
        executor=executor,
        jobs=[dg.define_asset_job("recsys_pipeline", selection=dg.AssetSelection.all(), description="Every asset, from raw data to evaluation.")],
        resources={
            "movielens_source": MovieLensSource(location=source, cache_dir=str(data_dir)),
            "reproducibility": Reproducibility(seed=seed),
            "io_manager": ArtifactStore(base_path=artifacts, format="parquet"),
            "numpy_io_manager": ArtifactStore(base_path=artifacts, format="npy"),
            "json_io_manager": ArtifactStore(base_path=artifacts, format="json"),
            "keras_io_manager": ArtifactStore(base_path=artifacts, format="keras"),
        },
    )


def _executor_from_environment() -> dg.ExecutorDefinition:
    name = os.environ.get("RECSYS_EXECUTOR", "in_process")
    if name not in EXECUTORS:
        raise ValueError(f"RECSYS_EXECUTOR={name!r}: expected one of {', '.join(EXECUTORS)}")
    return EXECUTORS[name]


defs = build_definitions(
    source=os.environ.get("RECSYS_MOVIELENS", DEFAULT_SOURCE),
    data_dir=os.environ.get("RECSYS_DATA_DIR", "data"),
    seed=int(os.environ.get("RECSYS_SEED", DEFAULT_SEED)),
    executor=_executor_from_environment(),
)
