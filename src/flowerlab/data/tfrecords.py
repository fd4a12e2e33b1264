"""Split, resize and write the kept photos as sharded TFRecords (`flowerlab tfrecords`).

Records and `manifest.json` follow docs/architecture.md exactly: later stages find the shards
with `load_manifest` and `shard_paths`, and parse them with `feature_spec`.

The split. A photo goes to validation when u < validation_fraction, where
u = int(sha256(f"{seed}:{photo_sha256}")[:16], 16) / 2**64: its side depends only on its own
content and the seed, so adding or removing photos never moves any other photo, and the split
is stratified by class in expectation. One guard for tiny classes: a class that got no
validation photo sends its lowest-u photo to validation, and a class that got no training photo
sends its highest-u photo to training (the photos nearest the threshold). A class needs at
least two kept photos; fewer stops the run with an error naming it.

The shards. validation shards = max(1, round(shards * fraction)), training shards = the rest
(16 and 0.19 give the course's 13 + 3), never more shards than records. Each split's records are
put in a seeded order (by sha256(f"{seed}:order:{photo_sha256}"), also stable under additions)
and dealt out as evenly as possible: the first `records % shards` shards get one more.

The work. Worker processes read, check (sha256 must match the inventory), decode, resize and
re-encode the photos (`flowerlab.data.images`); the main process writes the records in plan
order, so the output is byte-identical across runs and worker counts. Writing needs no
TensorFlow (`flowerlab.data.tfrecord_io` encodes the records and the file framing; tests
check the bytes against TensorFlow's), so the stage starts instantly; only `feature_spec` and
`decode_example`, for readers, import it. Shards are written in a
temporary folder beside the output folder, which replaces it when complete; the manifest,
which lists every shard with its sha256, is deleted at the start and written last, so a run
killed at any point leaves nothing that looks complete.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowerlab import filesystem
from flowerlab.console import configure_logging, positive_int, progress, run_command
from flowerlab.data import tfrecord_io
from flowerlab.data.inventory import KEPT, MIN_KEPT_PER_CLASS, read_inventory_csv
from flowerlab.data.workers import running_pool
from flowerlab.errors import ConfigError, DataError
from flowerlab.filesystem import (
    cleanup_on_error,
    remove_stale_temporaries,
    replace_directory,
    sha256_bytes,
    sha256_file,
    temporary_dir_beside,
)

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
SPLITS = ("train", "validation")
SHARD_SUFFIX = ".tfrec"
DEFAULT_SHARD_DIR = "tfrecords"  # manifest key "shard_dir" overrides it (relative to the manifest)
DEFAULT_CHUNKSIZE = 16  # photos per worker task: big enough to amortise IPC, small for smooth progress
SPLIT_RULE = (
    "validation iff int(sha256(f'{seed}:{photo_sha256}')[:16], 16) / 2**64 < validation_fraction; "
    "a class with no validation (training) photo moves its lowest-u (highest-u) photo over"
)


# ----------------------------------------------------------------------------- record schema


def feature_spec(num_classes: int) -> dict[str, Any]:
    """`tf.io.parse_single_example` spec of one record (docs/architecture.md)."""
    import tensorflow as tf

    return {
        "image": tf.io.FixedLenFeature([], tf.string),
        "class": tf.io.FixedLenFeature([], tf.int64),
        "label": tf.io.FixedLenFeature([], tf.string),
        "size": tf.io.FixedLenFeature([2], tf.int64),
        "one_hot_class": tf.io.FixedLenFeature([num_classes], tf.float32),
        "id": tf.io.FixedLenFeature([], tf.string),
        "source": tf.io.FixedLenFeature([], tf.string),
    }


def serialize_example(
    *, image: bytes, class_index: int, label: str, height: int, width: int, num_classes: int,
    photo_id: str, source: str,
) -> bytes:
    """One record's bytes (a serialized `tf.train.Example` with the features above).

    Equal to TensorFlow's `SerializeToString(deterministic=True)` of the same Example, without
    importing TensorFlow (see `flowerlab.data.tfrecord_io`).
    """
    if not 0 <= class_index < num_classes:
        raise ValueError(f"class index {class_index} outside 0..{num_classes - 1}")
    one_hot = [0.0] * num_classes
    one_hot[class_index] = 1.0
    return tfrecord_io.example_bytes({
        "image": tfrecord_io.bytes_feature([image]),
        "class": tfrecord_io.int64_feature([class_index]),
        "label": tfrecord_io.bytes_feature([label.encode("utf-8")]),
        "size": tfrecord_io.int64_feature([height, width]),
        "one_hot_class": tfrecord_io.float_feature(one_hot),
        "id": tfrecord_io.bytes_feature([photo_id.encode("ascii")]),
        "source": tfrecord_io.bytes_feature([source.encode("utf-8", "surrogateescape")]),
    })


def write_example(writer: Any, **fields: Any) -> None:
    """Append one record (the keyword arguments of `serialize_example`) to an open writer
    (`tfrecord_io.RecordWriter` or `tf.io.TFRecordWriter`)."""
    writer.write(serialize_example(**fields))


def write_shard(path: str | os.PathLike[str], records: Iterable[bytes]) -> int:
    """Write serialized records into one TFRecord file; return how many were written."""
    with tfrecord_io.RecordWriter(path) as writer:
        for record in records:
            writer.write(record)
    return writer.records


def decode_example(serialized: bytes) -> dict[str, Any]:
    """A record's fields as Python values (tests, debugging): the inverse of `serialize_example`."""
    import tensorflow as tf

    feature = tf.train.Example.FromString(serialized).features.feature
    return {
        "image": feature["image"].bytes_list.value[0],
        "class": feature["class"].int64_list.value[0],
        "label": feature["label"].bytes_list.value[0].decode("utf-8"),
        "size": list(feature["size"].int64_list.value),
        "one_hot_class": list(feature["one_hot_class"].float_list.value),
        "id": feature["id"].bytes_list.value[0].decode("ascii"),
        "source": feature["source"].bytes_list.value[0].decode("utf-8", "surrogateescape"),
    }


# ----------------------------------------------------------------------------- manifest


def load_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and sanity-check a manifest.json; DataError naming the problem otherwise."""
    path = Path(path)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"manifest {path} not found: run `flowerlab tfrecords` first") from None
    except (OSError, ValueError) as error:
        raise DataError(f"manifest {path} is unreadable or not JSON ({error}); rerun `flowerlab tfrecords`") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        version = manifest.get("format_version") if isinstance(manifest, dict) else None
        raise DataError(f"manifest {path} has format_version {version!r}, this flowerlab reads {FORMAT_VERSION}")
    missing = [key for key in ("settings", "classes", "num_classes", "image_size", "splits", "shards") if key not in manifest]
    if missing:
        raise DataError(f"manifest {path} lacks {', '.join(missing)}; rerun `flowerlab tfrecords`")
    return manifest


def shard_paths(manifest_path: str | os.PathLike[str], split: str) -> list[str]:
    """The shard files of `split` ("train" or "validation"), in order, as paths (str).

    They live in the manifest's folder + `shard_dir` ("tfrecords" by default). A listed shard
    that is missing is a DataError (a clear message now beats a TensorFlow NotFound later).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    manifest_path = Path(manifest_path)
    manifest = load_manifest(manifest_path)
    folder = manifest_path.parent / manifest.get("shard_dir", DEFAULT_SHARD_DIR)
    paths = [str(folder / shard["file"]) for shard in manifest["shards"] if shard["split"] == split]
    missing = [path for path in paths if not os.path.exists(path)]
    if missing:
        raise DataError(
            f"{len(missing)} shard(s) listed in {manifest_path} are missing (first: {missing[0]}); "
            "rerun `flowerlab tfrecords`"
        )
    return paths


# ----------------------------------------------------------------------------- split and shards


@dataclass(frozen=True)
class Photo:
    """A kept photo of the inventory, placed in a split."""

    path: str
    class_name: str
    class_index: int
    sha256: str
    split: str = ""


def unit_hash(seed: int, *parts: str) -> float:
    """A uniform number in [0, 1) from sha256 of "seed:part:...": stable across machines."""
    digest = hashlib.sha256(":".join([str(seed), *parts]).encode("ascii")).hexdigest()
    return int(digest[:16], 16) / 2**64


def split_value(seed: int, photo_sha256: str) -> float:
    """u of the split rule: the photo is in validation iff u < validation_fraction."""
    return unit_hash(seed, photo_sha256)


def assign_splits(photos: list[Photo], validation_fraction: float, seed: int) -> list[Photo]:
    """Each photo with its split (module docstring: rule and tiny-class guard)."""
    by_class: dict[str, list[Photo]] = {}
    for photo in photos:
        by_class.setdefault(photo.class_name, []).append(photo)
    placed: list[Photo] = []
    for class_name, members in by_class.items():
        if len(members) < MIN_KEPT_PER_CLASS:
            raise DataError(f"class {class_name!r} has {len(members)} photo(s); at least {MIN_KEPT_PER_CLASS} are needed")
        ranked = sorted(members, key=lambda p: (split_value(seed, p.sha256), p.path))
        flags = [split_value(seed, p.sha256) < validation_fraction for p in ranked]
        if not any(flags):
            flags[0] = True  # lowest u goes to validation
        if all(flags):
            flags[-1] = False  # highest u goes to training
        placed += [Photo(p.path, p.class_name, p.class_index, p.sha256, "validation" if v else "train")
                   for p, v in zip(ranked, flags, strict=True)]
    return sorted(placed, key=lambda p: p.path)


def shard_split_counts(shards: int, validation_fraction: float) -> dict[str, int]:
    """Number of shard files per split: validation max(1, round(shards*fraction)), train the rest (>= 1)."""
    validation = min(shards - 1, max(1, round(shards * validation_fraction)))
    return {"train": shards - validation, "validation": validation}


def shard_sizes(records: int, shards: int) -> list[int]:
    """`records` dealt into at most `shards` non-empty shards as evenly as possible."""
    shards = max(1, min(shards, records))
    base, extra = divmod(records, shards)
    return [base + (1 if index < extra else 0) for index in range(shards)]


@dataclass(frozen=True)
class Shard:
    split: str
    index: int
    photos: tuple[Photo, ...]

    @property
    def file(self) -> str:
        return f"{self.split}-{self.index:02d}-{len(self.photos)}{SHARD_SUFFIX}"


def plan_shards(photos: list[Photo], shards: int, validation_fraction: float, seed: int) -> list[Shard]:
    """The shards of both splits, train first, each holding its photos in write order."""
    plan: list[Shard] = []
    for split, count in shard_split_counts(shards, validation_fraction).items():
        members = sorted((p for p in photos if p.split == split), key=lambda p: (unit_hash(seed, "order", p.sha256), p.path))
        start = 0
        for index, size in enumerate(shard_sizes(len(members), count)):
            plan.append(Shard(split, index, tuple(members[start:start + size])))
            start += size
    return plan


# ----------------------------------------------------------------------------- inputs


def inventory_summary_path(inventory_csv: Path) -> Path:
    return inventory_csv.with_suffix(".json")


def read_kept_photos(inventory_csv: Path, inventory_json: Path) -> tuple[list[str], list[Photo]]:
    """Classes (from the JSON summary) and kept photos (from the CSV), cross-checked."""
    rows = read_inventory_csv(inventory_csv)
    try:
        summary = json.loads(inventory_json.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"inventory summary {inventory_json} not found: run `flowerlab inventory` first") from None
    except ValueError as error:
        raise DataError(f"inventory summary {inventory_json} is not JSON ({error})") from None
    classes = list(summary.get("classes") or [])
    if summary.get("files_found") != len(rows):
        raise DataError(
            f"{inventory_json} counts {summary.get('files_found')} files but {inventory_csv} has "
            f"{len(rows)} rows: they come from different runs; rerun `flowerlab inventory`"
        )
    index = {name: position for position, name in enumerate(classes)}
    photos = []
    for row in rows:
        if row.status != KEPT:
            continue
        if row.class_name not in index:
            raise DataError(f"{inventory_csv}: kept photo {row.path} has class {row.class_name!r}, not among {classes}")
        photos.append(Photo(row.path, row.class_name, index[row.class_name], row.sha256))
    return classes, photos


def check_trainable(classes: list[str], photos: list[Photo]) -> None:
    """DataError naming every class that has fewer than 2 kept photos (or none at all)."""
    if not classes:
        raise DataError("the inventory lists no classes")
    counts = Counter(photo.class_name for photo in photos)
    short = [name for name in classes if counts[name] < MIN_KEPT_PER_CLASS]
    if short:
        details = ", ".join(f"{name!r} ({counts[name]})" for name in short)
        raise DataError(
            f"class(es) with fewer than {MIN_KEPT_PER_CLASS} usable photos, which cannot be both trained "
            f"and validated: {details}. Add photos to these class folders, or remove the folders, "
            "then rerun the inventory"
        )
    seen: dict[str, str] = {}
    for photo in photos:
        if photo.sha256 in seen:
            raise DataError(
                f"the inventory keeps the same photo twice ({seen[photo.sha256]} and {photo.path}); "
                "it is stale or edited by hand: rerun `flowerlab inventory`"
            )
        seen[photo.sha256] = photo.path


def check_settings(image_size: int, jpeg_quality: int, validation_fraction: float, shards: int, threads: int) -> None:
    if image_size < 1:
        raise ConfigError(f"image_size must be at least 1, got {image_size}")
    if not 1 <= jpeg_quality <= 100:
        raise ConfigError(f"jpeg_quality must be 1-100, got {jpeg_quality}")
    if not 0 < validation_fraction < 1:
        raise ConfigError(f"validation_fraction must be between 0 and 1 (exclusive), got {validation_fraction}")
    if shards < 2:
        raise ConfigError(f"shards must be at least 2 (one per split), got {shards}")
    if threads < 1:
        raise ConfigError(f"threads must be at least 1, got {threads}")


def check_split_sides(classes: list[str], photos: list[Photo]) -> None:
    """DataError unless every class has photos on both sides and no photo is on both."""
    sides: dict[str, set[str]] = {}
    for photo in photos:
        sides.setdefault(photo.sha256, set()).add(photo.split)
    if any(len(split_set) > 1 for split_set in sides.values()):
        raise DataError("a photo is in both splits: a bug in the split, please report it")
    present = {(photo.class_name, photo.split) for photo in photos}
    missing = [f"{name!r} has no {split} photo" for name in classes for split in SPLITS if (name, split) not in present]
    if missing:
        raise DataError(f"{'; '.join(missing)}: every class needs a photo in each split")


# ----------------------------------------------------------------------------- workers


@dataclass(frozen=True)
class Prepared:
    """A worker's answer for one photo: the JPEG, or why there is none."""

    path: str
    jpeg: bytes = b""
    sha256: str = ""
    error: str = ""


def prepare_task(task: tuple[str, str, int, int]) -> Prepared:
    """Read one photo, hash it, and make its square JPEG. Runs in worker processes."""
    from flowerlab.data.images import prepare_photo

    path, relative, image_size, jpeg_quality = task
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        return Prepared(relative, error=f"cannot read it ({error.strerror or error})")
    try:
        jpeg = prepare_photo(data, image_size, jpeg_quality)
    except Exception as error:
        return Prepared(relative, sha256=sha256_bytes(data), error=f"cannot decode it ({type(error).__name__}: {error})")
    return Prepared(relative, jpeg, sha256_bytes(data))


@contextlib.contextmanager
def prepared_in_order(tasks: list[tuple[str, str, int, int]], threads: int, chunksize: int) -> Iterator[Iterator[Prepared]]:
    """Start preparing photos now; yield an iterator of the results in task order.

    `threads` worker processes (in-process for 1). The work is queued on entering, so the
    workers run while the caller does other things; an error in the block cancels the
    remaining work.
    """
    if threads <= 1:
        yield map(prepare_task, tasks)
        return
    with running_pool(threads) as pool:
        yield pool.map(prepare_task, tasks, chunksize=chunksize)


def checked(prepared: Prepared, photo: Photo, root: Path) -> bytes:
    """The JPEG of `photo`, after checking it is the file the inventory describes."""
    if prepared.error:
        if not (root / photo.path).exists():
            raise DataError(
                f"{photo.path} is kept in the inventory but missing under {root}: the inventory is stale; "
                "rerun `flowerlab inventory`"
            )
        raise DataError(f"{root / photo.path}: {prepared.error}")
    if prepared.sha256 != photo.sha256:
        raise DataError(
            f"{photo.path} changed since the inventory (sha256 {prepared.sha256[:12]}..., inventory says "
            f"{photo.sha256[:12]}...): rerun `flowerlab inventory`"
        )
    return prepared.jpeg


# ----------------------------------------------------------------------------- writing


def write_shards(plan: list[Shard], classes: list[str], root: Path, folder: Path, image_size: int,
                 jpeg_quality: int, threads: int, chunksize: int) -> list[dict[str, Any]]:
    """Write every planned shard into `folder`; return the manifest's shard entries."""
    ordered = [(shard, photo) for shard in plan for photo in shard.photos]
    tasks = [(str(root / photo.path), photo.path, image_size, jpeg_quality) for _, photo in ordered]
    entries = []
    written: dict[str, str] = {}  # photo id -> split, to refuse any photo written twice
    with prepared_in_order(tasks, threads, chunksize) as results, progress(len(tasks), "tfrecords", "img") as bar:
        for shard in plan:
            path = folder / shard.file
            with tfrecord_io.RecordWriter(path) as writer:
                for photo in shard.photos:
                    prepared = next(results)
                    assert prepared.path == photo.path, "worker results out of order"
                    jpeg = checked(prepared, photo, root)
                    if photo.sha256 in written:
                        raise DataError(
                            f"photo {photo.sha256} ({photo.path}) would be written twice ({written[photo.sha256]} "
                            f"and {shard.split}): a bug in the shard plan, please report it"
                        )
                    written[photo.sha256] = shard.split
                    write_example(writer, image=jpeg, class_index=photo.class_index, label=photo.class_name,
                                  height=image_size, width=image_size, num_classes=len(classes),
                                  photo_id=photo.sha256, source=photo.path)
                    bar.update()
            entries.append({"file": shard.file, "split": shard.split, "records": len(shard.photos),
                            "sha256": sha256_file(path)})
    return entries


def manifest_for(classes: list[str], photos: list[Photo], shards: list[dict[str, Any]], settings: dict[str, Any],
                 inventory_sha256: str, shard_dir: str) -> dict[str, Any]:
    splits = {}
    for split in SPLITS:
        counts = Counter(photo.class_name for photo in photos if photo.split == split)
        splits[split] = {"records": sum(counts.values()), "per_class": {name: counts[name] for name in classes}}
    return {
        "format_version": FORMAT_VERSION,
        "settings": settings,
        "classes": classes,
        "num_classes": len(classes),
        "image_size": settings["image_size"],
        "inventory_sha256": inventory_sha256,
        "split_rule": SPLIT_RULE,
        "splits": splits,
        "shard_dir": shard_dir,
        "shards": shards,
    }


def build_tfrecords(
    root: str | os.PathLike[str],
    inventory_csv: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    manifest_path: str | os.PathLike[str],
    *,
    image_size: int = 192,
    jpeg_quality: int = 95,
    validation_fraction: float = 0.19,
    shards: int = 16,
    seed: int = 35155,
    threads: int = 1,
    inventory_json: str | os.PathLike[str] | None = None,
    chunksize: int = DEFAULT_CHUNKSIZE,
) -> dict[str, Any]:
    """Write the shards into `out_dir` and the manifest to `manifest_path`; return the manifest."""
    root, out_dir, manifest_path = Path(root), Path(out_dir), Path(manifest_path)
    inventory_csv = Path(inventory_csv)
    inventory_json = Path(inventory_json) if inventory_json else inventory_summary_path(inventory_csv)
    check_settings(image_size, jpeg_quality, validation_fraction, shards, threads)
    if not root.is_dir():
        raise DataError(f"photo folder {root} not found")
    classes, photos = read_kept_photos(inventory_csv, inventory_json)
    check_trainable(classes, photos)
    photos = assign_splits(photos, validation_fraction, seed)
    plan = plan_shards(photos, shards, validation_fraction, seed)
    check_split_sides(classes, photos)

    # From here on the old outputs are stale: remove the manifest first, so that nothing looks
    # complete until the new one is written last.
    manifest_path.unlink(missing_ok=True)
    remove_stale_temporaries(out_dir)
    staging = temporary_dir_beside(out_dir)
    started = time.perf_counter()
    with cleanup_on_error(staging):
        entries = write_shards(plan, classes, root, staging, image_size, jpeg_quality, threads, chunksize)
        replace_directory(staging, out_dir)
    seconds = time.perf_counter() - started
    settings = {"image_size": image_size, "jpeg_quality": jpeg_quality, "validation_fraction": validation_fraction,
                "shards": shards, "seed": seed}
    shard_dir = os.path.relpath(out_dir, manifest_path.parent).replace(os.sep, "/")
    manifest = manifest_for(classes, photos, entries, settings, sha256_file(inventory_csv), shard_dir)
    filesystem.write_json(manifest_path, manifest)
    logger.info(
        "wrote %d records (%d train, %d validation) in %d shards to %s in %.1f s (%.0f images/s)",
        len(photos), manifest["splits"]["train"]["records"], manifest["splits"]["validation"]["records"],
        len(entries), out_dir, seconds, len(photos) / seconds if seconds else 0.0,
    )
    return manifest


def cli(argv: list[str]) -> int:
    """`flowerlab tfrecords --root DIR --inventory CSV --out-dir DIR --manifest JSON ...`."""
    parser = argparse.ArgumentParser(
        prog=f"flowerlab {argv[0]}",
        description="Split the inventory's kept photos, resize them and write sharded TFRecords.",
    )
    parser.add_argument("--root", required=True, type=Path, help="the photo folder the inventory describes")
    parser.add_argument("--inventory", required=True, type=Path, help="inventory.csv")
    parser.add_argument("--inventory-json", type=Path, default=None,
                        help="inventory.json (default: the CSV's path with .json)")
    parser.add_argument("--out-dir", required=True, type=Path, help="folder of the .tfrec shards")
    parser.add_argument("--manifest", required=True, type=Path, help="manifest.json to write last")
    parser.add_argument("--image-size", type=positive_int, default=192)
    parser.add_argument("--jpeg-quality", type=positive_int, default=95)
    parser.add_argument("--validation-fraction", type=float, default=0.19)
    parser.add_argument("--shards", type=positive_int, default=16, help="shard files across both splits")
    parser.add_argument("--seed", type=int, default=35155, help="decides the split and the record order")
    parser.add_argument("--threads", type=positive_int, default=1, help="worker processes")
    parser.add_argument("--chunksize", type=positive_int, default=DEFAULT_CHUNKSIZE,
                        help="photos per worker task (default %(default)s)")
    args = parser.parse_args(argv[1:])
    configure_logging()
    return run_command(argv[0], lambda: build_tfrecords(
        args.root, args.inventory, args.out_dir, args.manifest, image_size=args.image_size,
        jpeg_quality=args.jpeg_quality, validation_fraction=args.validation_fraction, shards=args.shards,
        seed=args.seed, threads=args.threads, inventory_json=args.inventory_json, chunksize=args.chunksize,
    ))
