"""The report's comparison figures: one function per figure, data in, matplotlib Figure out.

Every function accepts one architecture or many, one replicate or many; only architectures
present in its data appear, so a study with some architectures disabled draws only those it
evaluated. The photo figures are in `photo_figures`, the time figures in `time_figures`, what
they share in `plotting`.

Inputs are the study's files, loaded by `flowerlab.reporting.results`:
- `runs`: results/metrics.csv as a DataFrame, one row per run (flowerlab.evaluation.collect.COLUMNS);
- `architectures`: results/architectures.csv, one row per architecture with the mean and 95%
  interval across its replicates (flowerlab.evaluation.summaries.ARCHITECTURE_COLUMNS);
- `comparisons`: results/comparisons.csv, P(A > B) per ordered pair of architectures;
- `histories`: every run's history.csv in one long DataFrame (arch, replicate, epoch, ...);
- `evaluations`: {(arch, replicate): results/evaluation/{arch}/{replicate}/metrics.json}.
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
from matplotlib.ticker import MaxNLocator, PercentFormatter

from flowerlab.errors import DataError
from flowerlab.reporting.captions import devices_text
from flowerlab.reporting.plotting import (
    NICE_SECONDS,
    arch_colours,
    label_points,
    log_x_axis,
    new_figure,
    percent_axis,
    require_columns,
    seconds_label,
    style,
)
from flowerlab.reporting.tables import clipped, format_count

RUN_ALPHA = 0.45  # per-run points sit behind the architecture's mean


def _legend_proxies(with_course: bool, replicated: bool) -> list[Line2D]:
    """Neutral markers for the legend: the labels name the colours, the legend the shapes."""
    proxies = [
        Line2D([], [], marker="o", linestyle="", color="grey", alpha=RUN_ALPHA, markersize=5, label="one run"),
        Line2D([], [], marker="s", linestyle="-" if replicated else "", color="grey", markersize=7,
               label="mean, 95% interval across runs" if replicated else "the architecture (one run, no spread)"),
    ]
    if with_course:
        proxies.append(Line2D([], [], marker="D", linestyle="", markerfacecolor="none", markeredgecolor="grey",
                              markeredgewidth=1.5, markersize=7, label="the course's notebooks"))
    return proxies


def _draw_means(ax: Any, architectures: pd.DataFrame, x_column: str, colours: Mapping[str, Any]) -> None:
    """Each architecture's mean accuracy as a square, its t-interval as a vertical bar."""
    for _, row in architectures.iterrows():
        x, mean = row[x_column], row["val_accuracy_mean"]
        if not (math.isfinite(x) and math.isfinite(mean)):
            continue
        low, high = row.get("val_accuracy_ci_low"), row.get("val_accuracy_ci_high")
        error = None
        if pd.notna(low) and pd.notna(high):
            low, high = clipped(low, high)
            error = [[mean - low], [high - mean]]
        ax.errorbar([x], [mean], yerr=error, fmt="s", color=colours[row["arch"]], markersize=8, capsize=4,
                    linewidth=1.6, zorder=4)


def _accuracy_scatter(runs: pd.DataFrame, architectures: pd.DataFrame, x_run: str, x_arch: str,
                      x_label: str, title: str, tick_label: Any, ticks: Sequence[float] | None = None) -> Figure:
    archs = list(architectures["arch"])
    colours = arch_colours(archs)
    with style():
        figure, axes = new_figure(width=7.5, height=5.2)
        ax = axes[0, 0]
        points = runs.dropna(subset=[x_run, "val_accuracy"])
        sns.scatterplot(data=points, x=x_run, y="val_accuracy", hue="arch", palette=colours, s=30,
                        alpha=RUN_ALPHA, ax=ax, legend=False, zorder=3)
        means = architectures.dropna(subset=[x_arch, "val_accuracy_mean"])
        _draw_means(ax, means, x_arch, colours)
        course = means.dropna(subset=["course_val_accuracy"])
        for _, row in course.iterrows():
            ax.scatter([row[x_arch]], [row["course_val_accuracy"]], marker="D", s=55, facecolors="none",
                       edgecolors=[colours[row["arch"]]], linewidths=1.5, zorder=3)
            ax.plot([row[x_arch]] * 2, [row["val_accuracy_mean"], row["course_val_accuracy"]],
                    color=colours[row["arch"]], linestyle=":", linewidth=1, zorder=2)
        # Below the axes, so that it never covers a point or an error bar.
        replicated = int(architectures["runs"].max()) >= 2
        figure.legend(handles=_legend_proxies(not course.empty, replicated), loc="outside lower center", ncols=3, fontsize=8)
        low, high = _log_limits(list(points[x_run]) + list(means[x_arch]))
        log_x_axis(ax, low, high, tick_label, ticks)
        percent_axis(ax, list(points["val_accuracy"]) + list(course["course_val_accuracy"]))
        label_points(ax, means[x_arch], means["val_accuracy_mean"], means["arch"])
        ax.set_xlabel(x_label)
        ax.set_ylabel("validation accuracy")
        ax.set_title(title)
    return figure


def _log_limits(values: Sequence[float]) -> tuple[float, float]:
    """Room for the labels beside the points on a log axis, also with a single point."""
    finite = [v for v in values if v is not None and math.isfinite(v) and v > 0] or [1.0]
    return min(finite) / 2.5, max(finite) * 4


def _runs_label(architectures: pd.DataFrame) -> str:
    counts = sorted({int(n) for n in architectures["runs"]})
    if len(counts) == 1:
        return f"{counts[0]} run{'s' if counts[0] != 1 else ''} each"
    return f"{counts[0]}-{counts[-1]} runs each"


# --------------------------------------------------------------------------------------------
# The comparison across architectures (metrics.csv, architectures.csv, comparisons.csv)
# --------------------------------------------------------------------------------------------


def accuracy_intervals(runs: pd.DataFrame, architectures: pd.DataFrame) -> Figure:
    """Every run's accuracy with its Wilson interval (the validation photos' sampling; thin), each
    architecture's mean with its 95% t-interval across runs (thick), and the course's figure."""
    require_columns(runs, ["arch", "replicate", "val_accuracy", "val_accuracy_ci_low", "val_accuracy_ci_high"],
                    "metrics table")
    require_columns(architectures, ["arch", "val_accuracy_mean", "val_accuracy_ci_low", "val_accuracy_ci_high",
                                    "course_val_accuracy"], "architectures table")
    archs = list(architectures["arch"])
    colours = arch_colours(archs)
    with style():
        figure, axes = new_figure(width=8.0, height=max(2.8, 0.9 * len(archs) + 1.4))
        ax = axes[0, 0]
        for position, arch in enumerate(archs):
            own = runs[runs["arch"] == arch].reset_index(drop=True)
            offsets = np.linspace(-0.25, 0.25, len(own) + 2)[1:-1] if len(own) > 1 else [0.0]
            for offset, (_, run) in zip(offsets, own.iterrows(), strict=True):
                ax.errorbar([run["val_accuracy"]], [position + offset],
                            xerr=[[run["val_accuracy"] - run["val_accuracy_ci_low"]],
                                  [run["val_accuracy_ci_high"] - run["val_accuracy"]]],
                            fmt="o", color=colours[arch], alpha=0.6, markersize=4, linewidth=0.9, capsize=2)
            row = architectures.iloc[position]
            if pd.notna(row["val_accuracy_ci_low"]):
                ax.plot(clipped(row["val_accuracy_ci_low"], row["val_accuracy_ci_high"]), [position] * 2,
                        color=colours[arch], linewidth=5, alpha=0.35, solid_capstyle="butt")
            ax.plot([row["val_accuracy_mean"]], [position], marker="|", color="black", markersize=16)
            if pd.notna(row["course_val_accuracy"]):
                ax.scatter([row["course_val_accuracy"]], [position], marker="D", s=55, facecolors="none",
                           edgecolors="black", linewidths=1.4, zorder=5)
        ax.set_yticks(range(len(archs)), archs)
        ax.invert_yaxis()
        lowest = min([*runs["val_accuracy_ci_low"].dropna(), *architectures["course_val_accuracy"].dropna(), 1.0])
        ax.set_xlim(max(0.0, math.floor((lowest - 0.05) * 20) / 20), 1.005)
        ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.set_xlabel("validation accuracy (intervals drawn within 0-100%)")
        handles = [
            Line2D([], [], marker="o", color="grey", markersize=4, label="one run, 95% Wilson interval (photos)"),
            Line2D([], [], color="grey", linewidth=5, alpha=0.35, label="95% t-interval of the mean across runs"),
            Line2D([], [], marker="|", linestyle="", color="black", markersize=12, label="mean"),
            Line2D([], [], marker="D", linestyle="", markerfacecolor="none", markeredgecolor="black",
                   label="the course's notebooks"),
        ]
        figure.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8)
        ax.set_title(f"Validation accuracy with its uncertainty ({_runs_label(architectures)})")
    return figure


def accuracy_vs_parameters(runs: pd.DataFrame, architectures: pd.DataFrame) -> Figure:
    """Validation accuracy against parameter count (log scale): each run a faint dot, each
    architecture's mean a labelled square with its 95% interval; hollow diamonds the course's."""
    require_columns(runs, ["arch", "val_accuracy", "parameters"], "metrics table")
    require_columns(architectures, ["arch", "val_accuracy_mean", "parameters", "course_val_accuracy"],
                    "architectures table")
    return _accuracy_scatter(runs, architectures, "parameters", "parameters", "parameters (log scale)",
                             "Accuracy against model size", format_count)


def accuracy_vs_training_time(runs: pd.DataFrame, architectures: pd.DataFrame) -> Figure:
    """Validation accuracy against training wall time (log scale): each run at its own time,
    each architecture's mean at its mean time."""
    require_columns(runs, ["arch", "val_accuracy", "training_seconds"], "metrics table")
    require_columns(architectures, ["arch", "val_accuracy_mean", "training_seconds_mean", "course_val_accuracy"],
                    "architectures table")
    devices = devices_text(runs.get("training_device", pd.Series(dtype=object)))
    return _accuracy_scatter(runs, architectures, "training_seconds", "training_seconds_mean",
                             f"training wall time (log scale) on {devices}", "Accuracy against training time",
                             seconds_label, NICE_SECONDS)


def probability_of_improvement(comparisons: pd.DataFrame, archs: Sequence[str]) -> Figure:
    """P(row beats column) for every pair of architectures, from comparisons.csv."""
    require_columns(comparisons, ["arch_a", "arch_b", "p_a_beats_b"], "comparisons table")
    matrix = (comparisons.pivot(index="arch_a", columns="arch_b", values="p_a_beats_b")
              .reindex(index=list(archs), columns=list(archs)).astype(float))
    if matrix.isna().all().all():
        raise DataError("no probability of improvement: every architecture needs at least two runs")
    side = max(3.8, 0.9 * len(archs) + 2.2)
    with style():
        figure, axes = new_figure(width=side + 1.0, height=side)
        ax = axes[0, 0]
        sns.heatmap(matrix, ax=ax, vmin=0, vmax=1, center=0.5, cmap="RdBu", annot=True, fmt=".2f",
                    annot_kws={"fontsize": 9}, square=True, linewidths=0.5,
                    cbar_kws={"label": "P(row's run beats column's run)"})
        ax.grid(False)  # the style's grid would cross the empty diagonal
        ax.set_xlabel("architecture B")
        ax.set_ylabel("architecture A")
        ax.tick_params(axis="x", labelrotation=30)
        ax.tick_params(axis="y", labelrotation=0)
        ax.set_title("Probability of improvement P(A > B) in validation accuracy")
    return figure


def throughput(runs: pd.DataFrame) -> Figure:
    """Training and inference images/s per architecture (log scale): the bar is the mean across
    runs, the dots the runs, the value the mean."""
    require_columns(runs, ["arch", "train_images_per_s", "inference_images_per_s"], "metrics table")
    archs = list(dict.fromkeys(runs["arch"]))
    colours = arch_colours(archs)
    panels = [
        ("train_images_per_s", "training", "training_device"),
        ("inference_images_per_s", "inference", "device"),
    ]
    with style():
        figure, axes = new_figure(1, 2, width=10, height=max(2.6, 0.55 * len(archs) + 1.6), sharey=True)
        for ax, (column, what, device_column) in zip(axes[0], panels, strict=True):
            values = pd.to_numeric(runs[column], errors="coerce")
            means = values.groupby(runs["arch"]).mean().reindex(archs)
            positions = np.arange(len(archs))
            ax.barh(positions, means.fillna(0), color=[colours[a] for a in archs], alpha=0.75)
            place = {arch: index for index, arch in enumerate(archs)}
            ax.scatter(values, [place[a] for a in runs["arch"]], color="black", s=12, zorder=3)
            for position, mean, arch in zip(positions, means, archs, strict=True):
                spread = values[runs["arch"] == arch].dropna()
                text = " not measured" if not math.isfinite(mean) else (
                    f" {mean:,.1f}" + (f" ({spread.min():,.1f}-{spread.max():,.1f})" if len(spread) > 1 else ""))
                ax.text(spread.max() if math.isfinite(mean) else 0, position, text, va="center", fontsize=8)
            ax.set_yticks(positions, archs)
            ax.invert_yaxis()
            finite = values[np.isfinite(values) & (values > 0)]
            if not finite.empty:
                log_x_axis(ax, finite.min() / 2, finite.max() * 12, lambda x: f"{x:,.0f}" if x >= 1 else f"{x:g}")
            ax.set_xlabel("images / s (log scale)")
            device = devices_text(runs.get(device_column, pd.Series(dtype=object)))
            batch = ""
            if what == "inference" and "eval_batch_size" in runs and runs["eval_batch_size"].notna().any():
                batch = f", batch {int(runs['eval_batch_size'].dropna().iloc[0])}"
            ax.set_title(f"{what} on {device}{batch}", fontsize=9)
        figure.suptitle("Throughput (images per second, higher is better; dots: the runs, bar: their mean)")
    return figure


def hardware_share(runs: pd.DataFrame) -> Figure:
    """Each architecture's training GFLOP/s as a share of its machine's measured peak: the bar is
    the mean across runs, the dots the runs, the label the achieved and peak GFLOP/s."""
    require_columns(runs, ["arch", "train_gflops_per_s", "peak_gflops_per_s", "fraction_of_peak"], "metrics table")
    archs = list(dict.fromkeys(runs["arch"]))
    colours = arch_colours(archs)
    share = pd.to_numeric(runs["fraction_of_peak"], errors="coerce")
    achieved = pd.to_numeric(runs["train_gflops_per_s"], errors="coerce")
    peak = pd.to_numeric(runs["peak_gflops_per_s"], errors="coerce")
    with style():
        figure, axes = new_figure(1, 1, width=8, height=max(2.4, 0.5 * len(archs) + 1.4))
        ax = axes[0][0]
        positions = np.arange(len(archs))
        means = share.groupby(runs["arch"]).mean().reindex(archs)
        ax.barh(positions, means.fillna(0), color=[colours[a] for a in archs], alpha=0.75)
        place = {arch: index for index, arch in enumerate(archs)}
        ax.scatter(share, [place[a] for a in runs["arch"]], color="black", s=12, zorder=3)
        for position, arch in zip(positions, archs, strict=True):
            mine = runs["arch"] == arch
            if not share[mine].notna().any():
                ax.text(0.005, position, " not recorded", va="center", fontsize=8)
                continue
            text = (f" {achieved[mine].mean():,.1f} of {peak[mine].mean():,.0f} GFLOP/s"
                    f" ({share[mine].mean():.0%})")
            ax.text(share[mine].max(), position, text, va="center", fontsize=8)
        ax.set_yticks(positions, archs)
        ax.invert_yaxis()
        ax.set_xlim(0, max(1.0, float(share.max()) * 1.1) if share.notna().any() else 1.0)
        ax.xaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_xlabel("share of the machine's measured peak (training FLOP/s over matmul FLOP/s)")
        devices = devices_text(runs.get("training_device", pd.Series(dtype=object)))
        kernels = ", ".join(sorted({str(k) for k in runs.get("kernels", pd.Series(dtype=object)).dropna()}))
        ax.set_title(f"on {devices}" + (f" ({kernels} kernels)" if kernels else ""), fontsize=9)
        figure.suptitle("How near its hardware's peak each training ran (higher is better)")
    return figure


# --------------------------------------------------------------------------------------------
# Per architecture (history.csv, metrics.json)
# --------------------------------------------------------------------------------------------


def learning_curves(histories: pd.DataFrame, architectures: pd.DataFrame | None = None) -> Figure:
    """Train and validation accuracy (top row) and loss (bottom row) per epoch, one column per
    architecture: the line is the mean across runs, the band their range (min to max); a dotted
    line marks the course's final validation accuracy where `architectures` (the table) has one
    (none on synthetic photos)."""
    required = {"arch", "replicate", "epoch", "accuracy", "val_accuracy", "loss", "val_loss"}
    if histories is None or histories.empty:
        raise DataError("no training history to plot: no architecture was trained")
    missing = required - set(histories.columns)
    if missing:
        raise DataError(f"the training histories lack the column(s) {sorted(missing)}")
    archs = list(dict.fromkeys(histories["arch"]))
    course_figures = ({} if architectures is None or "course_val_accuracy" not in architectures
                      else dict(zip(architectures["arch"], architectures["course_val_accuracy"], strict=True)))
    with style():
        figure, axes = new_figure(2, len(archs), width=max(4.0, 3.4 * len(archs)), height=5.6, sharey="row")
        for column, arch in enumerate(archs):
            history = histories[histories["arch"] == arch]
            long = history.melt(id_vars=["replicate", "epoch"], value_vars=["accuracy", "val_accuracy",
                                                                           "loss", "val_loss"])
            long["split"] = np.where(long["variable"].str.startswith("val_"), "validation", "train")
            long["metric"] = long["variable"].str.removeprefix("val_")
            top, bottom = axes[0, column], axes[1, column]
            for ax, metric in ((top, "accuracy"), (bottom, "loss")):
                sns.lineplot(data=long[long["metric"] == metric], x="epoch", y="value", hue="split",
                             hue_order=["train", "validation"], estimator="mean", errorbar=("pi", 100),
                             marker="o", markersize=3 if history["epoch"].nunique() > 3 else 6, ax=ax, legend=column == 0 and metric == "accuracy")
                ax.set_xlabel("epoch")
                ax.set_ylabel("")
                # Whole epochs only, also for a run of one or two epochs (matplotlib would pad a
                # lone point with ticks at 0.96, 0.98, ...).
                ax.set_xlim(history["epoch"].min() - 0.5, history["epoch"].max() + 0.5)
                ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
            course = course_figures.get(arch)
            if course is not None and pd.notna(course):
                top.axhline(course, color="grey", linestyle=":", linewidth=1.2, label="course (final)")
            runs = history["replicate"].nunique()
            top.set_title(f"{arch} ({runs} run{'s' if runs != 1 else ''})")
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
            if ax.get_legend() is not None:
                ax.get_legend().remove()
        figure.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=8)
    return figure


def row_normalised(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its sum: the fraction of a true class predicted as each class.
    A class with no validation image keeps a row of zeros (not NaN)."""
    matrix = np.asarray(matrix, dtype=float)
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)


def pooled_confusion(evaluations: Mapping[tuple[str, str], Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per architecture: its runs' confusion matrices summed (each photo counted once per run),
    its classes, the pooled accuracy and the number of runs."""
    pooled: dict[str, dict[str, Any]] = {}
    for (arch, _), evaluation in evaluations.items():
        matrix = np.asarray(evaluation["confusion_matrix"], dtype=float)
        entry = pooled.setdefault(arch, {"classes": evaluation["classes"], "matrix": np.zeros_like(matrix),
                                         "runs": 0})
        if entry["classes"] != evaluation["classes"]:
            raise DataError(f"{arch}'s runs were evaluated on different classes; rerun the study")
        entry["matrix"] = entry["matrix"] + matrix
        entry["runs"] += 1
    for entry in pooled.values():
        total = entry["matrix"].sum()
        entry["accuracy"] = float(np.trace(entry["matrix"]) / total) if total else float("nan")
    return pooled


def confusion_matrices(evaluations: Mapping[tuple[str, str], Mapping[str, Any]], *, columns: int = 3) -> Figure:
    """One row-normalised confusion matrix per architecture, its runs pooled (rows true, columns
    predicted), cells annotated with the percentage, class names on the axes."""
    if not evaluations:
        raise DataError("no evaluation to plot: no architecture was evaluated")
    pooled = pooled_confusion(evaluations)
    archs = list(pooled)
    columns = min(columns, len(archs))
    rows = math.ceil(len(archs) / columns)
    classes_count = max(len(entry["classes"]) for entry in pooled.values())
    side = max(3.6, 0.6 * classes_count + 1.8)
    with style():
        figure, axes = new_figure(rows, columns, width=side * columns, height=side * rows * 0.92)
        for index, arch in enumerate(archs):
            ax = axes[index // columns, index % columns]
            entry = pooled[arch]
            classes = entry["classes"]
            fractions = row_normalised(entry["matrix"])
            sns.heatmap(fractions, ax=ax, vmin=0, vmax=1, cmap="Blues", annot=fractions * 100, fmt=".0f",
                        annot_kws={"fontsize": 8}, cbar=False, square=True, linewidths=0.5,
                        xticklabels=classes, yticklabels=classes)
            runs = f", {entry['runs']} runs pooled" if entry["runs"] > 1 else ""
            ax.set_title(f"{arch}: {entry['accuracy']:.1%} correct{runs}", fontsize=10)
            ax.set_xlabel("predicted class")
            ax.set_ylabel("true class")
            ax.tick_params(axis="x", labelrotation=45)
            ax.tick_params(axis="y", labelrotation=0)
        for index in range(len(archs), rows * columns):
            axes[index // columns, index % columns].set_visible(False)
        figure.suptitle("Confusion matrices (% of each true class, rows sum to 100)")
    return figure
