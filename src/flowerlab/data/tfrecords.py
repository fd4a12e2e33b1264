"""Split, resize and write the kept photos as sharded TFRecords (`flowerlab tfrecords`).

Records and `manifest.json` follow docs/architecture.md exactly: later stages find the shards
with `flowerlab.data.manifest` and read them with `flowerlab.data.records`.

The split and the shards: `flowerlab.data.splits` (a photo's side and shard depend only on its
content and the seed).

The work. Worker processes read, check (sha256 must match the inventory), decode, resize and
re-encode the photos (`flowerlab.data.images`), with Pillow alone; the main process
serializes each record as a `tf.train.Example` and writes it with `tf.io.TFRecordWriter`, in
plan order, so the output is byte-identical across runs and worker counts. (A TensorFlow-free
writer of the same bytes was measured to save 6-26 s per data rebuild, under 1% of a study, and
is not kept.) The one reader is `flowerlab.data.records`. Shards are written in a
temporary folder beside the output folder, which replaces it when complete; the manifest,
which lists every shard with its sha256, is deleted at the start and written last, so a run
killed at any point leaves nothing that looks complete.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowerlab import filesystem, schema
from flowerlab.console import configure_logging, positive_int, progress, run_command, thread_count
from flowerlab.data.inventory import KEPT, read_inventory_csv
from flowerlab.data.manifest import manifest_for
from flowerlab.data.splits import MIN_KEPT_PER_CLASS, SPLITS, Photo, Shard, assign_splits, plan_shards
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

DEFAULT_CHUNKSIZE = 16  # photos per worker task: big enough to amortise IPC, small for smooth progress


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
    """One record's bytes: a `tf.train.Example` with the features above, serialized in
    protobuf's deterministic order (equal records are equal bytes)."""
    import tensorflow as tf

    if not 0 <= class_index < num_classes:
        raise ValueError(f"class index {class_index} outside 0..{num_classes - 1}")
    one_hot = [0.0] * num_classes
    one_hot[class_index] = 1.0

    def strings(*values: bytes) -> Any:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))

    def integers(*values: int) -> Any:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    features = {
        "image": strings(image),
        "class": integers(class_index),
        "label": strings(label.encode("utf-8")),
        "size": integers(height, width),
        "one_hot_class": tf.train.Feature(float_list=tf.train.FloatList(value=one_hot)),
        "id": strings(photo_id.encode("ascii")),
        "source": strings(source.encode("utf-8", "surrogateescape")),
    }
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString(deterministic=True)


def write_example(writer: Any, **fields: Any) -> None:
    """Append one record (the keyword arguments of `serialize_example`) to an open
    `tf.io.TFRecordWriter`."""
    writer.write(serialize_example(**fields))


def write_shard(path: str | os.PathLike[str], records: Iterable[bytes]) -> int:
    """Write serialized records into one TFRecord file; return how many were written."""
    import tensorflow as tf

    count = 0
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)
            count += 1
    return count


# ----------------------------------------------------------------------------- inputs


def inventory_summary_path(inventory_csv: Path) -> Path:
    return inventory_csv.with_suffix(".json")


def read_kept_photos(inventory_csv: Path, inventory_json: Path) -> tuple[list[str], list[Photo], Counter]:
    """Classes (from the JSON summary), kept photos (from the CSV), cross-checked, and how many
    files of each class the inventory skipped and why ({(class, reason): files})."""
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
    photos, skipped = [], Counter()
    for row in rows:
        if row.status != KEPT:
            skipped[row.class_name, row.reason] += 1
            continue
        if row.class_name not in index:
            raise DataError(f"{inventory_csv}: kept photo {row.path} has class {row.class_name!r}, not among {classes}")
        photos.append(Photo(row.path, row.class_name, index[row.class_name], row.sha256))
    return classes, photos, skipped


def check_trainable(classes: list[str], photos: list[Photo], skipped: Counter | None = None) -> None:
    """DataError when the photos cannot make a classifier: fewer than two classes, or a class
    with fewer than 2 kept photos (one per split), naming each such class with why the
    inventory skipped its files."""
    if not classes:
        raise DataError("the inventory lists no classes")
    skipped = skipped or Counter()
    counts = Counter(photo.class_name for photo in photos)

    def described(name: str) -> str:
        reasons = sorted((reason, files) for (owner, reason), files in skipped.items() if owner == name)
        why = "; skipped: " + ", ".join(f"{reason} {files}" for reason, files in reasons) if reasons else ""
        return f"{name!r} ({counts[name]} usable{why})"

    if len(classes) < 2:
        raise DataError(
            f"only one class folder, {described(classes[0])}: a classifier needs at least two; put each "
            "class's photos in a folder of its own under the photo folder, then rerun the inventory")
    short = [name for name in classes if counts[name] < MIN_KEPT_PER_CLASS]
    if short:
        raise DataError(
            f"class(es) with fewer than {MIN_KEPT_PER_CLASS} usable photos, which cannot be both trained "
            f"and validated: {', '.join(map(described, short))}. Add photos to these class folders, or "
            "remove the folders, then rerun the inventory"
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
    import tensorflow as tf  # before the workers start: with TensorFlow loaded they are spawned, not forked

    ordered = [(shard, photo) for shard in plan for photo in shard.photos]
    tasks = [(str(root / photo.path), photo.path, image_size, jpeg_quality) for _, photo in ordered]
    entries = []
    written: dict[str, str] = {}  # photo id -> split, to refuse any photo written twice
    with prepared_in_order(tasks, threads, chunksize) as results, progress(len(tasks), "tfrecords", "img") as bar:
        for shard in plan:
            path = folder / shard.file
            with tf.io.TFRecordWriter(str(path)) as writer:
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


def build_tfrecords(
    root: str | os.PathLike[str],
    inventory_csv: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    manifest_path: str | os.PathLike[str],
    *,
    image_size: int = schema.default("data", "image_size"),
    jpeg_quality: int = schema.default("data", "jpeg_quality"),
    validation_fraction: float = schema.default("data", "validation_fraction"),
    shards: int = schema.default("data", "shards"),
    seed: int = schema.default("data", "seed"),
    threads: int = 1,
    inventory_json: str | os.PathLike[str] | None = None,
    chunksize: int = DEFAULT_CHUNKSIZE,
    data_source: str | None = None,
) -> dict[str, Any]:
    """Write the shards into `out_dir` and the manifest to `manifest_path`; return the manifest.
    `data_source` says what the photos are, as the config's data_source (default: the folder)."""
    root, out_dir, manifest_path = Path(root), Path(out_dir), Path(manifest_path)
    inventory_csv = Path(inventory_csv)
    inventory_json = Path(inventory_json) if inventory_json else inventory_summary_path(inventory_csv)
    check_settings(image_size, jpeg_quality, validation_fraction, shards, threads)
    if not root.is_dir():
        raise DataError(f"photo folder {root} not found")
    classes, photos, skipped = read_kept_photos(inventory_csv, inventory_json)
    check_trainable(classes, photos, skipped)
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
    manifest = manifest_for(classes, photos, entries, settings, sha256_file(inventory_csv), shard_dir,
                            data_source or str(root.resolve()))
    filesystem.write_json(manifest_path, manifest)
    logger.info(
        "wrote %d records (%d train, %d validation) in %d shards to %s in %.1f s (%.0f images/s)",
        len(photos), manifest["splits"]["train"]["records"], manifest["splits"]["validation"]["records"],
        len(entries), out_dir, seconds, len(photos) / seconds if seconds else 0.0,
    )
    return manifest


def build_parser(prog: str) -> argparse.ArgumentParser:
    """`flowerlab tfrecords --root DIR --inventory CSV --out-dir DIR --manifest JSON ...`."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Split the inventory's kept photos, resize them and write sharded TFRecords.",
    )
    parser.add_argument("--root", required=True, type=Path, help="the photo folder the inventory describes")
    parser.add_argument("--inventory", required=True, type=Path, help="inventory.csv")
    parser.add_argument("--inventory-json", type=Path, default=None,
                        help="inventory.json (default: the CSV's path with .json)")
    parser.add_argument("--out-dir", required=True, type=Path, help="folder of the .tfrec shards")
    parser.add_argument("--manifest", required=True, type=Path, help="manifest.json to write last")
    parser.add_argument("--image-size", type=positive_int, default=schema.default("data", "image_size"))
    parser.add_argument("--jpeg-quality", type=positive_int, default=schema.default("data", "jpeg_quality"))
    parser.add_argument("--validation-fraction", type=float, default=schema.default("data", "validation_fraction"))
    parser.add_argument("--shards", type=positive_int, default=schema.default("data", "shards"),
                        help="shard files across both splits")
    parser.add_argument("--seed", type=int, default=schema.default("data", "seed"),
                        help="decides the split and the record order")
    parser.add_argument("--threads", type=thread_count, default=1, help="worker processes")
    parser.add_argument("--data-source", default=None,
                        help="what the photos are, as the config's data_source: official, synthetic or their "
                             "folder (recorded in the manifest, and from there in every model and report; "
                             "default: the --root folder)")
    parser.add_argument("--chunksize", type=positive_int, default=DEFAULT_CHUNKSIZE,
                        help="photos per worker task (default %(default)s)")
    return parser


def cli(argv: list[str]) -> int:
    args = build_parser(f"flowerlab {argv[0]}").parse_args(argv[1:])
    configure_logging()
    return run_command(argv[0], lambda: build_tfrecords(
        args.root, args.inventory, args.out_dir, args.manifest, image_size=args.image_size,
        jpeg_quality=args.jpeg_quality, validation_fraction=args.validation_fraction, shards=args.shards,
        seed=args.seed, threads=args.threads, inventory_json=args.inventory_json, chunksize=args.chunksize,
        data_source=args.data_source,
    ))
