"""The tf.data input pipeline: sharded TFRecords -> batches of float images in [0, 1] + one-hot labels.

The order follows the course (REFERENCE.md §2) with two changes that keep its results and cut its
cost on a small machine:

* the cache holds the *decoded uint8* images (3,000 x 192 x 192 x 3 bytes ~ 330 MB) instead of
  float32 ones (4x more), and the shuffle buffer holds uint8 images too; conversion to float
  happens after the shuffle, per batch when nothing else needs per-image work;
* a repeated (training) dataset is a sequence of *epochs*, each shuffled and augmented with seeds
  derived from (seed, epoch number). Epoch e therefore sees the same order and the same
  augmentations whether training ran straight through or was resumed at epoch e, which is what
  makes a resumed run identical to an uninterrupted one in deterministic mode.

Labels are one-hot float32 vectors (train.py uses categorical cross-entropy, as the course).

Bad records do not surface as a deep TensorFlow stack: every record is checked (image size,
class index) with an assertion that names its shard, and `translate_record_errors` turns the
errors TensorFlow raises while iterating into a `DataError` with a readable message.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from flowerlab.errors import ConfigError, DataError
from flowerlab.filesystem import sha256_file

logger = logging.getLogger(__name__)

AUTOTUNE = tf.data.AUTOTUNE
SPLITS = ("train", "validation")

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

# Records in the training shuffle's buffer (uint8 images: 2,000 x 192 x 192 x 3 B ~ 220 MB).
SHUFFLE_BUFFER = 2000

# Per-element augmentation seeds are (seed, epoch * stride + index): distinct for every image of
# every epoch as long as an epoch has fewer than 2**32 images.
_EPOCH_SEED_STRIDE = 2**32


# --------------------------------------------------------------------------------------------
# Manifest helpers (no iteration over records)
# --------------------------------------------------------------------------------------------


def _as_manifest(manifest: Mapping[str, Any] | str | os.PathLike[str]) -> Mapping[str, Any]:
    if isinstance(manifest, Mapping):
        return manifest
    from flowerlab.data.tfrecords import load_manifest

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
    from flowerlab.data.tfrecords import DEFAULT_SHARD_DIR

    manifest_path = Path(manifest_path)
    data = _as_manifest(manifest_path)
    folder = manifest_path.parent / data.get("shard_dir", DEFAULT_SHARD_DIR)
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


# --------------------------------------------------------------------------------------------
# Record decoding
# --------------------------------------------------------------------------------------------


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


def _check_files(files: Sequence[str | os.PathLike[str]]) -> list[str]:
    paths = [os.fspath(f) for f in files]
    if not paths:
        raise DataError("no TFRecord files given to the input pipeline; check the manifest's splits")
    for path in paths:
        if not os.path.isfile(path):
            raise DataError(f"TFRecord shard {path} does not exist; rebuild the TFRecords")
        if os.path.getsize(path) == 0:
            raise DataError(f"TFRecord shard {path} is empty; rebuild the TFRecords")
    return paths


def probe_first_records(files: Sequence[str], *, image_size: int, num_classes: int) -> None:
    """Decode the first record of every shard now, so that a shard written at another image size
    (or not a TFRecord file at all) fails before any training starts, with the shard's name."""
    for path in files:
        with translate_record_errors([path]):
            for serialized in tf.data.TFRecordDataset(path).take(1):
                decode_record(
                    tf.constant(path), serialized, image_size=image_size, num_classes=num_classes
                )


# --------------------------------------------------------------------------------------------
# Errors raised while iterating
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------------


def _validate_arguments(
    *, image_size: int, num_classes: int, batch_size: int, target_size: int | None,
    shuffle_buffer: int, threads: int | None,
) -> None:
    for name, value in (("image_size", image_size), ("num_classes", num_classes), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"input pipeline: {name} must be a positive integer, got {value!r}")
    if target_size is not None and (not isinstance(target_size, int) or target_size < 1):
        raise ConfigError(f"input pipeline: target_size must be a positive integer or None, got {target_size!r}")
    if not isinstance(shuffle_buffer, int) or shuffle_buffer < 0:
        raise ConfigError(f"input pipeline: shuffle_buffer must be >= 0, got {shuffle_buffer!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"input pipeline: threads must be a positive integer or None, got {threads!r}")


def _read_records(files: list[str], *, deterministic: bool) -> tf.data.Dataset:
    """(shard path, serialized record) pairs, reading shards in parallel.

    This is what `TFRecordDataset(files, num_parallel_reads=AUTOTUNE)` does internally (an
    interleave over files), written out so that each record carries its shard's name for the
    record check's error message.
    """
    return tf.data.Dataset.from_tensor_slices(files).interleave(
        lambda path: tf.data.TFRecordDataset(path).map(lambda record: (path, record)),
        cycle_length=min(len(files), 16),
        num_parallel_calls=AUTOTUNE,
        deterministic=deterministic,
    )


def _to_unit_float(image: tf.Tensor) -> tf.Tensor:
    # uint8 [0, 255] -> float32 [0, 1] (x / 255): the very op flowerlab.evaluation.stage uses, so a model
    # is evaluated on bit-identical inputs to those it was trained on.
    return tf.image.convert_image_dtype(image, tf.float32)


def _augment(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """The course's augmentation on a float [0, 1] image, with stateless (reproducible) seeds.

    Saturation is scaled in HSV and clipped there, so the result stays within [0, 1].
    """
    flip_seed, saturation_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
    return tf.image.stateless_random_saturation(image, 0.0, 2.0, seed=saturation_seed)


def _shuffle_epoch(dataset: tf.data.Dataset, epoch: int, *, seed: int, shuffle_buffer: int) -> tf.data.Dataset:
    """Epoch `epoch`'s order: a distinct, reproducible shuffle per epoch (none when the buffer is 0).

    It depends only on (seed, epoch, buffer, number of elements), never on their content, so
    `epoch_order` reproduces it on record indices."""
    if shuffle_buffer <= 0:
        return dataset
    return dataset.shuffle(shuffle_buffer, seed=seed * 1_000_003 + epoch, reshuffle_each_iteration=False)


def epoch_order(records: int, epoch: int, *, seed: int, shuffle_buffer: int = SHUFFLE_BUFFER) -> np.ndarray:
    """The record indices (0 .. records-1, in the unshuffled record order) in the order that
    `make_dataset(training=True, seed=seed)` presents them in `epoch`: the feature cache
    (flowerlab.training.frozen_backbone) trains on cached features in the image path's very order. Call
    it after the same global seed is set (TensorFlow pairs it with the shuffle's seed)."""
    indices = _shuffle_epoch(tf.data.Dataset.range(records), epoch, seed=seed, shuffle_buffer=shuffle_buffer)
    return np.fromiter(indices.as_numpy_iterator(), dtype=np.int64, count=records)


def _epoch(
    decoded: tf.data.Dataset, epoch: int, *, seed: int, shuffle_buffer: int, augment: bool
) -> tf.data.Dataset:
    """One training epoch of (image, label): shuffled and augmented as a pure function of
    (seed, epoch), so a resumed run sees exactly the epochs an uninterrupted run would.

    `epoch` is a Python int on purpose: a tensor op seed breaks `shuffle` when the global seed
    is 0 (TensorFlow compares the seed pair with a Python `==`)."""
    dataset = _shuffle_epoch(decoded, epoch, seed=seed, shuffle_buffer=shuffle_buffer)
    if not augment:
        return dataset

    def augment_element(index: tf.Tensor, element: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        image, label = element
        element_seed = tf.stack([tf.constant(seed, tf.int64), epoch * _EPOCH_SEED_STRIDE + index])
        return _augment(_to_unit_float(image), element_seed), label

    return dataset.enumerate().map(augment_element, num_parallel_calls=AUTOTUNE)


def make_dataset(
    files: Sequence[str | os.PathLike[str]],
    *,
    image_size: int,
    num_classes: int,
    batch_size: int,
    training: bool,
    augment: bool = False,
    target_size: int | None = None,
    cache: bool = True,
    shuffle_buffer: int = SHUFFLE_BUFFER,
    seed: int | None = None,
    deterministic: bool = False,
    drop_remainder: bool = False,
    repeat: bool = False,
    threads: int | None = None,
    first_epoch: int = 0,
    epochs: int | None = None,
    check_first_records: bool = True,
    expected_records: int | None = None,
    keys: bool = False,
) -> tf.data.Dataset:
    """Batches of `(images, labels)` from TFRecord shards written as docs/architecture.md says.

    images: float32 in [0, 1], shape (B, S, S, 3) with S = `target_size` or `image_size` (static;
    B is static too when `drop_remainder`). labels: one-hot float32, shape (B, num_classes).

    training: shuffle (`shuffle_buffer` > 0) and, with `augment`, random flip + saturation.
    repeat (training only): the epochs `first_epoch` .. `epochs - 1` (Keras's `epochs`), each a
    full pass over the records batched on its own, so that with `steps_per_epoch =
    batches_per_epoch(...)` Keras epochs and data epochs coincide exactly, whatever the remainder.
    Without `repeat` a training dataset is the single epoch `first_epoch`. Not training: one pass
    in record order (when `deterministic`), no augmentation.
    deterministic: ordered parallel reads and maps; every random op is seeded from `seed` (a
    random seed is drawn when None).
    threads: bounds tf.data's private thread pool (None: TensorFlow's default).
    target_size: resize (bilinear) on the fly when the model's input differs from the records.
    check_first_records: decode each shard's first record now, to fail early on a wrong size.
    expected_records: the manifest's count for these files; reading a different number is a
    DataError (via translate_record_errors), and it gives the dataset a known length, so Keras
    knows how many validation batches to expect.
    keys (not training): batches are `(images, labels, {"id": ..., "source": ...})`, each record
    with its photo's sha256 and inventory path (bytes), for predictions that name their photos.
    """
    paths = _check_files(files)
    _validate_arguments(
        image_size=image_size, num_classes=num_classes, batch_size=batch_size,
        target_size=target_size, shuffle_buffer=shuffle_buffer, threads=threads,
    )
    if repeat and not training:
        raise ConfigError("input pipeline: repeat=True is only meaningful for a training dataset")
    if keys and training:
        raise ConfigError("input pipeline: keys=True is for evaluation datasets (Keras' fit reads a third element as weights)")
    if repeat and (epochs is None or epochs <= first_epoch):
        raise ConfigError(f"input pipeline: repeat=True needs epochs > first_epoch ({first_epoch}), got {epochs}")
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    if check_first_records:
        probe_first_records(paths, image_size=image_size, num_classes=num_classes)

    decoded = _read_records(paths, deterministic=deterministic).map(
        lambda shard, record: decode_record(shard, record, image_size=image_size, num_classes=num_classes,
                                            keys=keys),
        num_parallel_calls=AUTOTUNE,
        deterministic=deterministic,
    )
    if expected_records is not None:
        decoded = decoded.apply(tf.data.experimental.assert_cardinality(expected_records))
    if cache:
        decoded = decoded.cache()  # uint8: 4x smaller than the course's cached floats

    per_image_float = training and augment

    def batched(data: tf.data.Dataset) -> tf.data.Dataset:
        return data.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=AUTOTUNE,
                          deterministic=deterministic)

    if training:
        shuffle = max(0, shuffle_buffer)
        last_epoch = epochs if repeat else first_epoch + 1
        # Batched per epoch, so no batch straddles two epochs.
        dataset = functools.reduce(tf.data.Dataset.concatenate, [
            batched(_epoch(decoded, epoch, seed=seed, shuffle_buffer=shuffle, augment=augment))
            for epoch in range(first_epoch, last_epoch)
        ])
    else:
        dataset = batched(decoded)
    size = target_size or image_size

    def finish_batch(images: tf.Tensor, labels: tf.Tensor, *record_keys: Any) -> tuple[Any, ...]:
        # Converting a whole batch at once is much cheaper than one small op per image.
        if not per_image_float:
            images = _to_unit_float(images)
        if target_size is not None and target_size != image_size:
            # Bilinear weights are convex (no antialiasing kernel): values stay within [0, 1].
            images = tf.image.resize(images, [target_size, target_size], method="bilinear")
        images = tf.ensure_shape(images, [batch_size if drop_remainder else None, size, size, 3])
        labels = tf.ensure_shape(labels, [batch_size if drop_remainder else None, num_classes])
        return (images, labels, *record_keys)

    dataset = dataset.map(finish_batch, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    dataset = dataset.prefetch(AUTOTUNE)
    return dataset.with_options(_options(deterministic=deterministic, threads=threads))


def _options(*, deterministic: bool, threads: int | None) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = deterministic
    if threads is not None:
        options.threading.private_threadpool_size = threads
    return options


def batches_per_epoch(records: int, batch_size: int, *, drop_remainder: bool) -> int:
    """Number of batches one pass over `records` yields (the Keras steps_per_epoch)."""
    if drop_remainder:
        return records // batch_size
    return -(-records // batch_size)
