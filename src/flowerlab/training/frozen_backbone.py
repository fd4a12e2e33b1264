"""Training a frozen-backbone model on cached backbone features (hparam `cache_features`).

A model such as `mobilenet_v2` is preprocessing -> a frozen backbone -> a trainable head. The
backbone's output for a photo never changes during training, yet the image path computes it
for every photo in every epoch, and on a CPU that forward pass is nearly all of the training
time. Here it runs once per photo:

1. the built (and compiled) model is split into an *extractor* (its preprocessing and the
   backbone itself, in inference mode) and a *head* (a model over the features made of the very
   layer objects of the full model, so training the head trains the saved model's weights in
   place);
2. the training and validation features are computed once, in the record order of the
   unshuffled pipeline, and kept in memory as float32 (the real data: 3,001 x 6 x 6 x 1280 x 4 B
   ~ 550 MB, validation ~ 120 MB);
3. the head trains with the same compile settings, batch size, epochs, learning-rate schedule
   and callbacks as the image path, one `fit` call per epoch, on batches gathered in the image
   path's own per-epoch order (`pipeline.epoch_order`: the same seeded shuffle), and validates
   on the cached validation features every epoch.

With `augment` the backbone's input differs every epoch, so the features are computed once per
epoch: each epoch's augmented images come from the image path's own training dataset (same
order, same augmentation seeds) and the head trains on them in that order. That keeps one
extraction per augmentation variant, keeps the augmented run equal to the image path's up
to float32 rounding. (The other choice, training on images
whenever augment is on, would keep the image path's cost for every augmented frozen model.)

The saved model.keras is the full image -> probabilities model with the trained head. (Folding
the backbone's batch norms into its convolutions was measured to save 3-27 s per training, under
1% of the study, and is not done.)

Timing, as the records report it: the extraction of the training features is charged to the
epoch it serves (epoch 1, or every epoch with augment), so history.csv's `epoch_seconds` sum to
the real time and its `images_per_second` are (training images) / (extraction + head training
seconds); `train_images_per_second` is their amortised rate over all epochs (no epoch excluded:
the extraction is the cost). The validation features go into epoch 1's
`epoch_seconds` only (they are not training images).

No checkpoints: the head trains in seconds, so an interrupted run restarts from scratch. A
checkpoint of the image path is never mixed in: `cache_features` is part of the hyperparameters,
hence of the checkpoint fingerprint, and this path does not look for checkpoints at all.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from flowerlab.models.build import count_parameters
from flowerlab.training.callbacks import EpochRecorder
from flowerlab.training.setup import Batching, DataPlan, TrainSettings, compile_model, dataset_options

logger = logging.getLogger(__name__)

LOG_EVERY_SECONDS = 10.0  # extraction progress lines (Snakemake logs have no progress bar)


def image_path_reason(spec: Any, hparams: Mapping[str, Any], device_kind: str, backend: str = "tensorflow") -> str | None:
    """Why this run trains on images rather than on cached features; None: use the cache."""
    if not spec.frozen_backbone_features:
        return f"{spec.name} has no frozen backbone"
    if not hparams.get("cache_features", True):
        return "cache_features is false"
    if backend != "tensorflow":
        return "the feature cache is TensorFlow code (tf.function extraction); on JAX the head trains on the images"
    if device_kind == "tpu":
        # Extraction calls the model outside a TPU strategy's replicas; never tried on a TPU.
        return "the feature cache is not supported on TPUs"
    return None


# --------------------------------------------------------------------------------------------
# Splitting the model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitModel:
    """The full model as extractor (image -> features) and head (features -> probabilities)."""

    extractor: keras.Model  # preprocessing + the frozen backbone, in inference mode
    head: keras.Model  # the full model's own head layers, over a features input


def _draws_random_numbers(layer: Any) -> bool:
    """Augmentation and dropout layers act only in training, which the cache would skip."""
    if isinstance(layer, keras.Model):
        return any(_draws_random_numbers(inner) for inner in layer.layers)
    return getattr(layer, "seed_generator", None) is not None


def layer_chain(model: keras.Model) -> list[Any]:
    """The model's layers in call order, when each is called once on the previous one's output
    (image -> ... -> probabilities); ValueError for any other graph."""
    nodes = [node for depth in sorted(model._nodes_by_depth, reverse=True)  # Keras' own graph order
             for node in model._nodes_by_depth[depth] if not node.is_input]
    previous = model.inputs
    chain = []
    for node in nodes:
        if len(previous) != 1 or len(node.input_tensors) != 1 or node.input_tensors[0] is not previous[0]:
            raise ValueError(f"{model.name} is not a chain of single-input layers at {node.operation.name}")
        chain.append(node.operation)
        previous = node.outputs
    if len(previous) != 1 or len(model.outputs) != 1 or previous[0] is not model.outputs[0]:
        raise ValueError(f"{model.name} is not a chain of single-input layers ending at its output")
    return chain


def split_frozen_backbone(model: keras.Model) -> SplitModel:
    """Split `model` (a chain: parameter-free preprocessing -> one frozen nested backbone ->
    head layers) into an extractor and a head sharing the model's own head layers."""
    chain = layer_chain(model)
    frozen = [index for index, layer in enumerate(chain) if isinstance(layer, keras.Model) and not layer.trainable]
    if len(frozen) != 1:
        raise ValueError(f"{model.name} needs exactly one frozen nested backbone, found {len(frozen)}")
    backbone = chain[frozen[0]]
    preprocessing, head_layers = chain[:frozen[0]], chain[frozen[0] + 1:]
    if any(layer.weights for layer in preprocessing):
        raise ValueError(f"{model.name}: the layers before its backbone must be parameter-free")
    if any(_draws_random_numbers(layer) for layer in [*preprocessing, backbone]):
        raise ValueError(f"{model.name}: a random layer (augmentation, dropout) before the head would act "
                         "in training, which cached features cannot reproduce")
    if not head_layers:
        raise ValueError(f"{model.name} has no head after its frozen backbone")

    def through(layers: Sequence[Any], inputs: Any, last: Any) -> keras.Model:
        x = inputs
        for layer in layers:
            x = layer(x)
        return keras.Model(inputs, last(x, training=False), name=f"{model.name}_{last.name}")

    image = model.inputs[0]
    extractor = through(preprocessing, keras.Input(image.shape[1:], dtype=image.dtype), backbone)
    features = keras.Input(backbone.outputs[0].shape[1:], dtype="float32", name="features")
    x = features
    for layer in head_layers:
        x = layer(x)  # the same layer objects: their weights are the full model's
    return SplitModel(extractor, keras.Model(features, x, name=f"{model.name}_head"))


# --------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------


@dataclass
class Features:
    """Backbone features and one-hot labels of a split, in the order extracted."""

    features: tf.Tensor  # float32 (n, *feature_shape)
    labels: tf.Tensor  # float32 (n, num_classes)
    seconds: float  # extraction wall time: input pipeline + backbone, first-call tracing included

    @property
    def count(self) -> int:
        return int(self.features.shape[0])


def extraction_function(extractor: keras.Model) -> Callable[[tf.Tensor], tf.Tensor]:
    """One traced graph for every batch size (the last batch is usually smaller), float32 out."""
    image = extractor.inputs[0]

    @tf.function(input_signature=[tf.TensorSpec((None, *image.shape[1:]), image.dtype)])
    def extract(images: tf.Tensor) -> tf.Tensor:
        return tf.cast(extractor(images, training=False), tf.float32)

    return extract


def extract_features(extract: Callable[[tf.Tensor], tf.Tensor], batches: Iterable[Any], *, expected: int,
                     what: str) -> Features:
    """Run `extract` over `batches` of (images, one-hot labels), with a progress line every
    LOG_EVERY_SECONDS."""
    started = last_line = time.perf_counter()
    features, labels, done = [], [], 0
    for images, one_hot in batches:
        features.append(extract(images))
        labels.append(one_hot)
        done += int(one_hot.shape[0])
        if time.perf_counter() - last_line >= LOG_EVERY_SECONDS:
            last_line = time.perf_counter()
            logger.info("%s: %d/%d images, %.0f images/s", what, done, expected, done / (last_line - started))
    if done != expected:
        raise RuntimeError(f"{what}: extracted {done} images, expected {expected}")
    features_tensor, labels_tensor = tf.concat(features, 0), tf.concat(labels, 0)
    seconds = time.perf_counter() - started
    logger.info("%s: %d images in %.1f s (%.0f images/s)", what, done, seconds, done / seconds)
    return Features(features_tensor, labels_tensor, seconds)


# --------------------------------------------------------------------------------------------
# Head training
# --------------------------------------------------------------------------------------------


def feature_batches(cached: Features, order: np.ndarray, *, batch_size: int, drop_remainder: bool) -> tf.data.Dataset:
    """Batches of (features, labels) gathered in `order` (indices into `cached`)."""
    features, labels = cached.features, cached.labels
    return (tf.data.Dataset.from_tensor_slices(order)
            .batch(batch_size, drop_remainder=drop_remainder)
            .map(lambda indices: (tf.gather(features, indices), tf.gather(labels, indices)))
            .prefetch(2))


def head_images_per_second(images_per_epoch: int, seconds: Sequence[float]) -> float | None:
    """Head-only images/s over the epochs after the first (which traces the training graph)."""
    steady = list(seconds[1:]) or list(seconds)
    return images_per_epoch * len(steady) / sum(steady) if steady else None


def image_datasets(settings: TrainSettings, plan: DataPlan, batching: Batching) -> tuple[Any, Any, Any]:
    """(training images in record order, validation images in record order, the image path's
    augmented training dataset over every epoch or None), as the image path's plan describes.

    Record order needs ordered reads (deterministic=True) whatever the run's setting; nothing is
    cached, since each image is read once (the augmented dataset, read every epoch, caches)."""
    from flowerlab.data.pipeline import make_dataset

    common = {**dataset_options(settings, plan, batching), "deterministic": True}
    train = make_dataset(plan.train_files, training=False, cache=False, expected_records=plan.train_records,
                         **common)
    validation = make_dataset(plan.validation_files, training=False, cache=False,
                              expected_records=plan.validation_records, **common)
    augmented = None
    if settings.hparams["augment"]:
        augmented = make_dataset(plan.train_files, training=True, augment=True, repeat=True, first_epoch=0,
                                 epochs=int(settings.hparams["epochs"]), drop_remainder=batching.drop_remainder,
                                 expected_records=plan.train_records, **common)
    return train, validation, augmented


def train_on_features(model: keras.Model, *, settings: TrainSettings, plan: DataPlan, batching: Batching,
                      schedule: Callable[[int], float], strategy: Any, callbacks: Sequence[Any],
                      recorder: EpochRecorder) -> dict[str, Any]:
    """Train `model`'s head on cached backbone features (the module's docstring), in place.

    `callbacks` are the image path's per-epoch callbacks, `recorder` (whose rows become
    history.csv) among them: the extraction's seconds are charged to it, so that the history sums
    to the real time. The head compiles as the image path compiles the whole model, in
    `strategy`'s scope as the model was built.
    Returns training.json's `feature_cache` record.
    """
    from flowerlab.data import pipeline

    started = time.perf_counter()
    arch, epochs, augment = settings.arch, int(settings.hparams["epochs"]), bool(settings.hparams["augment"])
    with strategy.scope():
        split = split_frozen_backbone(model)
        compile_model(split.head, schedule(0))
    extract = extraction_function(split.extractor)
    logger.info("%s: feature cache: backbone features computed %s", arch,
                "once per epoch (augment)" if augment else "once")
    train_images, validation_images, augmented_images = image_datasets(settings, plan, batching)
    validation = extract_features(extract, validation_images, expected=plan.validation_records,
                                  what=f"{arch}: validation features")
    validation_batches = feature_batches(validation, np.arange(validation.count), batch_size=batching.global_batch,
                                         drop_remainder=False)
    recorder.charge(other=time.perf_counter() - started)  # split, validation features

    epochs_of_images = iter(augmented_images) if augment else None
    cached, extraction_seconds = None, 0.0
    for epoch in range(epochs):
        if augment:
            batches = itertools.islice(epochs_of_images, batching.steps_per_epoch)
            cached = extract_features(extract, batches, expected=batching.images_per_epoch,
                                      what=f"{arch}: augmented training features, epoch {epoch + 1}")
            order = np.arange(cached.count)  # already in the image path's order of this epoch
        else:
            if cached is None:
                cached = extract_features(extract, train_images, expected=plan.train_records,
                                          what=f"{arch}: training features")
            order = pipeline.epoch_order(cached.count, epoch, seed=settings.seed)
        if augment or epoch == 0:
            extraction_seconds += cached.seconds
            recorder.charge(training=cached.seconds)
        split.head.fit(feature_batches(cached, order, batch_size=batching.global_batch,
                                       drop_remainder=batching.drop_remainder),
                       epochs=epoch + 1, initial_epoch=epoch, validation_data=validation_batches,
                       callbacks=list(callbacks), verbose=0, shuffle=False)  # EpochLogger's lines instead

    head_train_seconds = recorder.fit_train_seconds[-epochs:]
    head_seconds = sum(head_train_seconds)
    extracted = batching.images_per_epoch * (epochs if augment else 1)
    return {
        "used": True,
        "reason": "frozen backbone: features computed once per photo, only the head trains",
        "augmentation": "features of each epoch's augmented images" if augment else "none",
        "order": ("the image path's augmented training dataset, in its order" if augment
                  else "the image path's per-epoch order (pipeline.epoch_order)"),
        "feature_shape": [int(size) for size in cached.features.shape[1:]],
        "train_images_extracted": extracted,
        "train_extraction_seconds": extraction_seconds,
        "train_extraction_images_per_second": extracted / extraction_seconds,
        "validation_images": validation.count,
        "validation_extraction_seconds": validation.seconds,
        "head_trainable_parameters": count_parameters(split.head)[1],
        "head_train_seconds": head_seconds,
        "head_images_per_second": head_images_per_second(batching.images_per_epoch, head_train_seconds),
        "amortised_images_per_second": epochs * batching.images_per_epoch / (extraction_seconds + head_seconds),
    }
