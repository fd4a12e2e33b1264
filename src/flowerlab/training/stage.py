"""`flowerlab train`: train one architecture on the TFRecords, resumably; write its record.

    flowerlab train --arch convnet --manifest results/data/manifest.json \\
        --out-dir results/models/convnet/seed-1 --checkpoint-dir results/checkpoints/convnet/seed-1 \\
        --hparams '{"epochs": 20, "batch_size": 32, ...}' --accelerator auto --seed 1 \\
        [--deterministic] --threads 2 [--log-every-epoch]

Order of work (each step needs the one before): check the settings and the data (no TensorFlow
yet, so mistakes fail in a second) -> limit TensorFlow's threads -> pick the device strategy ->
resolve and apply the precision policy -> seed everything (and op determinism) -> find a
checkpoint of this very experiment -> build and compile the model inside `strategy.scope()` (or
restore it with its optimizer) -> fit from the checkpoint's epoch -> write model.keras,
history.csv and training.json (docs/architecture.md), each atomically, training.json last.

Resuming. After every epoch a checkpoint (model + optimizer state + history rows + seeds and
wall time) is written atomically into --checkpoint-dir (see flowerlab.training.checkpoints). A rerun with
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
import logging
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowerlab import backends, code_fingerprint, kernels, schema
from flowerlab.code_fingerprint import CodeVersion
from flowerlab.console import configure_logging, run_command, thread_count
from flowerlab.errors import ConfigError, DataError
from flowerlab.training import checkpoints, progress, stopping, weight_gradients
from flowerlab.training.records import (
    Session,
    check_history,
    start_session,
    train_throughput,
    training_record,
    write_outputs,
)
from flowerlab.training.setup import (
    Batching,
    DataPlan,
    TrainSettings,
    compile_model,
    load_data_plan,
    make_datasets,
    model_image_size,
    model_weights,
    parse_hparams,
    plan_batches,
    seed_everything,
    weights_identity,
)

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Training (TensorFlow from here on)
# --------------------------------------------------------------------------------------------


@dataclass
class Run:
    """Everything one training decided before its first step: data, device, precision, resume."""

    settings: TrainSettings
    manifest: dict[str, Any]
    spec: Any  # flowerlab.models.registry.ArchSpec
    plan: DataPlan
    weights: str
    weights_sha256: str | None
    backend: str  # tensorflow or jax (flowerlab.backends)
    device: Any  # flowerlab.devices.DeviceInfo
    precision: str
    precision_choice: dict[str, Any]  # what was chosen and why (flowerlab.training.precision)
    batching: Batching
    schedule: Callable[[int], float]
    code: CodeVersion  # of the training code and the architecture's module
    fingerprint_inputs: dict[str, Any]
    fingerprint: str
    image_path_reason: str | None  # None: the head trains on cached backbone features
    resume: checkpoints.Checkpoint | None
    session: Session

    @property
    def epochs(self) -> int:
        return int(self.settings.hparams["epochs"])

    @property
    def cached(self) -> bool:
        return self.image_path_reason is None


def training_code(spec: Any) -> CodeVersion:
    """The code this training runs: `flowerlab train`'s module with all it imports, and the
    architecture's module (the same fingerprint the workflow's train_model rule passes)."""
    return code_fingerprint.fingerprint([__name__, spec.module])


def prepare_run(settings: TrainSettings) -> Run:
    """Check the data, limit the threads, pick the device and precision, seed, and find a checkpoint."""
    from flowerlab.data.manifest import load_manifest

    hparams = settings.hparams
    manifest = load_manifest(settings.manifest)  # DataError when missing or malformed
    backend = backends.activate(backends.resolve(settings.backend, settings.accelerator))  # before Keras loads
    from flowerlab import devices  # imports TensorFlow and Keras

    if settings.threads is not None:
        devices.configure_threads(settings.threads)  # before TensorFlow's runtime starts
    from flowerlab.data import records
    from flowerlab.models.registry import get_spec
    from flowerlab.training import frozen_backbone
    from flowerlab.training.precision import ProbeSetup, choose_precision
    from flowerlab.training.schedules import schedule_function

    spec = get_spec(settings.arch)  # ConfigError for an unknown architecture
    code = training_code(spec)
    plan = load_data_plan(settings.manifest, manifest, model_image_size(hparams, spec.default_image_size))
    weights = model_weights(hparams, spec.uses_backbone_weights)
    weights_sha256 = weights_identity(weights)
    records.verify_shards(settings.manifest)  # a corrupt shard is named now, not mid-epoch
    device = select_device(backend, settings.accelerator, settings.compile_cache)
    reason = frozen_backbone.image_path_reason(spec, hparams, device.kind, backend)
    choice = choose_precision(hparams["precision"], device.kind, ProbeSetup(
        settings.arch, hparams, plan.image_size, plan.num_classes, int(hparams["batch_size"]),
        cached_features=reason is None, threads=settings.threads,
        weight_gradients=weight_gradients.kernel_name(device.kind)), cache_dir=settings.precision_cache,
        backend=backend)
    precision = devices.apply_precision(choice.policy)
    logger.info("%s: precision %s: %s", settings.arch, precision, choice.reason)
    seed_everything(settings.seed, settings.deterministic)  # after the probe: it draws no training numbers
    batching = plan_batches(settings.arch, int(hparams["batch_size"]), device.kind, device.replicas,
                            plan.train_records, even_batches=backend == "jax")
    inputs = checkpoints.fingerprint_inputs(
        manifest, arch=settings.arch, hparams={**hparams, "weights_sha256": weights_sha256},
        seed=settings.seed, deterministic=settings.deterministic, accelerator_kind=device.kind,
        replicas=device.replicas, precision=precision, code=code.sha256, backend=backend,
    )
    fingerprint = checkpoints.fingerprint(inputs)
    # The cached path keeps no checkpoints (its head trains in seconds), so it never resumes one.
    resume = None if reason is None else checkpoints.find_checkpoint(settings.checkpoint_dir, fingerprint, inputs)
    return Run(settings, manifest, spec, plan, weights, weights_sha256, backend, device, precision, choice.to_json(),
               batching,
               schedule_function(hparams, replicas=device.replicas), code, inputs, fingerprint, reason, resume,
               start_session(resume, int(hparams["epochs"])))


def select_device(backend: str, accelerator: str, compile_cache: Path | None = None) -> Any:
    """The devices the training runs on: a tf.distribute strategy on TensorFlow, JAX's devices
    (data-parallel over several) on JAX, with its compilations kept in `compile_cache`."""
    if backend == "jax":
        from flowerlab.jax_devices import select_devices, use_compilation_cache

        use_compilation_cache(compile_cache)
        return select_devices(accelerator)
    from flowerlab.devices import select_strategy

    return select_strategy(accelerator)


def log_start(run: Run) -> None:
    arch, plan, batching = run.settings.arch, run.plan, run.batching
    if run.spec.frozen_backbone_features and not run.cached:
        logger.info("%s: training on the images every epoch, without the feature cache: %s", arch,
                    run.image_path_reason)
    logger.info("%s: training code %s", arch, run.code.short)
    logger.info("Keras backend: %s", run.backend)
    logger.info("%s%s", kernels.describe(), " (reading the data; XLA computes the model)" if run.backend == "jax" else "")
    if run.resume is not None:
        logger.info("resuming %s from %s: %d of %d epochs done", arch, run.resume.path, run.resume.epoch,
                    run.epochs)
    elif run.cached:
        logger.info("training %s's head on cached backbone features, from scratch (this path keeps no "
                    "checkpoints)", arch)
    else:
        logger.info("training %s from scratch (no checkpoint of this experiment in %s)", arch,
                    run.settings.checkpoint_dir)
    logger.info(
        "%s: %d train / %d validation records, %d px (records %d px), global batch %d, %d steps/epoch, "
        "precision %s, device %s x%d", arch, plan.train_records, plan.validation_records, plan.image_size,
        plan.record_size, batching.global_batch, batching.steps_per_epoch, run.precision, run.device.kind,
        run.device.replicas)


def make_callbacks(run: Run, recorder: Any, extra_callbacks: Sequence[Any]) -> list[Any]:
    """Stop check (image path), scheduler, recorder, checkpointer (image path), logger, then
    `extra_callbacks`: Keras calls them in this order, and the checkpointer and logger read the
    recorder's newest row."""
    import keras

    from flowerlab.training.callbacks import EpochCheckpointer, EpochLogger, StopAtBatchBoundary

    session, settings = run.session, run.settings

    def state_for(epochs_done: int, rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "format": checkpoints.FORMAT_VERSION, "epoch": epochs_done, "fingerprint": run.fingerprint,
            "fingerprint_inputs": run.fingerprint_inputs, "history": rows, "seed": settings.seed,
            "session_first_epochs": session.session_first_epochs, "wall_seconds": session.wall_seconds(),
        }

    callbacks = [keras.callbacks.LearningRateScheduler(lambda epoch, lr: run.schedule(epoch)), recorder]
    if not run.cached:  # the feature cache keeps no checkpoints: a stop there may land anywhere
        callbacks.insert(0, StopAtBatchBoundary(stopping.STOP))
        callbacks.append(EpochCheckpointer(settings.checkpoint_dir, recorder, state_for))
    # A head epoch is too short for a bar; a terminal has Keras' bar, a log the lines.
    log_lines = settings.log_every_epoch or not sys.stderr.isatty() or run.cached
    callbacks.append(EpochLogger(recorder, run.epochs, progress_dir=settings.checkpoint_dir, log_lines=log_lines))
    return callbacks + list(extra_callbacks)


def fit(run: Run, model: Any, callbacks: list[Any], recorder: Any) -> dict[str, Any]:
    """Train from the session's first epoch to the last; returns training.json's `feature_cache`."""
    from flowerlab.data import records
    from flowerlab.training import frozen_backbone

    image_path = {"used": False, "reason": run.image_path_reason}
    if run.session.initial_epoch >= run.epochs:
        return image_path
    plan, batching = run.plan, run.batching
    with (
        records.translate_record_errors(plan.train_files + plan.validation_files),
        out_of_memory_hint(run.settings.arch, batching.global_batch),
    ):
        if run.cached:
            return frozen_backbone.train_on_features(
                model, settings=run.settings, plan=plan, batching=batching, schedule=run.schedule,
                strategy=run.device.strategy, callbacks=callbacks, recorder=recorder)
        train_data, validation_data = make_datasets(run.settings, plan, batching, run.session.initial_epoch,
                                                    pad_validation=run.backend == "jax")
        with stopping.STOP.deferred():  # a stop waits for the next batch boundary
            model.fit(train_data, epochs=run.epochs, initial_epoch=run.session.initial_epoch,
                      steps_per_epoch=batching.steps_per_epoch, validation_data=validation_data,
                      callbacks=callbacks, verbose=1 if sys.stderr.isatty() else 0,
                      shuffle=False)  # the pipeline shuffles, per epoch and seeded
    return image_path


def finish(run: Run, model: Any, rows: list[dict[str, Any]], cache_record: dict[str, Any],
           gradient_kernels: dict[str, Any]) -> dict[str, Any]:
    """Write model.keras, history.csv and training.json (last), delete the checkpoints; the record."""
    check_history(rows, run.epochs)
    throughput = train_throughput(rows, run.session, cache_record, run.epochs)
    record = training_record(
        run.settings, model=model, device=run.device, precision=run.precision, plan=run.plan,
        batching=run.batching, session=run.session, rows=rows,
        resumed_from_epoch=run.resume.epoch if run.resume is not None else 0, weights=run.weights,
        fingerprint=run.fingerprint, data_settings=run.manifest["settings"],
        data_source=run.manifest.get("data_source"), weights_sha256=run.weights_sha256,
        code=run.code, throughput=throughput, cache_record=cache_record, classes=run.manifest["classes"],
        precision_choice=run.precision_choice, kernels=kernels_record(run.backend, gradient_kernels), backend=backends.record(),
        hardware_share=hardware_share(run, model, throughput[0]))
    write_outputs(run.settings.out_dir, model, rows, record)
    progress.remove_progress(run.settings.checkpoint_dir)
    checkpoints.remove_checkpoints(run.settings.checkpoint_dir)
    return record


def kernels_record(backend: str, gradient_kernels: dict[str, Any]) -> dict[str, Any]:
    """training.json's `kernels`: TensorFlow's CPU kernels, or XLA's where Keras runs on JAX (TensorFlow
    then only reads the data), and whose kernel computed the convolutions' weight gradients."""
    record = {**kernels.record(), "weight_gradients": gradient_kernels}
    return record if backend == "tensorflow" else {**record, "library": "XLA"}


def hardware_share(run: Run, model: Any, train_images_per_second: float | None) -> dict[str, Any]:
    """training.json's `hardware_share`: the training's achieved GFLOP/s against this machine's
    measured peak in its compute dtype (flowerlab.training.peak)."""
    from flowerlab.devices import cpu_model_name
    from flowerlab.models.flops import COMPUTE_DTYPES, training_flops_per_image
    from flowerlab.training import peak

    per_image = training_flops_per_image(model, run.plan.image_size,
                                         cached_feature_epochs=run.epochs if run.cached else None)
    dtype = COMPUTE_DTYPES[run.precision]
    # A CPU split into JAX host devices is still one CPU: its peak, once.
    on_cpu = run.device.kind == "cpu"
    measured = peak.machine_peak(run.device.kind, cpu_model_name() if on_cpu else run.device.name,
                                 ["float32", dtype], threads=run.settings.threads,
                                 cache_dir=run.settings.peak_cache, on_jax=run.backend == "jax")
    share = peak.share_of_peak(train_images_per_second=train_images_per_second, training_flops_per_image=per_image,
                               compute_dtype=dtype, peak=measured, replicas=1 if on_cpu else run.device.replicas)
    if share["fraction_of_peak"] is not None:
        logger.info("%s: %.1f GFLOP/s, %.0f%% of this %s's %s peak (%.0f GFLOP/s)", run.settings.arch,
                    share["achieved_gflops_per_s"], 100 * share["fraction_of_peak"], run.device.kind, dtype,
                    share["peak_gflops_per_s"])
    return share


def build_or_restore(settings: TrainSettings, device: Any, resume: checkpoints.Checkpoint | None, plan: DataPlan,
                     weights: str, first_learning_rate: float) -> tuple[Any, dict[str, Any]]:
    """Inside the strategy's scope: the checkpoint's compiled model with its optimizer state, or a
    new model compiled with Adam, categorical cross-entropy and accuracy; its convolutions'
    weight gradients routed to flowerlab's kernel where that is faster (training.json's
    `kernels.weight_gradients`, the second item)."""
    import keras

    import flowerlab.models.layers  # noqa: F401 (registers the custom layers for load_model)
    from flowerlab.models.build import build_model
    from flowerlab.training import optimizers  # noqa: F401 (registers FusedAdam for load_model)

    with device.strategy.scope():
        if resume is not None:
            model = keras.models.load_model(resume.model_path)
        else:
            model = build_model(settings.arch, num_classes=plan.num_classes, image_size=plan.image_size,
                                weights=weights)
            compile_model(model, first_learning_rate)
    gradient_kernels = weight_gradients.use_for(model, device.kind)
    logger.info("%s", weight_gradients.describe(gradient_kernels))
    return model, gradient_kernels


def train(settings: TrainSettings, *, extra_callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Train `settings.arch`, resuming from a matching checkpoint; write the outputs; return
    the training record (training.json). `extra_callbacks` run after the built-in ones (tests)."""
    run = prepare_run(settings)  # selects Keras' backend before anything imports Keras
    from flowerlab.training.callbacks import EpochRecorder

    log_start(run)
    model, gradient_kernels = build_or_restore(settings, run.device, run.resume, run.plan, run.weights,
                                               run.schedule(run.session.initial_epoch))
    recorder = EpochRecorder(images_per_epoch=run.batching.images_per_epoch, rows=run.session.prior_rows)
    try:
        cache_record = fit(run, model, make_callbacks(run, recorder, extra_callbacks), recorder)
    except KeyboardInterrupt:
        logger.warning("%s", interruption_note(run, len(recorder.rows)))
        raise
    record = finish(run, model, recorder.rows, cache_record, gradient_kernels)
    logger.info("%s: best val_accuracy %s, final %s, %.0f s; outputs in %s", settings.arch,
                _fmt(record["best_val_accuracy"]), _fmt(record["final_val_accuracy"]), record["wall_seconds"],
                settings.out_dir)
    return record


def interruption_note(run: Run, epochs_done: int) -> str:
    """What an interrupted training leaves and what a rerun does with it."""
    what = f"{run.settings.arch} interrupted after {epochs_done} of {run.epochs} epochs"
    if run.cached:
        return f"{what}: the feature cache keeps no checkpoints (its head trains in seconds); a rerun starts it again"
    if not epochs_done:
        return f"{what}: no checkpoint yet; a rerun starts it again"
    return (f"{what}: its checkpoint in {run.settings.checkpoint_dir} is kept; running the workflow (or this "
            "command) again resumes from it")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"


@contextlib.contextmanager
def out_of_memory_hint(arch: str, global_batch: int) -> Iterator[None]:
    """Turn TensorFlow's or XLA's out-of-memory error into a ConfigError that says which setting to lower."""
    import tensorflow as tf

    try:
        yield
    except Exception as error:
        # XLA (JAX) raises a runtime error whose message starts with its status code.
        if not (isinstance(error, tf.errors.ResourceExhaustedError) or "RESOURCE_EXHAUSTED" in str(error)[:200]):
            raise
        raise ConfigError(
            f"{arch}: out of memory at global batch {global_batch}; lower models.{arch}.batch_size "
            f"(or image_size). {keras_backend_name()} said: {str(error).strip().splitlines()[0]}"
        ) from error


def keras_backend_name() -> str:
    return "JAX" if backends.current() == "jax" else "TensorFlow"


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Train one architecture (resumable).")
    parser.add_argument("--arch", required=True, help="architecture (flowerlab.models.registry.ARCHITECTURES)")
    parser.add_argument("--manifest", required=True, type=Path, help="results/data/manifest.json")
    parser.add_argument("--out-dir", required=True, type=Path, help="results/models/ARCH/REPLICATE")
    parser.add_argument("--checkpoint-dir", required=True, type=Path, help="results/checkpoints/ARCH/REPLICATE")
    parser.add_argument("--hparams", required=True,
                        help="JSON object of config models.ARCH (workflow/schemas/config.schema.yaml $defs/hparams)")
    parser.add_argument("--accelerator", default=schema.default("accelerator"), choices=("auto", "tpu", "gpu", "cpu"))
    parser.add_argument("--backend", default=schema.default("backend"), choices=("auto", "tensorflow", "jax"),
                        help="Keras' backend (flowerlab.backends; auto: jax where a TPU is attached, else tensorflow)")
    parser.add_argument("--seed", type=int, default=schema.default("seeds")[0], help="weights, shuffling and augmentation")
    parser.add_argument("--deterministic", action="store_true",
                        help="TensorFlow op determinism and ordered input pipeline (bit-identical CPU reruns)")
    parser.add_argument("--threads", type=thread_count, default=None,
                        help="CPU threads for TensorFlow and tf.data (default: TensorFlow's choice)")
    parser.add_argument("--weights", default=None,
                        help="backbone weights file (overrides the hparams' weights; the workflow passes the "
                             "fetched ImageNet file or the configured local one)")
    parser.add_argument("--precision-cache", type=Path, default=None,
                        help="folder for the measurements behind precision auto on a CPU (the workflow: "
                             "resources/precision); default: measure and keep nothing")
    parser.add_argument("--peak-cache", type=Path, default=None,
                        help="folder for the machine's measured peak FLOP/s and bandwidth (the workflow: "
                             "resources/peak); default: measure and keep nothing")
    parser.add_argument("--compile-cache", type=Path, default=None,
                        help="folder for JAX's compiled training and validation steps, reused by the next "
                             "training of the same model and shapes (the workflow: resources/jax-compilation); "
                             "default: compile every time. Unused on TensorFlow")
    parser.add_argument("--log-every-epoch", action="store_true",
                        help="one log line per epoch even on a terminal (always on when stderr is not one)")
    return parser


def with_weights(hparams: dict[str, Any], weights: str | None) -> dict[str, Any]:
    return hparams if weights is None else {**hparams, "weights": weights}


def settings_from_args(args: argparse.Namespace) -> TrainSettings:
    """Checks that need no TensorFlow, so that a typo fails in a second."""
    if not args.manifest.is_file():
        raise DataError(f"manifest {args.manifest} not found: run `flowerlab tfrecords` (or snakemake) first")
    return TrainSettings(
        arch=args.arch, manifest=args.manifest, out_dir=args.out_dir, checkpoint_dir=args.checkpoint_dir,
        hparams=with_weights(parse_hparams(args.hparams), args.weights), accelerator=args.accelerator,
        backend=args.backend, seed=args.seed,
        deterministic=args.deterministic, threads=args.threads, log_every_epoch=args.log_every_epoch,
        precision_cache=args.precision_cache, peak_cache=args.peak_cache, compile_cache=args.compile_cache,
    )


def cli(argv: list[str]) -> int:
    args = build_parser(f"flowerlab {argv[0]}").parse_args(argv[1:])
    configure_logging()
    stopping.STOP.install()
    return run_command(argv[0], lambda: train(settings_from_args(args)))
