"""The report's figure titles and captions, written once for every place that shows them.

The notebook saves each figure with `figure_caption(name, metrics, ...)`, which names this run's
devices and times; `captions.json` beside the figures keeps them for the landing page
(`load_captions`); the Snakemake report shows the same captions without a run's figures
(`snakemake_captions`, through the rule's params and workflow/report/figures.rst).
Nothing here imports matplotlib, pandas or TensorFlow: the Snakefile imports this module.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from flowerlab import filesystem
from flowerlab.errors import DataError
from flowerlab.filesystem import read_json
from flowerlab.reporting.tables import format_seconds

CAPTIONS_FILE = "captions.json"

# The figures of the report, in reading order: file name -> what it shows.
FIGURES: dict[str, str] = {
    "accuracy_vs_parameters": "Validation accuracy against parameter count",
    "throughput": "Training and inference throughput",
    "accuracy_vs_training_time": "Validation accuracy against training wall time",
    "learning_curves": "Learning curves",
    "confusion_matrices": "Confusion matrices",
    "prediction_gallery": "Validation photos with their predicted class",
    "data_overview": "The data: photos per class and split, and the skipped files",
    "study_time": "Wall time of this study's jobs and stages",
    "training_benchmark": "Training throughput: plain Keras against flowerlab (last benchmark run)",
}


# Figures drawn only when their input exists (the benchmark run's CSV); the others always are.
OPTIONAL_FIGURES = ("training_benchmark",)



def devices_text(values: Any) -> str:
    """The distinct devices of a metrics column (a pandas Series), or a note that none was recorded."""
    devices = sorted({str(v) for v in values.dropna() if str(v)})
    return "; ".join(devices) if devices else "device not recorded"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def figure_caption(
    name: str,
    metrics: Any = None,
    *,
    gallery_arch: str = "",
    study_seconds: float | None = None,
    benchmark_time: str = "",
) -> str:
    """The one-line caption of figure `name`, naming the devices for the cost figures, the
    study's total wall time (`study_seconds`) and when the benchmark ran (`benchmark_time`)."""
    training_devices = (
        devices_text(metrics["training_device"])
        if metrics is not None and "training_device" in metrics
        else "the training device"
    )
    eval_devices = (
        devices_text(metrics["device"])
        if metrics is not None and "device" in metrics
        else "the evaluation device"
    )
    model = f"{gallery_arch} model" if gallery_arch else "model"
    captions = {
        "accuracy_vs_parameters": (
            "Validation accuracy of each architecture against its parameter count (log scale); "
            "hollow diamonds are the accuracies the course's notebooks printed."
        ),
        "throughput": (
            f"Training throughput (steady state, on {training_devices}) and inference throughput "
            f"(forward pass at the evaluation batch size, warm-up excluded, on {eval_devices}), "
            "in images per second on a log scale."
        ),
        "accuracy_vs_training_time": (
            f"Validation accuracy against training wall time (log scale) on {training_devices}."
        ),
        "learning_curves": (
            "Training and validation accuracy (top) and loss (bottom) per epoch; the dotted line is "
            "the course's final validation accuracy where it has one."
        ),
        "confusion_matrices": (
            "Confusion matrices on the validation split, rows normalised: each cell is the "
            "percentage of a true class predicted as the column's class."
        ),
        "prediction_gallery": (
            f"A sample of validation photos with the {model}'s prediction and its probability; "
            "misclassified photos are framed in red."
        ),
        "data_overview": (
            "Photos per class in the training and validation splits, and the files the inventory "
            "skipped, by reason."
        ),
        "study_time": (
            "Wall time of each job of this study and of each stage (the sum of its jobs), from the "
            "Snakemake benchmark files the jobs wrote (benchmarks/)"
            + (f"; {format_seconds(study_seconds)} in all." if study_seconds is not None else ".")
        ),
        "training_benchmark": (
            "Training images per second of the plain Keras code a user would write (the original JPEGs "
            "decoded every step, float32) and of flowerlab's training path (cached TFRecords, its "
            "precision), per architecture, with the ratio; from the last run of bench/bench_training.py"
            + (f" ({benchmark_time})" if benchmark_time else "")
            + ", not from this study's run."
        ),
    }
    if name not in captions:
        raise KeyError(f"unknown figure {name!r}; known: {', '.join(FIGURES)}")
    return _one_line(captions[name])


def record_caption(out_dir: str | os.PathLike[str], name: str, caption: str) -> None:
    """Add or replace one figure's entry in captions.json, keeping the report's figure order."""
    path = Path(out_dir) / CAPTIONS_FILE
    captions: dict[str, Any] = {}
    if path.is_file():
        try:
            captions = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            captions = {}  # a corrupt file from an older run is rebuilt, not trusted
    captions[name] = {
        "title": FIGURES.get(name, name.replace("_", " ")),
        "caption": _one_line(caption),
        "png": f"{name}.png",
        "svg": f"{name}.svg",
    }
    order = {figure: index for index, figure in enumerate(FIGURES)}
    ordered = dict(sorted(captions.items(), key=lambda item: order.get(item[0], len(order))))
    filesystem.write_json(path, ordered)


def forget_figure(out_dir: str | os.PathLike[str], name: str) -> None:
    """Remove figure `name` (PNG, SVG, caption) from `out_dir`: an optional figure whose input is
    gone must not linger from an earlier render and reach the landing page."""
    out_dir = Path(out_dir)
    for suffix in (".png", ".svg"):
        (out_dir / f"{name}{suffix}").unlink(missing_ok=True)
    path = out_dir / CAPTIONS_FILE
    if path.is_file():
        try:
            captions = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return
        if name in captions:
            del captions[name]
            filesystem.write_json(path, captions)



def load_captions(figures_dir: str | os.PathLike[str]) -> dict[str, dict[str, str]]:
    """captions.json of the figures folder; every figure it lists must have its PNG."""
    captions = read_json(Path(figures_dir) / CAPTIONS_FILE, "figure captions")
    for name, entry in captions.items():
        png = Path(figures_dir) / entry.get("png", f"{name}.png")
        if not png.is_file():
            raise DataError(
                f"figure {name} is listed in {CAPTIONS_FILE} but {png} is missing; rerun the report notebook"
            )
    return captions



def snakemake_captions() -> dict[str, str]:
    """Every figure's caption as the Snakemake report shows it (no run's devices or times)."""
    return {name: figure_caption(name) for name in FIGURES}
