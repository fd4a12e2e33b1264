"""Files written safely, and the small helpers every stage shares for them.

Atomic writes: every output is first written to a temporary file in the destination's folder
(same file system, so the final rename is atomic), flushed to disk, and only then renamed over
the destination with `os.replace`. A crash or a kill leaves at worst a stray temporary, never a
half-written file under the final name that Snakemake or a reader would take as complete.
Folders are swapped in whole the same way, and temporaries left by killed runs are cleaned up.

Also here: sha256 of files and bytes, reading a JSON object with a useful error, and turning
NaN into None for JSON. Nothing here imports TensorFlow, Pillow or NumPy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from flowerlab.errors import DataError

logger = logging.getLogger(__name__)

HASH_CHUNK_BYTES = 1 << 20


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], mode: str = "w", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file beside `path`; on success rename it to `path`, on error delete it.

    Usage: `with atomic_output(path, "w", newline="") as f: ...`. The folder is created.
    """
    if mode not in {"w", "wb"}:
        raise ValueError(f"atomic_output writes whole files: mode must be 'w' or 'wb', not {mode!r}")
    destination = Path(path)
    destination.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent
    )
    try:
        with os.fdopen(descriptor, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates files readable by the owner only; results are meant to be shared.
        os.chmod(temporary, 0o644)
        os.replace(temporary, destination)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_output(path, "wb") as handle:
        handle.write(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_output(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def write_json(path: str | os.PathLike[str], value: Any) -> None:
    """Write `value` as indented, key-ordered-as-given JSON (UTF-8, trailing newline) atomically.

    NaN and infinities are refused (they are not JSON); callers turn missing figures into None.
    """
    write_text(path, json.dumps(value, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks (constant memory for big archives)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_json(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    """A JSON object from `path`, or a DataError that names the file and how to remake it."""
    try:
        with open(path, encoding="utf-8") as handle:
            value = json.load(handle)
    except FileNotFoundError:
        raise DataError(f"{what} not found: {path} (run the stage that makes it first)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{what} {path} is not valid JSON ({error}); delete it and rerun its stage") from None
    if not isinstance(value, dict):
        raise DataError(f"{what} {path} must hold a JSON object, not {type(value).__name__}")
    return value


def read_cache(path: str | os.PathLike[str] | None, cache_format: int) -> dict[str, Any] | None:
    """A probe's cached measurement (written by `write_cache`), or None when there is no cache,
    or it is absent, unreadable or of another format: the caller measures again."""
    if path is None:
        return None
    try:
        cached = read_json(path, "cache")
    except DataError:
        return None
    return cached if cached.get("format") == cache_format else None


def write_cache(path: str | os.PathLike[str] | None, cache_format: int, value: dict[str, Any]) -> None:
    """Cache a probe's measurement with its format (nothing when `path` is None)."""
    if path is not None:
        write_json(path, {"format": cache_format, **value})


def temporary_dir_beside(destination: str | os.PathLike[str]) -> Path:
    """A new empty folder beside `destination` (same file system, so renaming it is atomic).

    Its name starts with a dot and carries the process id, so it never looks like the output
    and `remove_stale_temporaries` can tell a dead run's leftovers from a live run's folder.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    return Path(
        tempfile.mkdtemp(prefix=f".{destination.name}.tmp-{os.getpid()}-", dir=destination.parent)
    )


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(destination: str | os.PathLike[str]) -> None:
    """Delete temporary folders/files beside `destination` left by runs that were killed.

    A temporary whose owning process still runs is left alone (two runs of the same output at
    once are a user error, but deleting the other run's files would turn it into corruption).
    """
    destination = Path(destination)
    if not destination.parent.is_dir():
        return
    prefix = f".{destination.name}.tmp-"
    for leftover in destination.parent.iterdir():
        if not leftover.name.startswith(prefix):
            continue
        pid_text = leftover.name[len(prefix) :].split("-", 1)[0]
        if pid_text.isdigit() and pid_alive(int(pid_text)) and int(pid_text) != os.getpid():
            continue
        logger.info("removing %s, left by an interrupted run", leftover)
        remove_path(leftover)


def remove_path(path: str | os.PathLike[str]) -> None:
    """Delete a file, link or folder tree; no error when it does not exist."""
    path = Path(path)
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path)


def replace_directory(new: Path, destination: Path) -> None:
    """Put the finished folder `new` in place of `destination`, whatever was there.

    `os.replace` cannot swap a folder over a non-empty one, so the old one is first renamed
    aside (one atomic rename), the new one renamed in, and only then the old one deleted: at no
    moment does `destination` hold a mix of old and new files.
    """
    old: Path | None = None
    if destination.is_symlink() or destination.exists():
        old = destination.parent / f".{destination.name}.tmp-{os.getpid()}-old"
        remove_path(old)
        os.replace(destination, old)
    os.replace(new, destination)
    if old is not None:
        remove_path(old)


@contextlib.contextmanager
def cleanup_on_error(path: Path) -> Iterator[Path]:
    """Yield `path`; delete it (file or folder) if the block raises (including Ctrl-C)."""
    try:
        yield path
    except BaseException:
        remove_path(path)
        raise



def json_safe(value: Any) -> Any:
    """`value` with NumPy scalars as Python numbers and NaN/inf as None (they are not JSON).

    Duck-typed (a zero-dimensional `.item()`), so this module needs no NumPy import.
    """
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if getattr(value, "shape", None) == () and hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
