"""Every kind of bad input is refused with a message naming the file, column, lines and rule; the
valid oddities of real MovieLens files (BOM, CRLF, non-ASCII titles, no year, no genres) just work."""

import hashlib
import re
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys_pipeline import movielens
from recsys_pipeline.definitions import build_definitions
from recsys_pipeline.layout import ARTIFACTS_DIR
from recsys_pipeline.movielens import MovieLensError

MOVIES = (
    "movieId,title,genres\n"
    "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
    '2,"Cité des enfants perdus, La (City of Lost Children, The) (1995)",Adventure|Drama|Fantasy|Mystery|Sci-Fi\n'
    "3,Babylon 5,Sci-Fi\n"
    "4,Amélie (Fabuleux destin d'Amélie Poulain) (2001),(no genres listed)\n"
)
RATINGS_HEADER = "userId,movieId,rating,timestamp\n"
RATING_ROWS = [
    "1,1,4.0,964982703",
    "1,2,0.5,964981247",
    "2,3,5.0,964982224",
    "2,4,3.5,964983815",
    "3,1,2.0,964982931",
]


def write_source(directory: Path, movies: str = MOVIES, ratings: str | None = None, encoding_prefix: bytes = b"") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / movielens.MOVIES_FILE).write_bytes(movies.encode("utf-8", "surrogateescape"))
    ratings = RATINGS_HEADER + "\n".join(RATING_ROWS) + "\n" if ratings is None else ratings
    (directory / movielens.RATINGS_FILE).write_bytes(encoding_prefix + ratings.encode())
    return directory


def with_rating_rows(replacements: dict[int, str]) -> str:
    """The valid ratings with data row i (0-based) replaced; data row i is line i + 2."""
    rows = [replacements.get(i, row) for i, row in enumerate(RATING_ROWS)]
    return RATINGS_HEADER + "\n".join(rows) + "\n"


def ingest(directory: Path) -> tuple[pd.DataFrame, pd.DataFrame, movielens.RatingRepairs]:
    """What the raw_movielens asset does with a directory source."""
    movies = movielens.read_movies(directory)
    ratings, repairs = movielens.repair_ratings(movielens.read_ratings(directory), movies, directory / movielens.RATINGS_FILE)
    return movies, ratings, repairs


# (case, movies.csv, ratings.csv, words the message must contain); None means the valid file.
REFUSALS = [
    ("missing_column", None, "userId,movieId,rating\n1,1,4.0\n", ["ratings.csv", "expected columns userId,movieId,rating,timestamp", "missing timestamp"]),
    ("renamed_column", None, "userId,itemId,rating,timestamp\n1,1,4.0,1\n", ["ratings.csv", "found userId,itemId,rating,timestamp", "missing movieId", "unexpected itemId"]),
    ("extra_column", "movieId,title,genres,year\n1,Toy Story,Comedy,1995\n", None, ["movies.csv", "unexpected year"]),
    ("reordered_columns", None, "movieId,userId,rating,timestamp\n1,1,4.0,1\n", ["ratings.csv", "in that order"]),
    ("empty_file", "", None, ["movies.csv", "file is empty", "expected a header movieId,title,genres"]),
    ("header_only", None, RATINGS_HEADER, ["ratings.csv", "has a header but no rows"]),
    ("truncated_row", None, RATINGS_HEADER + "\n".join(RATING_ROWS[:3]) + "\n2,4,3", ["ratings.csv", "column 'timestamp'", "line(s) 5 (empty)", "a whole number"]),
    ("surplus_field_in_one_row", None, with_rating_rows({1: "1,2,0.5,964981247,oops"}), ["ratings.csv", "malformed CSV", "Expected 4 fields in line 3, saw 5"]),
    ("surplus_field_in_every_row", None, RATINGS_HEADER + "".join(row + ",x\n" for row in RATING_ROWS), ["ratings.csv", "the header names 4 column(s) (userId,movieId,rating,timestamp) but every row has more fields"]),
    ("unclosed_quote", MOVIES + '5,"Heat (1995),Action\n', None, ["movies.csv", "malformed CSV", "EOF inside string starting on line 6"]),
    ("not_utf8", MOVIES.replace("Amélie", "Am\udce9lie"), None, ["movies.csv", "not UTF-8 text", "0xe9"]),
    ("non_integer_user_id", None, with_rating_rows({2: "two,3,5.0,964982224"}), ["ratings.csv", "column 'userId'", "line(s) 4 ('two')", "a whole number"]),
    ("fractional_movie_id", None, with_rating_rows({0: "1,1.5,4.0,964982703"}), ["ratings.csv", "column 'movieId'", "line(s) 2 ('1.5')"]),
    ("negative_user_id", None, with_rating_rows({4: "-3,1,2.0,964982931"}), ["ratings.csv", "column 'userId'", "line(s) 6 ('-3')", "from 0"]),
    ("huge_movie_id", None, with_rating_rows({4: "3,99999999999999999999,2.0,964982931"}), ["ratings.csv", "column 'movieId'", "line(s) 6"]),
    ("non_integer_movie_id_in_movies", MOVIES.replace("3,Babylon 5", "3b,Babylon 5"), None, ["movies.csv", "column 'movieId'", "line(s) 4 ('3b')"]),
    ("rating_not_a_number", None, with_rating_rows({1: "1,2,good,964981247"}), ["ratings.csv", "column 'rating'", "line(s) 3 ('good')", "a number from 0.5 to 5.0 in half stars"]),
    ("rating_nan", None, with_rating_rows({1: "1,2,NaN,964981247"}), ["ratings.csv", "column 'rating'", "line(s) 3 ('NaN')"]),
    ("rating_missing", None, with_rating_rows({1: "1,2,,964981247"}), ["ratings.csv", "column 'rating'", "line(s) 3 (empty)"]),
    ("rating_above_scale", None, with_rating_rows({0: "1,1,5.5,964982703", 3: "2,4,6,964983815"}), ["ratings.csv", "column 'rating'", "2 row(s)", "line(s) 2 ('5.5'), 5 ('6.0')"]),
    ("rating_below_scale", None, with_rating_rows({0: "1,1,0,964982703"}), ["ratings.csv", "column 'rating'", "line(s) 2 ('0.0')"]),
    ("rating_off_half_stars", None, with_rating_rows({0: "1,1,3.7,964982703"}), ["ratings.csv", "column 'rating'", "line(s) 2 ('3.7')", "half stars"]),
    ("rating_infinite", None, with_rating_rows({0: "1,1,inf,964982703"}), ["ratings.csv", "column 'rating'", "line(s) 2 ('inf')"]),
    ("timestamp_nan", None, with_rating_rows({2: "2,3,5.0,NaN"}), ["ratings.csv", "column 'timestamp'", "line(s) 4 ('NaN')"]),
    ("blank_line_inside", None, with_rating_rows({2: ""}), ["ratings.csv", "column 'userId'", "line(s) 4 (empty)"]),
    ("title_missing", MOVIES.replace("3,Babylon 5,Sci-Fi", "3,,Sci-Fi"), None, ["movies.csv", "column 'title'", "line(s) 4", "a non-empty value"]),
    ("genres_missing", MOVIES.replace("3,Babylon 5,Sci-Fi", "3,Babylon 5,"), None, ["movies.csv", "column 'genres'", "line(s) 4", "a non-empty value"]),
    ("duplicate_movie_id", MOVIES + "3,Babylon 5 again,Drama\n", None, ["movies.csv", "column 'movieId'", "line(s) 6 ('3')", "each movieId once"]),
]


def materialize_ingest(source: Path, data_dir: Path) -> None:
    """Run the pipeline's ingest step (the raw_movies/raw_ratings multi-asset) through Dagster."""
    defs = build_definitions(str(source), data_dir)
    dg.materialize([defs.get_assets_def("raw_movies")], resources=defs.resources, instance=dg.DagsterInstance.ephemeral())


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder holding the raw artifacts of a valid source."""
    data_dir = tmp_path_factory.mktemp("ingested")
    materialize_ingest(write_source(tmp_path_factory.mktemp("valid")), data_dir)
    return data_dir


def artifact_hashes(data_dir: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted((data_dir / ARTIFACTS_DIR).iterdir())}


@pytest.mark.parametrize(("movies", "ratings", "expected"), [case[1:] for case in REFUSALS], ids=[case[0] for case in REFUSALS])
def test_bad_input_is_refused_with_a_precise_message_and_nothing_is_written(
    tmp_path: Path, ingested: Path, movies: str | None, ratings: str | None, expected: list[str]
) -> None:
    source = write_source(tmp_path / "source", movies=MOVIES if movies is None else movies, ratings=ratings)
    data_dir = Path(shutil.copytree(ingested, tmp_path / "data"))
    before = artifact_hashes(data_dir)
    assert set(before) == {"raw_movies.parquet", "raw_ratings.parquet"}
    with pytest.raises(MovieLensError) as refusal:
        materialize_ingest(source, data_dir)
    for words in expected:
        assert words in str(refusal.value)
    assert artifact_hashes(data_dir) == before


@pytest.mark.parametrize("missing", [movielens.MOVIES_FILE, movielens.RATINGS_FILE])
def test_missing_file_is_named_and_nothing_is_written(tmp_path: Path, ingested: Path, missing: str) -> None:
    source = write_source(tmp_path / "source")
    (source / missing).unlink()
    data_dir = Path(shutil.copytree(ingested, tmp_path / "data"))
    before = artifact_hashes(data_dir)
    with pytest.raises(MovieLensError, match=rf"{re.escape(missing)}: file is missing \(expected a CSV with columns"):
        materialize_ingest(source, data_dir)
    assert artifact_hashes(data_dir) == before


def test_missing_source_says_what_to_set(tmp_path: Path) -> None:
    with pytest.raises(MovieLensError, match="no such directory or file. Set RECSYS_MOVIELENS"):
        movielens.resolve_source(str(tmp_path / "nowhere"), tmp_path / "cache")


def test_many_offending_rows_are_counted_not_all_listed(tmp_path: Path) -> None:
    rows = [f"1,{movie},4.2,964982703" for movie in range(1, 5)] * 3
    with pytest.raises(MovieLensError) as refusal:
        ingest(write_source(tmp_path, ratings=RATINGS_HEADER + "\n".join(rows) + "\n"))
    assert "12 row(s) break the rule" in str(refusal.value)
    assert "line(s) 2 ('4.2'), 3 ('4.2'), 4 ('4.2'), 5 ('4.2'), 6 ('4.2') and 7 more" in str(refusal.value)


# --- The repair policy: duplicates and unknown movies ----------------------------------------------


# 200 distinct ratings: the 1% repair limit allows 2 rows to be dropped.
MANY_ROWS = [f"{user},{1 + user % 4},3.0,{964982703 + user}" for user in range(1, 201)]


def test_duplicate_ratings_keep_the_latest_and_are_counted(tmp_path: Path) -> None:
    ratings = RATINGS_HEADER + "\n".join(MANY_ROWS) + "\n1,2,1.0,964982800\n2,3,2.5,900000000\n"  # lines 202 (newer), 203 (older)
    _, repaired, repairs = ingest(write_source(tmp_path, ratings=ratings))
    assert (repairs.duplicates_dropped, repairs.duplicate_lines) == (2, (2, 203))
    assert repairs.unknown_movies_dropped == 0
    pairs = repaired.set_index(["userId", "movieId"])["rating"]
    assert pairs[(1, 2)] == 1.0 and pairs[(2, 3)] == 3.0
    assert len(repaired) == len(MANY_ROWS) and list(repaired.index) == list(range(len(repaired)))


def test_ratings_of_unknown_movies_are_dropped_and_counted(tmp_path: Path) -> None:
    ratings = RATINGS_HEADER + "\n".join(MANY_ROWS) + "\n400,99,3.0,964982800\n"
    _, repaired, repairs = ingest(write_source(tmp_path, ratings=ratings))
    assert (repairs.unknown_movies_dropped, repairs.unknown_movie_lines) == (1, (202,))
    assert 99 not in set(repaired["movieId"]) and len(repaired) == len(MANY_ROWS)


def test_more_duplicates_than_the_repair_limit_are_refused(tmp_path: Path) -> None:
    ratings = RATINGS_HEADER + "\n".join(MANY_ROWS + MANY_ROWS[:3]) + "\n"  # 3 duplicates in 203 rows: over 1%
    with pytest.raises(MovieLensError, match=r"'userId,movieId': 3 row\(s\).*one rating per user and movie \(at most 2 duplicates are repaired\)"):
        ingest(write_source(tmp_path, ratings=ratings))


def test_more_unknown_movies_than_the_repair_limit_are_refused(tmp_path: Path) -> None:
    ratings = RATINGS_HEADER + "\n".join(MANY_ROWS + ["401,7,3.0,964982703", "402,8,3.0,964982703", "403,9,3.0,964982703"]) + "\n"
    with pytest.raises(MovieLensError, match=r"column 'movieId': 3 row\(s\).*a movieId listed in movies.csv.*line\(s\) 202 \('7'\), 203 \('8'\), 204 \('9'\)"):
        ingest(write_source(tmp_path, ratings=ratings))


# --- Valid oddities ---------------------------------------------------------------------------------


def test_bom_crlf_non_ascii_no_year_and_no_genres_are_accepted(tmp_path: Path) -> None:
    plain_movies, plain_ratings, _ = ingest(write_source(tmp_path / "plain"))
    odd = write_source(
        tmp_path / "odd",
        movies="\ufeff" + MOVIES.replace("\n", "\r\n"),
        ratings=(RATINGS_HEADER + "\n".join(RATING_ROWS) + "\n\n").replace("\n", "\r\n"),  # and a trailing blank line
        encoding_prefix=b"\xef\xbb\xbf",
    )
    movies, ratings, repairs = ingest(odd)
    pd.testing.assert_frame_equal(movies, plain_movies)
    pd.testing.assert_frame_equal(ratings, plain_ratings)
    assert repairs.rows_dropped == 0
    assert "Amélie (Fabuleux destin d'Amélie Poulain) (2001)" in set(movies["title"])
    assert "Babylon 5" in set(movies["title"]) and "(no genres listed)" in set(movies["genres"])


def test_real_ratings_with_a_bom_and_crlf_are_all_accepted(real_movielens_dir: Path, tmp_path: Path) -> None:
    text = (real_movielens_dir / movielens.RATINGS_FILE).read_bytes()
    assert text.count(b"\r\n") == 100_837  # GroupLens ends lines with CRLF already
    (tmp_path / movielens.RATINGS_FILE).write_bytes(b"\xef\xbb\xbf" + text)
    (tmp_path / movielens.MOVIES_FILE).write_bytes((real_movielens_dir / movielens.MOVIES_FILE).read_bytes())
    movies, ratings, repairs = ingest(tmp_path)
    assert len(ratings) == 100_836 and repairs.rows_dropped == 0
    pd.testing.assert_frame_equal(ratings, movielens.read_ratings(real_movielens_dir))


# --- Random malformed input --------------------------------------------------------------------------

VALID_RATINGS = RATINGS_HEADER + "\n".join(RATING_ROWS) + "\n"
NASTY = ["", ",", "\n", "\r\n", '"', "NaN", "-1", "1e400", "4.5", "\ufeff", "é", "\x00", "\t", " ", "99999999999999999999", "a"]
edit = st.tuples(st.integers(0, 10_000), st.integers(0, 8), st.one_of(st.sampled_from(NASTY), st.text(max_size=4)))


def mutate(text: str, edits: list[tuple[int, int, str]]) -> bytes:
    for position, deleted, inserted in edits:
        at = position % (len(text) + 1)
        text = text[:at] + inserted + text[at + deleted :]
    return text.encode("utf-8", "surrogatepass")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(movie_edits=st.lists(edit, max_size=3), rating_edits=st.lists(edit, max_size=4), cut=st.one_of(st.none(), st.integers(0, 200)), raw=st.binary(max_size=3))
def test_random_malformed_csvs_give_a_clean_result_or_a_movielens_error(
    tmp_path: Path, movie_edits: list, rating_edits: list, cut: int | None, raw: bytes
) -> None:
    ratings = mutate(VALID_RATINGS, rating_edits)
    (tmp_path / movielens.MOVIES_FILE).write_bytes(mutate(MOVIES, movie_edits))
    (tmp_path / movielens.RATINGS_FILE).write_bytes((ratings if cut is None else ratings[:cut]) + raw)
    try:
        movies, repaired, _ = ingest(tmp_path)
    except MovieLensError as refusal:
        assert re.match(r"\S+\.csv", str(refusal))  # names the file first
        return
    # Accepted input is exactly what the pipeline relies on.
    assert movies["movieId"].is_unique and movies["title"].str.len().min() > 0
    assert repaired["rating"].between(0.5, 5.0).all() and (repaired["rating"] * 2 % 1 == 0).all()
    assert not repaired.duplicated(["userId", "movieId"]).any() and repaired["movieId"].isin(movies["movieId"]).all()
    assert all(repaired[column].dtype == np.int64 for column in ("userId", "movieId", "timestamp"))
