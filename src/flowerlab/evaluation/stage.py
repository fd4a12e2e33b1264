"""Evaluate one trained model on the validation split: quality metrics and cost figures.

`flowerlab evaluate --arch A --model results/models/A/seed-1/model.keras --training-json
results/models/A/seed-1/training.json --manifest results/data/manifest.json --out-dir
results/evaluation/A/seed-1` writes `metrics.json` and `predictions.csv` (docs/architecture.md).

Quality: accuracy, loss (categorical cross-entropy of the probabilities, clipped as Keras does),
per-class precision/recall/F1/support and the confusion matrix (rows true, columns predicted),
computed from the predictions by `flowerlab.evaluation.quality` (plain NumPy).

Cost, measured on the device the command runs on:
- parameters (total, trainable);
- forward FLOPs per image, counted by TensorFlow's profiler on the frozen inference graph of
  one image. Its convention counts one multiply-add as 2 FLOPs (Conv2D, depthwise conv and
  MatMul) plus the element-wise ops (bias adds, batch-norm arithmetic). By that convention
  the course's convnet costs 1.02 GFLOPs and MobileNetV2 at 192 px 0.45 (`flowerlab.evaluation.cost`);
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

from flowerlab import backends, filesystem, schema
from flowerlab.console import configure_logging, positive_int, run_command, thread_count
from flowerlab.data.manifest import load_manifest
from flowerlab.errors import ConfigError, DataError
from flowerlab.evaluation.cost import make_forward, measure_costs
from flowerlab.evaluation.inputs import (
    check_manifest,
    check_training_record,
    configure_threads,
    load_model,
    model_image_size,
    select_device,
    training_figures,
)
from flowerlab.evaluation.quality import quality_metrics
from flowerlab.filesystem import json_safe, read_json, sha256_file

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Inputs: training record, manifest
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# TensorFlow: device, model, data, timing
# --------------------------------------------------------------------------------------------


def validation_shards(manifest_path: str | os.PathLike[str]) -> list[str]:
    """The validation TFRecord files of the manifest, each checked against its sha256."""
    from flowerlab.data.records import verify_shards

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
    from flowerlab.data.pipeline import make_dataset
    from flowerlab.data.records import translate_record_errors

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


@dataclass
class Predictions:
    """Every validation record's predicted probabilities, with its true class, id and source."""

    probabilities: np.ndarray
    true: np.ndarray
    ids: list[str]
    sources: list[str]
    first_images: Any  # one batch of images, for the timings


def predict_validation(forward: Callable[[Any], np.ndarray], manifest: dict[str, Any],
                       manifest_path: str | os.PathLike[str], *, record_size: int, image_size: int,
                       num_classes: int, batch_size: int) -> Predictions:
    """Predictions for every validation record; a DataError when the shards hold another number."""
    from flowerlab.data.records import count_records

    expected = count_records(manifest, "validation")
    batches = validation_batches(validation_shards(manifest_path), record_size=record_size,
                                 image_size=image_size, num_classes=num_classes, batch_size=batch_size)
    predictions = Predictions(*predict(forward, batches, expected))
    if expected != len(predictions.ids):
        raise DataError(f"the validation shards hold {len(predictions.ids)} records, the manifest says "
                        f"{expected}; rerun the tfrecords stage")
    return predictions


def log_results(arch: str, quality: dict[str, Any], costs: dict[str, Any], batch_size: int) -> None:
    logger.info("%s: validation accuracy %.4f, loss %.4f", arch, quality["accuracy"], quality["loss"])
    for note in quality["notes"]:
        logger.warning("%s: %s", arch, note)
    logger.info("%s: %.3f GFLOPs/image, %.1f images/s at batch %d, latency median %.2f ms (p95 %.2f)", arch,
                costs["flops_per_image"] / 1e9, costs["inference_images_per_second"], batch_size,
                costs["latency_ms_median"], costs["latency_ms_p95"])


def provenance_fields(*, model_path: Any, manifest_path: Any, training_json: Any,
                      manifest: dict[str, Any]) -> dict[str, Any]:
    """What a rerun needs besides the figures: the inputs with the manifest's checksum, the data
    stage's settings (with that checksum, what rebuilding the evaluated records needs), versions."""
    from flowerlab import provenance
    from flowerlab.code_fingerprint import fingerprint

    return {
        "inputs": {"model": str(model_path), "manifest": str(manifest_path),
                   "manifest_sha256": sha256_file(manifest_path), "training_json": str(training_json)},
        "data_settings": manifest["settings"],
        "versions": provenance.library_versions(),
        "code_version": {**provenance.code_version(), "fingerprint": fingerprint([__name__]).sha256},
    }


def evaluate(
    *,
    arch: str,
    model_path: str | os.PathLike[str],
    training_json: str | os.PathLike[str],
    manifest_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    batch_size: int,
    latency_runs: int,
    accelerator: str = schema.default("accelerator"),
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

    # Every model, whichever backend trained it, is evaluated by Keras on TensorFlow on the host: the
    # model file is portable, and FLOPs, latency and sizes are then counted the same way for all.
    backends.activate("tensorflow")
    thread_pools = configure_threads(threads)  # before TensorFlow's first op
    device = select_device(accelerator)
    logger.info("evaluating %s on %s (%s)", arch, device["name"], device["kind"])
    model = load_model(model_path)
    image_size = model_image_size(model, len(classes), model_path)
    forward = make_forward(model)
    predictions = predict_validation(forward, manifest, manifest_path, record_size=record_size,
                                     image_size=image_size, num_classes=len(classes), batch_size=batch_size)
    quality = quality_metrics(predictions.true, predictions.probabilities, classes)
    costs = measure_costs(model, forward, predictions.first_images, image_size=image_size, batch_size=batch_size,
                          latency_runs=latency_runs)
    log_results(arch, quality, costs, batch_size)
    metrics = {
        "arch": arch, "classes": classes, **quality, "image_size": image_size, **costs,
        "model_bytes": Path(model_path).stat().st_size, "eval_batch_size": batch_size, "device": device,
        "accelerator_requested": accelerator,
        "threads": thread_pools,  # TensorFlow's intra-/inter-op pools; 0: its default (all cores)
        "training": training_figures(record),
        **provenance_fields(model_path=model_path, manifest_path=manifest_path, training_json=training_json,
                            manifest=manifest),
    }
    out_dir = Path(out_dir)
    write_predictions(out_dir / "predictions.csv", ids=predictions.ids, sources=predictions.sources,
                      true=predictions.true, probabilities=predictions.probabilities, classes=classes)
    # metrics.json last: its presence says the evaluation finished.
    filesystem.write_json(out_dir / "metrics.json", json_safe(metrics))
    return metrics


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", required=True, help="architecture name (as in the study)")
    parser.add_argument("--model", required=True, help="trained model (results/models/ARCH/REPLICATE/model.keras)")
    parser.add_argument("--training-json", required=True, help="its training record (training.json)")
    parser.add_argument("--manifest", required=True, help="results/data/manifest.json")
    parser.add_argument("--out-dir", required=True, help="where metrics.json and predictions.csv go")
    parser.add_argument("--batch-size", type=positive_int, default=schema.default("evaluation", "batch_size"),
                        help="inference batch")
    parser.add_argument(
        "--latency-runs",
        type=positive_int,
        default=schema.default("evaluation", "latency_runs"),
        help="single-image calls timed for the latency median and p95",
    )
    parser.add_argument(
        "--accelerator",
        choices=["auto", "gpu", "cpu", "tpu"],
        default=schema.default("accelerator"),
        help="auto: the first GPU if any, else the CPU; tpu: as auto, with a warning (no TPU evaluation)",
    )
    parser.add_argument(
        "--threads",
        type=thread_count,
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
