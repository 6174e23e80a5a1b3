"""Finding, fetching and reading the MovieLens CSVs, refusing malformed input with a precise error.

A source is a directory holding the CSVs, a local `.zip`, or an https URL of a `.zip`. Archives are
checked against a SHA-256 when one is known and extracted into a cache folder named after their
content hash, so the same archive is extracted once and a changed archive never mixes with an old
extraction. See docs/reliability.md for every refusal and the repair policy.
"""

from __future__ import annotations

import hashlib
import http.client
import re
import shutil
import ssl
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from recsys_pipeline.atomic import atomic_target

# SHA-256 of archives whose content is known, by URL; a configured checksum takes precedence.
# The default URL has no entry: its SHA-256 could not be measured here (no network access), and a
# value that was not measured must not be pinned. GroupLens' published MD5 (`<url>.md5`) is checked
# on every download instead; set RECSYS_MOVIELENS_SHA256 to pin the archive you trust.
PINNED_SHA256: dict[str, str] = {}

MOVIES_FILE = "movies.csv"
RATINGS_FILE = "ratings.csv"
TAGS_FILE = "tags.csv"

MOVIES_COLUMNS = ("movieId", "title", "genres")
RATINGS_COLUMNS = ("userId", "movieId", "rating", "timestamp")
TAGS_COLUMNS = ("userId", "movieId", "tag", "timestamp")

MIN_RATING, MAX_RATING = 0.5, 5.0
# Whole numbers above 2**53 do not survive a float64 round trip, so they cannot be trusted as ids.
MAX_WHOLE_NUMBER = 2**53
MAX_DOWNLOAD_BYTES = 2 * 1024**3
MAX_EXTRACTED_BYTES = 8 * 1024**3
DOWNLOAD_ATTEMPTS = 3
DOWNLOAD_TIMEOUT_S = 60
# Repairs (dropping duplicate ratings or ratings of unknown movies) are for blemishes; beyond this
# share of the ratings the source is refused as the wrong or a broken file.
MAX_REPAIRED_SHARE = 0.01
# Rows in an error message; the count says how many more there are.
ROWS_SHOWN = 5


class MovieLensError(ValueError):
    """The MovieLens source is missing, unreadable or does not hold what the pipeline expects."""


def invalid_rows_error(file: str | Path, column: str, lines: np.ndarray, expected: str, found: pd.Series | None = None) -> MovieLensError:
    """An error naming the file, the column, the first offending line numbers (with what they hold) and the rule broken."""
    shown = [str(line) for line in lines[:ROWS_SHOWN]]
    if found is not None:
        shown = [f"{line} ({_shown_value(value)})" for line, value in zip(shown, found.iloc[:ROWS_SHOWN], strict=False)]
    more = f" and {len(lines) - ROWS_SHOWN} more" if len(lines) > ROWS_SHOWN else ""
    return MovieLensError(
        f"{file}, column '{column}': {len(lines)} row(s) break the rule: expected {expected}. "
        f"Offending line(s) {', '.join(shown)}{more} (line 1 is the header)."
    )


def _shown_value(value: Any) -> str:
    return "empty" if pd.isna(value) else repr(str(value))[:40]


def _file_lines(mask: pd.Series) -> np.ndarray:
    """Line numbers in the CSV of the rows selected by `mask` (rows keep their position as index; the header is line 1)."""
    return np.asarray(mask.index[np.asarray(mask, dtype=bool)]) + 2


# --- Locating the source -------------------------------------------------------------------------

Opener = Callable[..., Any]


def resolve_source(location: str, cache_dir: str | Path, sha256: str | None = None, opener: Opener = urllib.request.urlopen) -> Path:
    """Return a directory holding the MovieLens CSVs for `location` (directory, `.zip` or https URL).

    `sha256` is the archive's expected checksum (else the pinned one for the URL, if any). `opener`
    fetches URLs; only tests replace it, with one trusting their own local certificate.
    """
    cache_dir = Path(cache_dir)
    expected = (sha256 or PINNED_SHA256.get(location) or "").lower() or None
    if expected is not None and not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise MovieLensError(f"expected SHA-256 '{sha256}' is not 64 hexadecimal digits.")
    if location.startswith("https://"):
        archive = download(location, cache_dir / "downloads", expected, opener)
        return extract_archive(archive, cache_dir / "sources")
    if "://" in location:
        raise MovieLensError(f"{location}: refusing a non-https source; use an https URL, a directory or a .zip.")
    path = Path(location).expanduser()
    if path.is_dir():
        if expected is not None:
            raise MovieLensError(f"{location}: a SHA-256 was given, but a directory has no single checksum; give the .zip instead.")
        return _folder_with_csvs(path, location)
    if path.is_file():
        if expected is not None:
            _verify_sha256(path, expected, location)
        return extract_archive(path, cache_dir / "sources")
    raise MovieLensError(
        f"{location}: no such directory or file. Set RECSYS_MOVIELENS to a directory holding "
        f"{MOVIES_FILE} and {RATINGS_FILE}, a .zip of it, or an https URL of a .zip."
    )


def file_sha256(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _verify_sha256(path: Path, expected: str, location: str) -> None:
    actual = file_sha256(path)
    if actual != expected:
        raise MovieLensError(f"{location}: SHA-256 is {actual}, expected {expected}; refusing the archive.")


def download(url: str, downloads_dir: Path, sha256: str | None = None, opener: Opener = urllib.request.urlopen) -> Path:
    """Download an https `url` once into `downloads_dir`, verified, retried after a broken transfer.

    The archive is checked against `sha256` when given and against the MD5 the server publishes
    beside it (`<url>.md5`, as GroupLens does) when there is one. Bytes go to a temporary file that
    is renamed into the cache only once complete and verified, so a failure leaves no partial file.
    """
    if not url.startswith("https://"):
        raise MovieLensError(f"{url}: refusing a non-https download.")
    target = downloads_dir / PurePosixPath(url.split("?", 1)[0]).name
    if target.is_file() and (sha256 is None or file_sha256(target) == sha256):
        return target
    attempt = 1
    while True:
        try:
            with atomic_target(target) as temporary:
                _fetch(url, temporary, opener)
                if sha256 is not None:
                    _verify_sha256(temporary, sha256, url)
                _verify_published_md5(url, temporary, opener)
            return target
        # A broken transfer is retried; a checksum mismatch is not, as TLS already rules out
        # corruption in transit: the server holds a different file.
        except (OSError, http.client.HTTPException) as error:
            refused_certificate = isinstance(getattr(error, "reason", None), ssl.SSLCertVerificationError)
            permanent = refused_certificate or (isinstance(error, urllib.error.HTTPError) and error.code < 500)
            if permanent or attempt == DOWNLOAD_ATTEMPTS:
                raise MovieLensError(f"{url}: download failed after {attempt} attempt(s): {error!r}") from error
            time.sleep(attempt)
            attempt += 1


def _fetch(url: str, destination: Path, opener: Opener) -> None:
    with opener(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(destination, "wb") as out:
        announced = response.headers.get("Content-Length")
        if announced is not None and int(announced) > MAX_DOWNLOAD_BYTES:
            raise MovieLensError(f"{url}: announces {announced} bytes, over the {MAX_DOWNLOAD_BYTES} byte limit; refusing it.")
        received = 0
        while chunk := response.read(1 << 20):
            received += len(chunk)
            if received > MAX_DOWNLOAD_BYTES:
                raise MovieLensError(f"{url}: larger than {MAX_DOWNLOAD_BYTES} bytes; refusing it.")
            out.write(chunk)
    if announced is not None and received != int(announced):
        raise http.client.IncompleteRead(b"", int(announced) - received)


def _verify_published_md5(url: str, archive: Path, opener: Opener) -> None:
    """Compare with the MD5 published at `<url>.md5`; a server that publishes none is not an error."""
    try:
        with opener(f"{url}.md5", timeout=DOWNLOAD_TIMEOUT_S) as response:
            published = re.search(rb"\b[0-9a-fA-F]{32}\b", response.read(4096))
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return
        raise
    if published is None:
        raise MovieLensError(f"{url}.md5: holds no MD5 checksum.")
    with open(archive, "rb") as file:
        actual = hashlib.file_digest(file, lambda: hashlib.md5(usedforsecurity=False)).hexdigest()
    if actual != published.group().decode().lower():
        raise MovieLensError(f"{url}: MD5 is {actual}, but the server publishes {published.group().decode()}; refusing the archive.")


def extract_archive(archive: Path, sources_dir: Path) -> Path:
    """Extract a zip into a folder named by its content hash, refusing members that escape it."""
    if not zipfile.is_zipfile(archive):
        raise MovieLensError(f"{archive}: not a zip archive (expected a directory, a .zip or an https URL).")
    target = sources_dir / f"{archive.stem}-{file_sha256(archive)[:16]}"
    if not target.is_dir():
        sources_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=sources_dir))
        try:
            with zipfile.ZipFile(archive) as bundle:
                _check_members(archive, bundle.infolist())
                bundle.extractall(staging)
            staging.rename(target)
        except zipfile.BadZipFile as error:
            raise MovieLensError(f"{archive}: corrupt zip archive ({error}).") from None
        except OSError:
            # Another run extracted the same archive first; its folder has the same content.
            if not target.is_dir():
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return _folder_with_csvs(target, str(archive))


def _check_members(archive: Path, members: Sequence[zipfile.ZipInfo]) -> None:
    total = 0
    for member in members:
        name = PurePosixPath(member.filename)
        if name.is_absolute() or ".." in name.parts or "\\" in member.filename or ":" in member.filename:
            raise MovieLensError(f"{archive}: member '{member.filename}' would land outside the extraction folder; refusing the archive.")
        if (member.external_attr >> 16) & 0o170000 == 0o120000:
            raise MovieLensError(f"{archive}: member '{member.filename}' is a symbolic link; refusing the archive.")
        total += member.file_size
    if total > MAX_EXTRACTED_BYTES:
        raise MovieLensError(f"{archive}: would extract {total} bytes, over the {MAX_EXTRACTED_BYTES} byte limit; refusing the archive.")


def _folder_with_csvs(folder: Path, location: str) -> Path:
    """The folder itself or its only subfolder (as in the GroupLens zip) holding the CSVs."""
    candidates = [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]
    for candidate in candidates:
        if (candidate / RATINGS_FILE).is_file() or (candidate / MOVIES_FILE).is_file():
            return candidate
    raise MovieLensError(f"{location}: holds neither {MOVIES_FILE} nor {RATINGS_FILE}.")


# --- Reading and validating ----------------------------------------------------------------------


def _read_csv(directory: Path, file: str, columns: Sequence[str], dtypes: dict[str, str]) -> pd.DataFrame:
    """The CSV with exactly `columns`, one row per line after the header (row i is line i + 2)."""
    path = directory / file
    if not path.is_file():
        raise MovieLensError(f"{path}: file is missing (expected a CSV with columns {','.join(columns)}).")
    try:
        # utf-8-sig accepts a byte-order mark; the C parser accepts CRLF line endings. Blank lines
        # are kept as empty rows so that row positions stay line numbers.
        frame = pd.read_csv(path, encoding="utf-8-sig", dtype=dtypes, keep_default_na=False, na_values=[""], skip_blank_lines=False)
    except pd.errors.EmptyDataError:
        raise MovieLensError(f"{path}: file is empty (expected a header {','.join(columns)} and rows).") from None
    except pd.errors.ParserError as error:
        # pandas counts lines from 1 in "Expected 4 fields in line 3" but from 0 in "starting at row 5".
        detail = re.sub(r"starting at row (\d+)", lambda row: f"starting on line {int(row.group(1)) + 1}", str(error).strip())
        raise MovieLensError(f"{path}: malformed CSV, expected {len(columns)} comma-separated fields per row ({','.join(columns)}): {detail}.") from None
    except UnicodeDecodeError as error:
        raise MovieLensError(f"{path}: not UTF-8 text (byte {error.object[error.start]:#04x} at offset {error.start}).") from None
    if not isinstance(frame.index, pd.RangeIndex):
        # pandas turns surplus leading fields into an index when every row has more fields than the header.
        header = ",".join(str(column) for column in frame.columns)
        raise MovieLensError(
            f"{path}: the header names {len(frame.columns)} column(s) ({header}) but every row has more fields; expected columns {','.join(columns)}."
        )
    found = [str(column) for column in frame.columns]
    if found != list(columns):
        missing = [c for c in columns if c not in found]
        extra = [c for c in found if c not in columns]
        raise MovieLensError(
            f"{path}: expected columns {','.join(columns)} in that order; found {','.join(found)}"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unexpected {', '.join(extra)}" if extra else "")
            + "."
        )
    # Blank lines at the very end are harmless; blank lines inside are refused as empty values.
    filled = np.flatnonzero(frame.notna().any(axis=1).to_numpy())
    frame = frame.iloc[: filled[-1] + 1] if len(filled) else frame.iloc[:0]
    if frame.empty:
        raise MovieLensError(f"{path}: has a header but no rows.")
    return frame


def _whole_number_column(frame: pd.DataFrame, path: Path, column: str) -> pd.Series:
    """Parse a column of non-negative whole numbers, naming the rows that are not."""
    raw = frame[column]
    if raw.dtype == np.int64:  # the common case: pandas already parsed every value as an integer
        values = raw
        bad = (values < 0) | (values > MAX_WHOLE_NUMBER)
    else:
        values = pd.to_numeric(raw, errors="coerce").astype("float64")
        bad = values.isna() | (values != np.floor(values)) | (values < 0) | (values > MAX_WHOLE_NUMBER)
    if bad.any():
        raise invalid_rows_error(path, column, _file_lines(bad), f"a whole number from 0 to {MAX_WHOLE_NUMBER}", raw[bad])
    return values.astype("int64")


def _non_empty_text_column(frame: pd.DataFrame, path: Path, column: str) -> pd.Series:
    missing = frame[column].isna() | (frame[column].str.strip() == "")
    if missing.any():
        raise invalid_rows_error(path, column, _file_lines(missing), "a non-empty value")
    return frame[column].astype(str)


def read_movies(directory: Path) -> pd.DataFrame:
    """movies.csv: one row per movieId; titles without a year and "(no genres listed)" are valid."""
    path = directory / MOVIES_FILE
    frame = _read_csv(directory, MOVIES_FILE, MOVIES_COLUMNS, {"movieId": "string", "title": "string", "genres": "string"})
    movies = pd.DataFrame(
        {
            "movieId": _whole_number_column(frame, path, "movieId"),
            "title": _non_empty_text_column(frame, path, "title").str.strip(),
            "genres": _non_empty_text_column(frame, path, "genres"),
        }
    )
    duplicated = movies["movieId"].duplicated(keep="first")
    if duplicated.any():
        raise invalid_rows_error(path, "movieId", _file_lines(duplicated), "each movieId once", frame["movieId"][duplicated])
    return movies


def read_ratings(directory: Path) -> pd.DataFrame:
    """Ratings in file order (the split depends on it), typed and range-checked.

    Duplicate (userId, movieId) pairs are kept here; `repair_ratings` decides about them.
    """
    path = directory / RATINGS_FILE
    frame = _read_csv(directory, RATINGS_FILE, RATINGS_COLUMNS, {})
    ratings = pd.DataFrame(
        {
            "userId": _whole_number_column(frame, path, "userId"),
            "movieId": _whole_number_column(frame, path, "movieId"),
            "rating": pd.to_numeric(frame["rating"], errors="coerce").astype("float64"),
            "timestamp": _whole_number_column(frame, path, "timestamp"),
        }
    )
    rating = ratings["rating"]
    off_scale = rating.isna() | (rating < MIN_RATING) | (rating > MAX_RATING) | (rating * 2 != np.round(rating * 2))
    if off_scale.any():
        raise invalid_rows_error(
            path, "rating", _file_lines(off_scale), f"a number from {MIN_RATING} to {MAX_RATING} in half stars", frame["rating"][off_scale]
        )
    return ratings


@dataclass(frozen=True)
class RatingRepairs:
    """What `repair_ratings` dropped, as counts and the first few line numbers of each kind."""

    duplicates_dropped: int
    duplicate_lines: tuple[int, ...]
    unknown_movies_dropped: int
    unknown_movie_lines: tuple[int, ...]

    @property
    def rows_dropped(self) -> int:
        return self.duplicates_dropped + self.unknown_movies_dropped


def repair_ratings(ratings: pd.DataFrame, movies: pd.DataFrame, path: str | Path = RATINGS_FILE) -> tuple[pd.DataFrame, RatingRepairs]:
    """Drop duplicate ratings (keeping each pair's latest) and ratings of movies absent from movies.csv.

    MovieLens keeps one rating per user and movie, the latest, so that is the one kept; a movie
    without a movies.csv row has no content features, so its ratings cannot be used. Either kind
    beyond MAX_REPAIRED_SHARE of the ratings means the wrong or a broken file: it is refused.
    Row order is kept, and the index is renumbered.
    """
    allowed = int(MAX_REPAIRED_SHARE * len(ratings))
    by_time = ratings.sort_values("timestamp", kind="stable")
    superseded = by_time.duplicated(["userId", "movieId"], keep="last").reindex(ratings.index)
    if superseded.sum() > allowed:
        raise invalid_rows_error(
            path, "userId,movieId", _file_lines(superseded), f"one rating per user and movie (at most {allowed} duplicates are repaired)"
        )
    unknown = _unknown_movies(ratings, movies)
    if unknown.sum() > allowed:
        raise invalid_rows_error(
            path, "movieId", _file_lines(unknown), f"a movieId listed in {MOVIES_FILE} (at most {allowed} such ratings are dropped)", ratings["movieId"][unknown]
        )
    dropped = superseded | unknown
    repairs = RatingRepairs(
        duplicates_dropped=int(superseded.sum()),
        duplicate_lines=tuple(int(line) for line in _file_lines(superseded)[:ROWS_SHOWN]),
        unknown_movies_dropped=int((unknown & ~superseded).sum()),
        unknown_movie_lines=tuple(int(line) for line in _file_lines(unknown & ~superseded)[:ROWS_SHOWN]),
    )
    return ratings[~dropped].reset_index(drop=True), repairs


def _unknown_movies(rows: pd.DataFrame, movies: pd.DataFrame) -> pd.Series:
    return ~rows["movieId"].isin(movies["movieId"])


def check_known_movies(ratings: pd.DataFrame, movies: pd.DataFrame, file: str = RATINGS_FILE) -> None:
    """Refuse rows that refer to a movieId absent from movies.csv."""
    unknown = _unknown_movies(ratings, movies)
    if unknown.any():
        raise invalid_rows_error(file, "movieId", _file_lines(unknown), f"a movieId listed in {MOVIES_FILE}", ratings["movieId"][unknown])


def read_tags(directory: Path) -> pd.DataFrame:
    """Tags are optional: a source without tags.csv yields an empty table."""
    if not (directory / TAGS_FILE).is_file():
        return pd.DataFrame({"userId": [], "movieId": [], "tag": [], "timestamp": []}).astype(
            {"userId": "int64", "movieId": "int64", "tag": "string", "timestamp": "int64"}
        )
    path = directory / TAGS_FILE
    frame = _read_csv(directory, TAGS_FILE, TAGS_COLUMNS, {"tag": "string"})
    return pd.DataFrame(
        {
            "userId": _whole_number_column(frame, path, "userId"),
            "movieId": _whole_number_column(frame, path, "movieId"),
            "tag": frame["tag"].fillna("").astype("string"),
            "timestamp": _whole_number_column(frame, path, "timestamp"),
        }
    )
