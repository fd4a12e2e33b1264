"""Gather every run's evaluation into the study's tables.

`flowerlab collect --evaluations results/evaluation/A/seed-1/metrics.json ... --out-csv
results/metrics.csv --out-json results/metrics.json --architectures results/architectures.csv
--comparisons results/comparisons.csv --mcnemar results/mcnemar.csv` writes
- metrics.csv: one row per run (architecture and replicate, in the order given), one column per
  figure, units in the column names, with the Wilson interval of each run's accuracy;
- architectures.csv: one row per architecture, mean, SD and 95% interval across its replicates;
- comparisons.csv: every ordered pair of architectures, the probability that one beats the other;
- mcnemar.csv: every pair on every replicate both ran, the exact McNemar test on the same photos;
- metrics.json: all four tables with a description of every column.
Each evaluation's predictions.csv, beside its metrics.json, gives the per-photo correctness the
McNemar tests compare. The statistics are `flowerlab.evaluation.statistics`'.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowerlab import filesystem
from flowerlab.code_fingerprint import SHORT
from flowerlab.console import configure_logging, run_command
from flowerlab.data.manifest import SYNTHETIC
from flowerlab.errors import DataError
from flowerlab.evaluation import statistics, summaries
from flowerlab.filesystem import read_json
from flowerlab.models.registry import course_val_accuracy
from flowerlab.replicates import Replicate

logger = logging.getLogger(__name__)

BYTES_PER_MB = 1_000_000  # model_mb is in megabytes (10^6 bytes), as file managers show them

COLUMNS: dict[str, str] = {
    "arch": "architecture",
    "replicate": "the run's replicate: seed-N, or split-M-seed-N when the split varies too",
    "seed": "training seed (weights, shuffling, augmentation)",
    "split_seed": "seed of the train/validation split (data.seed or one of data.split_seeds)",
    "val_accuracy": "accuracy of the trained model on the validation split (fraction)",
    "val_accuracy_ci_low": "95% Wilson interval of that accuracy over the validation photos, lower end",
    "val_accuracy_ci_high": "the same interval's upper end",
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
    "train_gflops_per_s": "training GFLOP/s achieved: training FLOPs per image x train_images_per_s "
    "(training.json hardware_share)",
    "peak_gflops_per_s": "the training machine's measured peak GFLOP/s in the training's compute dtype "
    "(a matrix-product probe, times the replicas)",
    "fraction_of_peak": "train_gflops_per_s / peak_gflops_per_s: how near its hardware's limit the training ran",
    "kernels": "TensorFlow's CPU kernel library during the training (oneDNN or Eigen; flowerlab.kernels)",
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
    "backend": "Keras backend of the training and its library's version (tensorflow 2.21.0, jax 0.10.2; "
    "flowerlab.backends)",
    "training_code": "fingerprint of the code that trained the model, first 12 hex digits "
    "(training.json code_version; flowerlab.code_fingerprint)",
    "data_source": "what the photos were: official (the course's archive), synthetic (generated, no "
    "flowers: no comparison with the course) or their folder",
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


def backend_label(backend: Any) -> str | None:
    """'jax 0.10.2' from training.json's {"name", "version"} (None for a record without it)."""
    if not isinstance(backend, dict):
        return None
    return " ".join(filter(None, (backend.get("name"), backend.get("version")))) or None


def _required(evaluation: dict[str, Any], key: str, source: str | os.PathLike[str]) -> Any:
    if evaluation.get(key) is None:
        raise DataError(f"{source} has no {key!r}: it is not a complete evaluation; rerun flowerlab evaluate")
    return evaluation[key]


def run_seeds(evaluation: dict[str, Any], source: str | os.PathLike[str]) -> tuple[int, int]:
    """The run's training seed and split seed, from its evaluation's training and data records."""
    seed = _nested(evaluation, "training", "seed")
    split = _nested(evaluation, "data_settings", "seed")
    if seed is None or split is None:
        raise DataError(f"{source} names no training seed or split seed: rerun flowerlab evaluate")
    return int(seed), int(split)


def metrics_row(
    evaluation: dict[str, Any], source: str | os.PathLike[str] = "metrics.json", *, splits_vary: bool = False
) -> dict[str, Any]:
    """One run's row of the table from its evaluation (metrics.json); `splits_vary`: the study
    repeats its split, so the replicate is named by split and seed."""
    arch = _required(evaluation, "arch", source)
    accuracy = _required(evaluation, "accuracy", source)
    seed, split = run_seeds(evaluation, source)
    images = evaluation.get("images")
    low, high = statistics.wilson(round(accuracy * images), images) if images else (None, None)
    flops = evaluation.get("flops_per_image")
    model_bytes = evaluation.get("model_bytes")
    source = _nested(evaluation, "training", "data_source")
    row = {
        "arch": arch,
        "replicate": Replicate(seed, split if splits_vary else None).name,
        "seed": seed,
        "split_seed": split,
        "val_accuracy": accuracy,
        "val_accuracy_ci_low": low,
        "val_accuracy_ci_high": high,
        # The course's figures are for flower photos; generated ones are not compared with them.
        "course_val_accuracy": None if source == SYNTHETIC else course_val_accuracy(arch),
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
        "train_gflops_per_s": _nested(evaluation, "training", "hardware_share", "achieved_gflops_per_s"),
        "peak_gflops_per_s": _nested(evaluation, "training", "hardware_share", "peak_gflops_per_s"),
        "fraction_of_peak": _nested(evaluation, "training", "hardware_share", "fraction_of_peak"),
        "kernels": _nested(evaluation, "training", "kernels", "library"),
        "inference_images_per_s": evaluation.get("inference_images_per_second"),
        "eval_batch_size": evaluation.get("eval_batch_size"),
        "latency_ms_median": evaluation.get("latency_ms_median"),
        "latency_ms_p95": evaluation.get("latency_ms_p95"),
        "training_seconds": _nested(evaluation, "training", "wall_seconds"),
        "epochs": _nested(evaluation, "training", "epochs"),
        "device": device_label(evaluation.get("device")),
        "training_device": device_label(_nested(evaluation, "training", "device")),
        "precision": _nested(evaluation, "training", "precision"),
        "backend": backend_label(_nested(evaluation, "training", "backend")),
        "training_code": (_nested(evaluation, "training", "code_version", "fingerprint") or "")[:SHORT] or None,
        "data_source": source,
    }
    assert list(row) == list(COLUMNS), "metrics_row and COLUMNS must list the same columns"
    return row


def collect_rows(paths: Sequence[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """The runs' rows, one per evaluation, in the given order; a run (architecture, seed,
    split) may appear once."""
    if not paths:
        raise DataError("no evaluation given: pass at least one metrics.json to --evaluations")
    evaluations = [(read_json(path, "evaluation"), path) for path in paths]
    splits = {run_seeds(evaluation, path)[1] for evaluation, path in evaluations}
    rows: list[dict[str, Any]] = []
    seen: dict[tuple[str, str], str] = {}
    for evaluation, path in evaluations:
        row = metrics_row(evaluation, path, splits_vary=len(splits) > 1)
        key = (row["arch"], row["replicate"])
        if key in seen:
            raise DataError(f"{row['arch']} {row['replicate']} appears twice: {seen[key]} and {path}")
        seen[key] = str(path)
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


def write_csv(path: str | os.PathLike[str], rows: Sequence[dict[str, Any]],
              columns: dict[str, str] = COLUMNS) -> None:
    with filesystem.atomic_output(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([format_cell(row[column]) for column in columns])


def _clean(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{key: (None if isinstance(v, float) and not math.isfinite(v) else v) for key, v in row.items()}
            for row in rows]


def write_json(path: str | os.PathLike[str], tables: dict[str, tuple[dict[str, str], Sequence[dict[str, Any]]]]
               ) -> None:
    """{"runs": {"columns": ..., "rows": ...}, "architectures": ..., ...} with format_version 2."""
    filesystem.write_json(path, {"format_version": 2, **{
        name: {"columns": columns, "rows": _clean(rows)} for name, (columns, rows) in tables.items()}})


@dataclass(frozen=True)
class Outputs:
    """Where collect writes its tables."""

    runs_csv: Path
    json: Path
    architectures_csv: Path
    comparisons_csv: Path
    mcnemar_csv: Path


def collect(paths: Sequence[str | os.PathLike[str]], outputs: Outputs) -> dict[str, list[dict[str, Any]]]:
    """Every table of the study from its evaluations; returns them by name."""
    runs = collect_rows(paths)
    correctness = {(row["arch"], row["replicate"]): summaries.read_correctness(Path(path).with_name("predictions.csv"))
                   for row, path in zip(runs, paths, strict=True)}
    mcnemar = summaries.mcnemar_rows(runs, correctness)
    tables = {
        "runs": (COLUMNS, runs),
        "architectures": (summaries.ARCHITECTURE_COLUMNS, summaries.architecture_rows(runs)),
        "comparisons": (summaries.COMPARISON_COLUMNS, summaries.comparison_rows(runs, mcnemar)),
        "mcnemar": (summaries.MCNEMAR_COLUMNS, mcnemar),
    }
    for name, path in (("runs", outputs.runs_csv), ("architectures", outputs.architectures_csv),
                       ("comparisons", outputs.comparisons_csv), ("mcnemar", outputs.mcnemar_csv)):
        write_csv(path, tables[name][1], tables[name][0])
    write_json(outputs.json, tables)
    logger.info("collected %d run(s) of %d architecture(s) into %s and its companions", len(runs),
                len(tables["architectures"][1]), outputs.runs_csv)
    return {name: rows for name, (_, rows) in tables.items()}


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--evaluations",
        nargs="+",
        required=True,
        help="metrics.json of each run (its predictions.csv beside it), in the order the tables list them",
    )
    parser.add_argument("--out-csv", required=True, type=Path, help="results/metrics.csv (one row per run)")
    parser.add_argument("--out-json", required=True, type=Path, help="results/metrics.json (every table)")
    parser.add_argument("--architectures", required=True, type=Path, help="results/architectures.csv")
    parser.add_argument("--comparisons", required=True, type=Path, help="results/comparisons.csv")
    parser.add_argument("--mcnemar", required=True, type=Path, help="results/mcnemar.csv")
    return parser


def cli(argv: list[str]) -> int:
    args = build_parser(f"flowerlab {argv[0]}").parse_args(argv[1:])
    configure_logging()
    outputs = Outputs(args.out_csv, args.out_json, args.architectures, args.comparisons, args.mcnemar)
    return run_command(argv[0], lambda: collect([Path(p) for p in args.evaluations], outputs))
