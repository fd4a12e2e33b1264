"""The pieces every architecture shares: its input, its classifier, its argument checks."""

from __future__ import annotations

import keras

from flowerlab.errors import ConfigError

INPUT_NAME = "image"
CLASSIFIER_NAME = "classifier"


def image_input(image_size: int) -> keras.KerasTensor:
    """float32 images in [0, 1], (image_size, image_size, 3): the pipeline's contract."""
    return keras.Input(shape=(image_size, image_size, 3), dtype="float32", name=INPUT_NAME)


def softmax_classifier(num_classes: int) -> keras.layers.Dense:
    """The output layer: float32 even under a mixed policy, so the softmax and the loss do
    not lose precision (bfloat16 keeps only 8 bits of mantissa)."""
    return keras.layers.Dense(
        num_classes, activation="softmax", dtype="float32", name=CLASSIFIER_NAME
    )


def require_no_weights(arch: str, weights: str) -> None:
    """Architectures trained from scratch take no pretrained weights; say so, not ignore it."""
    if weights != "none":
        raise ConfigError(
            f"config key 'models.{arch}.weights': {arch} has no pretrained backbone and is "
            f"trained from scratch, so weights must be 'none' (got {weights!r}); remove the key"
        )
