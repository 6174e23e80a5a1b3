"""The whole graph under faults: bad sources, SIGKILL during training and during a write, two runs
at once, and the same seed twice. Earlier artifacts are compared by SHA-256 before and after.

Runs use the small synthetic dataset and one epoch (several hundred when a run is to be killed
while training), so each test takes seconds.
"""

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import zipfile
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from recsys_pipeline import movielens
from recsys_pipeline.definitions import build_definitions
from recsys_pipeline.layout import ARTIFACTS_DIR
from recsys_pipeline.orchestration.assets.ingest import RATINGS_NEEDED_NO_REPAIR
from recsys_pipeline_tests.conftest import SMALL_RUN_CONFIG

REPO_ROOT = Path(__file__).resolve().parents[1]
# Ingest and features: the same source and seed must reproduce these byte for byte.
DETERMINISTIC = ["raw_movies.parquet", "raw_ratings.parquet", "rating_splits.parquet", "movie_features.parquet", "user_genre_averages.parquet", "fitted_scalers.json"]


def materialize(source: Path | str, data_dir: Path, run_config: dict = SMALL_RUN_CONFIG, seed: int | None = None) -> dg.ExecuteInProcessResult:
    defs = build_definitions(str(source), data_dir, **({} if seed is None else {"seed": seed}))
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(run_config=run_config, instance=dg.DagsterInstance.ephemeral())


def artifact_hashes(data_dir: Path) -> dict[str, str]:
    """SHA-256 of every file in the artifacts folder, temporary files included."""
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted((data_dir / ARTIFACTS_DIR).iterdir())}


@pytest.fixture(scope="module")
def baseline(materialized_data_dir: Path) -> Path:
    """A data folder holding one complete, successful run's artifacts (`materialize` with its defaults); read only."""
    return materialized_data_dir


@pytest.fixture
def earlier_run(baseline: Path, tmp_path: Path) -> Path:
    """A private copy of the baseline's data folder, for a test to damage."""
    return Path(shutil.copytree(baseline, tmp_path / "data"))


def bad_copy(synthetic_movielens_dir: Path, folder: Path, file: str, edit) -> Path:
    shutil.copytree(synthetic_movielens_dir, folder)
    path = folder / file
    path.write_text(edit(path.read_text()))
    return folder


def replace_line(number: int, text: str):
    def edit(content: str) -> str:
        lines = content.split("\n")
        lines[number - 1] = text
        return "\n".join(lines)

    return edit


BAD_SOURCES = {
    "rating_off_scale": (movielens.RATINGS_FILE, replace_line(3, "1,1,7.5,964982703"), "ratings.csv, column 'rating': 1 row(s) break the rule: expected a number from 0.5 to 5.0 in half stars. Offending line(s) 3 ('7.5')"),
    "missing_column": (movielens.MOVIES_FILE, lambda text: text.replace("movieId,title,genres", "movieId,title", 1), "movies.csv: the header names 2 column(s) (movieId,title) but every row has more fields; expected columns movieId,title,genres"),
    "truncated_ratings": (movielens.RATINGS_FILE, lambda text: text[: text.index("\n", len(text) // 2) + 4], "ratings.csv, column"),
    "empty_movies": (movielens.MOVIES_FILE, lambda text: "", "movies.csv: file is empty"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_SOURCES))
def test_a_bad_source_is_refused_and_every_earlier_artifact_is_unchanged(
    case: str, synthetic_movielens_dir: Path, earlier_run: Path, tmp_path: Path
) -> None:
    file, edit, message = BAD_SOURCES[case]
    source = bad_copy(synthetic_movielens_dir, tmp_path / "bad", file, edit)
    before = artifact_hashes(earlier_run)
    with pytest.raises(movielens.MovieLensError, match=r"^\S+/" + re.escape(message)):
        materialize(source, earlier_run)
    assert artifact_hashes(earlier_run) == before


@pytest.mark.parametrize("kind", ["not_a_zip", "zip_slip", "missing"])
def test_a_bad_archive_or_path_is_refused_and_every_earlier_artifact_is_unchanged(kind: str, earlier_run: Path, tmp_path: Path) -> None:
    source = tmp_path / "ml-latest-small.zip"
    if kind == "not_a_zip":
        source.write_text("<html>Not Found</html>")
    elif kind == "zip_slip":
        with zipfile.ZipFile(source, "w") as bundle:
            bundle.writestr("../../ratings.csv", "userId,movieId,rating,timestamp\n")
    before = artifact_hashes(earlier_run)
    message = {"not_a_zip": "not a zip archive", "zip_slip": "would land outside the extraction folder", "missing": "no such directory or file"}[kind]
    with pytest.raises(dg.Failure, match=message):  # the source's refusal, without the traceback behind it
        materialize(source, earlier_run)
    assert artifact_hashes(earlier_run) == before


@pytest.mark.slow
def test_the_cli_exits_non_zero_naming_the_problem_and_changes_nothing(synthetic_movielens_dir: Path, earlier_run: Path, tmp_path: Path) -> None:
    source = bad_copy(synthetic_movielens_dir, tmp_path / "bad", movielens.RATINGS_FILE, replace_line(5, "2,abc,4.0,964982703"))
    before = artifact_hashes(earlier_run)
    completed = subprocess.run(
        [Path(sys.executable).with_name("dagster"), "asset", "materialize", "-m", "recsys_pipeline.definitions", "--select", "*"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "RECSYS_MOVIELENS": str(source), "RECSYS_DATA_DIR": str(earlier_run)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert completed.returncode != 0
    assert f"{source}/ratings.csv, column 'movieId': 1 row(s) break the rule: expected a whole number" in completed.stdout + completed.stderr
    assert "Offending line(s) 5 ('abc')" in completed.stdout + completed.stderr
    assert artifact_hashes(earlier_run) == before


def test_repairs_are_counted_in_metadata_and_flagged_by_a_warning_check(synthetic_movielens_dir: Path, tmp_path: Path) -> None:
    lines = (synthetic_movielens_dir / movielens.RATINGS_FILE).read_text().splitlines()
    source = bad_copy(synthetic_movielens_dir, tmp_path / "repairable", movielens.RATINGS_FILE, lambda text: text + lines[1] + "\n" + "1,999999,3.0,964982703\n")
    defs = build_definitions(str(source), tmp_path / "data")
    result = dg.materialize(
        [defs.get_assets_def("raw_movies")], resources=defs.resources, selection=["raw_movies", "raw_ratings"], instance=dg.DagsterInstance.ephemeral()
    )
    (metadata,) = (event.metadata for event in result.asset_materializations_for_node("raw_movielens") if event.asset_key == dg.AssetKey("raw_ratings"))
    assert (metadata["duplicate_ratings_dropped"].value, metadata["unknown_movie_ratings_dropped"].value) == (1, 1)
    assert metadata["dagster/row_count"].value == len(lines) - 1
    (check,) = result.get_asset_check_evaluations()
    assert (check.check_name, check.passed, check.severity) == (RATINGS_NEEDED_NO_REPAIR, False, dg.AssetCheckSeverity.WARN)
    assert check.metadata["duplicate_lines"].value == "[2]" and check.metadata["unknown_movie_lines"].value == f"[{len(lines) + 2}]"


# --- SIGKILL and concurrent runs, in subprocesses -----------------------------------------------------

RUN_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import dagster as dg
    from recsys_pipeline.definitions import build_definitions
    from recsys_pipeline.orchestration import io_managers

    source, data_dir, epochs, pause_in_model_write = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "pause"
    if pause_in_model_write:  # stop after the model is written to its temporary file, before the rename
        write_model = io_managers.CandidateIOManager.write  # trained_model: the candidate model file

        def write_then_pause(self, obj, path):
            write_model(self, obj, path)
            print("MODEL WRITTEN TO TEMPORARY FILE", flush=True)
            time.sleep(600)

        io_managers.CandidateIOManager.write = write_then_pause
    config = {"ops": {"trained_model": {"config": {"epochs": epochs, "early_stopping_patience": epochs}}}}
    job = build_definitions(source, data_dir).resolve_implicit_global_asset_job_def()
    sys.exit(0 if job.execute_in_process(run_config=config, instance=dg.DagsterInstance.ephemeral()).success else 1)
    """
)


def start_run(source: Path | str, data_dir: Path, epochs: int, pause_in_model_write: bool = False) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", RUN_SCRIPT, str(source), str(data_dir), str(epochs), "pause" if pause_in_model_write else "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"},
        start_new_session=True,  # its own process group, killed as a whole
    )


def kill_when_seen(run: subprocess.Popen, marker: str, timeout_s: float = 120) -> list[str]:
    watchdog = threading.Timer(timeout_s, lambda: os.killpg(run.pid, signal.SIGKILL))
    watchdog.start()
    seen = []
    try:
        assert run.stdout is not None
        for line in run.stdout:
            seen.append(line)
            if marker in line:
                os.killpg(run.pid, signal.SIGKILL)
                break
    finally:
        watchdog.cancel()
        run.wait(timeout=30)
    assert any(marker in line for line in seen), "".join(seen[-30:])
    assert run.returncode == -signal.SIGKILL
    return seen


@pytest.mark.slow
@pytest.mark.parametrize(("moment", "marker"), [("training", "epoch 3/500"), ("writing_the_model", "MODEL WRITTEN TO TEMPORARY FILE")])
def test_sigkill_mid_run_keeps_earlier_artifacts_and_the_next_run_succeeds(
    moment: str, marker: str, synthetic_movielens_dir: Path, earlier_run: Path
) -> None:
    before = artifact_hashes(earlier_run)
    run = start_run(synthetic_movielens_dir, earlier_run, epochs=500 if moment == "training" else 1, pause_in_model_write=moment == "writing_the_model")
    kill_when_seen(run, marker)

    after = artifact_hashes(earlier_run)
    abandoned = set(after) - set(before)
    if moment == "training":
        assert not abandoned
    else:
        assert len(abandoned) == 1 and abandoned.pop().startswith(".trained_model.keras.")
    # Everything written before the kill was rewritten with identical bytes; the rest was not touched.
    assert {name: after[name] for name in before} == before

    assert materialize(synthetic_movielens_dir, earlier_run).success
    assert set(artifact_hashes(earlier_run)) == set(before)  # the abandoned temporary file is gone


@pytest.mark.slow
def test_two_runs_at_once_both_succeed_and_leave_whole_artifacts(synthetic_movielens_dir: Path, baseline: Path, tmp_path: Path) -> None:
    archive = tmp_path / "ml-latest-small.zip"
    with zipfile.ZipFile(archive, "w") as bundle:  # both runs also extract it into the same cache at once
        for path in synthetic_movielens_dir.iterdir():
            bundle.write(path, f"ml-latest-small/{path.name}")
    data_dir = tmp_path / "data"
    runs = [start_run(archive, data_dir, epochs=1) for _ in range(2)]
    outputs = [run.communicate(timeout=240)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]

    hashes = artifact_hashes(data_dir)
    assert set(hashes) == set(artifact_hashes(baseline))  # no temporary file left behind
    assert {name: hashes[name] for name in DETERMINISTIC} == {name: artifact_hashes(baseline)[name] for name in DETERMINISTIC}
    assert len(list((data_dir / "sources").iterdir())) == 1
    embeddings = np.load(data_dir / ARTIFACTS_DIR / "movie_embeddings.npy")
    distances = np.load(data_dir / ARTIFACTS_DIR / "embedding_distance_matrix.npy")
    np.testing.assert_allclose(distances[0], ((embeddings - embeddings[0]) ** 2).sum(axis=1), atol=1e-4)
    assert len(pd.read_parquet(data_dir / ARTIFACTS_DIR / "similar_movies.parquet")) == 10 * len(embeddings)


# --- Reproducibility ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_same_seed_reproduces_splits_and_features_byte_for_byte_and_metrics_closely(
    synthetic_movielens_dir: Path, baseline: Path, tmp_path: Path
) -> None:
    assert materialize(synthetic_movielens_dir, tmp_path / "again").success
    first, second = artifact_hashes(baseline), artifact_hashes(tmp_path / "again")
    assert {name: second[name] for name in DETERMINISTIC} == {name: first[name] for name in DETERMINISTIC}
    metrics = [pd.read_parquet(folder / ARTIFACTS_DIR / "model_evaluation.parquet") for folder in (baseline, tmp_path / "again")]
    pd.testing.assert_frame_equal(metrics[0], metrics[1], atol=1e-4, check_exact=False)

    # The default chronological split does not depend on the seed; the random one does.
    splits_by = {}
    for seed in (1, 2):
        for method in ("chronological", "random"):
            folder = tmp_path / f"seed_{seed}_{method}"
            result = build_definitions(str(synthetic_movielens_dir), folder, seed=seed).resolve_implicit_global_asset_job_def().execute_in_process(
                run_config={"ops": {"rating_splits": {"config": {"method": method}}}},
                instance=dg.DagsterInstance.ephemeral(),
                asset_selection=[dg.AssetKey("rating_splits"), dg.AssetKey("raw_movies"), dg.AssetKey("raw_ratings")],
            )
            assert result.success
            assert artifact_hashes(folder)["raw_ratings.parquet"] == first["raw_ratings.parquet"]
            splits_by[seed, method] = artifact_hashes(folder)["rating_splits.parquet"]
    assert splits_by[1, "chronological"] == splits_by[2, "chronological"] == first["rating_splits.parquet"]
    assert splits_by[1, "random"] != splits_by[2, "random"]


@pytest.mark.slow
def test_an_unreachable_source_fails_the_cli_with_one_line_naming_the_variable(tmp_path: Path) -> None:
    unreachable = "https://127.0.0.1:9/ml-latest-small.zip"  # the discard port: connection refused at once
    completed = subprocess.run(
        [Path(sys.executable).with_name("dagster"), "asset", "materialize", "-m", "recsys_pipeline.definitions", "--select", "*"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "RECSYS_MOVIELENS": unreachable, "RECSYS_DATA_DIR": str(tmp_path / "data")},
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode != 0
    reason = [line for line in output.splitlines() if f"{unreachable}: download failed after {movielens.DOWNLOAD_ATTEMPTS} attempt(s)" in line]
    assert reason and all(line.endswith("Set RECSYS_MOVIELENS to a local copy (a directory holding movies.csv and ratings.csv, a .zip of it) or to an https URL this machine can reach.") for line in reason)
    assert len(reason) <= 2  # the step's failure, and Dagster's summary of the run
    assert "urllib" not in output and "The above exception" not in output  # no traceback of the download behind it

