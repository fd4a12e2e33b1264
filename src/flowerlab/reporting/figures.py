"""The report's comparison figures: one function per figure, data in, matplotlib Figure out.

Every function accepts one architecture or many; only architectures present in its data appear,
so a study with some architectures disabled draws only those it evaluated. The photo figures are
in `photo_figures`, the time figures in `time_figures`, what they share in `plotting`.

Inputs are the study's files, loaded by `flowerlab.reporting.results`:
- `metrics`: results/metrics.csv as a DataFrame (flowerlab.evaluation.collect.COLUMNS);
- `histories`: {arch: results/models/{arch}/history.csv as a DataFrame};
- `evaluations`: {arch: results/evaluation/{arch}/metrics.json as a dict}.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullFormatter, PercentFormatter

from flowerlab.errors import DataError
from flowerlab.models.registry import course_val_accuracy
from flowerlab.reporting.captions import devices_text
from flowerlab.reporting.plotting import arch_colours, label_points, new_figure, percent_axis, require_columns, style
from flowerlab.reporting.tables import format_count, format_seconds

# --------------------------------------------------------------------------------------------
# Common helpers
# --------------------------------------------------------------------------------------------




# --------------------------------------------------------------------------------------------
# 1-3: the comparison across architectures (metrics.csv)
# --------------------------------------------------------------------------------------------


def _accuracy_scatter(
    metrics: pd.DataFrame, x_column: str, x_label: str, title: str, x_formatter: Any
) -> Figure:
    archs = list(metrics["arch"])
    colours = arch_colours(archs)
    with style():
        figure, axes = new_figure(width=7.5, height=4.8)
        ax = axes[0, 0]
        data = metrics.dropna(subset=[x_column, "val_accuracy"])
        sns.scatterplot(
            data=data,
            x=x_column,
            y="val_accuracy",
            hue="arch",
            palette=colours,
            s=90,
            ax=ax,
            legend=False,
            zorder=3,
        )
        label_points(ax, data[x_column], data["val_accuracy"], data["arch"])
        course = (
            data.dropna(subset=["course_val_accuracy"]) if "course_val_accuracy" in data else data.iloc[:0]
        )
        if not course.empty:
            ax.scatter(
                course[x_column],
                course["course_val_accuracy"],
                marker="D",
                s=55,
                facecolors="none",
                edgecolors=[colours[a] for a in course["arch"]],
                linewidths=1.5,
                zorder=3,
            )
            for _, row in course.iterrows():
                ax.plot(
                    [row[x_column]] * 2,
                    [row["val_accuracy"], row["course_val_accuracy"]],
                    color=colours[row["arch"]],
                    linestyle=":",
                    linewidth=1,
                    zorder=2,
                )
            # Neutral proxies: the legend explains the marker shapes, the labels name the colours.
            proxies = [
                Line2D([], [], marker="o", linestyle="", color="grey", markersize=8, label="this study"),
                Line2D(
                    [],
                    [],
                    marker="D",
                    linestyle="",
                    markerfacecolor="none",
                    markeredgecolor="grey",
                    markeredgewidth=1.5,
                    markersize=7,
                    label="the course's notebooks",
                ),
            ]
            ax.legend(handles=proxies, loc="lower right", fontsize=8, frameon=True)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(x_formatter)
        _pad_log_axis(ax, data[x_column])
        percent_axis(ax, list(data["val_accuracy"]) + list(course.get("course_val_accuracy", [])))
        ax.set_xlabel(x_label)
        ax.set_ylabel("validation accuracy")
        ax.set_title(title)
    return figure


def _pad_log_axis(ax: Any, values: Sequence[float]) -> None:
    """Room for the labels beside the points on a log axis, also with a single point."""
    finite = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    if finite:
        ax.set_xlim(min(finite) / 2.5, max(finite) * 4)


def accuracy_vs_parameters(metrics: pd.DataFrame) -> Figure:
    """Validation accuracy against parameter count (log scale), one labelled point per
    architecture; hollow diamonds mark the course's accuracy where it has one."""
    require_columns(metrics, ["arch", "val_accuracy", "parameters"], "metrics table")
    return _accuracy_scatter(
        metrics,
        "parameters",
        "parameters (log scale)",
        "Accuracy against model size",
        FuncFormatter(lambda v, _: format_count(v)),
    )


def accuracy_vs_training_time(metrics: pd.DataFrame) -> Figure:
    """Validation accuracy against training wall time (log scale), one point per architecture."""
    require_columns(metrics, ["arch", "val_accuracy", "training_seconds"], "metrics table")
    devices = devices_text(metrics.get("training_device", pd.Series(dtype=object)))
    return _accuracy_scatter(
        metrics,
        "training_seconds",
        f"training wall time (log scale) on {devices}",
        "Accuracy against training time",
        FuncFormatter(lambda v, _: format_seconds(v)),
    )


def throughput(metrics: pd.DataFrame) -> Figure:
    """Training and inference images/s per architecture (log scale), values written on the bars."""
    require_columns(metrics, ["arch", "train_images_per_s", "inference_images_per_s"], "metrics table")
    archs = list(metrics["arch"])
    colours = arch_colours(archs)
    panels = [
        ("train_images_per_s", "training", "training_device"),
        ("inference_images_per_s", "inference", "device"),
    ]
    with style():
        figure, axes = new_figure(1, 2, width=10, height=max(2.6, 0.55 * len(archs) + 1.6), sharey=True)
        for ax, (column, what, device_column) in zip(axes[0], panels, strict=True):
            values = pd.to_numeric(metrics[column], errors="coerce")
            positions = np.arange(len(archs))
            ax.barh(positions, values.fillna(0), color=[colours[a] for a in archs])
            for position, value in zip(positions, values, strict=True):
                text = f" {value:,.1f}" if math.isfinite(value) else " not measured"
                ax.text(value if math.isfinite(value) else 0, position, text, va="center", fontsize=8)
            ax.set_yticks(positions, archs)
            ax.invert_yaxis()
            finite = values[np.isfinite(values) & (values > 0)]
            if not finite.empty:
                ax.set_xscale("log")
                ax.set_xlim(finite.min() / 2, finite.max() * 8)
                # Only the decades are labelled: minor labels (2x10^2, 3x10^2, ...) overlap.
                ax.xaxis.set_minor_formatter(NullFormatter())
                ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
            ax.set_xlabel("images / s (log scale)")
            device = devices_text(metrics.get(device_column, pd.Series(dtype=object)))
            batch = ""
            if (
                what == "inference"
                and "eval_batch_size" in metrics
                and metrics["eval_batch_size"].notna().any()
            ):
                batch = f", batch {int(metrics['eval_batch_size'].dropna().iloc[0])}"
            ax.set_title(f"{what} on {device}{batch}", fontsize=9)
        figure.suptitle("Throughput (images per second, higher is better)")
    return figure


# --------------------------------------------------------------------------------------------
# 4-5: per architecture (history.csv, metrics.json)
# --------------------------------------------------------------------------------------------


def learning_curves(histories: Mapping[str, pd.DataFrame]) -> Figure:
    """Train and validation accuracy (top row) and loss (bottom row) per epoch, one column per
    architecture; a dotted line marks the course's final validation accuracy where it has one."""
    if not histories:
        raise DataError("no training history to plot: no architecture was trained")
    archs = list(histories)
    with style():
        figure, axes = new_figure(2, len(archs), width=max(4.0, 3.4 * len(archs)), height=5.6, sharey="row")
        for column, arch in enumerate(archs):
            history = histories[arch]
            missing = {"epoch", "accuracy", "val_accuracy", "loss", "val_loss"} - set(history.columns)
            if missing:
                raise DataError(f"history of {arch} lacks the column(s) {sorted(missing)}")
            top, bottom = axes[0, column], axes[1, column]
            for ax, metric in ((top, "accuracy"), (bottom, "loss")):
                ax.plot(history["epoch"], history[metric], marker="o", markersize=3, label="train")
                ax.plot(
                    history["epoch"], history[f"val_{metric}"], marker="o", markersize=3, label="validation"
                )
                ax.set_xlabel("epoch")
                ax.xaxis.get_major_locator().set_params(integer=True)
            if course_val_accuracy(arch) is not None:
                top.axhline(
                    course_val_accuracy(arch),
                    color="grey",
                    linestyle=":",
                    linewidth=1.2,
                    label="course (final)",
                )
            top.set_title(arch)
            top.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            top.set_ylim(0, 1.02)
        axes[0, 0].set_ylabel("accuracy")
        axes[1, 0].set_ylabel("cross-entropy loss")
        handles, labels = [], []
        for ax in axes[0]:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                if label not in labels:
                    handles.append(handle)
                    labels.append(label)
        figure.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=8)
    return figure


def row_normalised(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its sum: the fraction of a true class predicted as each class.
    A class with no validation image keeps a row of zeros (not NaN)."""
    matrix = np.asarray(matrix, dtype=float)
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)


def confusion_matrices(evaluations: Mapping[str, Mapping[str, Any]], *, columns: int = 3) -> Figure:
    """One row-normalised confusion matrix per architecture (rows true, columns predicted),
    cells annotated with the percentage, class names on the axes."""
    if not evaluations:
        raise DataError("no evaluation to plot: no architecture was evaluated")
    archs = list(evaluations)
    columns = min(columns, len(archs))
    rows = math.ceil(len(archs) / columns)
    classes_count = max(len(e["classes"]) for e in evaluations.values())
    side = max(3.6, 0.6 * classes_count + 1.8)
    with style():
        figure, axes = new_figure(rows, columns, width=side * columns, height=side * rows * 0.92)
        for index, arch in enumerate(archs):
            ax = axes[index // columns, index % columns]
            evaluation = evaluations[arch]
            classes = evaluation["classes"]
            fractions = row_normalised(np.asarray(evaluation["confusion_matrix"]))
            sns.heatmap(
                fractions,
                ax=ax,
                vmin=0,
                vmax=1,
                cmap="Blues",
                annot=fractions * 100,
                fmt=".0f",
                annot_kws={"fontsize": 8},
                cbar=False,
                square=True,
                linewidths=0.5,
                xticklabels=classes,
                yticklabels=classes,
            )
            ax.set_title(f"{arch}: {evaluation['accuracy']:.1%} correct", fontsize=10)
            ax.set_xlabel("predicted class")
            ax.set_ylabel("true class")
            ax.tick_params(axis="x", labelrotation=45)
            ax.tick_params(axis="y", labelrotation=0)
        for index in range(len(archs), rows * columns):
            axes[index // columns, index % columns].set_visible(False)
        figure.suptitle("Confusion matrices (% of each true class, rows sum to 100)")
    return figure


