"""What both training paths share: settings, the data plan, batching, datasets and the compile step.

The image path (`flowerlab.training.stage`) and the frozen-backbone path
(`flowerlab.training.frozen_backbone`) both import this module and nothing of each other.
Settings and the data plan need no TensorFlow, so a bad setting fails in a second; the rest
imports it inside the functions that use it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowerlab import schema
from flowerlab.config import model_image_size, model_weights  # noqa: F401 (the training's, defined with the config's)
from flowerlab.errors import ConfigError, DataError
from flowerlab.filesystem import sha256_file


def _hparams_schema() -> tuple[dict[str, Any], dict[str, Any]]:
    """The `$defs/hparams` node of the config schema, and the whole schema (for its $refs)."""
    config_schema = schema.read_schema()
    return config_schema["$defs"]["hparams"], config_schema


def resolve_hparams(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Validate hyperparameters against the config schema's `$defs/hparams` and fill its defaults.

    Unknown keys, wrong types and out-of-range values (e.g. epochs 0) raise ConfigError naming
    the key and the allowed values; epochs and batch_size are required (the schema has no
    default for them). Returns a new dict sorted by key.
    """
    import jsonschema

    from flowerlab.config import describe_error, fill_defaults

    if not isinstance(raw, Mapping):
        raise ConfigError(f"--hparams must be a JSON object of hyperparameters, got {type(raw).__name__}")
    node, config_schema = _hparams_schema()
    hparams = fill_defaults(dict(raw), node, config_schema)
    validator = jsonschema.Draft202012Validator({"$defs": config_schema["$defs"], **node})
    errors = sorted(validator.iter_errors(hparams), key=lambda e: list(map(str, e.absolute_path)))
    problems = [describe_error(error, "hparams key") for error in errors]
    problems += [f"hparams key '{key}': missing (required)" for key in schema.REQUIRED_HPARAMS if key not in hparams]
    if problems:
        raise ConfigError("invalid hyperparameters:\n  " + "\n  ".join(problems))
    return dict(sorted(hparams.items()))


def parse_hparams(text: str) -> dict[str, Any]:
    """--hparams JSON -> resolved hyperparameters (see resolve_hparams)."""
    try:
        raw = json.loads(text)
    except ValueError as error:
        raise ConfigError(f"--hparams is not valid JSON ({error}): {text!r}") from None
    return resolve_hparams(raw)


@dataclass(frozen=True)
class TrainSettings:
    arch: str
    manifest: Path
    out_dir: Path
    checkpoint_dir: Path
    hparams: dict[str, Any]  # resolved (resolve_hparams)
    accelerator: str = schema.default("accelerator")
    backend: str = schema.default("backend")  # auto, tensorflow or jax (flowerlab.backends)
    seed: int = schema.default("seeds")[0]
    deterministic: bool = schema.default("deterministic")
    threads: int | None = None  # None: leave TensorFlow's thread pools as they are
    log_every_epoch: bool = False
    precision_cache: Path | None = None  # where precision probes are cached; None: probe, keep nothing
    peak_cache: Path | None = None  # where the machine's peak is cached (flowerlab.training.peak); None: keep nothing
    compile_cache: Path | None = None  # JAX's persistent compilation cache; None: compile every time


@dataclass(frozen=True)
class DataPlan:
    """What the manifest says about the data the model trains and validates on."""

    train_files: list[str]
    validation_files: list[str]
    train_records: int
    validation_records: int
    num_classes: int
    record_size: int  # image size in the TFRecords
    image_size: int  # model input size (resized in the pipeline when it differs)


def load_data_plan(manifest_path: Path, manifest: Mapping[str, Any], image_size: int | None) -> DataPlan:
    from flowerlab.data.manifest import shard_paths
    from flowerlab.data.records import count_records

    plan = DataPlan(
        train_files=shard_paths(manifest_path, "train"),
        validation_files=shard_paths(manifest_path, "validation"),
        train_records=count_records(manifest, "train"),
        validation_records=count_records(manifest, "validation"),
        num_classes=int(manifest["num_classes"]),
        record_size=int(manifest["image_size"]),
        image_size=int(image_size or manifest["image_size"]),
    )
    if plan.train_records == 0 or plan.validation_records == 0:
        raise DataError(
            f"{manifest_path} has {plan.train_records} training and {plan.validation_records} validation "
            "records; both splits need records to train and validate"
        )
    return plan


def weights_identity(weights: str) -> str | None:
    """sha256 of a local weights file (a changed file must not resume an old checkpoint)."""
    path = Path(weights).expanduser()
    return sha256_file(path) if weights not in ("imagenet", "none") and path.is_file() else None


@dataclass(frozen=True)
class Batching:
    global_batch: int  # batch_size x replicas (the course's per-core batch scaling)
    drop_remainder: bool  # TPUs need static batch shapes
    steps_per_epoch: int
    images_per_epoch: int


def plan_batches(arch: str, batch_size: int, device_kind: str, replicas: int, train_records: int, *,
                 even_batches: bool = False) -> Batching:
    """even_batches: every training batch whole (Keras on JAX: one compiled step, and a data-parallel
    batch splits evenly across the devices); TPUs always need them (static shapes). The few records
    a whole batch cannot take are left out of that epoch, a different few each epoch (shuffled)."""
    global_batch = batch_size * replicas
    drop_remainder = device_kind == "tpu" or even_batches
    from flowerlab.data.pipeline import batches_per_epoch

    steps = batches_per_epoch(train_records, global_batch, drop_remainder=drop_remainder)
    if steps == 0:
        raise ConfigError(
            f"global batch {global_batch} (batch_size x {replicas} replicas) exceeds the "
            f"{train_records} training records; lower models.{arch}.batch_size"
        )
    images = steps * global_batch if drop_remainder else train_records
    return Batching(global_batch, drop_remainder, steps, images)


def dataset_options(settings: TrainSettings, plan: DataPlan, batching: Batching) -> dict[str, Any]:
    """`make_dataset` keywords every dataset of a training shares (image path and feature cache)."""
    return {
        "image_size": plan.record_size, "num_classes": plan.num_classes, "batch_size": batching.global_batch,
        "target_size": plan.image_size if plan.image_size != plan.record_size else None,
        "seed": settings.seed, "threads": settings.threads,
    }


def make_datasets(settings: TrainSettings, plan: DataPlan, batching: Batching, first_epoch: int, *,
                  pad_validation: bool = False) -> tuple[Any, Any]:
    """The training dataset (from epoch `first_epoch` to the last) and the validation dataset.

    pad_validation: every validation batch padded to the global batch with weight-0 blank images
    (Keras on JAX: a data-parallel batch splits evenly across the devices, a TPU wants one shape),
    instead of a shorter last batch or, with drop_remainder, none."""
    from flowerlab.data.pipeline import make_dataset

    common = {**dataset_options(settings, plan, batching), "deterministic": settings.deterministic}
    train_data = make_dataset(plan.train_files, training=True, augment=bool(settings.hparams["augment"]),
                              repeat=True, first_epoch=first_epoch, epochs=int(settings.hparams["epochs"]),
                              expected_records=plan.train_records, drop_remainder=batching.drop_remainder, **common)
    validation_data = make_dataset(
        plan.validation_files, training=False, expected_records=plan.validation_records,
        drop_remainder=batching.drop_remainder and not pad_validation,
        pad_to_multiple=batching.global_batch if pad_validation else 1, **common)
    return train_data, validation_data


def seed_everything(seed: int, deterministic: bool) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)  # Python, NumPy, TensorFlow and Keras' generators
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def compile_model(model: Any, learning_rate: float) -> None:
    """Adam (the course's optimizer): on TensorFlow through its one-pass kernel
    (flowerlab.training.optimizers), on JAX Keras' own. The loss averages over the weighted
    images, so that the blank images padding a data-parallel validation batch count for nothing
    (without weights, as in training, it is the plain mean)."""
    import keras

    from flowerlab.training.optimizers import FusedAdam

    optimizer = FusedAdam if keras.backend.backend() == "tensorflow" else keras.optimizers.Adam
    model.compile(
        optimizer=optimizer(learning_rate=learning_rate),
        # the pipeline's labels are one-hot
        loss=keras.losses.CategoricalCrossentropy(reduction="mean_with_sample_weight"),
        weighted_metrics=["accuracy"],  # Keras' `metrics` ignore the weights
    )

