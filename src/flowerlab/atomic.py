"""Atomic file writes: a file either has its complete new content or does not change.

Every output is first written to a temporary file in the destination's folder (same file
system, so the final rename is atomic), flushed to disk, and only then renamed over the
destination with `os.replace`. A crash or a kill leaves at worst a stray `.tmp` file, never a
half-written file under the final name that Snakemake or a reader would take as complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


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
