"""The report's figures: one function per figure, data in, matplotlib Figure out.

Figures are built with matplotlib's object-oriented API on the Agg canvas (no pyplot, so no
global figure registry, no display needed, and nothing to close), styled by seaborn inside a
context manager so that importing this module changes no global setting. Every function
accepts one architecture or many; only architectures present in its data appear, so a study
with some architectures disabled draws only those it evaluated.

`save_figure(fig, name, caption, out_dir)` writes `name.png` and `name.svg` atomically and
records the caption in `out_dir/captions.json`, which the landing page reads.

Inputs are the study's files, loaded by `flowerlab.reporting.report`:
- `metrics`: results/metrics.csv as a DataFrame (flowerlab.evaluation.collect.COLUMNS);
- `histories`: {arch: results/models/{arch}/history.csv as a DataFrame};
- `evaluations`: {arch: results/evaluation/{arch}/metrics.json as a dict};
- `predictions`: results/evaluation/{arch}/predictions.csv as a DataFrame;
- `jobs`: the study's jobs from its Snakemake benchmark files (`flowerlab.reporting.timings.Job`);
- `training_benchmark`: the measured rows of bench/bench_training.py's results/bench/training.csv.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter, PercentFormatter

from flowerlab import filesystem
from flowerlab.errors import DataError
from flowerlab.models.registry import course_val_accuracy
from flowerlab.reporting import timings
from flowerlab.reporting.captions import devices_text, record_caption
from flowerlab.reporting.tables import format_count, format_seconds

PNG_DPI = 150
# Colours: one per architecture, stable across figures (same architecture, same colour).
PALETTE = "colorblind"
WRONG = "#c0392b"  # misclassified photos
RIGHT = "#1e8449"

STAGE_COLOURS = "deep"


# --------------------------------------------------------------------------------------------
# Common helpers
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _style() -> Iterator[None]:
    """seaborn's look for the axes created inside, without touching global rcParams for good."""
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.9):
        yield


style = _style  # public, for the figures drawn outside the report (bench/run_all.py)


def new_figure(
    rows: int = 1, columns: int = 1, *, width: float = 7.0, height: float = 4.5, **subplot_kwargs: Any
) -> tuple[Figure, np.ndarray]:
    """A Figure on the Agg canvas and its axes as a 2-D array (always 2-D, even for 1x1)."""
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False, **subplot_kwargs)
    return figure, axes


def arch_colours(archs: Sequence[str]) -> dict[str, Any]:
    """One colour per architecture, the same in every figure of a report."""
    colours = sns.color_palette(PALETTE, n_colors=max(len(archs), 1))
    return dict(zip(archs, colours, strict=False))  # the palette has at least len(archs)


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise DataError(f"{what} lacks the column(s) {missing}; regenerate it (flowerlab collect)")
    if frame.empty:
        raise DataError(f"{what} has no row: no architecture was evaluated")


def _label_points(ax: Any, xs: Sequence[float], ys: Sequence[float], labels: Sequence[str]) -> None:
    for x, y, label in zip(xs, ys, labels, strict=True):
        ax.annotate(label, (x, y), xytext=(6, 5), textcoords="offset points", fontsize=9)


def _percent_axis(ax: Any, values: Sequence[float]) -> None:
    """Accuracy on a percent axis from 0 (or a bit below the lowest point) to 100 %."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    low = min(finite) if finite else 0.0
    ax.set_ylim(max(0.0, math.floor((low - 0.1) * 10) / 10), 1.02)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))


# --------------------------------------------------------------------------------------------
# 1-3: the comparison across architectures (metrics.csv)
# --------------------------------------------------------------------------------------------


def _accuracy_scatter(
    metrics: pd.DataFrame, x_column: str, x_label: str, title: str, x_formatter: Any
) -> Figure:
    archs = list(metrics["arch"])
    colours = arch_colours(archs)
    with _style():
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
        _label_points(ax, data[x_column], data["val_accuracy"], data["arch"])
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
        _percent_axis(ax, list(data["val_accuracy"]) + list(course.get("course_val_accuracy", [])))
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
    _require_columns(metrics, ["arch", "val_accuracy", "parameters"], "metrics table")
    return _accuracy_scatter(
        metrics,
        "parameters",
        "parameters (log scale)",
        "Accuracy against model size",
        FuncFormatter(lambda v, _: format_count(v)),
    )


def accuracy_vs_training_time(metrics: pd.DataFrame) -> Figure:
    """Validation accuracy against training wall time (log scale), one point per architecture."""
    _require_columns(metrics, ["arch", "val_accuracy", "training_seconds"], "metrics table")
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
    _require_columns(metrics, ["arch", "train_images_per_s", "inference_images_per_s"], "metrics table")
    archs = list(metrics["arch"])
    colours = arch_colours(archs)
    panels = [
        ("train_images_per_s", "training", "training_device"),
        ("inference_images_per_s", "inference", "device"),
    ]
    with _style():
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
    with _style():
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
    with _style():
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


# --------------------------------------------------------------------------------------------
# 6: the gallery of validation photos
# --------------------------------------------------------------------------------------------


def select_gallery(
    predictions: pd.DataFrame, count: int = 24, *, seed: int = 0, wrong_fraction: float = 0.5
) -> pd.DataFrame:
    """A reproducible sample of `count` predictions: up to `wrong_fraction` of them misclassified
    (the interesting ones), the rest correct, ordered by true class then id."""
    _require_columns(predictions, ["id", "true_class", "predicted_class"], "predictions table")
    wrong = predictions[predictions["true_class"] != predictions["predicted_class"]]
    right = predictions[predictions["true_class"] == predictions["predicted_class"]]
    count = min(count, len(predictions))
    wrong_count = min(len(wrong), round(count * wrong_fraction))
    right_count = min(len(right), count - wrong_count)
    wrong_count = min(len(wrong), count - right_count)  # fill up with mistakes if few are right
    sample = pd.concat(
        [wrong.sample(wrong_count, random_state=seed), right.sample(right_count, random_state=seed)]
    )
    return sample.sort_values(["true_class", "id"]).reset_index(drop=True)


def read_record_images(
    files: Sequence[str | os.PathLike[str]], ids: Sequence[str], *, image_size: int, num_classes: int
) -> dict[str, np.ndarray]:
    """The images (uint8 HxWx3) of the records with these ids, as the models saw them.

    Read by `flowerlab.data.pipeline.make_dataset` (the one reader of the records; imports
    TensorFlow). Its [0, 1] floats are the JPEG's bytes divided by 255, so rounding x 255 gives
    them back exactly. Ids not found are absent from the result.
    """
    from flowerlab.data.pipeline import make_dataset

    wanted = set(ids)
    found: dict[str, np.ndarray] = {}
    dataset = make_dataset([os.fspath(path) for path in files], image_size=image_size, num_classes=num_classes,
                           batch_size=256, training=False, cache=False, deterministic=True, keys=True)
    for images, _, keys in dataset:
        for record_id, image in zip(keys["id"].numpy(), images.numpy(), strict=True):
            key = record_id.decode("utf-8")
            if key in wanted:
                found[key] = np.round(image * 255.0).astype(np.uint8)
        if len(found) == len(wanted):
            break
    return found


def prediction_gallery(
    sample: pd.DataFrame, images: Mapping[str, np.ndarray], *, arch: str = "", columns: int = 6
) -> Figure:
    """Validation photos with their true and predicted class; misclassified ones framed and
    titled in red. `sample` has id, true_class, predicted_class (and prob_<class> columns)."""
    _require_columns(sample, ["id", "true_class", "predicted_class"], "gallery sample")
    shown = sample[sample["id"].isin(images.keys())]
    if shown.empty:
        raise DataError("none of the gallery's photos was found in the validation TFRecords")
    columns = min(columns, len(shown))
    rows = math.ceil(len(shown) / columns)
    with _style(), sns.axes_style("white"):
        figure, axes = new_figure(rows, columns, width=1.9 * columns, height=2.25 * rows + 0.6)
        for ax in axes.flat:
            ax.set_axis_off()
        for index, (_, row) in enumerate(shown.iterrows()):
            ax = axes[index // columns, index % columns]
            ax.set_axis_on()
            ax.imshow(images[row["id"]])
            ax.set_xticks([])
            ax.set_yticks([])
            correct = row["true_class"] == row["predicted_class"]
            probability = row.get(f"prob_{row['predicted_class']}")
            confidence = (
                f" {float(probability):.0%}" if probability is not None and pd.notna(probability) else ""
            )
            title = f"true: {row['true_class']}\npred: {row['predicted_class']}{confidence}"
            ax.set_title(title if correct else f"✗ {title}", fontsize=8, color=RIGHT if correct else WRONG)
            for spine in ax.spines.values():
                spine.set_visible(True)
                spine.set_color(RIGHT if correct else WRONG)
                spine.set_linewidth(1 if correct else 3)
        wrong = int((shown["true_class"] != shown["predicted_class"]).sum())
        name = f"{arch}: " if arch else ""
        figure.suptitle(f"{name}{len(shown)} validation photos, {wrong} misclassified (red, ✗)")
    return figure


# --------------------------------------------------------------------------------------------
# 7: the data
# --------------------------------------------------------------------------------------------


def data_overview(manifest: Mapping[str, Any], inventory: Mapping[str, Any]) -> Figure:
    """Photos per class in each split (manifest.json) and the files the inventory skipped, by
    reason (inventory.json)."""
    classes = list(manifest.get("classes", []))
    splits = manifest.get("splits", {})
    if not classes or not splits:
        raise DataError("manifest has no classes or splits to draw")
    counts = pd.DataFrame(
        [
            {"class": name, "split": split, "photos": int(splits[split].get("per_class", {}).get(name, 0))}
            for split in splits
            for name in classes
        ]
    )
    skipped = dict(inventory.get("skipped_by_reason") or {})
    with _style():
        figure, axes = new_figure(1, 2, width=11, height=4.2, gridspec_kw={"width_ratios": [3, 2]})
        left, right = axes[0]
        sns.barplot(data=counts, x="class", y="photos", hue="split", ax=left, palette="muted")
        for container in left.containers:
            left.bar_label(container, fontsize=8)
        left.set_ylim(0, max(1, counts["photos"].max()) * 1.25)  # headroom for the labels and legend
        left.yaxis.set_major_locator(MaxNLocator(integer=True))
        sns.move_legend(left, "upper right", ncols=len(splits), title=None, fontsize=8)
        totals = ", ".join(f"{split} {int(splits[split].get('records', 0)):,}" for split in splits)
        left.set_title(f"Photos per class and split ({totals})")
        left.set_xlabel("")
        left.tick_params(axis="x", labelrotation=20)
        if skipped:
            reasons = sorted(skipped, key=lambda reason: -skipped[reason])
            right.barh(reasons, [skipped[r] for r in reasons], color=WRONG)
            for position, reason in enumerate(reasons):
                right.text(skipped[reason], position, f" {skipped[reason]}", va="center", fontsize=8)
            right.invert_yaxis()
            right.set_xlim(0, max(skipped.values()) * 1.25)
            right.xaxis.set_major_locator(MaxNLocator(integer=True))
            right.set_xlabel("files")
        else:
            right.text(0.5, 0.5, "no file skipped", ha="center", va="center", transform=right.transAxes)
            right.set_xticks([])
            right.set_yticks([])
        found, kept = inventory.get("files_found"), inventory.get("kept")
        right.set_title(f"Skipped by the inventory ({sum(skipped.values())} of {found} files; {kept} kept)")
    return figure


# --------------------------------------------------------------------------------------------
# 8-9: time and benchmarks (Snakemake benchmark files, bench/bench_training.py's CSV)
# --------------------------------------------------------------------------------------------


def jobs_frame(jobs: Sequence[timings.Job]) -> pd.DataFrame:
    """One row per job: `job` (its label), `stage` (its rule), `seconds`, in the jobs' order."""
    return pd.DataFrame(
        [{"job": job.label, "stage": job.rule, "seconds": job.seconds} for job in jobs],
        columns=["job", "stage", "seconds"],
    )


def stage_colours(stages: Sequence[str]) -> dict[str, Any]:
    """One colour per stage (rule), the same in the job and the stage panels."""
    unique = list(dict.fromkeys(stages))
    return dict(zip(unique, sns.color_palette(STAGE_COLOURS, n_colors=max(len(unique), 1)), strict=False))


def draw_job_seconds(ax: Any, frame: pd.DataFrame, colours: Mapping[str, Any]) -> None:
    """Horizontal bars of each job's wall seconds (frame: job, stage, seconds), labelled with
    the time; a linear axis, so the bars show where the time goes."""
    sns.barplot(data=frame, y="job", x="seconds", hue="stage", palette=colours, dodge=False, ax=ax,
                legend=False, orient="h")
    top = max(float(frame["seconds"].max()), 1e-9)
    for position, seconds in enumerate(frame["seconds"]):
        ax.text(seconds + top * 0.01, position, f" {format_seconds(seconds)}", va="center", fontsize=8)
    ax.set_xlim(0, top * 1.22)  # room for the labels
    ax.set_xlabel("wall seconds")
    ax.set_ylabel("")


def draw_stage_seconds(ax: Any, seconds: Mapping[str, float], colours: Mapping[str, Any]) -> None:
    """Horizontal bars of each stage's seconds (the sum of its jobs), labelled with time and share."""
    stages = list(seconds)
    values = [seconds[stage] for stage in stages]
    total = sum(values) or 1e-9
    ax.barh(stages, values, color=[colours[stage] for stage in stages])
    for position, value in enumerate(values):
        ax.text(value + max(values) * 0.01, position, f" {format_seconds(value)} ({value / total:.0%})",
                va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(*values, 1e-9) * 1.45)
    ax.set_xlabel("wall seconds (sum of the stage's jobs)")


def study_time(jobs: Sequence[timings.Job]) -> Figure:
    """Each job's wall time (left) and each stage's (right, with its share of the total), from
    the study's Snakemake benchmark files; the total and the span in the title."""
    if not jobs:
        raise DataError("no job to draw: the study has no benchmark file")
    frame = jobs_frame(jobs)
    colours = stage_colours(list(frame["stage"]))
    with _style():
        figure, axes = new_figure(1, 2, width=11, height=max(3.0, 0.32 * len(frame) + 1.6),
                                  gridspec_kw={"width_ratios": [3, 2]})
        draw_job_seconds(axes[0, 0], frame, colours)
        axes[0, 0].set_title("per job")
        draw_stage_seconds(axes[0, 1], timings.seconds_per_stage(jobs), colours)
        axes[0, 1].set_title("per stage")
        figure.suptitle(
            f"Wall time of this study: {format_seconds(timings.total_seconds(jobs))} of jobs, "
            f"{format_seconds(timings.span_seconds(jobs))} from the first job's start to the last one's end"
        )
    return figure


TRAINING_SIDES = {"plain_images_per_s": "plain Keras", "flowerlab_images_per_s": "flowerlab"}


def measured_training_rows(training: pd.DataFrame) -> pd.DataFrame:
    """The architectures bench_training.py measured (its `skipped: ...` rows left out)."""
    _require_columns(training, ["arch", "status", *TRAINING_SIDES, "ratio"], "training benchmark table")
    return training[training["status"] == "measured"].reset_index(drop=True)


def draw_training_benchmark(ax: Any, training: pd.DataFrame) -> None:
    """Plain Keras and flowerlab images/s side by side per architecture, the ratio above each pair."""
    measured = measured_training_rows(training)
    if measured.empty:
        raise DataError("the training benchmark measured no architecture (every row is skipped)")
    long = measured.melt(id_vars=["arch"], value_vars=list(TRAINING_SIDES), var_name="side",
                         value_name="images_per_s")
    long["side"] = long["side"].map(TRAINING_SIDES)
    sns.barplot(data=long, x="arch", y="images_per_s", hue="side", hue_order=list(TRAINING_SIDES.values()),
                palette=["#9aa5b1", "#2563eb"], ax=ax)
    top = float(long["images_per_s"].max())
    for position, (_, row) in enumerate(measured.iterrows()):
        highest = max(float(row["plain_images_per_s"]), float(row["flowerlab_images_per_s"]))
        ax.text(position, highest + top * 0.03, f"{float(row['ratio']):.2f}×", ha="center", fontsize=9,
                fontweight="bold")
    ax.set_ylim(0, top * 1.25)
    ax.set_xlabel("")
    ax.set_ylabel("training images / s (steady state)")
    ax.tick_params(axis="x", labelrotation=15)
    sns.move_legend(ax, "upper right", title=None, fontsize=8)


def training_benchmark(training: pd.DataFrame, *, when: str = "") -> Figure:
    """bench/bench_training.py's figures: images/s of the plain-Keras code and of flowerlab's
    training path per architecture, with flowerlab / plain above each pair."""
    measured = measured_training_rows(training)
    with _style():
        figure, axes = new_figure(width=max(6.0, 1.5 * len(measured) + 2.5), height=4.6)
        draw_training_benchmark(axes[0, 0], training)
        first = measured.iloc[0] if not measured.empty else {}
        context = ", ".join(
            text for text in (
                f"batch {first.get('batch_size')}" if "batch_size" in measured else "",
                str(first.get("device", "")) if "device" in measured else "",
                f"{first.get('threads')} threads" if "threads" in measured else "",
                f"load average {first.get('load_average')}" if "load_average" in measured else "",
                when,
            ) if text
        )
        axes[0, 0].set_title(f"Training throughput, flowerlab / plain Keras above each pair\n({context})",
                             fontsize=10)
    return figure


# --------------------------------------------------------------------------------------------
# Captions and saving
# --------------------------------------------------------------------------------------------


def save_figure(figure: Figure, name: str, caption: str, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write `name`.png and `name`.svg to `out_dir` atomically and record the caption in
    captions.json ({name: {"title", "caption", "png", "svg"}}); returns the two paths."""
    out_dir = Path(out_dir)
    paths = {"png": out_dir / f"{name}.png", "svg": out_dir / f"{name}.svg"}
    for kind, path in paths.items():
        buffer = io.BytesIO()
        # SVG text stays text (searchable, scalable); metadata=None keeps the files reproducible.
        options = (
            {"dpi": PNG_DPI, "metadata": {"Software": None}}
            if kind == "png"
            else {"metadata": {"Date": None}}
        )
        with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "flowerlab"}):
            figure.savefig(buffer, format=kind, bbox_inches="tight", **options)
        filesystem.write_bytes(path, buffer.getvalue())
    record_caption(out_dir, name, caption)
    return paths


