"""Gather every architecture's evaluation into one tidy table: results/metrics.csv and .json.

`flowerlab collect --evaluations results/evaluation/A/metrics.json ... --out-csv
results/metrics.csv --out-json results/metrics.json` writes one row per architecture (in the
order given), one column per figure, units in the column names. COLUMNS below says what each
column means; metrics.json carries the same descriptions beside the rows.

The course's own validation accuracies (docs/course.md) sit beside ours for comparison;
architectures the course did not train (dense, mobilenet_v2_finetune) have none (empty).
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flowerlab import filesystem
from flowerlab.code_fingerprint import SHORT
from flowerlab.console import configure_logging, run_command
from flowerlab.errors import DataError
from flowerlab.filesystem import read_json
from flowerlab.models.registry import course_val_accuracy

logger = logging.getLogger(__name__)

BYTES_PER_MB = 1_000_000  # model_mb is in megabytes (10^6 bytes), as file managers show them

COLUMNS: dict[str, str] = {
    "arch": "architecture",
    "val_accuracy": "accuracy of the trained model on the validation split (fraction)",
    "course_val_accuracy": "final validation accuracy the course's notebooks printed (docs/course.md); "
    "empty where the course did not train this architecture",
    "val_loss": "categorical cross-entropy on the validation split",
    "val_macro_f1": "unweighted mean of the per-class F1 scores on the validation split",
    "best_val_accuracy": "best validation accuracy of any epoch during training (training.json)",
    "validation_images": "images in the validation split",
    "parameters": "parameters, total",
    "trainable_parameters": "parameters updated by training (frozen backbones and BN statistics excluded)",
    "gflops_per_image": "forward-pass GFLOPs per image (1 multiply-add = 2 FLOPs; TensorFlow profiler)",
    "image_size": "model input size in pixels (square)",
    "model_mb": "size of model.keras in megabytes (10^6 bytes)",
    "train_images_per_s": "training throughput, images/s, steady state (first epoch excluded; training.json)",
    "inference_images_per_s": "inference throughput, images/s at eval_batch_size, forward pass only, "
    "warm-up excluded",
    "eval_batch_size": "batch size of the inference throughput measurement",
    "latency_ms_median": "single-image forward pass, median milliseconds",
    "latency_ms_p95": "single-image forward pass, 95th percentile milliseconds",
    "training_seconds": "training wall time in seconds (training.json)",
    "epochs": "training epochs",
    "device": "device of the evaluation (inference throughput, latency)",
    "training_device": "device of the training (training throughput and time)",
    "precision": "training precision policy (float32, mixed_bfloat16, mixed_float16)",
    "training_code": "fingerprint of the code that trained the model, first 12 hex digits "
    "(training.json code_version; flowerlab.code_fingerprint)",
}


def _nested(evaluation: dict[str, Any], *keys: str) -> Any:
    value: Any = evaluation
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def device_label(device: Any) -> str | None:
    """'gpu: NVIDIA H100' style label of a {"kind", "name", "replicas"} record (or a plain string)."""
    if device is None or isinstance(device, str):
        return device
    kind, name, replicas = device.get("kind"), device.get("name"), device.get("replicas") or 1
    label = f"{kind}: {name}" if kind and name else str(kind or name or "")
    return f"{label} x{replicas}" if replicas > 1 else label


def _required(evaluation: dict[str, Any], key: str, source: str | os.PathLike[str]) -> Any:
    if evaluation.get(key) is None:
        raise DataError(f"{source} has no {key!r}: it is not a complete evaluation; rerun flowerlab evaluate")
    return evaluation[key]


def metrics_row(
    evaluation: dict[str, Any], source: str | os.PathLike[str] = "metrics.json"
) -> dict[str, Any]:
    """One architecture's row of the table from its evaluation (metrics.json)."""
    arch = _required(evaluation, "arch", source)
    flops = evaluation.get("flops_per_image")
    model_bytes = evaluation.get("model_bytes")
    row = {
        "arch": arch,
        "val_accuracy": _required(evaluation, "accuracy", source),
        "course_val_accuracy": course_val_accuracy(arch),
        "val_loss": evaluation.get("loss"),
        "val_macro_f1": _nested(evaluation, "macro_average", "f1"),
        "best_val_accuracy": _nested(evaluation, "training", "best_val_accuracy"),
        "validation_images": evaluation.get("images"),
        "parameters": evaluation.get("parameters_total"),
        "trainable_parameters": evaluation.get("parameters_trainable"),
        "gflops_per_image": flops / 1e9 if flops is not None else None,
        "image_size": evaluation.get("image_size"),
        "model_mb": model_bytes / BYTES_PER_MB if model_bytes is not None else None,
        "train_images_per_s": _nested(evaluation, "training", "train_images_per_second"),
        "inference_images_per_s": evaluation.get("inference_images_per_second"),
        "eval_batch_size": evaluation.get("eval_batch_size"),
        "latency_ms_median": evaluation.get("latency_ms_median"),
        "latency_ms_p95": evaluation.get("latency_ms_p95"),
        "training_seconds": _nested(evaluation, "training", "wall_seconds"),
        "epochs": _nested(evaluation, "training", "epochs"),
        "device": device_label(evaluation.get("device")),
        "training_device": device_label(_nested(evaluation, "training", "device")),
        "precision": _nested(evaluation, "training", "precision"),
        "training_code": (_nested(evaluation, "training", "code_version", "fingerprint") or "")[:SHORT] or None,
    }
    assert list(row) == list(COLUMNS), "metrics_row and COLUMNS must list the same columns"
    return row


def collect_rows(paths: Sequence[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """The table's rows, one per evaluation, in the given order; an architecture may appear once."""
    if not paths:
        raise DataError("no evaluation given: pass at least one metrics.json to --evaluations")
    rows: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for path in paths:
        row = metrics_row(read_json(path, "evaluation"), path)
        if row["arch"] in seen:
            raise DataError(f"architecture {row['arch']!r} appears twice: {seen[row['arch']]} and {path}")
        seen[row["arch"]] = str(path)
        rows.append(row)
    return rows


def format_cell(value: Any) -> str:
    """CSV text of one figure: empty when missing, integers as integers, floats to 6 significant digits."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def write_csv(path: str | os.PathLike[str], rows: Sequence[dict[str, Any]]) -> None:
    with filesystem.atomic_output(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow([format_cell(row[column]) for column in COLUMNS])


def write_json(path: str | os.PathLike[str], rows: Sequence[dict[str, Any]]) -> None:
    clean = [
        {key: (None if isinstance(v, float) and not math.isfinite(v) else v) for key, v in row.items()}
        for row in rows
    ]
    filesystem.write_json(path, {"format_version": 1, "columns": COLUMNS, "rows": clean})


def collect(
    paths: Sequence[str | os.PathLike[str]], out_csv: str | os.PathLike[str], out_json: str | os.PathLike[str]
) -> list[dict[str, Any]]:
    rows = collect_rows(paths)
    write_csv(out_csv, rows)
    write_json(out_json, rows)
    logger.info("collected %d architecture(s) into %s and %s", len(rows), out_csv, out_json)
    return rows


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--evaluations",
        nargs="+",
        required=True,
        help="metrics.json of each architecture, in the order the table lists them",
    )
    parser.add_argument("--out-csv", required=True, help="results/metrics.csv")
    parser.add_argument("--out-json", required=True, help="results/metrics.json")
    return parser


def cli(argv: list[str]) -> int:
    args = build_parser(f"flowerlab {argv[0]}").parse_args(argv[1:])
    configure_logging()
    return run_command(
        argv[0], lambda: collect([Path(p) for p in args.evaluations], args.out_csv, args.out_json)
    )
