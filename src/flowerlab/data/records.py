"""Reading the TFRecords: the one decoder of a record, the manifest's shards, and errors that name them.

Every record is checked as it is decoded (image size, class index) with an assertion that names
its shard, and `translate_record_errors` turns what TensorFlow raises while iterating into a
`DataError` with a readable message: bad records never surface as a deep TensorFlow stack.
The datasets built on this decoder are `flowerlab.data.pipeline`'s.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import tensorflow as tf

from flowerlab.errors import DataError
from flowerlab.filesystem import sha256_file

AUTOTUNE = tf.data.AUTOTUNE

# Only the two features training needs are parsed: fewer, cheaper parse ops per record.
RECORD_FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "class": tf.io.FixedLenFeature([], tf.int64),
}


# What identifies a record besides its content: the photo's sha256 and its inventory path. Parsed
# only for `make_dataset(keys=True)` (evaluation's predictions, the report's gallery).
KEY_FEATURES = {
    "id": tf.io.FixedLenFeature([], tf.string),
    "source": tf.io.FixedLenFeature([], tf.string),
}


# Tag carried by the per-record assertion so that its failure can be told apart from any other
# InvalidArgumentError (a model bug must not be reported as bad data).
RECORD_CHECK_TAG = "flowerlab record check failed"



def _as_manifest(manifest: Mapping[str, Any] | str | os.PathLike[str]) -> Mapping[str, Any]:
    if isinstance(manifest, Mapping):
        return manifest
    from flowerlab.data.manifest import load_manifest

    return load_manifest(manifest)


def count_records(manifest: Mapping[str, Any] | str | os.PathLike[str], split: str) -> int:
    """Number of records in `split`, read from the manifest (a dict or the manifest's path).

    The split total is cross-checked against the sum over its shards so that an inconsistent
    manifest is caught here rather than as a wrong steps-per-epoch later.
    """
    data = _as_manifest(manifest)
    splits = data.get("splits", {})
    if split not in splits:
        raise DataError(
            f"manifest has no split {split!r} (it has {sorted(splits)}); rebuild the TFRecords"
        )
    declared = int(splits[split]["records"])
    in_shards = sum(int(s["records"]) for s in data.get("shards", []) if s.get("split") == split)
    if declared != in_shards:
        raise DataError(
            f"manifest is inconsistent: split {split!r} declares {declared} records but its "
            f"shards hold {in_shards}; rebuild the TFRecords"
        )
    return declared


def verify_shards(manifest_path: str | os.PathLike[str], split: str | None = None) -> list[str]:
    """Check that every shard of `split` (all splits when None) exists with the manifest's sha256.

    Reading the shards once costs a fraction of a second for the real data and catches a
    truncated or corrupted shard *by name*, which TensorFlow's reader cannot do. Returns the
    verified paths.
    """
    from flowerlab.data.manifest import shard_folder

    manifest_path = Path(manifest_path)
    data = _as_manifest(manifest_path)
    folder = shard_folder(manifest_path, data)
    verified = []
    for shard in data.get("shards", []):
        if split is not None and shard.get("split") != split:
            continue
        path = folder / shard["file"]
        if not path.is_file():
            raise DataError(f"TFRecord shard {path} listed in {manifest_path} is missing; rebuild the TFRecords")
        actual = sha256_file(path)
        if actual != shard["sha256"]:
            raise DataError(
                f"TFRecord shard {path} is corrupt or was changed: sha256 {actual} differs from "
                f"{shard['sha256']} in {manifest_path}; rebuild the TFRecords"
            )
        verified.append(str(path))
    return verified


def decode_record(
    shard: tf.Tensor, serialized: tf.Tensor, *, image_size: int, num_classes: int, keys: bool = False
) -> tuple[tf.Tensor, ...]:
    """One serialized record -> (uint8 image with static shape (S, S, 3), one-hot float32 label),
    and with `keys` a third element {"id", "source"} (strings).

    `shard` (the file the record came from) only feeds the error message of the record check.
    """
    example = tf.io.parse_single_example(serialized, {**RECORD_FEATURES, **(KEY_FEATURES if keys else {})})
    image = tf.io.decode_jpeg(example["image"], channels=3)
    label = example["class"]
    shape = tf.shape(image)
    record_ok = tf.logical_and(
        tf.logical_and(tf.equal(shape[0], image_size), tf.equal(shape[1], image_size)),
        tf.logical_and(label >= 0, label < num_classes),
    )
    # tf.one_hot would silently turn an out-of-range class into an all-zero label: refuse it.
    check = tf.debugging.Assert(
        record_ok,
        [
            RECORD_CHECK_TAG,
            "shard",
            shard,
            "image shape",
            shape,
            "class",
            label,
            f"expected {image_size}x{image_size}x3 images and classes 0..{num_classes - 1}",
        ],
        summarize=8,
    )
    with tf.control_dependencies([check]):
        image = tf.reshape(image, [image_size, image_size, 3])
    one_hot = tf.one_hot(label, num_classes, dtype=tf.float32)
    if keys:
        return image, one_hot, {name: example[name] for name in KEY_FEATURES}
    return image, one_hot


def existing_files(files: Sequence[str | os.PathLike[str]]) -> list[str]:
    paths = [os.fspath(f) for f in files]
    if not paths:
        raise DataError("no TFRecord files given to the input pipeline; check the manifest's splits")
    for path in paths:
        if not os.path.isfile(path):
            raise DataError(f"TFRecord shard {path} does not exist; rebuild the TFRecords")
        if os.path.getsize(path) == 0:
            raise DataError(f"TFRecord shard {path} is empty; rebuild the TFRecords")
    return paths


# TensorFlow's own default read buffer per shard, given explicitly: left unset, TensorFlow logs
# that it is unset once per shard opened.
READ_BUFFER_BYTES = 256 * 1024


def probe_first_records(files: Sequence[str], *, image_size: int, num_classes: int) -> None:
    """Decode the first record of every shard now, so that a shard written at another image size
    (or not a TFRecord file at all) fails before any training starts, with the shard's name."""
    for path in files:
        with translate_record_errors([path]):
            for serialized in tf.data.TFRecordDataset(path, buffer_size=READ_BUFFER_BYTES).take(1):
                decode_record(
                    tf.constant(path), serialized, image_size=image_size, num_classes=num_classes
                )


_GRAPH_ASSERTION = re.compile(r"assertion failed: ((?:\[[^\]]*\] ?)+)")


_BRACKETED = re.compile(r"\[([^\]]*)\]")


_TF_DATA_WORDS = ("jpeg", "decodejpeg", "example", "feature", "parse", "record")


def _record_check_fields(message: str) -> list[str]:
    """The data items of a failed record check, from either form TensorFlow prints them in:
    graph/tf.data "assertion failed: [a] [b] ..." or eager "Summarized data: b'a'\\nb'b'..."."""
    graph = _GRAPH_ASSERTION.search(message)
    if graph:
        items = _BRACKETED.findall(graph.group(1))
    else:
        items = message.split("Summarized data:", 1)[-1].strip().splitlines()
    items = [re.sub(r"(\d),\s*", r"\1 ", re.sub(r"^b'(.*)'$", r"\1", item.strip())) for item in items]
    return items[items.index(RECORD_CHECK_TAG) + 1:] if RECORD_CHECK_TAG in items else items


def describe_record_error(error: tf.errors.OpError, files: Sequence[str]) -> str | None:
    """A readable message for an error raised while reading records, or None when the error is
    not about the records (then it must propagate unchanged)."""
    message = error.message or str(error)
    if RECORD_CHECK_TAG in message:
        items = _record_check_fields(message)
        fields = dict(zip(items[0::2], items[1::2], strict=False))  # ["shard", path, "image shape", ...] pairs
        expected = next((item for item in items if item.startswith("expected")), "")
        return (
            f"bad record in TFRecord shard {fields.get('shard', '?')}: image shape "
            f"{fields.get('image shape', '?')}, class {fields.get('class', '?')} ({expected}); "
            "rebuild the TFRecords (flowerlab tfrecords) with the manifest's image size"
        )
    first_line = next((line for line in message.splitlines() if line.strip()), message).strip()
    shards = ", ".join(files[:4]) + (f" (+{len(files) - 4} more)" if len(files) > 4 else "")
    if isinstance(error, tf.errors.DataLossError):
        return (
            f"a TFRecord shard is corrupt or truncated ({first_line}) in: {shards}; "
            "verify the shards against the manifest's sha256 and rebuild the TFRecords"
        )
    if isinstance(error, tf.errors.FailedPreconditionError) and "expected to contain" in message:
        return (
            f"the TFRecord shards hold another number of records than the manifest says ({first_line}) "
            f"in: {shards}; rebuild the TFRecords"
        )
    lowered = message.lower()
    if isinstance(error, tf.errors.InvalidArgumentError) and any(w in lowered for w in _TF_DATA_WORDS):
        return f"a TFRecord record could not be decoded ({first_line}) in: {shards}; rebuild the TFRecords"
    return None


@contextlib.contextmanager
def translate_record_errors(files: Sequence[str | os.PathLike[str]]) -> Iterator[None]:
    """Turn TensorFlow's errors about unreadable records into a `DataError` naming the files."""
    try:
        yield
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError, tf.errors.FailedPreconditionError) as error:
        described = describe_record_error(error, [os.fspath(f) for f in files])
        if described is None:
            raise
        raise DataError(described) from error


def records_with_shard(files: list[str], *, deterministic: bool) -> tf.data.Dataset:
    """(shard path, serialized record) pairs, reading shards in parallel.

    This is what `TFRecordDataset(files, num_parallel_reads=AUTOTUNE)` does internally (an
    interleave over files), written out so that each record carries its shard's name for the
    record check's error message.
    """
    return tf.data.Dataset.from_tensor_slices(files).interleave(
        lambda path: tf.data.TFRecordDataset(path, buffer_size=READ_BUFFER_BYTES).map(lambda record: (path, record)),
        cycle_length=min(len(files), 16),
        num_parallel_calls=AUTOTUNE,
        deterministic=deterministic,
    )

