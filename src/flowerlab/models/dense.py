"""`dense`: the fully connected baseline shown in the article that introduced the labs.

Flatten -> Dense(500, relu) -> Dense(50, relu) -> Dense(num_classes, softmax):
55,321,805 parameters at 192 px with 5 classes (docs/course.md). Almost all of them are in
the first layer (192·192·3·500), which is why it overfits and why the course moves on to
convolutions.
"""

from __future__ import annotations

import keras

from flowerlab.models.common import image_input, require_no_weights, softmax_classifier


def build(*, num_classes: int, image_size: int, weights: str = "none") -> keras.Model:
    require_no_weights("dense", weights)
    inputs = image_input(image_size)
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(500, activation="relu")(x)
    x = keras.layers.Dense(50, activation="relu")(x)
    outputs = softmax_classifier(num_classes)(x)
    return keras.Model(inputs, outputs, name="dense")


def parameter_count(*, num_classes: int, image_size: int) -> int:
    """The exact count, from the layer sizes: weights + biases of the three Dense layers."""
    flat = image_size * image_size * 3
    return (flat * 500 + 500) + (500 * 50 + 50) + (50 * num_classes + num_classes)
