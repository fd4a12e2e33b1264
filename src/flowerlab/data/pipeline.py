"""The tf.data input pipeline: sharded TFRecords -> batches of float images in [0, 1] + one-hot labels.

The order follows the course (docs/course.md, the input pipeline) with two changes that keep its results and cut its
cost on a small machine:

* the cache holds the *decoded uint8* images (3,000 x 192 x 192 x 3 bytes ~ 330 MB) instead of
  float32 ones (4x more), and the shuffle buffer holds uint8 images too; conversion to float
  happens after the shuffle, per batch when nothing else needs per-image work;
* a repeated (training) dataset is a sequence of *epochs*, each shuffled and augmented with seeds
  derived from (seed, epoch number). Epoch e therefore sees the same order and the same
  augmentations whether training ran straight through or was resumed at epoch e, which is what
  makes a resumed run identical to an uninterrupted one in deterministic mode.

Labels are one-hot float32 vectors (training uses categorical cross-entropy, as the course).

Records are read and checked by `flowerlab.data.records` (the one decoder of a record, whose
errors name their shard).
"""

from __future__ import annotations

import functools
import logging
import os
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from flowerlab.data.records import decode_record, existing_files, probe_first_records, records_with_shard
from flowerlab.errors import ConfigError

logger = logging.getLogger(__name__)

AUTOTUNE = tf.data.AUTOTUNE


# Records in the training shuffle's buffer (uint8 images: 2,000 x 192 x 192 x 3 B ~ 220 MB).
SHUFFLE_BUFFER = 2000

# Per-element augmentation seeds are (seed, epoch * stride + index): distinct for every image of
# every epoch as long as an epoch has fewer than 2**32 images.
_EPOCH_SEED_STRIDE = 2**32


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
    pad_to_multiple: int = 1,
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
    pad_to_multiple (not training, no keys): batches are `(images, labels, weights)`, each padded
    with blank images to a multiple of this, weight 1 for a record and 0 for a pad: data-parallel
    Keras on JAX splits every batch evenly across its devices, and the last validation batch must
    still count every record once and nothing else.
    """
    paths = existing_files(files)
    _validate_arguments(
        image_size=image_size, num_classes=num_classes, batch_size=batch_size,
        target_size=target_size, shuffle_buffer=shuffle_buffer, threads=threads,
    )
    _validate_modes(training=training, repeat=repeat, keys=keys, first_epoch=first_epoch, epochs=epochs)
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    if check_first_records:
        probe_first_records(paths, image_size=image_size, num_classes=num_classes)

    decoded = _decoded_records(paths, image_size=image_size, num_classes=num_classes, keys=keys,
                               deterministic=deterministic, expected_records=expected_records, cache=cache)
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
    finish_batch = _batch_finisher(image_size=image_size, target_size=target_size, num_classes=num_classes,
                                   static_batch=batch_size if drop_remainder else None,
                                   already_float=per_image_float)
    dataset = dataset.map(finish_batch, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    if pad_to_multiple > 1:
        if training or keys:
            raise ConfigError("input pipeline: pad_to_multiple is for validation datasets without keys")
        dataset = dataset.map(_batch_padder(pad_to_multiple), num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    dataset = dataset.prefetch(AUTOTUNE)
    return dataset.with_options(_options(deterministic=deterministic, threads=threads))


def _decoded_records(paths: list[str], *, image_size: int, num_classes: int, keys: bool, deterministic: bool,
                     expected_records: int | None, cache: bool) -> tf.data.Dataset:
    """Every record decoded and checked (flowerlab.data.records), counted, and cached as uint8."""
    decoded = records_with_shard(paths, deterministic=deterministic).map(
        lambda shard, record: decode_record(shard, record, image_size=image_size, num_classes=num_classes,
                                            keys=keys),
        num_parallel_calls=AUTOTUNE,
        deterministic=deterministic,
    )
    if expected_records is not None:
        decoded = decoded.apply(tf.data.experimental.assert_cardinality(expected_records))
    if cache:
        decoded = decoded.cache()  # uint8: 4x smaller than the course's cached floats
    return decoded


def _validate_modes(*, training: bool, repeat: bool, keys: bool, first_epoch: int, epochs: int | None) -> None:
    if repeat and not training:
        raise ConfigError("input pipeline: repeat=True is only meaningful for a training dataset")
    if keys and training:
        raise ConfigError("input pipeline: keys=True is for evaluation datasets (Keras' fit reads a third element "
                          "as weights)")
    if repeat and (epochs is None or epochs <= first_epoch):
        raise ConfigError(f"input pipeline: repeat=True needs epochs > first_epoch ({first_epoch}), got {epochs}")


def model_input(images: tf.Tensor, *, image_size: int, target_size: int | None, already_float: bool = False) -> tf.Tensor:
    """A batch of decoded record images (uint8, S x S) -> what the model sees: float in [0, 1],
    resized to `target_size` when the model's input differs from the records."""
    if not already_float:
        images = _to_unit_float(images)
    if target_size is not None and target_size != image_size:
        # Bilinear weights are convex (no antialiasing kernel): values stay within [0, 1].
        images = tf.image.resize(images, [target_size, target_size], method="bilinear")
    return images


def decode_photos(jpegs: Sequence[bytes], *, image_size: int, target_size: int | None) -> tf.Tensor:
    """Photos encoded as the TFRecords hold them (flowerlab.data.images.prepare_photo) -> the
    batch a model sees, through the same decode, scaling and resizing as training and evaluation."""
    images = tf.stack([tf.io.decode_jpeg(jpeg, channels=3) for jpeg in jpegs])
    return model_input(images, image_size=image_size, target_size=target_size)


def _batch_finisher(*, image_size: int, target_size: int | None, num_classes: int, static_batch: int | None,
                    already_float: bool) -> Any:
    """The last step of every batch: to float in [0, 1] (unless augmentation already did it per
    image), resized when the model's input differs from the records, with static shapes."""
    size = target_size or image_size

    def finish_batch(images: tf.Tensor, labels: tf.Tensor, *record_keys: Any) -> tuple[Any, ...]:
        # Converting a whole batch at once is much cheaper than one small op per image.
        images = model_input(images, image_size=image_size, target_size=target_size, already_float=already_float)
        images = tf.ensure_shape(images, [static_batch, size, size, 3])
        labels = tf.ensure_shape(labels, [static_batch, num_classes])
        return (images, labels, *record_keys)

    return finish_batch


def _batch_padder(multiple: int) -> Any:
    """(images, labels) -> (images, labels, weights), padded to a multiple of `multiple` with
    blank images of weight 0."""

    def pad(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        count = tf.shape(images)[0]
        extra = (multiple - count % multiple) % multiple
        weights = tf.concat([tf.ones([count]), tf.zeros([extra])], 0)
        return (tf.pad(images, [[0, extra], [0, 0], [0, 0], [0, 0]]), tf.pad(labels, [[0, extra], [0, 0]]),
                weights)

    return pad


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
