"""The report's tables: figures formatted as people read them, the summary and the study's time.

No TensorFlow here; pandas only inside the functions that build a DataFrame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from flowerlab.reporting import timings

# The summary, in two tables narrow enough to read side by side with nothing hidden at 1,280 px:
# how accurate each architecture is, and what it costs. architectures.csv column -> heading.
ACCURACY_COLUMNS: dict[str, str] = {
    "arch": "architecture",
    "runs": "runs",
    "val_accuracy_mean": "validation accuracy (95% CI)",
    "val_macro_f1_mean": "macro-F1 (95% CI)",
    "course_val_accuracy": "course's accuracy",
    "course_placement": "course's figure against ours",
    "p_beats_course": "P(run beats course)",
}
COST_COLUMNS: dict[str, str] = {
    "arch": "architecture",
    "parameters": "parameters",
    "gflops_per_image": "GFLOPs / image",
    "epochs": "epochs",
    "train_images_per_s_mean": "training images/s",
    "training_seconds_mean": "training time per run",
    "inference_images_per_s_mean": "inference images/s",
    "device": "device (inference)",
    "training_device": "device (training)",
}
# What the accuracy interval is, said under the table: across runs, or one run's photos.
INTERVAL_NOTES = {
    "across runs": "With several runs (seeds), the interval is the 95% Student-t interval of the mean across them.",
    "one run": "With one run, the interval is that run's 95% Wilson interval over the validation photos: the "
               "photos' sampling alone; replicates (seeds) are needed for the spread between runs.",
}

# The per-run tables: metrics.csv column -> heading.
RUN_COLUMNS: dict[str, str] = {
    "arch": "architecture",
    "replicate": "replicate",
    "val_accuracy": "validation accuracy (95% Wilson CI)",
    "val_macro_f1": "macro-F1",
    "best_val_accuracy": "best epoch's accuracy",
    "train_images_per_s": "training images/s",
    "training_seconds": "training time",
    "precision": "precision",
    "backend": "backend",
}
SPEED_COLUMNS: dict[str, str] = {
    "arch": "architecture",
    "replicate": "replicate",
    "train_images_per_s": "training images/s",
    "inference_images_per_s": "inference images/s",
    "eval_batch_size": "inference batch",
    "latency_ms_median": "latency, median (ms)",
    "latency_ms_p95": "latency, 95th percentile (ms)",
    "training_device": "device (training)",
    "device": "device (inference)",
}
HARDWARE_SHARE_COLUMNS: dict[str, str] = {
    "arch": "architecture",
    "replicate": "replicate",
    "train_gflops_per_s": "training GFLOP/s",
    "peak_gflops_per_s": "the machine's peak GFLOP/s",
    "fraction_of_peak": "share of the peak",
    "kernels": "kernels",
    "backend": "backend",
    "training_device": "device (training)",
}


def format_count(value: float) -> str:
    """1234 -> '1.2k', 2488389 -> '2.49M'."""
    if value is None or not math.isfinite(value):
        return "–"
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def format_seconds(seconds: float) -> str:
    """Wall time for people: '45 s', '12.5 min', '3.4 h'."""
    if seconds is None or not math.isfinite(seconds):
        return "–"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def study_time_rows(jobs: Sequence[Any], archs: Sequence[str]) -> list[dict[str, Any]]:
    """The report's table of the study's wall time: one row per job (flowerlab.reporting.timings.Job), then
    the total, the span, and the course's four architectures' subtotal when the study trained them
    and more."""
    def summary(label: str, seconds: float) -> dict[str, Any]:
        return {"job": label, "wall time": format_seconds(seconds), "seconds": round(seconds, 1)}

    rows = [{**summary(job.label, job.seconds), "max RSS (MB)": job.max_rss_mb, "CPU seconds": job.cpu_seconds}
            for job in jobs]
    rows += [summary("total (sum of the jobs)", timings.total_seconds(jobs)),
             summary("span (first start to last end)", timings.span_seconds(jobs)),
             summary("critical path (the longest chain of dependent jobs)", timings.critical_path_seconds(jobs))]
    course = timings.course_jobs(jobs)
    if len(course) < len(jobs) and set(timings.COURSE_ARCHITECTURES) <= set(archs):
        rows.append(summary("the course's four architectures (data, their training and evaluation)",
                            timings.total_seconds(course)))
    return rows


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


def clipped(low: float, high: float) -> tuple[float, float]:
    """An accuracy interval as shown: within 0-100%. A t-interval from few runs can reach past
    either end (two runs: 12.7 standard errors each way); the tables' files keep its true ends."""
    return max(0.0, float(low)), min(1.0, float(high))


def format_percent_interval(mean: Any, low: Any, high: Any) -> str:
    """86.4% (84.1-88.5%), or 86.4% alone when there is no interval; the interval `clipped`."""
    if _is_missing(mean):
        return "–"
    if _is_missing(low) or _is_missing(high):
        return f"{float(mean):.1%}"
    low, high = clipped(low, high)
    return f"{float(mean):.1%} ({low * 100:.1f}–{high * 100:.1f}%)"


def format_cell(column: str, value: Any) -> str:
    """A figure as people read it: 86.4 %, 2.49 M, 12.5 min, 1,190."""
    if _is_missing(value):
        return "–"
    if column in {"val_accuracy", "course_val_accuracy", "val_macro_f1", "best_val_accuracy"}:
        return f"{float(value):.1%}"
    if column == "p_beats_course":
        return f"{float(value):.2f}"
    if column == "parameters":
        return format_count(float(value))
    if column == "gflops_per_image":
        return f"{float(value):.3g}"
    if column.startswith(("train_images_per_s", "inference_images_per_s")):
        return f"{float(value):,.1f}" if float(value) < 100 else f"{float(value):,.0f}"
    if column.startswith("training_seconds"):
        return format_seconds(float(value))
    if column == "fraction_of_peak":
        return f"{float(value):.0%}"
    if column.startswith(("latency_ms", "train_gflops", "peak_gflops")):
        return f"{float(value):,.1f}"
    if column in {"epochs", "runs", "eval_batch_size"}:
        return str(int(value))
    return str(value)


def _interval_cell(row: Any, column: str, runs: Any = None) -> str:
    """The mean and its t-interval across runs; for an architecture of one run, that run's Wilson
    interval from the metrics table `runs` (the macro-F1 of one run has none)."""
    stem = column.removesuffix("_mean")
    low, high = row.get(f"{stem}_ci_low"), row.get(f"{stem}_ci_high")
    if stem == "val_accuracy" and int(row["runs"]) == 1 and runs is not None:
        own = runs[runs["arch"] == row["arch"]]
        if len(own) == 1:
            low, high = own.iloc[0].get("val_accuracy_ci_low"), own.iloc[0].get("val_accuracy_ci_high")
    return format_percent_interval(row[column], low, high)


def interval_kinds(architectures: Any) -> list[str]:
    """Which accuracy intervals the summary shows (INTERVAL_NOTES' keys), for the note under it."""
    runs = {int(n) for n in architectures["runs"]}
    return [kind for kind, present in (("across runs", max(runs) >= 2), ("one run", min(runs) == 1)) if present]


def formatted(frame: Any, headings: dict[str, str], cell: Any = None) -> Any:
    """`frame`'s columns named in `headings` (those it has), each cell as people read it:
    `cell(row, column)` where given and not None, else format_cell; the columns renamed."""
    import pandas as pd

    def text(row: Any, column: str) -> str:
        shown = None if cell is None else cell(row, column)
        return format_cell(column, row[column]) if shown is None else shown

    columns = [c for c in headings if c in frame.columns]
    rows = [{headings[c]: text(row, c) for c in columns} for _, row in frame.iterrows()]
    return pd.DataFrame(rows, columns=[headings[c] for c in columns])


def accuracy_table(architectures: Any, runs: Any = None) -> Any:
    """How accurate each architecture is: the mean and 95% t-interval across its runs (with one
    run, that run's Wilson interval, read from the metrics table `runs`) and the course's figure."""
    return formatted(architectures, ACCURACY_COLUMNS, lambda row, c: _interval_cell(row, c, runs)
                     if c in {"val_accuracy_mean", "val_macro_f1_mean"} else None)


def cost_table(architectures: Any) -> Any:
    """What each architecture costs: its size, FLOPs, epochs, speed and the devices it ran on. One
    device column when training and inference ran on the same devices everywhere."""
    headings = COST_COLUMNS
    if {"device", "training_device"} <= set(architectures.columns) and (
        architectures["device"].fillna("") == architectures["training_device"].fillna("")
    ).all():
        headings = {**{c: h for c, h in COST_COLUMNS.items() if c != "training_device"}, "device": "device"}
    return formatted(architectures, headings)


def runs_table(metrics: Any, headings: dict[str, str] = RUN_COLUMNS) -> Any:
    """One row per run, the `headings`' columns formatted (RUN_COLUMNS: its accuracy with the
    Wilson interval of its validation photos; SPEED_COLUMNS, HARDWARE_SHARE_COLUMNS)."""
    return formatted(metrics, headings, lambda row, c: format_percent_interval(
        row[c], row.get("val_accuracy_ci_low"), row.get("val_accuracy_ci_high")) if c == "val_accuracy" else None)


def mcnemar_table(mcnemar: Any) -> Any:
    """The McNemar tests as people read them: the pair, the replicate, the photos only one of the
    two got right, and the p-values (raw and Holm-adjusted)."""
    import pandas as pd

    rows = [{"A": row["arch_a"], "B": row["arch_b"], "replicate": row["replicate"],
             "A's accuracy": f"{row['a_accuracy']:.1%}", "B's accuracy": f"{row['b_accuracy']:.1%}",
             "only A right": int(row["a_only"]), "only B right": int(row["b_only"]),
             "p": f"{row['p_value']:.3g}", "p (Holm)": f"{row['p_value_holm']:.3g}"}
            for _, row in mcnemar.iterrows()]
    return pd.DataFrame(rows)
