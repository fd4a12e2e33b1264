"""Getting the official photos: a verified, resumable download and a safe extraction.

`flowerlab fetch` downloads the archive into `DEST.part` (resuming with an HTTP Range request
when a partial file is there and the server allows it), checks its size and sha256, and only
then renames it to DEST and writes a `DEST.sha256` stamp (digest, size, mtime), so a verified
archive is never downloaded or even re-hashed twice. `flowerlab extract` unpacks it into a
temporary folder beside the destination, refusing any member that could write outside it, and
renames the result into place.
"""

from __future__ import annotations

import argparse
import errno
import http.client
import json
import logging
import os
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from flowerlab import filesystem
from flowerlab.console import configure_logging, positive_int, progress, run_command
from flowerlab.errors import DownloadError, ExtractError
from flowerlab.filesystem import (
    cleanup_on_error,
    remove_path,
    remove_stale_temporaries,
    replace_directory,
    sha256_file,
    temporary_dir_beside,
)

logger = logging.getLogger(__name__)

DOWNLOAD_CHUNK_BYTES = 1 << 20
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_ATTEMPTS = 3
RETRY_PAUSE_S = 2.0
USER_AGENT = "flowerlab (https://github.com/; reproducible-research pipeline)"

OFFLINE_ALTERNATIVES = (
    "Without network access, either point the study at photos already on disk with "
    "`snakemake --config data_source=PATH` (PATH: a local folder with one subfolder per class, "
    "e.g. a copy of flower_photos/), or run it on the small generated set with "
    "`snakemake --config data_source=synthetic` (backbone models then need local weights: "
    "models.<arch>.weights: PATH), or run the offline smoke study, which needs nothing: "
    "`snakemake --cores 2 --configfile config/smoke.yaml`."
)


# ----------------------------------------------------------------------------- verification


@dataclass(frozen=True)
class Expected:
    """What the downloaded file must be."""

    sha256: str
    size: int


def stamp_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256")


def _stamp_for(dest: Path, sha256: str) -> dict[str, object]:
    stat = dest.stat()
    return {"sha256": sha256, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def write_stamp(dest: Path, sha256: str) -> None:
    """Record that `dest`, as it is now (size and mtime), has been verified to have `sha256`."""
    filesystem.write_json(stamp_path(dest), _stamp_for(dest, sha256))


def stamp_matches(dest: Path, expected: Expected) -> bool:
    """True when the stamp says `dest` was verified and the file has not changed since."""
    try:
        stamp = json.loads(stamp_path(dest).read_text(encoding="utf-8"))
        current = _stamp_for(dest, expected.sha256)
    except (OSError, ValueError):
        return False
    return stamp == current and current["bytes"] == expected.size


def verify_file(path: Path, expected: Expected) -> None:
    """Raise DownloadError unless `path` has exactly the expected size and sha256."""
    size = path.stat().st_size
    if size != expected.size:
        raise DownloadError(
            f"{path} has {size:,} bytes, expected {expected.size:,}: the download is incomplete "
            "or the download.bytes setting is wrong"
        )
    digest = sha256_file(path)
    if digest != expected.sha256:
        raise DownloadError(
            f"{path} has sha256 {digest}, expected {expected.sha256}: the file is corrupt or "
            "the download.url/download.sha256 settings do not match"
        )


def reuse_verified(dest: Path, expected: Expected) -> bool:
    """True if `dest` already holds the verified archive; a wrong `dest` is deleted."""
    if not dest.exists():
        return False
    if stamp_matches(dest, expected):
        logger.info("%s is already downloaded and verified (stamp %s)", dest, stamp_path(dest))
        return True
    try:
        verify_file(dest, expected)
    except DownloadError as error:
        logger.warning("%s; deleting it and downloading again", error)
        dest.unlink()
        stamp_path(dest).unlink(missing_ok=True)
        return False
    write_stamp(dest, expected.sha256)
    logger.info("%s is already downloaded; checksum verified", dest)
    return True


# ----------------------------------------------------------------------------- downloading


class _Interrupted(Exception):
    """The transfer stopped early; the partial file is kept for the next attempt."""


def offline_error(url: str, reason: object) -> DownloadError:
    return DownloadError(f"cannot download {url}: {reason}. {OFFLINE_ALTERNATIVES}")


def _open(url: str, offset: int, timeout: float) -> IO[bytes]:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    return urllib.request.urlopen(request, timeout=timeout)


def resumed_offset(response: IO[bytes], offset: int) -> int:
    """Where the response's bytes start: `offset` if the server honoured the Range request.

    A 206 whose Content-Range starts elsewhere, or any other answer (200 from servers without
    range support, file:// URLs), is taken as the whole file from byte 0.
    """
    if not offset or getattr(response, "status", None) != 206:
        return 0
    content_range = response.headers.get("Content-Range", "")  # "bytes START-END/TOTAL"
    try:
        start = int(content_range.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return 0
    return offset if start == offset else 0


def download_once(url: str, part: Path, expected: Expected, timeout: float) -> None:
    """One transfer into `part`, resuming from its current size when the server allows it.

    Raises `_Interrupted` when the connection breaks (the partial file is kept), DownloadError
    for errors that retrying will not fix (HTTP errors, offline, a file bigger than expected).
    """
    offset = part.stat().st_size if part.exists() else 0
    if offset > expected.size:
        logger.warning("%s is larger than the expected archive; starting over", part)
        part.unlink()
        offset = 0
    if offset == expected.size:
        return  # complete already; verification decides if it is right
    try:
        response = _open(url, offset, timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # our Range is past the server's end: start over
            logger.warning("server refused to resume (HTTP 416); starting over")
            part.unlink()
            raise _Interrupted("range not satisfiable") from error
        raise DownloadError(
            f"cannot download {url}: the server answered HTTP {error.code} {error.reason}; "
            "check the download.url setting"
        ) from error
    except urllib.error.URLError as error:
        if urllib.parse.urlsplit(url).scheme == "file":
            raise DownloadError(f"cannot read {url}: {error.reason}") from error
        raise offline_error(url, error.reason) from error
    except (TimeoutError, ConnectionError, http.client.HTTPException) as error:
        # Raised after connecting (e.g. the server hung up before answering): worth a retry.
        raise _Interrupted(repr(error)) from error

    with response:
        start = resumed_offset(response, offset)
        if offset and not start:
            logger.info("server does not support resuming; downloading %s from the start", url)
        elif start:
            logger.info("resuming %s at byte %s", url, f"{start:,}")
        written = start
        with open(part, "r+b" if start else "wb") as out, progress(
            expected.size, f"download {part.name[: -len('.part')]}", unit="B",
            unit_scale=True, unit_divisor=1024, initial=start,
        ) as bar:
            out.seek(start)
            out.truncate()
            while True:
                try:
                    chunk = response.read(DOWNLOAD_CHUNK_BYTES)
                except (http.client.IncompleteRead, ConnectionError, TimeoutError, OSError) as error:
                    raise _Interrupted(f"{error!r} after {written:,} bytes") from error
                if not chunk:
                    break
                written += len(chunk)
                if written > expected.size:
                    out.close()
                    part.unlink()
                    raise DownloadError(
                        f"{url} sent more than the expected {expected.size:,} bytes: the "
                        "download.url or download.bytes setting is wrong (partial file deleted)"
                    )
                out.write(chunk)
                bar.update(len(chunk))
    if written < expected.size:
        raise _Interrupted(f"connection closed after {written:,} of {expected.size:,} bytes")


def fetch(
    url: str,
    dest: str | os.PathLike[str],
    sha256: str,
    size: int,
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """Make `dest` the verified file at `url`; return its path.

    A verified `dest` is reused without any network request. Otherwise the file is downloaded
    into `dest.part` (an interrupted transfer is resumed, up to `attempts` times), verified,
    and renamed to `dest`. A corrupt download is deleted and reported.
    """
    dest = Path(dest)
    expected = Expected(sha256.lower(), int(size))
    if reuse_verified(dest, expected):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(1, attempts + 1):
        try:
            download_once(url, part, expected, timeout)
            break
        except _Interrupted as why:
            if attempt == attempts:
                raise DownloadError(
                    f"download of {url} interrupted ({why}) {attempts} times; the partial file "
                    f"{part} is kept: run the command again to resume"
                ) from None
            logger.warning("download interrupted (%s); retrying (%d/%d)", why, attempt + 1, attempts)
            time.sleep(RETRY_PAUSE_S * attempt)
    try:
        verify_file(part, expected)
    except DownloadError as error:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{error}. The corrupt download was deleted; run again to retry.") from None
    os.replace(part, dest)
    write_stamp(dest, expected.sha256)
    logger.info("downloaded and verified %s (%s bytes)", dest, f"{expected.size:,}")
    return dest


# ----------------------------------------------------------------------------- extraction


def _escapes(path: PurePosixPath) -> bool:
    """True if a relative POSIX path is absolute or climbs above its starting folder."""
    if path.is_absolute():
        return True
    depth = 0
    for part in path.parts:
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def check_member(member: tarfile.TarInfo) -> None:
    """Raise ExtractError unless `member` stays inside the extraction folder and is harmless.

    Refused: absolute names, names with `..`, symbolic links whose target (taken relative to
    the link's folder) leaves the folder, hard links to anything outside it, and devices,
    FIFOs and other special files. `tarfile`'s "data" filter checks the same again.
    """
    name = member.name
    where = f"archive member {name!r}"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":") or "\\" in name:
        raise ExtractError(f"{where} has an absolute path: refusing to extract outside the folder")
    if ".." in PurePosixPath(name).parts:
        raise ExtractError(f"{where} contains '..': refusing to extract outside the folder")
    if member.issym():
        target = PurePosixPath(name).parent / member.linkname
        if member.linkname.startswith("/") or _escapes(target):
            raise ExtractError(
                f"{where} is a symbolic link to {member.linkname!r}, outside the folder: refusing"
            )
    elif member.islnk():
        if member.linkname.startswith("/") or _escapes(PurePosixPath(member.linkname)):
            raise ExtractError(
                f"{where} is a hard link to {member.linkname!r}, outside the folder: refusing"
            )
    elif not (member.isfile() or member.isdir()):
        raise ExtractError(f"{where} is a device, FIFO or other special file: refusing")


def single_top_folder(folder: Path) -> Path:
    """The folder holding the content: the only entry of `folder` if that is a folder."""
    entries = list(folder.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        return entries[0]
    return folder


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, into: Path) -> None:
    if hasattr(tarfile, "data_filter"):
        tar.extract(member, into, filter="data")
    else:  # Python without extraction filters: our own checks above are the guard
        tar.extract(member, into, set_attrs=False)


def extract(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Extract `archive` safely so that `dest` holds its content; return `dest`.

    A single top folder in the archive (the official one has `flower_photos/`) is stripped, so
    `dest` holds the class folders directly. Nothing appears at `dest` until every member has
    been extracted; an unsafe member stops the extraction and the partial copy is deleted.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise ExtractError(f"archive {archive} not found: run `flowerlab fetch` first")
    remove_stale_temporaries(dest)
    staging = temporary_dir_beside(dest)
    with cleanup_on_error(staging):
        count = 0
        try:
            with tarfile.open(archive, "r:*") as tar, progress(None, f"extract {archive.name}", "files") as bar:
                for member in tar:  # streamed: a .tgz is read once, never seeked backwards
                    check_member(member)
                    _extract_member(tar, member, staging)
                    count += 1
                    bar.update()
        except tarfile.FilterError as error:
            raise ExtractError(f"unsafe member in {archive}: {error}; refusing to extract") from error
        except (tarfile.TarError, EOFError, OSError) as error:
            if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise ExtractError(f"no space left to extract {archive} beside {dest}") from error
            raise ExtractError(
                f"{archive} is not a readable tar archive ({error}); delete it and fetch it again"
            ) from error
        if count == 0:
            raise ExtractError(f"{archive} is empty: delete it and fetch it again")
        content = single_top_folder(staging)
        if content != staging:
            # Move the top folder out of the staging folder so it can be renamed into place.
            lifted = staging.with_name(staging.name + "-content")
            os.replace(content, lifted)
            remove_path(staging)
            staging = lifted
        replace_directory(staging, dest)
    logger.info("extracted %d members of %s into %s", count, archive, dest)
    return dest


# ----------------------------------------------------------------------------- command line


def _fetch_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Download the photo archive, verify it.")
    parser.add_argument("--url", required=True, help="http(s):// or file:// URL of the archive")
    parser.add_argument("--sha256", required=True, help="expected sha256 (hex) of the archive")
    parser.add_argument("--bytes", required=True, type=positive_int, help="expected size in bytes")
    parser.add_argument("--dest", required=True, type=Path, help="where the verified archive goes")
    parser.add_argument("--attempts", type=positive_int, default=DEFAULT_ATTEMPTS,
                        help="transfers to try (resuming) before giving up (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help="seconds without data before a transfer counts as broken")
    return parser


def _extract_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Extract the photo archive safely.")
    parser.add_argument("--archive", required=True, type=Path, help="the verified .tgz")
    parser.add_argument("--dest", required=True, type=Path,
                        help="folder to create; it will hold the class folders directly")
    return parser


def cli(argv: list[str]) -> int:
    """`flowerlab fetch ...` and `flowerlab extract ...`."""
    command, rest = argv[0], argv[1:]
    configure_logging()
    if command == "fetch":
        args = _fetch_parser(f"flowerlab {command}").parse_args(rest)
        sha = args.sha256.lower()
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            print(f"flowerlab fetch: error: --sha256 {args.sha256!r} is not 64 hex digits", file=sys.stderr)
            return 2
        return run_command(command, lambda: fetch(
            args.url, args.dest, sha, args.bytes, attempts=args.attempts, timeout=args.timeout
        ))
    if command == "extract":
        args = _extract_parser(f"flowerlab {command}").parse_args(rest)
        return run_command(command, lambda: extract(args.archive, args.dest))
    raise ValueError(f"flowerlab.data.acquire handles fetch and extract, not {command!r}")
