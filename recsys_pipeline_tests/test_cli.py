"""The `recsys` command against artifacts materialized once per session from the small synthetic dataset."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys_pipeline import cli, layout, ranking, releases
from recsys_pipeline.sequential import SequentialModel
from recsys_pipeline.standardisation import FittedScalers

REPO_ROOT = Path(__file__).resolve().parents[1]
LISTING_KEYS = {"rank", "movieId", "title", "genres"}


@pytest.fixture(scope="session")
def data_dir(materialized_data_dir) -> Path:
    return materialized_data_dir


def artifact(data_dir: Path, name: str) -> Path:
    return layout.artifact_path(data_dir, name)


@pytest.fixture(scope="session")
def movie_features(data_dir) -> pd.DataFrame:
    return pd.read_parquet(artifact(data_dir, "movie_features"))


@pytest.fixture(scope="session")
def rating_splits(data_dir) -> pd.DataFrame:
    return pd.read_parquet(artifact(data_dir, "rating_splits"))


def recsys(capsys, *argv: str) -> tuple[int, str, str]:
    """Run the command in this process: exit status, stdout, stderr."""
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def recsys_json(capsys, data_dir: Path, *argv: str) -> list[dict]:
    status, out, err = recsys(capsys, *argv, "--json", "--data-dir", str(data_dir))
    assert status == 0, err
    return json.loads(out)


def unambiguous_title(movie_features: pd.DataFrame) -> tuple[int, str]:
    """A movie whose title is part of no other title, so that the title alone finds it."""
    lowercase = movie_features["title"].str.lower()
    for movie_id, title in movie_features[["movieId", "title"]].itertuples(index=False):
        if lowercase.str.contains(title.lower(), regex=False).sum() == 1:
            return int(movie_id), title
    raise AssertionError("every synthetic title is part of another")


def copy_data(data_dir: Path, target: Path) -> Path:
    """A copy of the data directory: artifacts and releases."""
    shutil.copytree(data_dir, target, dirs_exist_ok=True)
    return target


def released_file(data_dir: Path, asset: str) -> Path:
    return releases.current(layout.releases_dir(data_dir)).path(layout.file_name(asset))


# --- similar --------------------------------------------------------------------------------------


def test_similar_lists_k_other_movies_nearest_first(capsys, data_dir, movie_features):
    movie_id, title = unambiguous_title(movie_features)
    listing = recsys_json(capsys, data_dir, "similar", title, "-k", "7")
    assert len(listing) == 7
    assert all(LISTING_KEYS | {"distance"} <= set(movie) for movie in listing)
    assert movie_id not in [movie["movieId"] for movie in listing]
    distances = [movie["distance"] for movie in listing]
    assert distances == sorted(distances) and 0.0 <= distances[0] and distances[-1] <= 4.0


def test_similar_agrees_with_the_similar_movies_asset_and_extends_beyond_its_ten(capsys, data_dir, movie_features):
    stored = pd.read_parquet(data_dir / layout.ARTIFACTS_DIR / "similar_movies.parquet")
    movie_id = int(movie_features["movieId"].iloc[5])
    expected = stored[stored["movieId"] == movie_id].sort_values("rank")
    ten = recsys_json(capsys, data_dir, "similar", str(movie_id))
    assert [movie["movieId"] for movie in ten] == expected["similar_movieId"].tolist()
    np.testing.assert_allclose([movie["distance"] for movie in ten], expected["distance"], atol=1e-6)
    thirty = recsys_json(capsys, data_dir, "similar", str(movie_id), "-k", "30")
    assert len(thirty) == 30 and thirty[:10] == ten


def test_similar_prints_a_table_by_default(capsys, data_dir, movie_features):
    movie_id, title = unambiguous_title(movie_features)
    status, out, _ = recsys(capsys, "similar", title.upper(), "-k", "4", "--data-dir", str(data_dir))
    lines = out.splitlines()
    assert status == 0
    assert lines[0] == f"The 4 movies nearest to {title} [movieId {movie_id}] (squared embedding distance):"
    assert lines[1].split() == ["rank", "movieId", "title", "genres", "distance"]
    assert len(lines) == 2 + 4 and lines[2].split()[0] == "1"


def test_an_unknown_title_fails_naming_close_matches(capsys, data_dir, movie_features):
    _, title = unambiguous_title(movie_features)
    misspelt = title[:2] + title[3] + title[2] + title[4:]  # two letters swapped
    assert misspelt != title
    status, out, err = recsys(capsys, "similar", misspelt, "--data-dir", str(data_dir))
    assert status == 1 and out == ""
    assert f"no movie titled '{misspelt}'" in err and "Close matches:" in err and title in err


def test_a_title_part_shared_by_several_movies_fails_listing_them(capsys, data_dir, movie_features):
    word = "the"  # in several synthetic titles ("..., The", "...of the Night")
    sharing = movie_features[movie_features["title"].str.lower().str.contains(word)]
    assert len(sharing) > 1
    status, _, err = recsys(capsys, "similar", word, "--data-dir", str(data_dir))
    assert status == 1 and f"matches {len(sharing)} movies" in err
    assert f"[movieId {sharing['movieId'].iloc[0]}]" in err


# --- recommend ------------------------------------------------------------------------------------


def test_recommend_for_a_user_prints_the_served_list_of_unrated_movies(capsys, data_dir, movie_features, rating_splits):
    user_id = int(rating_splits["userId"].value_counts().idxmax())
    rated = set(rating_splits.loc[rating_splits["userId"] == user_id, "movieId"])
    assert set(rating_splits.loc[rating_splits["userId"] == user_id, "split"]) == {"train", "validation", "test"}
    listing = recsys_json(capsys, data_dir, "recommend", "--user", str(user_id))
    assert len(listing) == 10
    assert all(LISTING_KEYS | {"score"} <= set(movie) for movie in listing)
    assert not rated & {movie["movieId"] for movie in listing}
    scores = [movie["score"] for movie in listing]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == len(scores)  # no ties: unclipped scores
    served = pd.read_parquet(released_file(data_dir, "user_recommendations")).query("userId == @user_id").sort_values("rank")
    assert [movie["movieId"] for movie in listing] == served["movieId"].head(10).tolist()


def test_user_recommendations_are_the_served_rankers_order(data_dir, movie_features, rating_splits):
    served = pd.read_parquet(released_file(data_dir, "user_recommendations"))
    assert list(served.columns) == ["userId", "rank", "movieId", "title", "score"]
    assert served["userId"].nunique() == rating_splits["userId"].nunique()
    model = SequentialModel.load(released_file(data_dir, "ranking_model"))
    users = pd.read_parquet(released_file(data_dir, "user_genre_averages"))
    scalers = FittedScalers.from_dict(json.loads(released_file(data_dir, "fitted_scalers").read_text()))
    user_id = int(users["userId"].iloc[0])
    # The served ranker fed every rating, as user_recommendations feeds it.
    ranker = ranking.Ranker(model, rating_splits, users, movie_features, scalers)
    first = np.array([0])
    scores = ranker.score_rows(first)[0]
    blended = ranking.standardised(ranker.model_scores(first)) + model.item_item_weight * ranking.standardised(ranker.item_item_scores(first))
    np.testing.assert_allclose(scores, blended[0], rtol=0, atol=1e-9)  # the same sum, added narrow
    excluded = movie_features["movieId"].isin(rating_splits.loc[rating_splits["userId"] == user_id, "movieId"]).to_numpy()
    columns, best = ranking.top_movies(scores[None], 20, excluded[None])
    mine = served[served["userId"] == user_id].sort_values("rank").head(20)
    assert mine["movieId"].tolist() == movie_features["movieId"].to_numpy()[columns[0]].tolist()
    np.testing.assert_allclose(mine["score"], best[0], rtol=1e-6, atol=1e-6)  # the encoder is float32: batches round apart


def test_min_ratings_keeps_only_movies_rated_that_often_in_training(capsys, data_dir, movie_features):
    threshold = int(movie_features["rating_count"].median())
    listing = recsys_json(capsys, data_dir, "recommend", "--genres", "Drama=3.5", "-k", str(len(movie_features)), "--min-ratings", str(threshold))
    counts = movie_features.set_index("movieId")["rating_count"]
    assert len(listing) == (counts >= threshold).sum() < len(movie_features)
    assert min(counts[movie["movieId"]] for movie in listing) >= threshold


def test_a_genre_profile_lists_loved_genres_never_disliked_ones(capsys, data_dir, movie_features):
    listing = recsys_json(capsys, data_dir, "recommend", "--genres", "animation=5,Children=4.5,Horror=1", "-k", "6")
    assert len(listing) == 6
    assert all(LISTING_KEYS | {"score"} <= set(movie) for movie in listing)
    genres = [set(movie["genres"].split("|")) for movie in listing]
    assert all(g & {"Animation", "Children"} and "Horror" not in g for g in genres)
    scores = [movie["score"] for movie in listing]
    assert scores == sorted(scores, reverse=True)
    status, out, _ = recsys(capsys, "recommend", "--genres", "Animation=5,Horror=1", "-k", "3", "--data-dir", str(data_dir))
    assert status == 0 and out.splitlines()[0] == "The 3 best-ranked movies for a new user rating Animation=5, Horror=1:"


def test_an_unknown_user_fails_naming_the_known_range(capsys, data_dir, rating_splits):
    status, out, err = recsys(capsys, "recommend", "--user", "99999", "--data-dir", str(data_dir))
    users = rating_splits["userId"]
    assert status == 1 and out == ""
    assert f"no user 99999 in user_recommendations (users {users.min()}..{users.max()}, {users.nunique()} in all)" in err


def test_an_unknown_genre_fails_naming_close_matches(capsys, data_dir):
    status, _, err = recsys(capsys, "recommend", "--genres", "Animaton=5", "--data-dir", str(data_dir))
    assert status == 1 and "no genre 'Animaton'. Close matches: Animation" in err


def test_malformed_genre_ratings_are_a_usage_error(capsys, data_dir):
    with pytest.raises(SystemExit) as exited:
        cli.main(["recommend", "--genres", "Animation", "--data-dir", str(data_dir)])
    assert exited.value.code == 2
    assert "expected GENRE=STARS pairs" in capsys.readouterr().err


# --- missing or inconsistent artifacts ------------------------------------------------------------


def test_no_release_at_all_asks_for_the_whole_graph(capsys, tmp_path):
    status, _, err = recsys(capsys, "similar", "Heat", "--data-dir", str(tmp_path))
    assert status == 1
    assert "no release published yet" in err
    assert f"run: RECSYS_DATA_DIR={tmp_path.resolve()} dagster asset materialize -m recsys_pipeline.definitions --select '*'" in err


def test_answers_come_from_the_release_not_the_artifacts_being_rewritten(capsys, data_dir, movie_features, tmp_path):
    copy_data(data_dir, tmp_path)
    movie_id = str(movie_features["movieId"].iloc[0])
    before = recsys_json(capsys, tmp_path, "similar", movie_id)
    # A retrain in progress: the artifacts folder holds other embeddings and a half-written model.
    np.save(artifact(tmp_path, "movie_embeddings"), np.zeros((3, 2)))
    artifact(tmp_path, "accepted_model").write_bytes(b"half a model")
    assert recsys_json(capsys, tmp_path, "similar", movie_id) == before


@pytest.mark.parametrize(
    ("asset", "damage"),
    [
        ("movie_embeddings", lambda path: path.write_bytes(b"")),  # a 0-byte .npy
        ("fitted_scalers", lambda path: path.write_text("{}")),  # an empty scalers document
        ("ranking_model", lambda path: path.write_bytes(path.read_bytes()[:100])),  # a truncated .npz
        ("movie_features", lambda path: path.unlink()),  # a missing file
    ],
)
def test_a_damaged_release_file_is_named_with_the_commands_that_repair_it(capsys, data_dir, movie_features, tmp_path, asset, damage):
    copy_data(data_dir, tmp_path)
    damaged = released_file(tmp_path, asset)
    damage(damaged)
    question = ["similar", str(movie_features["movieId"].iloc[0])] if asset == "movie_embeddings" else ["recommend", "--genres", "Comedy=4"]
    status, out, err = recsys(capsys, *question, "--data-dir", str(tmp_path))
    assert status == 1 and out == ""
    [line] = err.strip().splitlines()
    assert str(damaged) in line and "recsys rollback" in line and "dagster asset materialize" in line


def test_releases_are_listed_and_an_earlier_one_can_be_made_current(capsys, data_dir, movie_features, tmp_path):
    copy_data(data_dir, tmp_path)
    folder = layout.releases_dir(tmp_path)
    first = releases.current(folder)
    # A second release with other embeddings, as a later retrain would publish.
    files = {name: first.directory / name for name in first.manifest["files"]}
    other = tmp_path / "other_embeddings.npy"
    np.save(other, np.roll(np.load(files["movie_embeddings.npy"]), 1, axis=0))
    files["movie_embeddings.npy"] = other
    second = releases.publish(folder, files, "29991231T000000Z-later", {"val_rmse": 0.5, "run_id": "later"})
    movie_id = str(movie_features["movieId"].iloc[0])
    answer_of_second = recsys_json(capsys, tmp_path, "similar", movie_id)

    listed = recsys_json(capsys, tmp_path, "releases")
    assert [row["release_id"] for row in listed] == [first.release_id, second.release_id]
    assert [row["current"] for row in listed] == ["", "*"]

    status, out, _ = recsys(capsys, "rollback", first.release_id, "--data-dir", str(tmp_path))
    assert status == 0 and first.release_id in out
    assert releases.current_id(folder) == first.release_id
    assert recsys_json(capsys, tmp_path, "similar", movie_id) != answer_of_second

    status, _, err = recsys(capsys, "rollback", "no-such-release", "--data-dir", str(tmp_path))
    assert status == 1 and "no release 'no-such-release'" in err and first.release_id in err


def test_an_empty_answer_prints_an_empty_list(capsys, data_dir):
    assert recsys_json(capsys, data_dir, "recommend", "--genres", "Comedy=4", "--min-ratings", "100000") == []
    status, out, err = recsys(capsys, "recommend", "--genres", "Comedy=4", "--min-ratings", "100000", "--data-dir", str(data_dir))
    assert status == 0 and err == "" and out.startswith("The 0 ")


# --- as a program ---------------------------------------------------------------------------------


def subprocess_env(data_dir: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]), "RECSYS_DATA_DIR": str(data_dir)}


def test_the_installed_command_prints_json(data_dir, movie_features):
    # The console script pyproject.toml installs, where this environment has it; else the module.
    script = Path(sys.executable).with_name("recsys")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "recsys_pipeline.cli"]
    movie_id = int(movie_features["movieId"].iloc[0])
    done = subprocess.run([*command, "similar", str(movie_id), "-k", "3", "--json"], env=subprocess_env(data_dir), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) == 3
    failed = subprocess.run([*command, "similar", "no such movie at all"], env=subprocess_env(data_dir), capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1 and "recsys: error: no movie titled" in failed.stderr


def test_similar_imports_neither_tensorflow_nor_dagster(data_dir, movie_features):
    movie_id = int(movie_features["movieId"].iloc[0])
    program = (
        "import sys\n"
        "from recsys_pipeline.cli import main\n"
        f"assert main(['similar', '{movie_id}', '--json']) == 0\n"
        "print(sorted({'tensorflow', 'keras', 'dagster'} & set(sys.modules)), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", program], env=subprocess_env(data_dir), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "[]"


def test_recommend_imports_no_tensorflow_and_prints_nothing_on_stderr(data_dir, rating_splits):
    user_id = int(rating_splits["userId"].iloc[0])
    for argv in (["recommend", "--user", str(user_id), "--json"], ["recommend", "--genres", "Drama=5,Comedy=1", "--json"]):
        program = (
            "import sys\n"
            "from recsys_pipeline.cli import main\n"
            f"assert main({argv!r}) == 0\n"
            "assert not {'tensorflow', 'keras', 'dagster'} & set(sys.modules), sorted({'tensorflow', 'keras', 'dagster'} & set(sys.modules))\n"
        )
        done = subprocess.run([sys.executable, "-c", program], env=subprocess_env(data_dir), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
        assert len(json.loads(done.stdout)) == 10
