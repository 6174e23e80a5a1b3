"""Archives and downloads: zip members that escape, links, absurd sizes, non-zips, checksums, broken transfers.

Downloads are tested against a real HTTPS server on 127.0.0.1 whose self-signed certificate is made
in the test with the openssl command; the download function is given an opener that trusts that one
certificate. The https-only rule and every check run unchanged: only the trust store differs, and it
cannot be chosen through configuration.
"""

import functools
import hashlib
import http.server
import io
import ssl
import stat
import subprocess
import threading
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from recsys_pipeline import movielens
from recsys_pipeline.movielens import MovieLensError
from recsys_pipeline.settings import DEFAULT_SOURCE

MOVIES = "movieId,title,genres\n1,Toy Story (1995),Comedy\n"
RATINGS = "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n"


def zip_bytes(members: dict[str, str], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, text in members.items():
            bundle.writestr(name, text)
        for name, pointee in (links or {}).items():
            link = zipfile.ZipInfo(name)
            link.external_attr = (stat.S_IFLNK | 0o777) << 16
            bundle.writestr(link, pointee)
    return buffer.getvalue()


GOOD_ZIP = zip_bytes({"ml-latest-small/movies.csv": MOVIES, "ml-latest-small/ratings.csv": RATINGS})


def test_a_good_zip_is_extracted_once_into_a_folder_named_by_its_hash(tmp_path: Path) -> None:
    archive = tmp_path / "ml.zip"
    archive.write_bytes(GOOD_ZIP)
    directory = movielens.resolve_source(str(archive), tmp_path / "cache", sha256=hashlib.sha256(GOOD_ZIP).hexdigest())
    assert directory.name == "ml-latest-small" and directory.parent.name.startswith("ml-")
    assert movielens.read_ratings(directory)["rating"].tolist() == [4.0]
    assert movielens.resolve_source(str(archive), tmp_path / "cache") == directory
    assert [path.name for path in (tmp_path / "cache" / "sources").iterdir()] == [directory.parent.name]  # no staging left


@pytest.mark.parametrize(
    ("members", "links", "message"),
    [
        ({"../evil.csv": "x", "movies.csv": MOVIES}, None, "member '../evil.csv' would land outside the extraction folder"),
        ({"ml/../../evil.csv": "x"}, None, "member 'ml/../../evil.csv' would land outside the extraction folder"),
        ({"/etc/evil.csv": "x"}, None, "member '/etc/evil.csv' would land outside the extraction folder"),
        ({"ml\\..\\..\\evil.csv": "x"}, None, "would land outside the extraction folder"),
        ({"movies.csv": MOVIES}, {"ratings.csv": "/etc/passwd"}, "member 'ratings.csv' is a symbolic link"),
    ],
    ids=["dotdot", "nested_dotdot", "absolute", "backslashes", "symlink"],
)
def test_zip_slip_and_links_are_refused_and_nothing_is_extracted(tmp_path: Path, members: dict, links: dict | None, message: str) -> None:
    archive = tmp_path / "evil.zip"
    archive.write_bytes(zip_bytes(members, links))
    with pytest.raises(MovieLensError, match=message):
        movielens.resolve_source(str(archive), tmp_path / "cache")
    assert not list((tmp_path / "cache" / "sources").iterdir())
    assert not (tmp_path / "evil.csv").exists()


def test_an_archive_with_an_absurd_uncompressed_size_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "bomb.zip"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("ratings.csv", "0" * 5_000_000)  # compresses to a few kilobytes
    archive.write_bytes(buffer.getvalue())
    monkeypatch.setattr(movielens, "MAX_EXTRACTED_BYTES", 1_000_000)
    with pytest.raises(MovieLensError, match="would extract 5000000 bytes, over the 1000000 byte limit"):
        movielens.resolve_source(str(archive), tmp_path / "cache")


@pytest.mark.parametrize(("content", "message"), [(b"movieId,title\n", "not a zip archive"), (GOOD_ZIP[:-30] + bytes(30), "not a zip archive")])
def test_a_file_that_is_not_a_zip_is_refused(tmp_path: Path, content: bytes, message: str) -> None:
    archive = tmp_path / "ml.zip"
    archive.write_bytes(content)
    with pytest.raises(MovieLensError, match=f"ml.zip: {message}"):
        movielens.resolve_source(str(archive), tmp_path / "cache")


def test_a_zip_with_a_corrupt_member_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "ml.zip"
    corrupt = bytearray(zip_bytes({"ratings.csv": RATINGS * 20}))
    corrupt[40] ^= 0xFF  # inside the stored member's data: its CRC no longer matches
    archive.write_bytes(bytes(corrupt))
    with pytest.raises(MovieLensError, match="corrupt zip archive"):
        movielens.resolve_source(str(archive), tmp_path / "cache")


def test_a_local_zip_with_the_wrong_checksum_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "ml.zip"
    archive.write_bytes(GOOD_ZIP)
    with pytest.raises(MovieLensError, match=f"SHA-256 is {hashlib.sha256(GOOD_ZIP).hexdigest()}, expected {'0' * 64}"):
        movielens.resolve_source(str(archive), tmp_path / "cache", sha256="0" * 64)
    with pytest.raises(MovieLensError, match="is not 64 hexadecimal digits"):
        movielens.resolve_source(str(archive), tmp_path / "cache", sha256="abc")


@pytest.mark.parametrize("location", ["http://files.grouplens.org/datasets/movielens/ml-latest-small.zip", "ftp://example.org/ml.zip"])
def test_non_https_sources_are_refused(tmp_path: Path, location: str) -> None:
    with pytest.raises(MovieLensError, match="refusing a non-https source"):
        movielens.resolve_source(location, tmp_path)
    with pytest.raises(MovieLensError, match="refusing a non-https download"):
        movielens.download(location, tmp_path)


# --- Downloads from a local HTTPS server -------------------------------------------------------------


class ArchiveServer(http.server.ThreadingHTTPServer):
    """Serves `files` (path -> bytes); `truncate_first` paths are cut short on their first request."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ArchiveHandler)
        self.files: dict[str, bytes] = {}
        self.truncate_first: set[str] = set()
        self.requests: list[str] = []


class ArchiveHandler(http.server.BaseHTTPRequestHandler):
    server: ArchiveServer

    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        self.server.requests.append(self.path)
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path in self.server.truncate_first:
            self.server.truncate_first.discard(self.path)
            body = body[: len(body) // 2]
            self.close_connection = True
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return key, cert


@pytest.fixture
def server(certificate: tuple[Path, Path]) -> Iterator[ArchiveServer]:
    key, cert = certificate
    archive_server = ArchiveServer()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    archive_server.socket = context.wrap_socket(archive_server.socket, server_side=True)
    thread = threading.Thread(target=archive_server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield archive_server
    archive_server.shutdown()
    archive_server.server_close()


@pytest.fixture
def opener(certificate: tuple[Path, Path]) -> functools.partial:
    """urlopen trusting only the test's certificate: certificate and host name are still verified."""
    return functools.partial(urllib.request.urlopen, context=ssl.create_default_context(cafile=certificate[1]))


def url_of(server: ArchiveServer, path: str) -> str:
    return f"https://127.0.0.1:{server.server_address[1]}{path}"


def test_download_verifies_checksums_then_caches(tmp_path: Path, server: ArchiveServer, opener) -> None:
    server.files["/ml.zip"] = GOOD_ZIP
    server.files["/ml.zip.md5"] = f"MD5 (ml.zip) = {hashlib.md5(GOOD_ZIP).hexdigest()}\n".encode()
    url = url_of(server, "/ml.zip")
    directory = movielens.resolve_source(url, tmp_path, sha256=hashlib.sha256(GOOD_ZIP).hexdigest(), opener=opener)
    assert movielens.read_movies(directory)["title"].tolist() == ["Toy Story (1995)"]
    assert (tmp_path / "downloads" / "ml.zip").read_bytes() == GOOD_ZIP
    assert server.requests == ["/ml.zip", "/ml.zip.md5"]
    movielens.resolve_source(url, tmp_path, opener=opener)
    assert len(server.requests) == 2  # the cached archive is used


def test_checksum_mismatch_is_refused_and_nothing_is_cached(tmp_path: Path, server: ArchiveServer, opener) -> None:
    server.files["/ml.zip"] = GOOD_ZIP
    with pytest.raises(MovieLensError, match=f"ml.zip: SHA-256 is {hashlib.sha256(GOOD_ZIP).hexdigest()}, expected {'1' * 64}; refusing"):
        movielens.resolve_source(url_of(server, "/ml.zip"), tmp_path, sha256="1" * 64, opener=opener)
    assert not list((tmp_path / "downloads").iterdir())
    assert server.requests == ["/ml.zip"]  # not retried: over TLS a mismatch means a different file


def test_published_md5_mismatch_is_refused(tmp_path: Path, server: ArchiveServer, opener) -> None:
    server.files["/ml.zip"] = GOOD_ZIP
    server.files["/ml.zip.md5"] = b"0123456789abcdef0123456789abcdef  ml.zip\n"
    with pytest.raises(MovieLensError, match="but the server publishes 0123456789abcdef0123456789abcdef; refusing the archive"):
        movielens.resolve_source(url_of(server, "/ml.zip"), tmp_path, opener=opener)
    assert not list((tmp_path / "downloads").iterdir())


def test_a_changed_pinned_checksum_replaces_the_cached_archive(tmp_path: Path, server: ArchiveServer, opener) -> None:
    other = zip_bytes({"movies.csv": MOVIES, "ratings.csv": RATINGS.replace("4.0", "3.0")})
    server.files["/ml.zip"] = GOOD_ZIP
    url = url_of(server, "/ml.zip")
    movielens.download(url, tmp_path, opener=opener)
    server.files["/ml.zip"] = other
    assert movielens.download(url, tmp_path, hashlib.sha256(other).hexdigest(), opener).read_bytes() == other


def test_a_broken_transfer_is_retried_and_never_cached_half(tmp_path: Path, server: ArchiveServer, opener, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(movielens.time, "sleep", lambda seconds: None)
    server.files["/ml.zip"] = GOOD_ZIP
    server.truncate_first.add("/ml.zip")
    target = movielens.download(url_of(server, "/ml.zip"), tmp_path, hashlib.sha256(GOOD_ZIP).hexdigest(), opener)
    assert target.read_bytes() == GOOD_ZIP
    assert server.requests == ["/ml.zip", "/ml.zip", "/ml.zip.md5"]
    assert [path.name for path in tmp_path.iterdir()] == ["ml.zip"]


def test_repeated_broken_transfers_give_up_with_a_clear_error(tmp_path: Path, server: ArchiveServer, opener, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(movielens.time, "sleep", lambda seconds: None)
    server.files["/ml.zip"] = GOOD_ZIP
    server.truncate_first.add("/ml.zip")
    monkeypatch.setattr(movielens, "DOWNLOAD_ATTEMPTS", 1)
    with pytest.raises(MovieLensError, match="ml.zip: download failed after 1 attempt"):
        movielens.download(url_of(server, "/ml.zip"), tmp_path, opener=opener)
    assert not list(tmp_path.iterdir())
    with pytest.raises(MovieLensError, match="download failed after 1 attempt.*404"):
        movielens.download(url_of(server, "/missing.zip"), tmp_path, opener=opener)


def test_an_oversized_download_is_refused(tmp_path: Path, server: ArchiveServer, opener, monkeypatch: pytest.MonkeyPatch) -> None:
    server.files["/ml.zip"] = GOOD_ZIP
    monkeypatch.setattr(movielens, "MAX_DOWNLOAD_BYTES", 100)
    with pytest.raises(MovieLensError, match=f"announces {len(GOOD_ZIP)} bytes, over the 100 byte limit"):
        movielens.download(url_of(server, "/ml.zip"), tmp_path, opener=opener)
    assert not list(tmp_path.iterdir())


def test_an_untrusted_certificate_is_refused(tmp_path: Path, server: ArchiveServer) -> None:
    server.files["/ml.zip"] = GOOD_ZIP
    with pytest.raises(MovieLensError, match="CERTIFICATE_VERIFY_FAILED"):
        movielens.download(url_of(server, "/ml.zip"), tmp_path)  # the default opener trusts only the system's CAs


# --- choosing the source --------------------------------------------------------------------------


@pytest.mark.parametrize("location", ["", "   "])
def test_an_empty_source_is_refused_not_taken_for_the_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, location: str) -> None:
    (tmp_path / "movies.csv").write_text(MOVIES)  # the current folder would pass for a source
    (tmp_path / "ratings.csv").write_text(RATINGS)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MovieLensError, match=r"^RECSYS_MOVIELENS is empty: set it to a directory holding movies.csv and ratings.csv"):
        movielens.resolve_source(location, tmp_path / "cache")


def test_several_subfolders_holding_csvs_are_refused_with_their_names(tmp_path: Path) -> None:
    for name in ("ml-latest-small", "ml-latest-small-old", "notes"):
        (tmp_path / name).mkdir()
    for name in ("ml-latest-small", "ml-latest-small-old"):
        (tmp_path / name / "movies.csv").write_text(MOVIES)
        (tmp_path / name / "ratings.csv").write_text(RATINGS)
    with pytest.raises(MovieLensError, match=r"2 subfolders hold MovieLens CSVs \(ml-latest-small, ml-latest-small-old\); set RECSYS_MOVIELENS to the one to use"):
        movielens.resolve_source(str(tmp_path), tmp_path / "cache")
    assert movielens.resolve_source(str(tmp_path / "ml-latest-small"), tmp_path / "cache") == tmp_path / "ml-latest-small"


def test_a_zip_with_several_datasets_is_refused_with_their_names(tmp_path: Path) -> None:
    archive = tmp_path / "two.zip"
    archive.write_bytes(zip_bytes({f"{name}/{file}": text for name in ("a", "b") for file, text in (("movies.csv", MOVIES), ("ratings.csv", RATINGS))}))
    with pytest.raises(MovieLensError, match=r"2 subfolders hold MovieLens CSVs \(a, b\)"):
        movielens.resolve_source(str(archive), tmp_path / "cache")


def test_an_unreachable_download_says_to_set_the_source_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(movielens.time, "sleep", lambda seconds: None)

    def offline(url: str, timeout: float):
        raise urllib.error.URLError(OSError(-2, "Name or service not known"))

    with pytest.raises(MovieLensError) as refusal:
        movielens.resolve_source(DEFAULT_SOURCE, tmp_path, opener=offline)
    message = str(refusal.value)
    assert "\n" not in message
    assert message.startswith(f"{DEFAULT_SOURCE}: download failed after 3 attempt(s)")
    assert message.endswith("Set RECSYS_MOVIELENS to a local copy (a directory holding movies.csv and ratings.csv, a .zip of it) or to an https URL this machine can reach.")
