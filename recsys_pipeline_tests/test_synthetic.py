"""The synthetic MovieLens generator: GroupLens format, exact sizes, determinism and learnable skew."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys_pipeline import movielens
from recsys_pipeline.synthetic import GENRE_NAMES, NO_GENRES, SyntheticSpec, generate_movielens, main, write_movielens

# Big enough for the rare features (~0.3% genre-less, ~1.5% year-less movies) to appear.
SPEC = SyntheticSpec(n_users=500, n_movies=2_000, n_ratings=40_000, n_tags=1_000, seed=7)
COLUMNS = {
    "movies": ["movieId", "title", "genres"],
    "ratings": ["userId", "movieId", "rating", "timestamp"],
    "tags": ["userId", "movieId", "tag", "timestamp"],
    "links": ["movieId", "imdbId", "tmdbId"],
}


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_movielens(SPEC, tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="module")
def tables(written: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_csv(written / f"{name}.csv") for name in COLUMNS}


def test_row_counts_and_columns(tables: dict[str, pd.DataFrame]) -> None:
    sizes = {"movies": SPEC.n_movies, "ratings": SPEC.n_ratings, "tags": SPEC.n_tags, "links": SPEC.n_movies}
    for name, columns in COLUMNS.items():
        assert list(tables[name].columns) == columns
        assert len(tables[name]) == sizes[name]


def test_files_round_trip_to_the_generated_tables(tables: dict[str, pd.DataFrame]) -> None:
    generated = generate_movielens(SPEC)
    for name in COLUMNS:
        pd.testing.assert_frame_equal(tables[name], generated[name], check_dtype=False)


def test_project_reader_accepts_the_files(written: Path) -> None:
    movies = movielens.read_movies(written)
    ratings = movielens.read_ratings(written)
    tags = movielens.read_tags(written)
    movielens.check_known_movies(ratings, movies)
    movielens.check_known_movies(tags, movies, movielens.TAGS_FILE)
    assert (len(movies), len(ratings), len(tags)) == (SPEC.n_movies, SPEC.n_ratings, SPEC.n_tags)


def test_ids_are_valid(tables: dict[str, pd.DataFrame]) -> None:
    movie_ids = tables["movies"]["movieId"]
    assert movie_ids.is_unique and (movie_ids > 0).all()
    assert movie_ids.max() > len(movie_ids)  # gaps, as in GroupLens' ids
    assert tables["ratings"]["movieId"].isin(movie_ids).all()
    assert tables["tags"]["movieId"].isin(movie_ids).all()
    assert (tables["links"]["movieId"] == movie_ids).all()
    assert sorted(tables["ratings"]["userId"].unique()) == list(range(1, SPEC.n_users + 1))


def test_ratings_are_distinct_half_stars_sorted_by_user_then_time(tables: dict[str, pd.DataFrame]) -> None:
    ratings = tables["ratings"]
    assert not ratings.duplicated(["userId", "movieId"]).any()
    rating = ratings["rating"]
    assert rating.between(0.5, 5.0).all() and (rating * 2 == np.round(rating * 2)).all()
    years = pd.to_datetime(ratings["timestamp"], unit="s").dt.year
    assert years.between(1996, 2018).all()
    assert ratings.equals(ratings.sort_values(["userId", "timestamp"], kind="stable"))


def test_ratings_are_written_like_grouplens(written: Path) -> None:
    first_rows = (written / "ratings.csv").read_text().splitlines()[1:50]
    assert all(row.split(",")[2] in {f"{0.5 * stars:.1f}" for stars in range(1, 11)} for row in first_rows)


def test_titles_and_genres_look_like_movielens(tables: dict[str, pd.DataFrame]) -> None:
    titles, genres = tables["movies"]["title"], tables["movies"]["genres"]
    with_year = titles.str.contains(r" \((?:19[2-9]\d|200\d|201[0-8])\)$")
    assert 0 < (~with_year).sum() < 0.05 * len(titles)
    assert titles.str.contains(",").any()  # quoted by the CSV writer, yet read back whole
    assert titles.map(str.isascii).mean() < 1
    listed = genres[genres != NO_GENRES].str.split("|")
    assert 0 < (genres == NO_GENRES).sum() < 0.02 * len(genres)
    assert set(listed.explode()) <= set(GENRE_NAMES)
    assert listed.map(len).between(1, 5).all() and listed.map(len).max() > 1


def test_same_spec_is_byte_identical_and_seed_matters(tmp_path: Path) -> None:
    spec = SyntheticSpec()
    first, second = write_movielens(spec, tmp_path / "a"), write_movielens(spec, tmp_path / "b")
    other_seed = write_movielens(SyntheticSpec(seed=1), tmp_path / "c")
    for name in COLUMNS:
        assert (first / f"{name}.csv").read_bytes() == (second / f"{name}.csv").read_bytes()
    assert (first / "ratings.csv").read_bytes() != (other_seed / "ratings.csv").read_bytes()


def test_popularity_is_skewed(tables: dict[str, pd.DataFrame]) -> None:
    counts = tables["ratings"]["movieId"].value_counts()
    top_share = counts.iloc[: SPEC.n_movies // 100].sum() / SPEC.n_ratings
    assert top_share > 0.05  # the top 1% of movies hold over five times their share
    assert tables["ratings"]["userId"].value_counts().max() > 5 * SPEC.n_ratings / SPEC.n_users


def test_per_movie_means_beat_the_global_mean(tables: dict[str, pd.DataFrame]) -> None:
    ratings = tables["ratings"]
    in_train = np.random.default_rng(0).random(len(ratings)) < 0.5
    train, test = ratings[in_train], ratings[~in_train]
    global_mean = train["rating"].mean()
    movie_means = test["movieId"].map(train.groupby("movieId")["rating"].mean()).fillna(global_mean)

    def rmse(predicted: pd.Series | float) -> float:
        return float(np.sqrt(((test["rating"] - predicted) ** 2).mean()))

    assert rmse(movie_means) < 0.95 * rmse(global_mean)


@settings(max_examples=25, deadline=None)
@given(n_users=st.integers(1, 30), n_movies=st.integers(1, 40), density=st.floats(0, 1), seed=st.integers(0, 2**32))
def test_any_valid_spec_gives_exact_distinct_ratings_for_every_user(
    n_users: int, n_movies: int, density: float, seed: int
) -> None:
    n_ratings = n_users + round(density * n_users * (n_movies - 1))
    ratings = generate_movielens(SyntheticSpec(n_users, n_movies, n_ratings, 5, seed))["ratings"]
    assert len(ratings) == n_ratings
    assert not ratings.duplicated(["userId", "movieId"]).any()
    assert ratings["userId"].nunique() == n_users


@pytest.mark.parametrize(
    "spec",
    [
        SyntheticSpec(n_users=10, n_movies=10, n_ratings=9),
        SyntheticSpec(n_users=10, n_movies=10, n_ratings=101),
        SyntheticSpec(n_users=0, n_movies=10, n_ratings=0),
        SyntheticSpec(n_tags=-1),
    ],
)
def test_invalid_spec_raises(spec: SyntheticSpec, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_"):
        write_movielens(spec, tmp_path)
    assert not list(tmp_path.iterdir())


def test_cli_writes_the_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main([str(tmp_path), "--users", "20", "--movies", "50", "--ratings", "300", "--tags", "10", "--seed", "3"])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["links.csv", "movies.csv", "ratings.csv", "tags.csv"]
    assert len(pd.read_csv(tmp_path / "ratings.csv")) == 300
    assert "wrote 300 ratings" in capsys.readouterr().out


def test_cli_refuses_an_impossible_spec(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--users", "20", "--ratings", "10"])
