"""The baseline of the training benchmark: the plain Keras a user writes without this project.

The course's code in Keras 3: `keras.utils.image_dataset_from_directory` on the photos, mapped to
x / 255; each architecture written with plain Keras layers in float32 (squeezenet with
`keras.layers.BatchNormalization`, MobileNetV2 and Xception from `keras.applications`);
`compile(Adam, categorical cross-entropy, accuracy)`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import VALIDATION_SPLIT
from steps import Side

from flowerlab.errors import DataError

LEARNING_RATE = 1e-3  # Adam's default, the course's rate for these architectures


def plain_dense(keras: Any, num_classes: int, image_size: int, weights: str) -> Any:
    return keras.Sequential([
        keras.Input((image_size, image_size, 3)),
        keras.layers.Flatten(),
        keras.layers.Dense(500, activation="relu"),
        keras.layers.Dense(50, activation="relu"),
        keras.layers.Dense(num_classes, activation="softmax"),
    ])


def plain_convnet(keras: Any, num_classes: int, image_size: int, weights: str) -> Any:
    def conv(filters: int, kernel_size: int = 3) -> Any:
        return keras.layers.Conv2D(filters, kernel_size, padding="same", activation="relu")

    return keras.Sequential([
        keras.Input((image_size, image_size, 3)),
        conv(16), conv(30), keras.layers.MaxPooling2D(2),
        conv(60), keras.layers.MaxPooling2D(2),
        conv(90), keras.layers.MaxPooling2D(2),
        conv(110), keras.layers.MaxPooling2D(2),
        conv(130), conv(40, 1),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(num_classes, activation="softmax"),
    ])


def plain_squeezenet(keras: Any, num_classes: int, image_size: int, weights: str) -> Any:
    layers = keras.layers

    def conv_bn(x: Any, filters: int, kernel_size: int) -> Any:
        x = layers.Conv2D(filters, kernel_size, padding="same", activation="relu")(x)
        return layers.BatchNormalization(momentum=0.9)(x)

    def fire(x: Any, squeeze: int, expand: int) -> Any:
        y = conv_bn(x, squeeze, 1)
        return layers.concatenate([conv_bn(y, expand // 2, 1), conv_bn(y, expand // 2, 3)])

    inputs = keras.Input((image_size, image_size, 3))
    x = conv_bn(inputs, 32, 3)
    for squeeze, expand in [(24, 48), (48, 96), (64, 128), (48, 96)]:
        x = layers.MaxPooling2D(2)(fire(x, squeeze, expand))
    x = layers.GlobalAveragePooling2D()(fire(x, 24, 48))
    return keras.Model(inputs, layers.Dense(num_classes, activation="softmax")(x))


def plain_backbone_model(application: str, *, trainable: bool, head: str) -> Callable[..., Any]:
    """The course's transfer-learning code: a keras.applications backbone, frozen (notebook 04,
    Flatten head) or trainable (notebook 07's Xception, global-pooling head)."""

    def build(keras: Any, num_classes: int, image_size: int, weights: str) -> Any:
        backbone = getattr(keras.applications, application)(
            input_shape=(image_size, image_size, 3), include_top=False,
            weights=None if weights == "none" else weights)
        backbone.trainable = trainable
        pooling = keras.layers.Flatten() if head == "flatten" else keras.layers.GlobalAveragePooling2D()
        return keras.Sequential([keras.Input((image_size, image_size, 3)), backbone, pooling,
                                 keras.layers.Dense(num_classes, activation="softmax")])

    return build


PLAIN_BUILDERS: dict[str, Callable[..., Any]] = {
    "dense": plain_dense,
    "convnet": plain_convnet,
    "squeezenet": plain_squeezenet,
    "mobilenet_v2": plain_backbone_model("MobileNetV2", trainable=False, head="flatten"),
    "mobilenet_v2_finetune": plain_backbone_model("MobileNetV2", trainable=True, head="pool"),
    "xception": plain_backbone_model("Xception", trainable=True, head="pool"),
}


def plain_dataset(photos: Path, *, image_size: int, batch_size: int, seed: int) -> tuple[Any, int]:
    """The user's training dataset and its number of images (the flowers tutorial's code)."""
    import keras

    dataset = keras.utils.image_dataset_from_directory(
        photos, image_size=(image_size, image_size), batch_size=batch_size, label_mode="categorical",
        validation_split=VALIDATION_SPLIT, subset="training", seed=seed)
    images = len(dataset.file_paths)
    return dataset.map(lambda x, y: (x / 255, y)), images


def plain_image_count(photos: Path, *, image_size: int, batch_size: int, seed: int) -> int:
    """How many images the baseline's training subset holds."""
    return plain_dataset(photos, image_size=image_size, batch_size=batch_size, seed=seed)[1]


def plain_side(arch: str, photos: Path, image_size: int, batch_size: int, seed: int, weights: str,
               num_classes: int) -> Side:
    """The baseline side, built where it is timed (bench/child_side.py: a process of its own with
    TensorFlow's default kernel settings, as a user's process without this project has)."""
    import keras

    keras.utils.set_random_seed(seed)
    dataset, _ = plain_dataset(photos, image_size=image_size, batch_size=batch_size, seed=seed)
    model = build_plain(arch, num_classes=num_classes, image_size=image_size, weights=weights)
    return Side("plain", model, dataset, batch_size)


def build_plain(arch: str, *, num_classes: int, image_size: int, weights: str) -> Any:
    import keras

    keras.mixed_precision.set_global_policy("float32")  # what a user gets without asking
    model = PLAIN_BUILDERS[arch](keras, num_classes, image_size, weights)
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def check_photos(photos: Path, manifest: dict[str, Any]) -> None:
    """The plain side must read the photos the TFRecords were made from (class folders alike)."""
    if not photos.is_dir():
        raise DataError(f"photo folder {photos} not found: give --photos (the folder the TFRecords were made from)")
    folders = sorted(entry.name for entry in photos.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if folders != list(manifest["classes"]):
        raise DataError(
            f"the class folders of {photos} ({', '.join(folders) or 'none'}) are not the manifest's classes "
            f"({', '.join(manifest['classes'])}): give --photos the folder the TFRecords were made from"
        )

