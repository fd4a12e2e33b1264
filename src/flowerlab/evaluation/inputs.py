"""What an evaluation reads, checked before any work: the training record, the manifest, the model.

The cheap checks (the training record belongs to this architecture and manifest; the manifest's
classes and image size) run before TensorFlow starts; the model is loaded in Keras' safe mode
on the device asked for, with its input size read from the model itself.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from flowerlab.errors import ConfigError, DataError
from flowerlab.filesystem import sha256_file

logger = logging.getLogger(__name__)


def check_manifest(manifest: dict[str, Any], path: str | os.PathLike[str]) -> tuple[list[str], int]:
    """The class names and the image size of the records, after checking the manifest has them."""
    classes = manifest.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise DataError(
            f"manifest {path} has no list of class names under 'classes'; rerun the tfrecords stage"
        )
    if manifest.get("num_classes", len(classes)) != len(classes):
        raise DataError(
            f"manifest {path}: num_classes {manifest.get('num_classes')} != {len(classes)} class names"
        )
    image_size = manifest.get("image_size")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise DataError(
            f"manifest {path} has no valid 'image_size' ({image_size!r}); rerun the tfrecords stage"
        )
    return classes, image_size


def check_training_record(
    record: dict[str, Any],
    arch: str,
    manifest_path: str | os.PathLike[str],
    record_path: str | os.PathLike[str],
) -> None:
    """Refuse a model trained for another architecture or on another data split.

    A model trained on another manifest may have seen today's validation photos in training:
    its validation accuracy would be meaningless, so this is an error, not a warning.
    """
    if record.get("arch") not in (None, arch):
        raise DataError(f"{record_path} is the training record of {record['arch']!r}, not {arch!r}")
    trained_on = record.get("manifest_sha256")
    if trained_on:
        current = sha256_file(manifest_path)
        if trained_on != current:
            raise DataError(
                f"{arch} was trained on another manifest (sha256 {trained_on[:12]}…) than "
                f"{manifest_path} (sha256 {current[:12]}…): its validation split may overlap the "
                "model's training data. Retrain the model on the current data, or evaluate it "
                "with the manifest it was trained on."
            )


TRAINING_FIGURES = (
    "wall_seconds",
    "wall_seconds_before_resume",
    "learning_rate_schedule",
    "train_images_per_second",
    "hardware_share",
    "kernels",
    "epochs",
    "best_val_accuracy",
    "final_val_accuracy",
    "precision",
    "device",
    "backend",
    "hparams",
    "seed",
    "deterministic",
    "resumed_from_epoch",
    "parameters",
    "code_version",
    "versions",
    "manifest_sha256",
    "data_settings",
    "data_source",
    "weights",
    "weights_sha256",
    "accelerator_requested",
    "threads",
)


def training_figures(record: dict[str, Any]) -> dict[str, Any]:
    """The figures of training.json that metrics.json carries along (absent ones as None)."""
    return {key: record.get(key) for key in TRAINING_FIGURES}


def configure_threads(threads: int | None) -> dict[str, int]:
    """Limit TensorFlow's CPU thread pools as training does (None: TensorFlow's choice).

    Returns the pool sizes in effect (0 means TensorFlow's default: all cores). Must run
    before TensorFlow executes its first op.
    """
    import tensorflow as tf

    from flowerlab import devices

    if threads is not None:
        return devices.configure_threads(threads)
    return {
        "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
    }


def select_device(accelerator: str) -> dict[str, Any]:
    """Pick the one device evaluation runs on and describe it: {"kind", "name", "replicas"}.

    auto: the first GPU if TensorFlow sees one, else the CPU. Cost figures are per device:
    several GPUs would only measure the split of one batch. A TPU would need a distribution
    strategy around every timed call, so a study configured for `tpu` (training there) is
    evaluated on the host's GPU or CPU, with a warning, and metrics.json names that device;
    the TPU's training throughput still comes from training.json. Names are those training
    records use.
    """
    import tensorflow as tf

    from flowerlab import devices

    if accelerator == "tpu":
        logger.warning(
            "evaluation does not run on a TPU: measuring inference on the host's GPU or CPU "
            "instead (the TPU's training figures come from training.json)"
        )
        accelerator = "auto"
    if accelerator not in {"auto", "gpu", "cpu"}:
        raise ConfigError(f"unknown --accelerator {accelerator!r}: use auto, gpu or cpu")
    gpus = devices.physical_gpus()
    if accelerator == "gpu" and not gpus:
        raise ConfigError(
            "--accelerator gpu, but TensorFlow sees no GPU (is the CUDA build installed? "
            "is CUDA_VISIBLE_DEVICES empty?); use --accelerator auto or cpu"
        )
    if gpus and accelerator != "cpu":
        try:
            tf.config.set_visible_devices(gpus[0], "GPU")
            devices.enable_memory_growth(gpus[0])
        except RuntimeError as error:
            raise ConfigError(
                f"cannot select the GPU: TensorFlow is already initialised ({error}); "
                "run flowerlab evaluate in a fresh process"
            ) from None
        return {"kind": "gpu", "name": devices.gpu_model_name(gpus[0]), "replicas": 1}
    if gpus:
        devices.hide_gpus()
    return {"kind": "cpu", "name": devices.cpu_model_name(), "replicas": 1}


def load_model(path: str | os.PathLike[str]) -> Any:
    """Load a .keras model safely (no arbitrary code), with flowerlab's custom layers registered."""
    import keras

    import flowerlab.models.layers  # noqa: F401  (importing it registers the custom layers with Keras)

    path = Path(path)
    if not path.is_file():
        raise DataError(f"model not found: {path} (train it first: flowerlab train ...)")
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as error:  # Keras raises many types (zip, HDF5, TypeError, ValueError)
        raise DataError(
            f"cannot load model {path}: {type(error).__name__}: {error}. "
            "It may be corrupt or from another flowerlab version; retrain it."
        ) from error


def model_image_size(model: Any, num_classes: int, path: str | os.PathLike[str]) -> int:
    """The square input size of an image classifier, after checking its input and output shapes."""
    input_shape = tuple(model.input_shape) if not isinstance(model.input_shape, list) else None
    if (
        input_shape is None
        or len(input_shape) != 4
        or input_shape[3] != 3
        or input_shape[1] != input_shape[2]
        or input_shape[1] is None
    ):
        raise DataError(
            f"model {path} takes input {model.input_shape}, not square RGB images (None, S, S, 3)"
        )
    output_shape = tuple(model.output_shape)
    if len(output_shape) != 2 or output_shape[1] != num_classes:
        raise DataError(
            f"model {path} outputs {model.output_shape}, but the manifest has {num_classes} "
            "classes: it was trained on other data; retrain it"
        )
    return int(input_shape[1])

