"""Build an architecture of the registry as an uncompiled Keras model, and count its parameters.

Every model takes float32 images in [0, 1] of shape (image_size, image_size, 3) — the input
pipeline's contract — and returns float32 softmax probabilities over `num_classes`. Any input
scaling a pretrained backbone expects happens inside the model, so a saved `model.keras` is the
whole image -> probabilities function. Models are returned uncompiled; build them inside
`strategy.scope()` and after `flowerlab.devices.apply_precision(...)`, since Keras layers take
the global dtype policy when they are created.

    >>> from flowerlab.models.build import build_model, count_parameters
    >>> model = build_model("convnet", num_classes=5, image_size=192)
    >>> count_parameters(model)
    (293233, 293233)
"""

from __future__ import annotations

import logging
import math

import keras

from flowerlab.errors import ConfigError
from flowerlab.models.registry import NO_WEIGHTS, ArchSpec, get_spec, normalise_weights

logger = logging.getLogger(__name__)


def check_build_arguments(spec: ArchSpec, num_classes: int, image_size: int) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(
            f"{spec.name}: num_classes must be an integer >= 2 (a softmax over the classes of "
            f"the manifest), got {num_classes!r}"
        )
    if (
        isinstance(image_size, bool)
        or not isinstance(image_size, int)
        or image_size < spec.min_image_size
    ):
        raise ConfigError(
            f"{spec.name}: image_size must be an integer >= {spec.min_image_size} for this "
            f"architecture, got {image_size!r}; set data.image_size or models.{spec.name}.image_size"
        )


def build_model(
    arch: str, *, num_classes: int, image_size: int, weights: str = "none"
) -> keras.Model:
    """The uncompiled model `arch` for `num_classes` classes and square `image_size` inputs.

    `weights` applies to backbone architectures: "imagenet", "none" or the path of a local
    .h5 / .weights.h5 file; architectures without a backbone accept only "none".
    Unknown names, impossible sizes and unusable weights raise ConfigError (or DownloadError
    for ImageNet weights that cannot be downloaded).
    """
    spec = get_spec(arch)
    check_build_arguments(spec, num_classes, image_size)
    weights = normalise_weights(weights)
    if spec.needs_pretrained_weights and weights == NO_WEIGHTS:
        logger.warning(
            "%s with random weights (weights: none) stays at chance: with its batch norms "
            "frozen, a random backbone outputs near-zero features; set models.%s.weights "
            "to imagenet or a local .h5 file",
            arch,
            arch,
        )
    model = spec.build_function()(num_classes=num_classes, image_size=image_size, weights=weights)
    total, trainable = count_parameters(model)
    logger.info(
        "built %s: %d classes, %d px, weights %s, %s parameters (%s trainable), policy %s",
        arch,
        num_classes,
        image_size,
        weights,
        f"{total:,}",
        f"{trainable:,}",
        keras.mixed_precision.global_policy().name,
    )
    return model


def count_parameters(model: keras.Model) -> tuple[int, int]:
    """(total, trainable) parameter counts; a weight shared by several layers counts once."""

    def size(weights: list) -> int:
        unique = {id(weight): weight for weight in weights}
        return sum(math.prod(weight.shape) for weight in unique.values())

    return size(model.weights), size(model.trainable_weights)
