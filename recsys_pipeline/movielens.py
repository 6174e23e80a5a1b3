"""Finding, fetching and reading the MovieLens CSVs, refusing malformed input with a precise error.

A source is a directory holding the CSVs, a local `.zip`, or an https URL of a `.zip`. Archives are
extracted into a cache folder named after their content hash, so the same archive is extracted once
and a changed archive never mixes with an old extraction.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import urllib.request
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from recsys_pipeline.atomic import atomic_target

DEFAULT_SOURCE = "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip"

MOVIES_FILE = "movies.csv"
RATINGS_FILE = "ratings.csv"
TAGS_FILE = "tags.csv"

MOVIES_COLUMNS = ("movieId", "title", "genres")
RATINGS_COLUMNS = ("userId", "movieId", "rating", "timestamp")
TAGS_COLUMNS = ("userId", "movieId", "tag", "timestamp")

MIN_RATING, MAX_RATING = 0.5, 5.0
MAX_DOWNLOAD_BYTES = 2 * 1024**3
MAX_EXTRACTED_BYTES = 8 * 1024**3
# Rows in an error message; the count says how many more there are.
ROWS_SHOWN = 5


class MovieLensError(ValueError):
    """The MovieLens source is missing, unreadable or does not hold what the pipeline expects."""


def invalid_rows_error(file: str, column: str, rows: np.ndarray, expected: str) -> MovieLensError:
    """An error naming the file, the column, the first offending line numbers and the rule broken."""
    lines = ", ".join(str(line) for line in rows[:ROWS_SHOWN])
    more = f" and {len(rows) - ROWS_SHOWN} more" if len(rows) > ROWS_SHOWN else ""
    return MovieLensError(
        f"{file}, column '{column}': {len(rows)} row(s) break the rule: expected {expected}. "
        f"Offending line(s) {lines}{more} (line 1 is the header)."
    )


def _file_lines(mask: pd.Series | np.ndarray) -> np.ndarray:
    """Line numbers in the CSV of the rows selected by `mask` (the header is line 1)."""
    return np.flatnonzero(np.asarray(mask)) + 2


# --- Locating the source -------------------------------------------------------------------------


def resolve_source(location: str, cache_dir: str | Path) -> Path:
    """Return a directory holding the MovieLens CSVs for `location` (directory, `.zip` or https URL)."""
    cache_dir = Path(cache_dir)
    if location.startswith("http://"):
        raise MovieLensError(f"{location}: refusing a plain-http source; use https.")
    if location.startswith("https://"):
        return extract_archive(download(location, cache_dir / "downloads"), cache_dir / "sources")
    path = Path(location).expanduser()
    if path.is_dir():
        return _folder_with_csvs(path, location)
    if path.is_file():
        return extract_archive(path, cache_dir / "sources")
    raise MovieLensError(
        f"{location}: no such directory or file. Set RECSYS_MOVIELENS to a directory holding "
        f"{MOVIES_FILE} and {RATINGS_FILE}, a .zip of it, or an https URL of a .zip."
    )


def download(url: str, downloads_dir: Path) -> Path:
    """Download `url` once into `downloads_dir`; a partial transfer never lands in the cache."""
    target = downloads_dir / PurePosixPath(url.split("?", 1)[0]).name
    if target.is_file():
        return target
    with atomic_target(target) as temporary, urllib.request.urlopen(url, timeout=60) as response:
        received = 0
        with open(temporary, "wb") as out:
            while chunk := response.read(1 << 20):
                received += len(chunk)
                if received > MAX_DOWNLOAD_BYTES:
                    raise MovieLensError(f"{url}: larger than {MAX_DOWNLOAD_BYTES} bytes; refusing it.")
                out.write(chunk)
    return target


def extract_archive(archive: Path, sources_dir: Path) -> Path:
    """Extract a zip into a folder named by its content hash, refusing members that escape it."""
    if not zipfile.is_zipfile(archive):
        raise MovieLensError(f"{archive}: not a zip archive (expected a directory, a .zip or an https URL).")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()[:16]
    target = sources_dir / f"{archive.stem}-{digest}"
    if not target.is_dir():
        sources_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=sources_dir))
        try:
            with zipfile.ZipFile(archive) as bundle:
                _check_members(archive, bundle.infolist())
                bundle.extractall(staging)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return _folder_with_csvs(target, str(archive))


def _check_members(archive: Path, members: Sequence[zipfile.ZipInfo]) -> None:
    total = 0
    for member in members:
        name = PurePosixPath(member.filename)
        if name.is_absolute() or ".." in name.parts or "\\" in member.filename:
            raise MovieLensError(f"{archive}: member '{member.filename}' would land outside the extraction folder.")
        if (member.external_attr >> 16) & 0o170000 == 0o120000:
            raise MovieLensError(f"{archive}: member '{member.filename}' is a symbolic link; refusing it.")
        total += member.file_size
    if total > MAX_EXTRACTED_BYTES:
        raise MovieLensError(f"{archive}: would extract {total} bytes, over the {MAX_EXTRACTED_BYTES} byte limit.")


def _folder_with_csvs(folder: Path, location: str) -> Path:
    """The folder itself or its only subfolder (as in the GroupLens zip) holding the CSVs."""
    candidates = [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]
    for candidate in candidates:
        if (candidate / RATINGS_FILE).is_file() or (candidate / MOVIES_FILE).is_file():
            return candidate
    raise MovieLensError(f"{location}: holds neither {MOVIES_FILE} nor {RATINGS_FILE}.")


# --- Reading and validating ----------------------------------------------------------------------


def _read_csv(directory: Path, file: str, columns: Sequence[str], dtypes: dict[str, str]) -> pd.DataFrame:
    path = directory / file
    if not path.is_file():
        raise MovieLensError(f"{path}: file is missing (expected columns {', '.join(columns)}).")
    try:
        # utf-8-sig accepts a byte-order mark; the C parser accepts CRLF line endings.
        frame = pd.read_csv(path, encoding="utf-8-sig", dtype=dtypes, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        raise MovieLensError(f"{path}: file is empty (expected a header {','.join(columns)} and rows).") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise MovieLensError(f"{path}: malformed CSV ({error}).") from None
    found = list(frame.columns)
    if found != list(columns):
        missing = [c for c in columns if c not in found]
        extra = [c for c in found if c not in columns]
        raise MovieLensError(
            f"{path}: expected columns {', '.join(columns)} in that order; found {', '.join(found)}"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unexpected {', '.join(extra)}" if extra else "")
            + "."
        )
    if frame.empty:
        raise MovieLensError(f"{path}: has a header but no rows.")
    return frame


def _integer_column(frame: pd.DataFrame, file: str, column: str) -> pd.Series:
    """Parse a column of whole numbers, naming the rows that are not."""
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() | (values != np.floor(values))
    if bad.any():
        raise invalid_rows_error(file, column, _file_lines(bad), "a whole number")
    return values.astype("int64")


def read_movies(directory: Path) -> pd.DataFrame:
    frame = _read_csv(directory, MOVIES_FILE, MOVIES_COLUMNS, {"movieId": "string", "title": "string", "genres": "string"})
    movies = pd.DataFrame(
        {
            "movieId": _integer_column(frame, MOVIES_FILE, "movieId"),
            "title": frame["title"].astype(str).str.strip(),
            "genres": frame["genres"].astype(str),
        }
    )
    for column in ("title", "genres"):
        missing = frame[column].isna()
        if missing.any():
            raise invalid_rows_error(MOVIES_FILE, column, _file_lines(missing), "a non-empty value")
    duplicated = movies["movieId"].duplicated(keep="first")
    if duplicated.any():
        raise invalid_rows_error(MOVIES_FILE, "movieId", _file_lines(duplicated), "each movieId once")
    return movies


def read_ratings(directory: Path) -> pd.DataFrame:
    """Ratings in file order (the split depends on it), typed and range-checked."""
    frame = _read_csv(directory, RATINGS_FILE, RATINGS_COLUMNS, {})
    ratings = pd.DataFrame(
        {
            "userId": _integer_column(frame, RATINGS_FILE, "userId"),
            "movieId": _integer_column(frame, RATINGS_FILE, "movieId"),
            "rating": pd.to_numeric(frame["rating"], errors="coerce").astype("float64"),
            "timestamp": _integer_column(frame, RATINGS_FILE, "timestamp"),
        }
    )
    rating = ratings["rating"]
    off_scale = rating.isna() | (rating < MIN_RATING) | (rating > MAX_RATING) | (rating * 2 != np.round(rating * 2))
    if off_scale.any():
        raise invalid_rows_error(
            RATINGS_FILE, "rating", _file_lines(off_scale), f"a number from {MIN_RATING} to {MAX_RATING} in half stars"
        )
    duplicated = ratings.duplicated(["userId", "movieId"], keep="first")
    if duplicated.any():
        raise invalid_rows_error(RATINGS_FILE, "userId,movieId", _file_lines(duplicated), "one rating per user and movie")
    return ratings


def check_known_movies(ratings: pd.DataFrame, movies: pd.DataFrame, file: str = RATINGS_FILE) -> None:
    """Refuse rows that refer to a movieId absent from movies.csv."""
    unknown = ~ratings["movieId"].isin(movies["movieId"])
    if unknown.any():
        raise invalid_rows_error(file, "movieId", _file_lines(unknown), f"a movieId listed in {MOVIES_FILE}")


def read_tags(directory: Path) -> pd.DataFrame:
    """Tags are optional: a source without tags.csv yields an empty table."""
    if not (directory / TAGS_FILE).is_file():
        return pd.DataFrame({"userId": [], "movieId": [], "tag": [], "timestamp": []}).astype(
            {"userId": "int64", "movieId": "int64", "tag": "string", "timestamp": "int64"}
        )
    frame = _read_csv(directory, TAGS_FILE, TAGS_COLUMNS, {"tag": "string"})
    return pd.DataFrame(
        {
            "userId": _integer_column(frame, TAGS_FILE, "userId"),
            "movieId": _integer_column(frame, TAGS_FILE, "movieId"),
            "tag": frame["tag"].fillna("").astype("string"),
            "timestamp": _integer_column(frame, TAGS_FILE, "timestamp"),
        }
    )
