"""`flowerlab train`: train one architecture on the TFRecords, resumably; write its record.

    flowerlab train --arch convnet --manifest results/data/manifest.json \\
        --out-dir results/models/convnet --checkpoint-dir results/checkpoints/convnet \\
        --hparams '{"epochs": 20, "batch_size": 32, ...}' --accelerator auto --seed 42 \\
        [--deterministic] --threads 2 [--log-every-epoch]

Order of work (each step needs the one before): check the settings and the data (no TensorFlow
yet, so mistakes fail in a second) -> limit TensorFlow's threads -> pick the device strategy ->
resolve and apply the precision policy -> seed everything (and op determinism) -> find a
checkpoint of this very experiment -> build and compile the model inside `strategy.scope()` (or
restore it with its optimizer) -> fit from the checkpoint's epoch -> write model.keras,
history.csv and training.json (docs/architecture.md), each atomically, training.json last.

Resuming. After every epoch a checkpoint (model + optimizer state + history rows + seeds and
wall time) is written atomically into --checkpoint-dir (see flowerlab.checkpoints). A rerun with
the same fingerprint continues at the next epoch with `initial_epoch`, so the learning-rate
schedule and the data order (seeded per epoch, flowerlab.data.pipeline) are those an
uninterrupted run would have had; the history continues without gap or duplicate. Once the
outputs are written the checkpoints are deleted: they exist only to survive a crash, and a
later rerun (Snakemake reruns only on changed inputs or code) must train from scratch rather
than reuse a model trained by other code.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowerlab import atomic, checkpoints, provenance
from flowerlab.data.common import (
    configure_logging,
    positive_int,
    run_command,
    sha256_file,
)
from flowerlab.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

REQUIRED_HPARAMS = ("epochs", "batch_size")
HISTORY_COLUMNS = (
    "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "epoch_seconds",
    "images_per_second",
)
MODEL_FILE = "model.keras"
HISTORY_FILE = "history.csv"
RECORD_FILE = "training.json"


# --------------------------------------------------------------------------------------------
# Settings (no TensorFlow)
# --------------------------------------------------------------------------------------------


def _hparams_schema() -> tuple[dict[str, Any], dict[str, Any]]:
    """The `$defs/hparams` node of the config schema, and the whole schema (for its $refs)."""
    from flowerlab.config import load_schema

    schema = load_schema()
    return schema["$defs"]["hparams"], schema


def resolve_hparams(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Validate hyperparameters against the config schema's `$defs/hparams` and fill its defaults.

    Unknown keys, wrong types and out-of-range values (e.g. epochs 0) raise ConfigError naming
    the key and the allowed values; epochs and batch_size are required (the schema has no
    default for them). Returns a new dict sorted by key.
    """
    import jsonschema

    from flowerlab.config import fill_defaults

    if not isinstance(raw, Mapping):
        raise ConfigError(f"--hparams must be a JSON object of hyperparameters, got {type(raw).__name__}")
    node, schema = _hparams_schema()
    hparams = fill_defaults(dict(raw), node, schema)
    validator = jsonschema.Draft202012Validator({"$defs": schema["$defs"], **node})
    problems = []
    for error in sorted(validator.iter_errors(hparams), key=lambda e: list(map(str, e.absolute_path))):
        key = ".".join(map(str, error.absolute_path)) or "(top level)"
        allowed = ""
        if error.validator == "additionalProperties":
            allowed = f" (allowed keys: {', '.join(sorted(node['properties']))})"
        elif error.validator == "enum":
            allowed = f" (allowed: {', '.join(map(str, error.validator_value))})"
        problems.append(f"hparams key '{key}': {error.message}{allowed}")
    problems += [f"hparams key '{key}': missing (required)" for key in REQUIRED_HPARAMS if key not in hparams]
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
    accelerator: str = "auto"
    seed: int = 42
    deterministic: bool = False
    threads: int | None = None  # None: leave TensorFlow's thread pools as they are
    log_every_epoch: bool = False


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
    from flowerlab.data.pipeline import count_records
    from flowerlab.data.tfrecords import shard_paths

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


def model_image_size(hparams: Mapping[str, Any], default_image_size: int | None) -> int | None:
    """hparams.image_size, else the architecture's own default (xception: 331), else None
    (= the TFRecords' size)."""
    return hparams.get("image_size") or default_image_size


def model_weights(hparams: Mapping[str, Any], uses_backbone_weights: bool) -> str:
    """hparams.weights, else ImageNet for backbone models (as the config's check assumes)."""
    return str(hparams.get("weights") or ("imagenet" if uses_backbone_weights else "none"))


def weights_identity(weights: str) -> str | None:
    """sha256 of a local weights file (a changed file must not resume an old checkpoint)."""
    path = Path(weights).expanduser()
    return sha256_file(path) if weights not in ("imagenet", "none") and path.is_file() else None


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


def steady_state_images_per_second(
    rows: Sequence[Mapping[str, Any]], session_first_epochs: Sequence[int]
) -> tuple[float | None, list[int]]:
    """Training images/s over the epochs that did not start a session (a session's first epoch
    traces the graphs and fills the cache). Returns (rate, epochs used). When every epoch
    started a session (a 1-epoch run), all epochs are used and listed, so the figure is never
    silently missing and its basis is always recorded.

    Every epoch trains on the same number of images, so the overall rate (total images / total
    training time) is the harmonic mean of the per-epoch rates.
    """
    first = set(session_first_epochs)
    rated = [row for row in rows if row.get("images_per_second")]
    used = [row for row in rated if row["epoch"] not in first] or rated
    if not used:
        return None, []
    rate = len(used) / sum(1.0 / float(row["images_per_second"]) for row in used)
    return rate, [int(row["epoch"]) for row in used]


def history_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """history.csv text: the documented columns, one row per epoch, empty cells for None."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: ("" if row.get(key) is None else row[key]) for key in HISTORY_COLUMNS})
    return buffer.getvalue()


def check_history(rows: Sequence[Mapping[str, Any]], epochs: int) -> None:
    """Each epoch 1..epochs exactly once, in order (a resume must neither repeat nor skip one)."""
    found = [row["epoch"] for row in rows]
    if found != list(range(1, epochs + 1)):
        raise RuntimeError(f"history rows are for epochs {found}, expected 1..{epochs}")


def best_and_final(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[float | None, float | None]:
    values = [row[key] for row in rows if row.get(key) is not None]
    return (max(values) if values else None), (rows[-1].get(key) if rows else None)


# --------------------------------------------------------------------------------------------
# Training (TensorFlow from here on)
# --------------------------------------------------------------------------------------------


def seed_everything(seed: int, deterministic: bool) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)  # Python, NumPy, TensorFlow and Keras' generators
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def compile_model(model: Any, learning_rate: float) -> None:
    """Adam (the course's optimizer) through TensorFlow's one-pass kernel: flowerlab.optimizers."""
    import keras

    from flowerlab.optimizers import FusedAdam

    model.compile(
        optimizer=FusedAdam(learning_rate=learning_rate),
        loss=keras.losses.CategoricalCrossentropy(),  # the pipeline's labels are one-hot
        metrics=["accuracy"],
    )


def inference_copy(model: Any) -> Any:
    """The trained model without optimizer state: what model.keras holds (image -> probabilities).

    The optimizer's moments would double or triple the file for nothing evaluation needs, and
    make the reported model size meaningless. Rebuilt from its config rather than with
    `keras.models.clone_model`, which in Keras 3.15 carries the compiled optimizer over (the
    dense model's file was 3x its weights).
    """
    copy = model.__class__.from_config(model.get_config())
    copy.set_weights(model.get_weights())
    return copy


def save_model_atomically(model: Any, path: Path) -> None:
    """Keras needs the .keras suffix, so the temporary name ends with it too."""
    temporary = path.with_name(f".{path.stem}.tmp-{os.getpid()}.keras")
    try:
        model.save(temporary)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_outputs(out_dir: Path, model: Any, rows: Sequence[Mapping[str, Any]], record: Mapping[str, Any]) -> None:
    """model.keras, history.csv, then training.json (the last one written marks completion)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    save_model_atomically(inference_copy(model), out_dir / MODEL_FILE)
    atomic.write_text(out_dir / HISTORY_FILE, history_csv(rows))
    atomic.write_json(out_dir / RECORD_FILE, dict(record))


@dataclass
class Session:
    """What this process adds to a (possibly resumed) training run."""

    started: float = field(default_factory=time.monotonic)
    initial_epoch: int = 0
    prior_wall_seconds: float = 0.0
    session_first_epochs: list[int] = field(default_factory=list)
    prior_rows: list[dict[str, Any]] = field(default_factory=list)

    def wall_seconds(self) -> float:
        return self.prior_wall_seconds + (time.monotonic() - self.started)


def start_session(resume: checkpoints.Checkpoint | None, epochs: int) -> Session:
    """A fresh session, or one continuing `resume`'s epochs, history and wall time."""
    session = Session()
    if resume is not None:
        session.initial_epoch = resume.epoch
        session.prior_wall_seconds = float(resume.state.get("wall_seconds", 0.0))
        session.session_first_epochs = list(resume.state.get("session_first_epochs", []))
        session.prior_rows = list(resume.state.get("history", []))
        check_history(session.prior_rows, resume.epoch)
    if session.initial_epoch < epochs:
        session.session_first_epochs.append(session.initial_epoch + 1)
    return session


@dataclass(frozen=True)
class Batching:
    global_batch: int  # batch_size x replicas (the course's per-core batch scaling)
    drop_remainder: bool  # TPUs need static batch shapes
    steps_per_epoch: int
    images_per_epoch: int


def plan_batches(arch: str, batch_size: int, device_kind: str, replicas: int, train_records: int) -> Batching:
    global_batch = batch_size * replicas
    drop_remainder = device_kind == "tpu"
    from flowerlab.data.pipeline import batches_per_epoch

    steps = batches_per_epoch(train_records, global_batch, drop_remainder=drop_remainder)
    if steps == 0:
        raise ConfigError(
            f"global batch {global_batch} (batch_size x {replicas} replicas) exceeds the "
            f"{train_records} training records; lower models.{arch}.batch_size"
        )
    images = steps * global_batch if drop_remainder else train_records
    return Batching(global_batch, drop_remainder, steps, images)


def build_or_restore(settings: TrainSettings, device: Any, resume: checkpoints.Checkpoint | None, plan: DataPlan,
                     weights: str, first_learning_rate: float) -> Any:
    """Inside the strategy's scope: the checkpoint's compiled model with its optimizer state, or a
    new model compiled with Adam, categorical cross-entropy and accuracy."""
    import keras

    from flowerlab import models, optimizers  # noqa: F401 (optimizers registers FusedAdam for load_model)

    with device.strategy.scope():
        if resume is not None:
            return keras.models.load_model(resume.model_path)
        model = models.build_model(settings.arch, num_classes=plan.num_classes, image_size=plan.image_size,
                                   weights=weights)
        compile_model(model, first_learning_rate)
        return model


def dataset_options(settings: TrainSettings, plan: DataPlan, batching: Batching) -> dict[str, Any]:
    """`make_dataset` keywords every dataset of a training shares (image path and feature cache)."""
    return {
        "image_size": plan.record_size, "num_classes": plan.num_classes, "batch_size": batching.global_batch,
        "target_size": plan.image_size if plan.image_size != plan.record_size else None,
        "seed": settings.seed, "threads": settings.threads,
    }


def make_datasets(settings: TrainSettings, plan: DataPlan, batching: Batching, first_epoch: int) -> tuple[Any, Any]:
    """The training dataset (from epoch `first_epoch` to the last) and the validation dataset."""
    from flowerlab.data.pipeline import make_dataset

    common = {**dataset_options(settings, plan, batching), "deterministic": settings.deterministic,
              "drop_remainder": batching.drop_remainder}
    train_data = make_dataset(plan.train_files, training=True, augment=bool(settings.hparams["augment"]),
                              repeat=True, first_epoch=first_epoch, epochs=int(settings.hparams["epochs"]),
                              expected_records=plan.train_records, **common)
    validation_data = make_dataset(plan.validation_files, training=False,
                                   expected_records=plan.validation_records, **common)
    return train_data, validation_data


def training_record(settings: TrainSettings, *, model: Any, device: Any, precision: str, plan: DataPlan,
                    batching: Batching, session: Session, rows: Sequence[Mapping[str, Any]],
                    resumed_from_epoch: int, weights: str, fingerprint: str,
                    data_settings: Mapping[str, Any], weights_sha256: str | None) -> dict[str, Any]:
    """training.json (docs/architecture.md), plus the figures that explain it (sizes, batches) and
    what a rerun needs besides the manifest's checksum: the data stage's settings, the local
    weights' sha256, the accelerator asked for and the thread limit."""
    from flowerlab.models import count_parameters

    total, trainable = count_parameters(model)
    images_per_second, steady_epochs = steady_state_images_per_second(rows, session.session_first_epochs)
    best_val, final_val = best_and_final(rows, "val_accuracy")
    return {
        "arch": settings.arch,
        "hparams": settings.hparams,
        "device": device.to_json(),
        "precision": precision,
        "seed": settings.seed,
        "deterministic": settings.deterministic,
        "versions": provenance.library_versions(),
        "wall_seconds": session.wall_seconds(),
        "train_images_per_second": images_per_second,
        "train_images_per_second_epochs": steady_epochs,
        "epochs": int(settings.hparams["epochs"]),
        "best_val_accuracy": best_val,
        "final_val_accuracy": final_val,
        "parameters": {"total": int(total), "trainable": int(trainable)},
        "resumed_from_epoch": resumed_from_epoch,
        "manifest_sha256": sha256_file(settings.manifest),
        "code_version": provenance.code_version(),
        "image_size": plan.image_size,
        "weights": weights,
        "weights_sha256": weights_sha256,  # None for imagenet (Keras' pinned file) and none
        "data_settings": dict(data_settings),
        "accelerator_requested": settings.accelerator,
        "threads": settings.threads,  # None: TensorFlow's default pools (all cores)
        "global_batch_size": batching.global_batch,
        "steps_per_epoch": batching.steps_per_epoch,
        "train_records": plan.train_records,
        "validation_records": plan.validation_records,
        "fingerprint": fingerprint,
    }


def train(settings: TrainSettings, *, extra_callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Train `settings.arch`, resuming from a matching checkpoint; write the outputs; return
    the training record (training.json). `extra_callbacks` run after the built-in ones (tests)."""
    from flowerlab.data.tfrecords import load_manifest

    hparams, epochs = settings.hparams, int(settings.hparams["epochs"])
    manifest = load_manifest(settings.manifest)  # DataError when missing or malformed

    from flowerlab import devices  # imports TensorFlow

    if settings.threads is not None:
        devices.configure_threads(settings.threads)  # before TensorFlow's runtime starts
    from flowerlab.data import pipeline
    from flowerlab.models import get_spec

    spec = get_spec(settings.arch)  # ConfigError for an unknown architecture
    plan = load_data_plan(settings.manifest, manifest, model_image_size(hparams, spec.default_image_size))
    weights = model_weights(hparams, spec.uses_backbone_weights)
    weights_sha256 = weights_identity(weights)
    pipeline.verify_shards(settings.manifest)  # a corrupt shard is named now, not mid-epoch

    device = devices.select_strategy(settings.accelerator)
    # "auto" on a CPU with AVX512_BF16 but no AMX follows the architecture's measured preference.
    precision = devices.apply_precision(
        devices.resolve_precision(hparams["precision"], device.kind, cpu_precision=spec.cpu_precision))
    seed_everything(settings.seed, settings.deterministic)
    batching = plan_batches(settings.arch, int(hparams["batch_size"]), device.kind, device.replicas,
                            plan.train_records)

    from flowerlab.schedules import schedule_function

    schedule = schedule_function(hparams, replicas=device.replicas)
    inputs = checkpoints.fingerprint_inputs(
        manifest, arch=settings.arch, hparams={**hparams, "weights_sha256": weights_sha256},
        seed=settings.seed, deterministic=settings.deterministic, accelerator_kind=device.kind,
        replicas=device.replicas, precision=precision,
    )
    fingerprint = checkpoints.fingerprint(inputs)
    from flowerlab import feature_cache

    image_path_reason = feature_cache.image_path_reason(spec, hparams, device.kind)
    cached = image_path_reason is None  # train the head on cached backbone features
    if spec.frozen_backbone_features and not cached:
        logger.info("%s: training on the images every epoch, without the feature cache: %s", settings.arch,
                    image_path_reason)
    # The cached path keeps no checkpoints (its head trains in seconds), so it never resumes one.
    resume = None if cached else checkpoints.find_checkpoint(settings.checkpoint_dir, fingerprint, inputs)
    session = start_session(resume, epochs)
    if resume is not None:
        logger.info("resuming %s from %s: %d of %d epochs done", settings.arch, resume.path, resume.epoch, epochs)
    elif cached:
        logger.info("training %s's head on cached backbone features, from scratch (this path keeps no "
                    "checkpoints)", settings.arch)
    else:
        logger.info("training %s from scratch (no checkpoint of this experiment in %s)",
                    settings.arch, settings.checkpoint_dir)

    model = build_or_restore(settings, device, resume, plan, weights, schedule(session.initial_epoch))
    if not cached:
        train_data, validation_data = make_datasets(settings, plan, batching, session.initial_epoch)

    import keras

    from flowerlab.callbacks import EpochCheckpointer, EpochLogger, EpochRecorder

    def state_for(epochs_done: int, rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "format": checkpoints.FORMAT_VERSION, "epoch": epochs_done, "fingerprint": fingerprint,
            "fingerprint_inputs": inputs, "history": rows, "seed": settings.seed,
            "session_first_epochs": session.session_first_epochs, "wall_seconds": session.wall_seconds(),
        }

    recorder = EpochRecorder(images_per_epoch=batching.images_per_epoch, rows=session.prior_rows)
    interactive = sys.stderr.isatty()
    charge = feature_cache.ChargeExtraction(recorder, batching.images_per_epoch) if cached else None
    callbacks = [
        keras.callbacks.LearningRateScheduler(lambda epoch, lr: schedule(epoch)),
        recorder,  # before the checkpointer (or the extraction's charge) and the logger: they read its newest row
        charge if cached else EpochCheckpointer(settings.checkpoint_dir, recorder, state_for),
    ]
    if settings.log_every_epoch or not interactive or cached:  # a head epoch is too short for a progress bar
        callbacks.append(EpochLogger(recorder, epochs))
    callbacks += list(extra_callbacks)

    if session.initial_epoch < epochs:
        logger.info(
            "%s: %d train / %d validation records, %d px (records %d px), global batch %d, %d steps/epoch, "
            "precision %s, device %s x%d", settings.arch, plan.train_records, plan.validation_records,
            plan.image_size, plan.record_size, batching.global_batch, batching.steps_per_epoch, precision,
            device.kind, device.replicas)
        with (
            pipeline.translate_record_errors(plan.train_files + plan.validation_files),
            out_of_memory_hint(settings.arch, batching.global_batch),
        ):
            if cached:
                cache_record = feature_cache.train_on_features(
                    model, settings=settings, plan=plan, batching=batching, schedule=schedule,
                    strategy=device.strategy, compile_head=compile_model, callbacks=callbacks, charge=charge)
            else:
                model.fit(train_data, epochs=epochs, initial_epoch=session.initial_epoch,
                          steps_per_epoch=batching.steps_per_epoch, validation_data=validation_data,
                          callbacks=callbacks, verbose=1 if interactive else 0,
                          shuffle=False)  # the pipeline shuffles, per epoch and seeded
    check_history(recorder.rows, epochs)

    record = training_record(settings, model=model, device=device, precision=precision, plan=plan,
                             batching=batching, session=session, rows=recorder.rows,
                             resumed_from_epoch=resume.epoch if resume is not None else 0,
                             weights=weights, fingerprint=fingerprint, data_settings=manifest["settings"],
                             weights_sha256=weights_sha256)
    if cached:
        # Amortised over every epoch, the extraction included: it is what this path costs.
        record["train_images_per_second"] = cache_record["amortised_images_per_second"]
        record["train_images_per_second_epochs"] = list(range(1, epochs + 1))
        record["feature_cache"] = cache_record
    else:
        record["feature_cache"] = {"used": False, "reason": image_path_reason}
    write_outputs(settings.out_dir, model, recorder.rows, record)
    checkpoints.remove_checkpoints(settings.checkpoint_dir)
    logger.info("%s: best val_accuracy %s, final %s, %.0f s; outputs in %s", settings.arch,
                _fmt(record["best_val_accuracy"]), _fmt(record["final_val_accuracy"]), record["wall_seconds"],
                settings.out_dir)
    return record


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"


@contextlib.contextmanager
def out_of_memory_hint(arch: str, global_batch: int) -> Iterator[None]:
    """Turn TensorFlow's out-of-memory error into a ConfigError that says which setting to lower."""
    import tensorflow as tf

    try:
        yield
    except tf.errors.ResourceExhaustedError as error:
        raise ConfigError(
            f"{arch}: out of memory at global batch {global_batch}; lower models.{arch}.batch_size "
            f"(or image_size). TensorFlow said: {str(error).strip().splitlines()[0]}"
        ) from error


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Train one architecture (resumable).")
    parser.add_argument("--arch", required=True, help="architecture (flowerlab.models.ARCHITECTURES)")
    parser.add_argument("--manifest", required=True, type=Path, help="results/data/manifest.json")
    parser.add_argument("--out-dir", required=True, type=Path, help="results/models/ARCH")
    parser.add_argument("--checkpoint-dir", required=True, type=Path, help="results/checkpoints/ARCH")
    parser.add_argument("--hparams", required=True,
                        help="JSON object of config models.ARCH (workflow/schemas/config.schema.yaml $defs/hparams)")
    parser.add_argument("--accelerator", default="auto", choices=("auto", "tpu", "gpu", "cpu"))
    parser.add_argument("--seed", type=int, default=42, help="weights, shuffling and augmentation")
    parser.add_argument("--deterministic", action="store_true",
                        help="TensorFlow op determinism and ordered input pipeline (bit-identical CPU reruns)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="CPU threads for TensorFlow and tf.data (default: TensorFlow's choice)")
    parser.add_argument("--log-every-epoch", action="store_true",
                        help="one log line per epoch even on a terminal (always on when stderr is not one)")
    return parser


def settings_from_args(args: argparse.Namespace) -> TrainSettings:
    """Checks that need no TensorFlow, so that a typo fails in a second."""
    if not args.manifest.is_file():
        raise DataError(f"manifest {args.manifest} not found: run `flowerlab tfrecords` (or snakemake) first")
    return TrainSettings(
        arch=args.arch, manifest=args.manifest, out_dir=args.out_dir, checkpoint_dir=args.checkpoint_dir,
        hparams=parse_hparams(args.hparams), accelerator=args.accelerator, seed=args.seed,
        deterministic=args.deterministic, threads=args.threads, log_every_epoch=args.log_every_epoch,
    )


def cli(argv: list[str]) -> int:
    args = build_parser(f"flowerlab {argv[0]}").parse_args(argv[1:])
    configure_logging()
    return run_command(argv[0], lambda: train(settings_from_args(args)))
