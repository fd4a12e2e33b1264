"""`convnet`: the course's notebook 07 solution, a plain stack of 3x3 convolutions.

Conv 16 -> Conv 30 -> MaxPool -> Conv 60 -> MaxPool -> Conv 90 -> MaxPool -> Conv 110 -> MaxPool
-> Conv 130 -> Conv1x1 40 -> GlobalAveragePooling -> Dense(num_classes, softmax); all convolutions
`same`-padded with ReLU: 293,233 parameters with 5 classes, at any image size (global pooling).
"""

from __future__ import annotations

import keras

from flowerlab.models.common import image_input, require_no_weights, softmax_classifier


def build(*, num_classes: int, image_size: int, weights: str = "none") -> keras.Model:
    require_no_weights("convnet", weights)
    inputs = image_input(image_size)

    def conv(filters: int, kernel_size: int = 3) -> keras.layers.Layer:
        return keras.layers.Conv2D(filters, kernel_size, padding="same", activation="relu")

    x = conv(16)(inputs)
    x = conv(30)(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = conv(60)(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = conv(90)(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = conv(110)(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = conv(130)(x)
    x = conv(40, kernel_size=1)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = softmax_classifier(num_classes)(x)
    return keras.Model(inputs, outputs, name="convnet")
