"""What runs without anyone clicking: a retraining job on a schedule, a sensor that retrains when the
source data's content changes, and the declarative conditions that carry new upstream data through
the model, the similarity tables, the ranking model and the served lists to a new release, stopping
at any failing blocking check.
"""

import hashlib
import json
from pathlib import Path

import dagster as dg

from recsys_pipeline.movielens import MOVIES_FILE, RATINGS_FILE
from recsys_pipeline.orchestration.resources import MovieLensSource
from recsys_pipeline.settings import DEFAULT_RETRAIN_CRON, DEFAULT_RETRAIN_TIMEZONE

RETRAIN_TAG = "recsys/retrain"
SOURCE_SHA256_TAG = "recsys/source_sha256"
SOURCE_POLL_SECONDS = 60
HASH_CHUNK_BYTES = 1 << 20

RETRAIN_JOB = dg.define_asset_job(
    "recsys_pipeline",
    selection=dg.AssetSelection.all(),
    description="Retrain from the raw data: every asset, from the MovieLens files to evaluation.",
    tags={RETRAIN_TAG: "true"},
)

# Rebuild when any dependency updates, once every blocking check upstream has passed.
ON_UPSTREAM_UPDATE = dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()
# Downstream of the accepted model only a newly accepted model triggers a rebuild: new features
# alone must not be paired with a model trained on the old ones, nor replace the previous
# model's artifacts when a retrained model failed the regression gate.
ON_ACCEPTED_MODEL_UPDATE = dg.AutomationCondition.eager().ignore(
    dg.AssetSelection.groups("ingest", "features")
) & dg.AutomationCondition.all_deps_blocking_checks_passed()

AUTOMATION_SENSOR = dg.AutomationConditionSensorDefinition(
    "recsys_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Evaluates every asset's automation condition and launches the runs they request.",
)


def retraining_schedule(cron: str = DEFAULT_RETRAIN_CRON, timezone: str = DEFAULT_RETRAIN_TIMEZONE) -> dg.ScheduleDefinition:
    """Retrain from the raw data on `cron` in `timezone`; running as soon as the code location loads."""
    return dg.ScheduleDefinition(
        name="retrain_schedule",
        job=RETRAIN_JOB,
        cron_schedule=cron,
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Retrain from the raw data on '{cron}' ({timezone}).",
    )


def watched_files(location: str) -> list[Path] | None:
    """The local files whose content defines the source data; None for a remote (URL) source."""
    if "://" in location:
        return None
    path = Path(location).expanduser()
    return [path / MOVIES_FILE, path / RATINGS_FILE] if path.is_dir() else [path]


def content_sha256(files: list[Path]) -> str:
    """SHA-256 over the names and bytes of `files`, read in chunks so large files stay cheap in memory."""
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode() + b"\0")
        with open(file, "rb") as stream:
            while chunk := stream.read(HASH_CHUNK_BYTES):
                digest.update(chunk)
    return digest.hexdigest()


@dg.sensor(
    job=RETRAIN_JOB,
    minimum_interval_seconds=SOURCE_POLL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Retrains when the MovieLens files' content changes; the run key is the content's SHA-256, so the same data never triggers twice.",
)
def source_data_changed(context: dg.SensorEvaluationContext, movielens_source: MovieLensSource):
    files = watched_files(movielens_source.location)
    if files is None:
        return dg.SkipReason(f"{movielens_source.location} is remote; the retraining schedule picks up new releases.")
    missing = [str(file) for file in files if not file.is_file()]
    if missing:
        return dg.SkipReason(f"Source file(s) missing: {', '.join(missing)}.")
    previous = json.loads(context.cursor) if context.cursor else {}
    # Size and modification time are compared first; the files are hashed only when they moved.
    stats = {str(file): [file.stat().st_size, file.stat().st_mtime_ns] for file in files}
    if stats == previous.get("stats"):
        return dg.SkipReason("Source files unchanged (same size and modification time).")
    sha256 = content_sha256(files)
    context.update_cursor(json.dumps({"stats": stats, "sha256": sha256}))
    if sha256 == previous.get("sha256"):
        return dg.SkipReason(f"Source files touched but their content is unchanged (sha256 {sha256[:12]}).")
    context.log.info(f"Source content changed: sha256 {sha256}")
    return dg.RunRequest(run_key=sha256, tags={SOURCE_SHA256_TAG: sha256})
