"""Account for every file under the photo folder: kept, or skipped with a reason (`flowerlab inventory`).

The inventory is the only place where input files are accepted or rejected; later stages read
its `kept` rows and nothing else. Every file found gets one row (see docs/architecture.md for
the columns), so `kept + skipped == files found` and nothing is ever dropped silently.

Decisions, in the order they are taken (the first that applies is the reason):

1. Placement. ROOT/<class>/<file> is a candidate. Symbolic links are followed when they point
   inside ROOT; a link leaving ROOT is `symlink_outside_root` (never read), a link that cannot
   be resolved because it loops (or a folder link to one of its own ancestors) is
   `symlink_loop`. Names starting with "." (`.DS_Store`, files in `.git/`) are `hidden_file`.
   Files directly in ROOT (`LICENSE.txt`) and files in sub-folders of a class folder are
   `not_in_class_folder`: a nested folder is often a "rejected" or "unsure" pile, and guessing
   that its photos carry the top folder's label could poison training, so they are listed
   for the user to move, not used.
2. Content. Empty files are `zero_bytes`; a file Pillow cannot identify is `not_an_image`; an
   image whose header claims more than `max_pixels` pixels is `too_large` (checked on the
   header, before anything is decoded: decompression-bomb guard); an image whose data ends
   early is `truncated`; any other read or decode failure (including dangling links, FIFOs
   and devices, which are never opened) is `unreadable`. Every image is fully decoded to
   prove it is whole; JPEGs are decoded at 1/8 scale (`draft`), which still reads every
   entropy-coded byte (so truncation is caught) at a fraction of the cost.
3. Duplicates, by sha256 of the bytes, among the files that passed 1 and 2: a photo present
   under two or more classes cannot have one right answer, so *all* its copies are
   `duplicate_across_classes`; copies inside one class keep the first by path and skip the
   others as `duplicate_same_class`. `duplicate_of` names the kept copy (same class) or the
   other copies, ";"-separated (across classes).

Image files of any format and extension are kept (PNG named .jpg, WebP, GIF, BMP, CMYK or
grayscale JPEGs, 16-bit PNGs); `format` says what they really are, and the TFRecords stage
converts them to RGB. A class folder that is empty, or has fewer than two kept photos (one is
needed in each split), is kept in `classes` and reported in `warnings`; the TFRecords stage then
stops with an error naming it, because a class that cannot be trained and validated must be
fixed (photos added, or the folder removed) rather than silently dropped or renumbered.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import os
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from flowerlab import filesystem, schema
from flowerlab.console import configure_logging, positive_int, progress, run_command, thread_count
from flowerlab.data.splits import MIN_KEPT_PER_CLASS
from flowerlab.data.walk import FoundFile, display_path, walk_root
from flowerlab.data.workers import running_pool
from flowerlab.errors import DataError
from flowerlab.filesystem import sha256_file

logger = logging.getLogger(__name__)

COLUMNS = (
    "path", "class", "bytes", "sha256", "format", "width", "height", "status", "reason", "duplicate_of",
)
REASONS = (
    "zero_bytes", "not_an_image", "unreadable", "truncated", "too_large", "hidden_file",
    "not_in_class_folder", "symlink_outside_root", "symlink_loop", "duplicate_same_class",
    "duplicate_across_classes",
)
KEPT, SKIPPED = "kept", "skipped"
DEFAULT_MAX_PIXELS = schema.default("data", "max_pixels")  # Pillow's own decompression-bomb threshold
DUPLICATE_SEPARATOR = ";"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class FileFacts:
    """What reading a file told us (computed in worker processes)."""

    bytes: int | None = None
    sha256: str = ""
    format: str = ""
    width: int | None = None
    height: int | None = None
    problem: str = ""  # a content reason, or "" when the file is a usable image
    detail: str = ""  # the underlying error message, for the log


@dataclass
class Row:
    path: str
    class_name: str
    bytes: int | None = None
    sha256: str = ""
    format: str = ""
    width: int | None = None
    height: int | None = None
    status: str = KEPT
    reason: str = ""
    duplicate_of: str = ""

    def as_csv(self) -> list[str]:
        values = [self.path, self.class_name, self.bytes, self.sha256, self.format, self.width,
                  self.height, self.status, self.reason, self.duplicate_of]
        return ["" if value is None else str(value) for value in values]


@dataclass
class Inventory:
    root: str
    classes: list[str]
    rows: list[Row]
    max_pixels: int
    warnings: list[str] = field(default_factory=list)





# ----------------------------------------------------------------------------- reading files


def _classify_decode_error(error: BaseException) -> str:
    message = str(error).lower()
    if isinstance(error, EOFError) or "truncat" in message or "premature end" in message:
        return "truncated"
    return "unreadable"


def inspect_image(path: str, max_pixels: int) -> tuple[str, int | None, int | None, str, str]:
    """(format, width, height, problem, detail) of one file, decoding it to prove it is whole."""
    from PIL import UnidentifiedImageError

    from flowerlab.data.images import open_image, oriented_size

    try:
        img = open_image(path)
    except UnidentifiedImageError as error:
        return "", None, None, "not_an_image", str(error)
    except Exception as error:
        return "", None, None, _classify_decode_error(error), f"{type(error).__name__}: {error}"
    with img:
        try:
            fmt = img.format or ""
            width, height = oriented_size(img)
        except Exception as error:
            return img.format or "", None, None, "unreadable", f"{type(error).__name__}: {error}"
        if width * height > max_pixels:
            return fmt, width, height, "too_large", f"{width}x{height} pixels > max_pixels {max_pixels}"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. "corrupt EXIF": the pixels are what matter
                if fmt == "JPEG":
                    stored_w, stored_h = img.size
                    img.draft(None, (max(1, stored_w // 8), max(1, stored_h // 8)))
                img.load()
        except Exception as error:
            return fmt, width, height, _classify_decode_error(error), f"{type(error).__name__}: {error}"
    return fmt, width, height, "", ""


def inspect_file(task: tuple[str, int, bool]) -> FileFacts:
    """Size, sha256 and (if `decode`) image facts of one file. Runs in worker processes."""
    path, max_pixels, decode = task
    try:
        size = os.stat(path).st_size
        digest = sha256_file(path)
    except OSError as error:
        return FileFacts(problem="unreadable", detail=f"{error.strerror or error}")
    if not decode:
        return FileFacts(size, digest)
    if size == 0:
        return FileFacts(size, digest, problem="zero_bytes")
    fmt, width, height, problem, detail = inspect_image(path, max_pixels)
    return FileFacts(size, digest, fmt, width, height, problem, detail)


def read_all(found: list[FoundFile], max_pixels: int, threads: int) -> list[FileFacts]:
    """FileFacts for every found file, in order, using `threads` worker processes."""
    tasks = [(item.abs_path, max_pixels, not item.reason) for item in found]
    results: list[FileFacts] = []
    if threads <= 1 or len(tasks) < 64:  # not worth starting processes for a few files
        with progress(len(tasks), "inventory", "files") as bar:
            for item, task in zip(found, tasks, strict=True):
                results.append(inspect_file(task) if item.readable else FileFacts(problem="unreadable"))
                bar.update()
        return results
    readable = [task for item, task in zip(found, tasks, strict=True) if item.readable]
    with running_pool(threads) as pool:
        facts = pool.map(inspect_file, readable, chunksize=16)
        with progress(len(tasks), "inventory", "files") as bar:
            for item in found:
                results.append(next(facts) if item.readable else FileFacts(problem="unreadable"))
                bar.update()
    return results


# ----------------------------------------------------------------------------- decisions


def decide(found: list[FoundFile], facts: list[FileFacts]) -> list[Row]:
    """One row per file: placement and content reasons, then duplicates (module docstring)."""
    rows = []
    for item, fact in zip(found, facts, strict=True):
        reason = item.reason or fact.problem
        if fact.detail:
            logger.debug("%s: %s (%s)", item.path, reason, fact.detail)
        rows.append(Row(
            path=item.path, class_name=item.class_name, bytes=fact.bytes, sha256=fact.sha256,
            format=fact.format, width=fact.width, height=fact.height,
            status=SKIPPED if reason else KEPT, reason=reason,
        ))
    mark_duplicates(rows)
    return rows


def mark_duplicates(rows: list[Row]) -> None:
    """Skip duplicate photos among the kept rows (in place); rows must be sorted by path."""
    by_digest: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        if row.status == KEPT:
            by_digest[row.sha256].append(row)
    for copies in by_digest.values():
        if len(copies) < 2:
            continue
        if len({row.class_name for row in copies}) > 1:
            for row in copies:
                row.status, row.reason = SKIPPED, "duplicate_across_classes"
                row.duplicate_of = DUPLICATE_SEPARATOR.join(other.path for other in copies if other is not row)
            continue
        first, *others = copies
        for row in others:
            row.status, row.reason, row.duplicate_of = SKIPPED, "duplicate_same_class", first.path


def class_warnings(classes: list[str], rows: list[Row]) -> list[str]:
    """Warnings for classes that cannot be trained and validated, and for conflicting labels."""
    found = Counter(row.class_name for row in rows)
    kept = Counter(row.class_name for row in rows if row.status == KEPT)
    messages = []
    if len(classes) == 1:
        messages.append(f"only one class folder, {classes[0]!r}: a classifier needs at least two, the tfrecords "
                        "stage will stop; put each class's photos in a folder of its own")
    for name in classes:
        if found[name] == 0:
            messages.append(
                f"class folder {name!r} is empty: the tfrecords stage will stop; add photos to it "
                "or remove the folder"
            )
        elif kept[name] < MIN_KEPT_PER_CLASS:
            messages.append(
                f"class {name!r} has {kept[name]} usable photo(s) of {found[name]} file(s); at least "
                f"{MIN_KEPT_PER_CLASS} are needed (one per split): the tfrecords stage will stop"
            )
    across = sorted({row.sha256 for row in rows if row.reason == "duplicate_across_classes"})
    for digest in across:
        paths = sorted(display_path(r.path) for r in rows if r.sha256 == digest and r.reason == "duplicate_across_classes")
        messages.append(f"the same photo is in several classes, all copies skipped: {', '.join(paths)}")
    return messages


def build_inventory(root: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS, threads: int = 1) -> Inventory:
    """Walk `root`, read every file, decide each one. Nothing is written."""
    if max_pixels < 1:
        raise DataError(f"max_pixels must be at least 1, got {max_pixels}")
    found, classes = walk_root(root)
    if not classes:
        raise DataError(
            f"no class folders in {root}: expected one subfolder per class, "
            f"e.g. {Path(root) / 'daisy' / 'photo.jpg'}"
        )
    logger.info("found %d files in %d class folders under %s", len(found), len(classes), root)
    rows = decide(found, read_all(found, max_pixels, threads))
    inventory = Inventory(os.path.abspath(root), classes, rows, max_pixels)
    inventory.warnings = class_warnings(classes, rows)
    return inventory


# ----------------------------------------------------------------------------- outputs


def summary(inventory: Inventory) -> dict[str, object]:
    """The inventory.json content; `kept + skipped == files_found == len(rows)`."""
    rows = inventory.rows
    reasons = Counter(row.reason for row in rows if row.status == SKIPPED)
    return {
        "format_version": FORMAT_VERSION,
        "root": inventory.root,
        "classes": inventory.classes,
        "files_found": len(rows),
        "kept": sum(row.status == KEPT for row in rows),
        "skipped": sum(row.status == SKIPPED for row in rows),
        "skipped_by_reason": {reason: reasons[reason] for reason in REASONS},
        "kept_by_class": {name: sum(r.status == KEPT and r.class_name == name for r in rows) for name in inventory.classes},
        "found_by_class": {name: sum(r.class_name == name for r in rows) for name in inventory.classes},
        "formats_kept": dict(sorted(Counter(r.format for r in rows if r.status == KEPT).items())),
        "max_pixels": inventory.max_pixels,
        "warnings": inventory.warnings,
    }


def csv_text(rows: list[Row]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(row.as_csv() for row in rows)
    return out.getvalue()


def write_inventory(inventory: Inventory, out_csv: str | os.PathLike[str], out_json: str | os.PathLike[str]) -> dict[str, object]:
    """Write the CSV, then the JSON summary (each atomically); return the summary."""
    text = csv_text(inventory.rows)
    # surrogateescape: a file name that is not valid UTF-8 is written back as its original
    # bytes instead of crashing; every valid name is plain UTF-8.
    with filesystem.atomic_output(out_csv, "w", encoding="utf-8", errors="surrogateescape", newline="") as handle:
        handle.write(text)
    data = summary(inventory)
    filesystem.write_json(out_json, data)
    return data


def read_inventory_csv(path: str | os.PathLike[str]) -> list[Row]:
    """The rows of an inventory.csv; DataError if it is missing or not an inventory."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None or tuple(header) != COLUMNS:
                raise DataError(f"{path} is not an inventory CSV (columns {header}, expected {list(COLUMNS)})")
            rows = []
            for number, values in enumerate(reader, start=2):
                if len(values) != len(COLUMNS):
                    raise DataError(f"{path} line {number}: {len(values)} fields, expected {len(COLUMNS)}")
                record = dict(zip(COLUMNS, values, strict=True))
                rows.append(Row(
                    path=record["path"], class_name=record["class"],
                    bytes=int(record["bytes"]) if record["bytes"] else None, sha256=record["sha256"],
                    format=record["format"], width=int(record["width"]) if record["width"] else None,
                    height=int(record["height"]) if record["height"] else None,
                    status=record["status"], reason=record["reason"], duplicate_of=record["duplicate_of"],
                ))
    except FileNotFoundError:
        raise DataError(f"inventory {path} not found: run `flowerlab inventory` first") from None
    except ValueError as error:
        raise DataError(f"{path} is not a valid inventory CSV: {error}") from None
    return rows


def log_summary(data: dict[str, object]) -> None:
    logger.info("%s files: %s kept, %s skipped", data["files_found"], data["kept"], data["skipped"])
    for reason, count in data["skipped_by_reason"].items():  # type: ignore[union-attr]
        if count:
            logger.info("  skipped %-26s %d", reason, count)
    for message in data["warnings"]:  # type: ignore[union-attr]
        logger.warning("%s", message)


def make_inventory(
    root: str | os.PathLike[str],
    out_csv: str | os.PathLike[str],
    out_json: str | os.PathLike[str],
    max_pixels: int = DEFAULT_MAX_PIXELS,
    threads: int = 1,
) -> dict[str, object]:
    """Build the inventory of `root` and write both files; return the JSON summary."""
    data = write_inventory(build_inventory(root, max_pixels, threads), out_csv, out_json)
    log_summary(data)
    return data


def cli(argv: list[str]) -> int:
    """`flowerlab inventory --root DIR --out-csv CSV --out-json JSON --max-pixels N --threads T`."""
    parser = argparse.ArgumentParser(
        prog=f"flowerlab {argv[0]}",
        description="List every file under ROOT as kept or skipped (with the reason).",
    )
    parser.add_argument("--root", required=True, type=Path, help="ROOT/<class>/<photo>")
    parser.add_argument("--out-csv", required=True, type=Path, help="one row per file found")
    parser.add_argument("--out-json", required=True, type=Path, help="counts, classes and warnings")
    parser.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS,
                        help="larger images are skipped as too_large (default %(default)s)")
    parser.add_argument("--threads", type=thread_count, default=1, help="worker processes")
    args = parser.parse_args(argv[1:])
    configure_logging()
    return run_command(argv[0], lambda: make_inventory(args.root, args.out_csv, args.out_json, args.max_pixels, args.threads))


__all__ = [
    "COLUMNS", "REASONS", "FileFacts", "FoundFile", "Inventory", "Row", "build_inventory",
    "class_warnings", "decide", "inspect_file", "make_inventory", "mark_duplicates",
    "read_inventory_csv", "summary", "walk_root", "write_inventory",
]
