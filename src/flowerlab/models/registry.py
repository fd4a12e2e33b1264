"""The one list of the study's architectures, and what the pipeline knows about each.

This module imports neither Keras nor TensorFlow: the config check, the schema's allowed names,
the report and the benchmarks read it without paying for a TensorFlow start. The layers live
in one module per architecture, named by `ArchSpec.builder` and imported only when a model is
built (`flowerlab.models.build`).

The course figures are those the *Fast and Lean Data Science* notebooks printed
(docs/course.md): parameter counts at 5 classes and the course's image size, and the final
validation accuracy. Architectures beyond the course have none.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flowerlab.errors import ConfigError

IMAGENET = "imagenet"
NO_WEIGHTS = "none"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"  # the first bytes of a Keras .h5 weights file


@dataclass(frozen=True)
class CourseFigures:
    """What the course printed for this architecture (docs/course.md)."""

    parameters: int  # total, 5 classes, at the course's image size
    trainable_parameters: int
    val_accuracy: float | None  # final validation accuracy its notebook printed; None: not printed


@dataclass(frozen=True)
class ImageNetWeights:
    """The ImageNet weights file Keras publishes for a backbone without its classifier.

    Keras picks the file by input size for some backbones (MobileNetV2 has one per trained
    resolution); `file_for` makes the same pick, so `weights: imagenet` fetched by the workflow
    is the very file `keras.applications` would download itself.
    """

    application: str  # the keras.applications factory the file is for
    path: str  # below Keras' weights store (config key weights_url); "{size}": the trained resolution
    md5: str | None = None  # the hash Keras pins in its source; None where Keras pins none
    sizes: tuple[int, ...] = ()  # resolutions with a file of their own
    fallback_size: int = 224  # Keras' choice for any other input size

    def path_for(self, image_size: int) -> str:
        """The file's path below the store for a model of `image_size` px."""
        return self.path.format(size=image_size if image_size in self.sizes else self.fallback_size)

    def file_for(self, image_size: int) -> str:
        return self.path_for(image_size).rsplit("/", 1)[-1]

    def url_for(self, image_size: int, base_url: str) -> str:
        return base_url.rstrip("/") + "/" + self.path_for(image_size)


MOBILENET_V2_IMAGENET = ImageNetWeights(
    "MobileNetV2",
    "mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{size}_no_top.h5",
    sizes=(96, 128, 160, 192, 224),
)
XCEPTION_IMAGENET = ImageNetWeights(
    "Xception",
    "xception/xception_weights_tf_dim_ordering_tf_kernels_notop.h5", md5="b0042744bf5b25fce3cb969f33bebb97"
)


@dataclass(frozen=True)
class ArchSpec:
    """What the pipeline needs to know about an architecture besides its layers."""

    name: str
    builder: str  # "module:function"; build(*, num_classes, image_size, weights) -> uncompiled keras.Model
    description: str
    uses_backbone_weights: bool  # takes weights: imagenet | none | PATH
    default_image_size: int | None = None  # None: the TFRecords' size
    min_image_size: int = 1  # smaller inputs leave an empty feature map or are refused by Keras
    # Random backbone weights leave it at chance (MobileNetV2: its frozen batch norms shrink a
    # random network's features to ~1e-12); building it with weights "none" logs a warning.
    needs_pretrained_weights: bool = False
    # The model is preprocessing -> a frozen backbone -> a trainable head, so `flowerlab train`
    # can compute the backbone's features once per photo and train only the head on them
    # (flowerlab.training.frozen_backbone; hparam cache_features). Only for a backbone that is
    # frozen in the model itself: its output then never changes during training.
    frozen_backbone_features: bool = False
    course: CourseFigures | None = None  # None: an architecture beyond the course
    imagenet: ImageNetWeights | None = None  # the file behind `weights: imagenet`

    @property
    def in_course(self) -> bool:
        return self.course is not None

    @property
    def module(self) -> str:
        """The module holding the architecture's layers (part of its training's code version)."""
        return self.builder.split(":")[0]

    def build_function(self) -> Callable[..., Any]:
        """The architecture's build function (imports its module, and so Keras)."""
        return getattr(importlib.import_module(self.module), self.builder.split(":")[1])


ARCHITECTURES: dict[str, ArchSpec] = {
    spec.name: spec
    for spec in (
        ArchSpec(
            name="dense",
            builder="flowerlab.models.dense:build",
            description="Flatten -> Dense 500 -> Dense 50 -> softmax (the article's baseline)",
            uses_backbone_weights=False,
            # The article shows it; no notebook printed its accuracy.
            course=CourseFigures(55_321_805, 55_321_805, None),
        ),
        ArchSpec(
            name="mobilenet_v2",
            builder="flowerlab.models.mobilenet_v2:build_frozen",
            description="frozen ImageNet MobileNetV2 -> Flatten -> softmax (course notebook 04)",
            uses_backbone_weights=True,
            min_image_size=32,  # keras.applications.MobileNetV2 refuses smaller inputs
            needs_pretrained_weights=True,
            frozen_backbone_features=True,
            course=CourseFigures(2_488_389, 230_405, 0.8641),  # 10 epochs, on a GPU
            imagenet=MOBILENET_V2_IMAGENET,
        ),
        ArchSpec(
            name="convnet",
            builder="flowerlab.models.convnet:build",
            description="7 convolutions, 4 max-pools, global pooling (course notebook 07 solution)",
            uses_backbone_weights=False,
            min_image_size=16,  # four 2x2 poolings: the last feature map must not be empty
            course=CourseFigures(293_233, 293_233, 0.7043),  # 20 epochs
        ),
        ArchSpec(
            name="squeezenet",
            builder="flowerlab.models.squeezenet:build",
            description="SqueezeNet-style fire modules with batch norm (course notebook 07)",
            uses_backbone_weights=False,
            min_image_size=16,  # four 2x2 poolings
            course=CourseFigures(120_613, 119_301, 0.8101),  # 35 epochs
        ),
        ArchSpec(
            name="mobilenet_v2_finetune",
            builder="flowerlab.models.mobilenet_v2:build_finetune",
            description="MobileNetV2 fine-tuned end to end (BN in inference mode) -> GAP -> softmax",
            uses_backbone_weights=True,
            min_image_size=32,
            needs_pretrained_weights=True,
            imagenet=MOBILENET_V2_IMAGENET,
        ),
        ArchSpec(
            name="xception",
            builder="flowerlab.models.xception:build",
            description="Xception fine-tuned end to end at 331 px -> GAP -> softmax (course's best)",
            uses_backbone_weights=True,
            default_image_size=331,  # the course's size for it
            min_image_size=71,  # keras.applications.Xception refuses smaller inputs
            course=CourseFigures(20_871_725, 20_817_197, 0.9676),  # 12 epochs at 331 px
            imagenet=XCEPTION_IMAGENET,
        ),
    )
}
ARCH_NAMES: tuple[str, ...] = tuple(ARCHITECTURES)
BACKBONE_ARCHS: tuple[str, ...] = tuple(name for name, spec in ARCHITECTURES.items() if spec.uses_backbone_weights)
COURSE_ARCHITECTURES: tuple[str, ...] = ("dense", "mobilenet_v2", "convnet", "squeezenet")
"""The course's four: the study's subtotal of job time is theirs (xception is the course's too,
but too slow for a CPU study)."""


def get_spec(arch: str) -> ArchSpec:
    try:
        return ARCHITECTURES[arch]
    except KeyError:
        raise ConfigError(f"unknown architecture {arch!r}; allowed: {', '.join(ARCHITECTURES)}") from None


def course_val_accuracy(arch: str) -> float | None:
    """The final validation accuracy the course printed for `arch`, or None."""
    course = ARCHITECTURES[arch].course if arch in ARCHITECTURES else None
    return course.val_accuracy if course is not None else None


def normalise_weights(weights: str) -> str:
    """'imagenet' and 'none' in any case; anything else is a path, kept as given."""
    text = str(weights).strip()
    return text.lower() if text.lower() in (IMAGENET, NO_WEIGHTS) else text
