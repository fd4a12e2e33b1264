"""Walking a photo folder: every file found, each with where it sits and whether it may be opened.

The walk decides what placement alone decides (hidden files, files outside a class folder,
symbolic links leaving the folder or looping, files that are not regular); everything that
needs the file's content is the inventory's (`flowerlab.data.inventory`).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from flowerlab.errors import DataError

logger = logging.getLogger(__name__)

# The file Snakemake leaves in a folder it made as a rule's directory() output (the synthetic
# photos): its own, not the user's, so the walk neither lists it nor counts it as a skip.
WORKFLOW_MARKERS = frozenset({".snakemake_timestamp"})

MAX_DEPTH = 64  # a folder tree deeper than this is not a photo collection; stop descending



@dataclass(frozen=True)
class FoundFile:
    """A file the walk found, before its content is looked at."""

    path: str  # POSIX, relative to ROOT
    abs_path: str  # as reached through ROOT (links not resolved)
    class_name: str  # first path component when the file sits in a folder, else ""
    reason: str = ""  # placement reason decided by the walk, "" for a candidate photo
    readable: bool = True  # False: never open it (dangling link, FIFO, device, socket)


def _is_hidden(parts: Iterable[str]) -> bool:
    return any(part.startswith(".") for part in parts)


def _inside(real_path: str, real_root: str) -> bool:
    return real_path == real_root or real_path.startswith(real_root.rstrip(os.sep) + os.sep)


def _is_utf8(name: str) -> bool:
    """False for names with undecodable bytes (os.fsdecode keeps them as lone surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def display_path(path: str) -> str:
    """`path` printable in UTF-8 (logs, JSON): undecodable bytes shown as U+FFFD."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _placement_reason(parts: tuple[str, ...]) -> str:
    if _is_hidden(parts):
        return "hidden_file"
    if len(parts) != 2:
        return "not_in_class_folder"
    return ""


def walk_root(root: str | os.PathLike[str]) -> tuple[list[FoundFile], list[str]]:
    """Every file under `root` (links resolved as the module explains) and the class folders.

    Class folders are the non-hidden folders (or links to folders inside ROOT) directly in
    ROOT, sorted: their order gives the class indices. Files come sorted by path.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"photo folder {root} does not exist or is not a folder")
    real_root = os.path.realpath(root)
    found: list[FoundFile] = []
    classes: list[str] = []

    def record(parts: tuple[str, ...], abs_path: str, reason: str = "", readable: bool = True) -> None:
        class_name = parts[0] if len(parts) > 1 else ""
        found.append(FoundFile("/".join(parts), abs_path, class_name, reason or _placement_reason(parts), readable))

    def visit(folder: str, parts: tuple[str, ...], ancestors: frozenset[str]) -> None:
        try:
            with os.scandir(folder) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except OSError as error:
            # An unreadable folder: its files cannot be counted; say so loudly, do not crash.
            raise DataError(f"cannot list folder {folder}: {error.strerror}; fix its permissions") from error
        for entry in entries:
            here = (*parts, entry.name)
            if not parts and entry.name in WORKFLOW_MARKERS:
                continue  # the workflow's own bookkeeping, not a file of the user's
            if entry.is_symlink():
                try:
                    target = os.stat(entry.path)  # follows the link
                except OSError as error:
                    reason = "symlink_loop" if error.errno == errno.ELOOP else "unreadable"
                    record(here, entry.path, reason, readable=False)
                    continue
                real = os.path.realpath(entry.path)
                if not _inside(real, real_root):
                    record(here, entry.path, "symlink_outside_root", readable=False)
                    continue
                if stat.S_ISDIR(target.st_mode):
                    if real in ancestors:
                        record(here, entry.path, "symlink_loop", readable=False)
                    else:
                        enter(entry.path, here, ancestors | {real})
                    continue
                record(here, entry.path, readable=stat.S_ISREG(target.st_mode))
            elif entry.is_dir(follow_symlinks=False):
                enter(entry.path, here, ancestors | {os.path.realpath(entry.path)})
            else:
                record(here, entry.path, readable=entry.is_file(follow_symlinks=False))

    def enter(folder: str, parts: tuple[str, ...], ancestors: frozenset[str]) -> None:
        if len(parts) == 1 and not _is_hidden(parts):
            if not _is_utf8(parts[0]):
                raise DataError(
                    f"class folder {display_path(parts[0])!r} in {root} has a name that is not valid UTF-8; "
                    "class names become labels in the records: rename the folder"
                )
            classes.append(parts[0])
        if len(parts) >= MAX_DEPTH:
            raise DataError(f"folder {folder} is nested more than {MAX_DEPTH} levels deep under {root}")
        visit(folder, parts, ancestors)

    visit(str(root), (), frozenset({real_root}))
    found.sort(key=lambda item: item.path)
    return found, sorted(classes)

