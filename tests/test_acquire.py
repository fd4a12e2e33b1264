"""Download (verified, resumable, offline-aware) and safe extraction of the photo archive."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import socket
import tarfile
import threading
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from flowerlab.data import acquire
from flowerlab.data.acquire import check_member, extract, fetch, stamp_path
from flowerlab.errors import DownloadError, ExtractError


@dataclass
class Behaviour:
    """What the test server sends for /archive.tgz."""

    payload: bytes = b""
    ranges: bool = True  # honour Range requests with 206
    drop_after: int | None = None  # first response: close the connection after this many bytes
    drop_every: int | None = None  # every response: close the connection after this many bytes
    status: int = 200
    requests: list[str | None] = field(default_factory=list)  # the Range header of each request


class ArchiveHandler(http.server.BaseHTTPRequestHandler):
    behaviour: Behaviour

    def do_GET(self) -> None:
        behaviour = self.server.behaviour  # type: ignore[attr-defined]
        range_header = self.headers.get("Range")
        behaviour.requests.append(range_header)
        if behaviour.status != 200:
            self.send_error(behaviour.status)
            return
        body, start = behaviour.payload, 0
        if range_header and behaviour.ranges:
            start = int(range_header.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        part = body[start:]
        self.send_header("Content-Length", str(len(part)))
        self.end_headers()
        limit = behaviour.drop_after if behaviour.drop_after is not None else behaviour.drop_every
        if limit is not None:
            behaviour.drop_after = None
            self.wfile.write(part[:limit])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)  # the transfer breaks mid-way
            return
        self.wfile.write(part)

    def log_message(self, *args: object) -> None:  # keep the test output quiet
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, Behaviour]]:
    behaviour = Behaviour()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ArchiveHandler)
    httpd.behaviour = behaviour  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/archive.tgz", behaviour
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def no_retry_pause(monkeypatch):
    monkeypatch.setattr(acquire, "RETRY_PAUSE_S", 0.0)


def make_tarball(members: dict[str, bytes], top: str | None = "flower_photos") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"{top}/{name}" if top else name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


ARCHIVE = make_tarball({"LICENSE.txt": b"CC-BY", "daisy/1.jpg": os.urandom(3000), "roses/2.jpg": os.urandom(5000)})
SHA = hashlib.sha256(ARCHIVE).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------------------- fetch


def test_fetch_verifies_and_a_second_fetch_does_not_download(server, tmp_path):
    url, behaviour = server
    behaviour.payload = ARCHIVE
    dest = tmp_path / "resources" / "flower_photos.tgz"
    assert fetch(url, dest, SHA, len(ARCHIVE)) == dest
    assert dest.read_bytes() == ARCHIVE
    assert leftovers(dest.parent) == ["flower_photos.tgz", "flower_photos.tgz.sha256"]
    assert len(behaviour.requests) == 1
    fetch(url, dest, SHA, len(ARCHIVE))
    assert len(behaviour.requests) == 1  # reused: no request at all
    # Without the stamp the file is hashed once more, still without any request.
    stamp_path(dest).unlink()
    fetch(url, dest, SHA, len(ARCHIVE))
    assert len(behaviour.requests) == 1 and stamp_path(dest).exists()


def test_corrupt_download_is_deleted_and_reported(server, tmp_path):
    url, behaviour = server
    behaviour.payload = bytes(len(ARCHIVE))  # right size, wrong content
    dest = tmp_path / "a.tgz"
    with pytest.raises(DownloadError, match=r"sha256 .* expected .*corrupt download was deleted"):
        fetch(url, dest, SHA, len(ARCHIVE))
    assert leftovers(tmp_path) == []


def test_interrupted_download_resumes_with_a_range_request(server, tmp_path):
    url, behaviour = server
    behaviour.payload, behaviour.drop_after = ARCHIVE, 4000
    dest = tmp_path / "a.tgz"
    fetch(url, dest, SHA, len(ARCHIVE))
    assert dest.read_bytes() == ARCHIVE
    assert behaviour.requests == [None, "bytes=4000-"]


def test_partial_file_from_an_earlier_run_is_resumed(server, tmp_path):
    url, behaviour = server
    behaviour.payload = ARCHIVE
    dest = tmp_path / "a.tgz"
    (tmp_path / "a.tgz.part").write_bytes(ARCHIVE[:1234])
    fetch(url, dest, SHA, len(ARCHIVE))
    assert behaviour.requests == ["bytes=1234-"] and dest.read_bytes() == ARCHIVE


def test_partial_file_restarts_when_the_server_cannot_resume(server, tmp_path):
    url, behaviour = server
    behaviour.payload, behaviour.ranges = ARCHIVE, False
    dest = tmp_path / "a.tgz"
    (tmp_path / "a.tgz.part").write_bytes(b"garbage!" * 100)
    fetch(url, dest, SHA, len(ARCHIVE))
    assert behaviour.requests == ["bytes=800-"] and dest.read_bytes() == ARCHIVE


def test_repeated_interruptions_keep_the_partial_file_for_next_time(server, tmp_path):
    url, behaviour = server
    behaviour.payload, behaviour.drop_every = ARCHIVE, 1000  # a very bad connection
    dest = tmp_path / "a.tgz"
    with pytest.raises(DownloadError, match=r"interrupted.*2 times.*run the command again to resume"):
        fetch(url, dest, SHA, len(ARCHIVE), attempts=2)
    assert (tmp_path / "a.tgz.part").read_bytes() == ARCHIVE[:2000]
    assert not dest.exists()
    behaviour.drop_every = None
    fetch(url, dest, SHA, len(ARCHIVE))
    assert behaviour.requests == [None, "bytes=1000-", "bytes=2000-"] and dest.read_bytes() == ARCHIVE


def test_a_server_with_less_data_than_our_partial_file_restarts(server, tmp_path):
    url, behaviour = server
    behaviour.payload = ARCHIVE
    (tmp_path / "a.tgz.part").write_bytes(ARCHIVE[:100] + bytes(len(ARCHIVE) + 10))  # longer than the archive
    fetch(url, tmp_path / "a.tgz", SHA, len(ARCHIVE))
    assert behaviour.requests == [None] and (tmp_path / "a.tgz").read_bytes() == ARCHIVE


def test_a_wrong_existing_archive_is_replaced(server, tmp_path):
    url, behaviour = server
    behaviour.payload = ARCHIVE
    dest = tmp_path / "a.tgz"
    dest.write_bytes(b"not the archive")
    fetch(url, dest, SHA, len(ARCHIVE))
    assert dest.read_bytes() == ARCHIVE and len(behaviour.requests) == 1


def test_too_many_bytes_is_an_error(server, tmp_path):
    url, behaviour = server
    behaviour.payload = ARCHIVE + b"extra"
    with pytest.raises(DownloadError, match="more than the expected"):
        fetch(url, tmp_path / "a.tgz", SHA, len(ARCHIVE))
    assert leftovers(tmp_path) == []


def test_http_errors_name_the_status(server, tmp_path):
    url, behaviour = server
    behaviour.status = 404
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(url, tmp_path / "a.tgz", SHA, len(ARCHIVE))


def test_file_urls_work(tmp_path):
    source = tmp_path / "mirror" / "flower_photos.tgz"
    source.parent.mkdir()
    source.write_bytes(ARCHIVE)
    dest = fetch(source.as_uri(), tmp_path / "a.tgz", SHA, len(ARCHIVE))
    assert dest.read_bytes() == ARCHIVE
    with pytest.raises(DownloadError, match="cannot read"):
        fetch((tmp_path / "missing.tgz").as_uri(), tmp_path / "b.tgz", SHA, len(ARCHIVE))


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/archive.tgz"


def test_offline_names_both_alternatives(tmp_path, monkeypatch):
    with pytest.raises(DownloadError) as refused:
        fetch(closed_port_url(), tmp_path / "a.tgz", SHA, len(ARCHIVE))
    message = str(refused.value)
    assert "--config data_source=PATH" in message and "--config data_source=synthetic" in message
    assert "one subfolder per class" in message

    def no_dns(*args, **kwargs):
        raise urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(acquire.urllib.request, "urlopen", no_dns)
    with pytest.raises(DownloadError, match=r"name resolution.*data_source=synthetic"):
        fetch("https://storage.example/flower_photos.tgz", tmp_path / "a.tgz", SHA, len(ARCHIVE))
    assert leftovers(tmp_path) == []


def test_fetch_cli(tmp_path, capsys):
    status = acquire.cli(["fetch", "--url", closed_port_url(), "--sha256", SHA, "--bytes", str(len(ARCHIVE)),
                          "--dest", str(tmp_path / "a.tgz")])
    err = capsys.readouterr().err
    assert status == 1 and err.count("flowerlab fetch: error:") == 1 and "data_source=synthetic" in err
    assert acquire.cli(["fetch", "--url", "x", "--sha256", "abc", "--bytes", "1", "--dest", "d"]) == 2


# ----------------------------------------------------------------------------- extract


def test_extract_strips_the_top_folder(tmp_path):
    archive = tmp_path / "a.tgz"
    archive.write_bytes(ARCHIVE)
    dest = tmp_path / "resources" / "flower_photos"
    extract(archive, dest)
    assert leftovers(dest) == ["LICENSE.txt", "daisy", "roses"]
    assert leftovers(dest.parent) == ["flower_photos"]  # no temporary folder left
    # A second extraction replaces the folder.
    (dest / "stale.txt").write_text("old")
    assert acquire.cli(["extract", "--archive", str(archive), "--dest", str(dest)]) == 0
    assert leftovers(dest) == ["LICENSE.txt", "daisy", "roses"]


def test_extract_without_a_single_top_folder(tmp_path):
    archive = tmp_path / "a.tgz"
    archive.write_bytes(make_tarball({"a/1.jpg": b"1", "b/2.jpg": b"2"}, top=None))
    extract(archive, tmp_path / "out")
    assert leftovers(tmp_path / "out") == ["a", "b"]


def special_tarball(tmp_path: Path, member: tarfile.TarInfo) -> Path:
    out = tmp_path / "evil.tgz"
    with tarfile.open(out, "w:gz") as tar:
        good = tarfile.TarInfo("top/a/1.jpg")
        good.size = 1
        tar.addfile(good, io.BytesIO(b"1"))
        data = b"x" * member.size if member.isfile() else None
        tar.addfile(member, io.BytesIO(data) if data else None)
    return out


def link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def regular(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 3
    return info


def device(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    return info


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (regular("top/../../escaped.txt"), "contains '..'"),
        (regular("/tmp/absolute.txt"), "absolute path"),
        (link("top/a/link", "../../../../etc/passwd", tarfile.SYMTYPE), "symbolic link .* outside"),
        (link("top/a/abs", "/etc/passwd", tarfile.SYMTYPE), "symbolic link .* outside"),
        (link("top/a/hard", "../outside.txt", tarfile.LNKTYPE), "hard link .* outside"),
        (device("top/a/dev"), "device"),
    ],
)
def test_unsafe_members_are_refused(tmp_path, member, message):
    archive = special_tarball(tmp_path, member)
    dest = tmp_path / "out" / "photos"
    with pytest.raises(ExtractError, match=message):
        extract(archive, dest)
    assert not dest.exists()
    assert leftovers(tmp_path / "out") == []  # the partial extraction was deleted
    assert not (tmp_path / "escaped.txt").exists() and not Path("/tmp/absolute.txt").exists()


def test_links_inside_the_folder_are_allowed():
    check_member(link("top/a/ok", "../b/1.jpg", tarfile.SYMTYPE))
    check_member(link("top/a/hard", "top/b/1.jpg", tarfile.LNKTYPE))


def test_corrupt_or_missing_archive(tmp_path):
    archive = tmp_path / "a.tgz"
    archive.write_bytes(ARCHIVE[: len(ARCHIVE) // 2])
    with pytest.raises(ExtractError, match="not a readable tar archive"):
        extract(archive, tmp_path / "out")
    assert leftovers(tmp_path) == ["a.tgz"]
    with pytest.raises(ExtractError, match="run `flowerlab fetch` first"):
        extract(tmp_path / "none.tgz", tmp_path / "out")
