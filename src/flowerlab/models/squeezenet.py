"""`squeezenet`: the course's notebook 07 SqueezeNet-style network of "fire" modules.

Conv3x3 32 (relu) -> BN; fire(24, 48) -> MaxPool -> fire(48, 96) -> MaxPool -> fire(64, 128)
-> MaxPool -> fire(48, 96) -> MaxPool -> fire(24, 48) -> GlobalAveragePooling ->
Dense(num_classes, softmax): 120,613 parameters (119,301 trainable; the 1,312 others are the
batch norms' moving statistics) with 5 classes, at any image size.

fire(s, e): y = BN(Conv1x1 s, relu)(x); concat[BN(Conv1x1 e/2, relu)(y), BN(Conv3x3 e/2, relu)(y)],
every BatchNormalization with momentum 0.9.

Batch normalisation uses TensorFlow's fused kernel on the TensorFlow backend
(`FusedBatchNormalization`, same weights and math as Keras' layer, checked by tests/test_models.py):
on 2 CPU cores it trains faster (bench/bench_models.py). On any other backend, and with
`batch_norm="keras"`, the same network is built with `keras.layers.BatchNormalization`: the same
weights, so the same parameter count and the same saved model.
"""

from __future__ import annotations

from typing import Literal

import keras

from flowerlab.models.common import image_input, require_no_weights, softmax_classifier
from flowerlab.models.layers import FusedBatchNormalization

BN_MOMENTUM = 0.9
BatchNormKind = Literal["fused", "keras"]
BATCH_NORM_KINDS: tuple[BatchNormKind, ...] = ("fused", "keras")


def make_batch_norm(kind: BatchNormKind) -> keras.layers.Layer:
    if kind == "fused":
        return FusedBatchNormalization(momentum=BN_MOMENTUM)
    if kind == "keras":
        return keras.layers.BatchNormalization(momentum=BN_MOMENTUM)
    raise ValueError(f"batch_norm must be one of {BATCH_NORM_KINDS}, got {kind!r}")


def conv_bn(
    x: keras.KerasTensor, filters: int, kernel_size: int, bn: BatchNormKind
) -> keras.KerasTensor:
    """The course's order: convolution with ReLU, then batch norm (not BN before ReLU)."""
    x = keras.layers.Conv2D(filters, kernel_size, padding="same", activation="relu")(x)
    return make_batch_norm(bn)(x)


def fire(x: keras.KerasTensor, squeeze: int, expand: int, bn: BatchNormKind) -> keras.KerasTensor:
    y = conv_bn(x, squeeze, 1, bn)
    left = conv_bn(y, expand // 2, 1, bn)
    right = conv_bn(y, expand // 2, 3, bn)
    return keras.layers.Concatenate()([left, right])


def default_batch_norm() -> BatchNormKind:
    """The fused kernel is TensorFlow's: other backends get the stock layer."""
    return "fused" if keras.backend.backend() == "tensorflow" else "keras"


def build(
    *,
    num_classes: int,
    image_size: int,
    weights: str = "none",
    batch_norm: BatchNormKind | None = None,
) -> keras.Model:
    require_no_weights("squeezenet", weights)
    batch_norm = batch_norm or default_batch_norm()
    if batch_norm not in BATCH_NORM_KINDS:
        raise ValueError(f"batch_norm must be one of {BATCH_NORM_KINDS}, got {batch_norm!r}")
    inputs = image_input(image_size)
    x = conv_bn(inputs, 32, 3, batch_norm)
    for squeeze, expand in [(24, 48), (48, 96), (64, 128), (48, 96)]:
        x = fire(x, squeeze, expand, batch_norm)
        x = keras.layers.MaxPooling2D(2)(x)
    x = fire(x, 24, 48, batch_norm)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = softmax_classifier(num_classes)(x)
    return keras.Model(inputs, outputs, name="squeezenet")
