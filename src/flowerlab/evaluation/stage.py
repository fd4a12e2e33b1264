"""Evaluate one trained model on the validation split: quality metrics and cost figures.

`flowerlab evaluate --arch A --model results/models/A/model.keras --training-json
results/models/A/training.json --manifest results/data/manifest.json --out-dir
results/evaluation/A` writes `metrics.json` and `predictions.csv` (docs/architecture.md).

Quality: accuracy, loss (categorical cross-entropy of the probabilities, clipped as Keras does),
per-class precision/recall/F1/support and the confusion matrix (rows true, columns predicted),
computed from the predictions by the pure numpy functions at the top of this module.

Cost, measured on the device the command runs on:
- parameters (total, trainable);
- forward FLOPs per image, counted by TensorFlow's profiler on the frozen inference graph of
  one image. Its convention counts one multiply-add as 2 FLOPs (Conv2D, depthwise conv and
  MatMul) plus the element-wise ops (bias adds, batch-norm arithmetic). That is the convention
  of REFERENCE.md §7: 1.02 GFLOPs for the course's convnet, 0.45 for MobileNetV2 at 192 px;
- the model file's size;
- inference throughput: images/s of the forward pass alone on one in-memory batch of the eval
  batch size (the input pipeline excluded), steady state: warm-up calls are not timed;
- single-image latency: median and 95th percentile over `--latency-runs` timed calls;
- the training figures (throughput, wall time, epochs, ...) copied from `training.json`.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flowerlab import filesystem
from flowerlab.console import configure_logging, positive_int, run_command
from flowerlab.data.tfrecords import load_manifest
from flowerlab.errors import ConfigError, DataError
from flowerlab.evaluation.cost import make_forward, measure_costs
from flowerlab.evaluation.quality import quality_metrics
from flowerlab.filesystem import json_safe, read_json, sha256_file

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Inputs: training record, manifest
# --------------------------------------------------------------------------------------------


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
    "train_images_per_second",
    "epochs",
    "best_val_accuracy",
    "final_val_accuracy",
    "precision",
    "device",
    "hparams",
    "seed",
    "deterministic",
    "resumed_from_epoch",
    "parameters",
    "code_version",
    "versions",
    "manifest_sha256",
    "data_settings",
    "weights",
    "weights_sha256",
    "accelerator_requested",
    "threads",
)


def training_figures(record: dict[str, Any]) -> dict[str, Any]:
    """The figures of training.json that metrics.json carries along (absent ones as None)."""
    return {key: record.get(key) for key in TRAINING_FIGURES}


# --------------------------------------------------------------------------------------------
# TensorFlow: device, model, data, timing
# --------------------------------------------------------------------------------------------


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


def validation_shards(manifest_path: str | os.PathLike[str]) -> list[str]:
    """The validation TFRecord files of the manifest, each checked against its sha256."""
    from flowerlab.data.pipeline import verify_shards

    files = verify_shards(manifest_path, "validation")
    if not files:
        raise DataError(f"manifest {manifest_path} lists no validation shard: nothing to evaluate on")
    return files


@dataclass
class Batch:
    images: Any  # float32 tensor [n, size, size, 3] in [0, 1]
    classes: np.ndarray  # int64 [n]
    ids: list[str]
    sources: list[str]


def validation_batches(
    files: Sequence[str], *, record_size: int, image_size: int, num_classes: int, batch_size: int
) -> Iterator[Batch]:
    """Batches of the validation records with their ids and sources, shard by shard in file order.

    Read by `flowerlab.data.pipeline.make_dataset` (the one reader of the records), so evaluation
    sees exactly what training's validation saw, resized the same way when the model's input
    differs.
    """
    from flowerlab.data.pipeline import make_dataset, translate_record_errors

    for path in files:
        dataset = make_dataset(
            [path],
            image_size=record_size,
            num_classes=num_classes,
            batch_size=batch_size,
            training=False,
            target_size=image_size,
            cache=False,
            deterministic=True,
            keys=True,
        )
        with translate_record_errors([path]):
            for images, labels, keys in dataset:
                yield Batch(
                    images=images,
                    classes=np.argmax(labels.numpy(), axis=1).astype(np.int64),
                    ids=[value.decode("utf-8") for value in keys["id"].numpy()],
                    sources=[value.decode("utf-8") for value in keys["source"].numpy()],
                )


def predict(
    forward: Callable[[Any], np.ndarray], batches: Iterator[Batch], total: int
) -> tuple[np.ndarray, np.ndarray, list[str], list[str], Any]:
    """Probabilities, true classes, ids and sources of every record, and the first batch's images."""
    from tqdm import tqdm

    probabilities: list[np.ndarray] = []
    classes: list[np.ndarray] = []
    ids: list[str] = []
    sources: list[str] = []
    first_images = None
    with tqdm(
        total=total, unit="img", desc="predict", file=sys.stderr, disable=not sys.stderr.isatty()
    ) as progress:
        for batch in batches:
            first_images = batch.images if first_images is None else first_images
            probabilities.append(forward(batch.images))
            classes.append(batch.classes)
            ids += batch.ids
            sources += batch.sources
            progress.update(len(batch.ids))
    if not ids:
        raise DataError("the validation shards hold no record: nothing to evaluate on")
    return np.concatenate(probabilities), np.concatenate(classes), ids, sources, first_images


# --------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------


def write_predictions(
    path: str | os.PathLike[str],
    *,
    ids: Sequence[str],
    sources: Sequence[str],
    true: np.ndarray,
    probabilities: np.ndarray,
    classes: Sequence[str],
) -> None:
    """predictions.csv: id, source, true_class, predicted_class, prob_<class>... (atomically)."""
    predicted = np.argmax(probabilities, axis=1)
    with filesystem.atomic_output(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "source", "true_class", "predicted_class", *(f"prob_{c}" for c in classes)])
        for row in range(len(ids)):
            writer.writerow(
                [
                    ids[row],
                    sources[row],
                    classes[true[row]],
                    classes[predicted[row]],
                    *(f"{p:.6f}" for p in probabilities[row]),
                ]
            )


def evaluate(
    *,
    arch: str,
    model_path: str | os.PathLike[str],
    training_json: str | os.PathLike[str],
    manifest_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    batch_size: int,
    latency_runs: int,
    accelerator: str = "auto",
    threads: int | None = None,
) -> dict[str, Any]:
    """Evaluate one model and write metrics.json and predictions.csv to `out_dir`; return the metrics."""
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, not {batch_size}")
    if latency_runs < 1:
        raise ConfigError(f"--latency-runs must be >= 1, not {latency_runs}")
    # Cheap checks first: a wrong input fails before TensorFlow starts.
    record = read_json(training_json, "training record")
    check_training_record(record, arch, manifest_path, training_json)
    manifest = load_manifest(manifest_path)
    classes, record_size = check_manifest(manifest, manifest_path)

    thread_pools = configure_threads(threads)  # before TensorFlow's first op
    device = select_device(accelerator)
    from flowerlab import provenance
    from flowerlab.data.pipeline import count_records

    files = validation_shards(manifest_path)
    expected = count_records(manifest, "validation")
    logger.info(
        "evaluating %s on %s (%s): %d validation images", arch, device["name"], device["kind"], expected
    )
    model = load_model(model_path)
    image_size = model_image_size(model, len(classes), model_path)
    forward = make_forward(model)
    probabilities, true, ids, sources, first_images = predict(
        forward,
        validation_batches(
            files,
            record_size=record_size,
            image_size=image_size,
            num_classes=len(classes),
            batch_size=batch_size,
        ),
        expected,
    )
    if expected != len(ids):
        raise DataError(
            f"the validation shards hold {len(ids)} records, the manifest says {expected}; "
            "rerun the tfrecords stage"
        )
    quality = quality_metrics(true, probabilities, classes)
    logger.info("%s: validation accuracy %.4f, loss %.4f", arch, quality["accuracy"], quality["loss"])
    for note in quality["notes"]:
        logger.warning("%s: %s", arch, note)

    costs = measure_costs(
        model, forward, first_images, image_size=image_size, batch_size=batch_size, latency_runs=latency_runs
    )
    logger.info(
        "%s: %.3f GFLOPs/image, %.1f images/s at batch %d, latency median %.2f ms (p95 %.2f)",
        arch,
        costs["flops_per_image"] / 1e9,
        costs["inference_images_per_second"],
        batch_size,
        costs["latency_ms_median"],
        costs["latency_ms_p95"],
    )
    metrics = {
        "arch": arch,
        "classes": classes,
        **quality,
        "image_size": image_size,
        **costs,
        "model_bytes": Path(model_path).stat().st_size,
        "eval_batch_size": batch_size,
        "device": device,
        "accelerator_requested": accelerator,
        "threads": thread_pools,  # TensorFlow's intra-/inter-op pools; 0: its default (all cores)
        "training": training_figures(record),
        "inputs": {
            "model": str(model_path),
            "manifest": str(manifest_path),
            "manifest_sha256": sha256_file(manifest_path),
            "training_json": str(training_json),
        },
        # The data stage's settings (image size, JPEG quality, split fraction, shards, seed):
        # with the manifest's checksum above, what rebuilding the evaluated records needs.
        "data_settings": manifest["settings"],
        "versions": provenance.library_versions(),
        "code_version": provenance.code_version(),
    }
    out_dir = Path(out_dir)
    write_predictions(
        out_dir / "predictions.csv",
        ids=ids,
        sources=sources,
        true=true,
        probabilities=probabilities,
        classes=classes,
    )
    # metrics.json last: its presence says the evaluation finished.
    filesystem.write_json(out_dir / "metrics.json", json_safe(metrics))
    return metrics


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", required=True, help="architecture name (as in the study)")
    parser.add_argument("--model", required=True, help="trained model (results/models/ARCH/model.keras)")
    parser.add_argument("--training-json", required=True, help="its training record (training.json)")
    parser.add_argument("--manifest", required=True, help="results/data/manifest.json")
    parser.add_argument("--out-dir", required=True, help="where metrics.json and predictions.csv go")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="inference batch (default 64)")
    parser.add_argument(
        "--latency-runs",
        type=positive_int,
        default=50,
        help="single-image calls timed for the latency median and p95 (default 50)",
    )
    parser.add_argument(
        "--accelerator",
        choices=["auto", "gpu", "cpu", "tpu"],
        default="auto",
        help="auto: the first GPU if any, else the CPU; tpu: as auto, with a warning (no TPU evaluation)",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="CPU threads for TensorFlow (default: TensorFlow's choice, all cores)",
    )
    return parser


def cli(argv: list[str]) -> int:
    args = build_parser(f"flowerlab {argv[0]}").parse_args(argv[1:])
    configure_logging()
    return run_command(
        argv[0],
        lambda: evaluate(
            arch=args.arch,
            model_path=args.model,
            training_json=args.training_json,
            manifest_path=args.manifest,
            out_dir=args.out_dir,
            batch_size=args.batch_size,
            latency_runs=args.latency_runs,
            accelerator=args.accelerator,
            threads=args.threads,
        ),
    )
