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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowerlab import filesystem
from flowerlab.errors import DataError
from flowerlab.filesystem import read_json
from flowerlab.reporting.tables import format_seconds

CAPTIONS_FILE = "captions.json"

@dataclass(frozen=True)
class Figure:
    """One figure of the report: its title, the function that draws it ("module.function" in
    flowerlab.reporting; `reporting.drawing` resolves it), and its caption, a template whose
    fields `figure_caption` fills in for a run. `optional`: drawn only when its input exists."""

    title: str
    draws: str
    caption: str
    optional: bool = False


# The figures of the report, in reading order: the one list the notebook, the landing page,
# Snakemake's report and the tests take them from.
FIGURES: dict[str, Figure] = {
    "accuracy_intervals": Figure(
        "Validation accuracy with its uncertainty", "figures.accuracy_intervals",
        "Validation accuracy of every run with the 95% Wilson interval of its validation photos "
        "(thin bars: the photos' sampling alone), and of each architecture the mean across its runs "
        "(black tick) with the 95% Student-t interval of that mean (wide band: the replicates' "
        "variation; none with one run); hollow diamonds are the accuracies the course's notebooks printed."),
    "probability_of_improvement": Figure(
        "Probability that one architecture beats another", "figures.probability_of_improvement",
        "For each pair of architectures, the probability that a run of the row's architecture reaches a "
        "higher validation accuracy than a run of the column's, over all pairs of their replicates "
        "(the Mann-Whitney U statistic divided by the number of pairs; ties count one half).",
        optional=True),
    "accuracy_vs_parameters": Figure(
        "Validation accuracy against parameter count", "figures.accuracy_vs_parameters",
        "Validation accuracy against parameter count (log scale): each run a faint dot, each "
        "architecture's mean a square with the 95% interval across its runs; hollow diamonds are the "
        "accuracies the course's notebooks printed."),
    "throughput": Figure(
        "Training and inference throughput", "figures.throughput",
        "Training throughput (steady state, on {training_devices}) and inference throughput "
        "(forward pass at the evaluation batch size, warm-up excluded, on {eval_devices}), "
        "in images per second on a log scale: the bar is the mean across runs, the dots the runs."),
    "hardware_share": Figure(
        "How near its hardware's peak each training ran", "figures.hardware_share",
        "Training GFLOP/s achieved (training FLOPs per image x training images per second) as a share "
        "of the training machine's peak ({training_devices}), measured there by a matrix-product probe "
        "in the training's compute dtype: the bar is the mean across runs, the dots the runs. A low share "
        "is time the software leaves on the table; a high share on a slow study is the machine's limit."),
    "accuracy_vs_training_time": Figure(
        "Validation accuracy against training wall time", "figures.accuracy_vs_training_time",
        "Validation accuracy against training wall time (log scale) on {training_devices}: each run "
        "a faint dot at its own time, each architecture's mean a square at its mean time."),
    "learning_curves": Figure(
        "Learning curves", "figures.learning_curves",
        "Training and validation accuracy (top) and loss (bottom) per epoch: the line is the mean across "
        "runs, the band their range (lowest to highest); the dotted line is the course's final "
        "validation accuracy where it has one."),
    "confusion_matrices": Figure(
        "Confusion matrices", "figures.confusion_matrices",
        "Confusion matrices on the validation split, each architecture's runs pooled, rows normalised: "
        "each cell is the percentage of a true class predicted as the column's class."),
    "prediction_gallery": Figure(
        "Validation photos with their predicted class", "photo_figures.prediction_gallery",
        "A sample of validation photos with the {model}'s prediction and its probability; "
        "misclassified photos are framed in red."),
    "data_overview": Figure(
        "The data: photos per class and split, and the skipped files", "photo_figures.data_overview",
        "Photos per class in the training and validation splits, and the files the inventory "
        "skipped, by reason."),
    "study_time": Figure(
        "Wall time of this study's jobs and stages", "time_figures.study_time",
        "Wall time of each job of this study and of each stage (the sum of its jobs), from the "
        "Snakemake benchmark files the jobs wrote (benchmarks/){total_time}. Bottom right: the jobs one "
        "after another on one machine (their sum), this run's span, and the critical path, the longest "
        "chain of jobs that depend on each other (data, then one run's training and evaluation), which is "
        "what the study takes with a machine per run."),
}

# Figures drawn only when their input exists (replicates to compare).
OPTIONAL_FIGURES = tuple(name for name, figure in FIGURES.items() if figure.optional)


def devices_text(values: Any) -> str:
    """The distinct devices of a metrics column (a pandas Series), or a note that none was recorded."""
    devices = sorted({str(v) for v in values.dropna() if str(v)})
    return "; ".join(devices) if devices else "device not recorded"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _figure(name: str) -> Figure:
    if name not in FIGURES:
        raise KeyError(f"unknown figure {name!r}; known: {', '.join(FIGURES)}")
    return FIGURES[name]


def figure_caption(
    name: str,
    metrics: Any = None,
    *,
    gallery_arch: str = "",
    study_seconds: float | None = None,
) -> str:
    """The one-line caption of figure `name`, naming the devices for the cost figures, the
    gallery's model and the study's total wall time (`study_seconds`) where given."""
    fields = {
        "training_devices": devices_text(metrics["training_device"])
        if metrics is not None and "training_device" in metrics else "the training device",
        "eval_devices": devices_text(metrics["device"])
        if metrics is not None and "device" in metrics else "the evaluation device",
        "model": f"{gallery_arch} model" if gallery_arch else "model",
        "total_time": f"; {format_seconds(study_seconds)} in all" if study_seconds is not None else "",
    }
    return _one_line(_figure(name).caption.format(**fields))


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
        "title": FIGURES[name].title if name in FIGURES else name.replace("_", " "),
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
