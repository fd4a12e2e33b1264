"""The architectures of the study: one small `build(...) -> keras.Model` per architecture.

Every model takes float32 images in [0, 1] of shape (image_size, image_size, 3) — the input
pipeline's contract — and returns float32 softmax probabilities over `num_classes`. Any input
scaling a pretrained backbone expects happens inside the model, so a saved `model.keras` is the
whole image -> probabilities function. Models are returned uncompiled; build them inside
`strategy.scope()` and after `flowerlab.devices.apply_precision(...)`, since Keras layers take
the global dtype policy when they are created.

    >>> from flowerlab.models import build_model, count_parameters
    >>> model = build_model("convnet", num_classes=5, image_size=192)
    >>> count_parameters(model)
    (293233, 293233)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import keras

from flowerlab.errors import ConfigError
from flowerlab.models import convnet, dense, mobilenet_v2, squeezenet, xception
from flowerlab.models.backbone import IMAGENET, NO_WEIGHTS

logger = logging.getLogger(__name__)

BuildFunction = Callable[..., keras.Model]


@dataclass(frozen=True)
class ArchSpec:
    """What the pipeline needs to know about an architecture besides its layers."""

    name: str
    build: BuildFunction  # build(*, num_classes, image_size, weights) -> uncompiled keras.Model
    description: str
    uses_backbone_weights: bool  # takes weights: imagenet | none | PATH
    default_image_size: int | None  # None: the TFRecords' size
    min_image_size: int = 1  # smaller inputs leave an empty feature map or are refused by Keras
    # What precision "auto" picks on a CPU whose bfloat16 is AVX512_BF16 only (no AMX): the
    # faster of float32 and mixed_bfloat16 in training steps measured by bench/bench_models.py
    # on an AMD EPYC (Zen 4). convnet gained 3.2x and squeezenet 1.8x (once its batch norms
    # upcast where bfloat16 is slow: flowerlab.models.layers); dense 0.86x, frozen MobileNetV2
    # 1.0x, fine-tuned MobileNetV2 0.88x; xception was not measured (too slow for this
    # machine) and follows MobileNetV2, its closest relative (separable convs).
    # See flowerlab.devices.resolve_precision for TPUs, GPUs and AMX CPUs.
    cpu_precision: str = "float32"
    # Random backbone weights leave it at chance (MobileNetV2: its frozen batch norms shrink a
    # random network's features to ~1e-12); building it with weights "none" logs a warning.
    needs_pretrained_weights: bool = False
    # The model is preprocessing -> a frozen backbone -> a trainable head, so `flowerlab train`
    # can compute the backbone's features once per photo and train only the head on them
    # (flowerlab.feature_cache; hparam cache_features). Only for a backbone that is frozen in
    # the model itself: its output then never changes during training.
    frozen_backbone_features: bool = False


ARCHITECTURES: dict[str, ArchSpec] = {
    spec.name: spec
    for spec in (
        ArchSpec(
            name="dense",
            build=dense.build,
            description="Flatten -> Dense 500 -> Dense 50 -> softmax (the article's baseline)",
            uses_backbone_weights=False,
            default_image_size=None,
        ),
        ArchSpec(
            name="mobilenet_v2",
            build=mobilenet_v2.build_frozen,
            needs_pretrained_weights=True,
            frozen_backbone_features=True,
            description="frozen ImageNet MobileNetV2 -> Flatten -> softmax (course notebook 04)",
            uses_backbone_weights=True,
            default_image_size=None,
            min_image_size=mobilenet_v2.MIN_IMAGE_SIZE,
        ),
        ArchSpec(
            name="convnet",
            build=convnet.build,
            description="7 convolutions, 4 max-pools, global pooling (course notebook 07 solution)",
            uses_backbone_weights=False,
            default_image_size=None,
            min_image_size=convnet.MIN_IMAGE_SIZE,
            cpu_precision="mixed_bfloat16",
        ),
        ArchSpec(
            name="squeezenet",
            build=squeezenet.build,
            description="SqueezeNet-style fire modules with batch norm (course notebook 07)",
            uses_backbone_weights=False,
            default_image_size=None,
            min_image_size=squeezenet.MIN_IMAGE_SIZE,
            # 43.5 -> 77.3 images/s once FusedBatchNormalization upcast its 24-channel batch
            # norms (bfloat16 was 0.87x float32 before; see flowerlab.models.layers).
            cpu_precision="mixed_bfloat16",
        ),
        ArchSpec(
            name="mobilenet_v2_finetune",
            build=mobilenet_v2.build_finetune,
            needs_pretrained_weights=True,
            description="MobileNetV2 fine-tuned end to end (BN in inference mode) -> GAP -> softmax",
            uses_backbone_weights=True,
            default_image_size=None,
            min_image_size=mobilenet_v2.MIN_IMAGE_SIZE,
        ),
        ArchSpec(
            name="xception",
            build=xception.build,
            description="Xception fine-tuned end to end at 331 px -> GAP -> softmax (course's best)",
            uses_backbone_weights=True,
            default_image_size=xception.DEFAULT_IMAGE_SIZE,
            min_image_size=xception.MIN_IMAGE_SIZE,
        ),
    )
}


def get_spec(arch: str) -> ArchSpec:
    try:
        return ARCHITECTURES[arch]
    except KeyError:
        raise ConfigError(
            f"unknown architecture {arch!r}; allowed: {', '.join(ARCHITECTURES)}"
        ) from None


def normalise_weights(weights: str) -> str:
    """'imagenet' and 'none' in any case; anything else is a path, kept as given."""
    text = str(weights).strip()
    return text.lower() if text.lower() in (IMAGENET, NO_WEIGHTS) else text


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
    model = spec.build(num_classes=num_classes, image_size=image_size, weights=weights)
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


__all__ = [
    "ARCHITECTURES",
    "ArchSpec",
    "build_model",
    "count_parameters",
    "get_spec",
]
