"""The report's tables: figures formatted as people read them, the summary and the study's time.

No TensorFlow here; pandas only inside the functions that build a DataFrame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from flowerlab.reporting import timings

# The summary table: metrics.csv column -> heading shown to readers.
SUMMARY_COLUMNS: dict[str, str] = {
    "arch": "architecture",
    "val_accuracy": "validation accuracy",
    "course_val_accuracy": "course's accuracy",
    "parameters": "parameters",
    "gflops_per_image": "GFLOPs / image",
    "train_images_per_s": "training images/s",
    "inference_images_per_s": "inference images/s",
    "training_seconds": "training time",
    "epochs": "epochs",
    "device": "device (inference)",
    "training_device": "device (training)",
    "training_code": "training code",
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
             summary("span (first start to last end)", timings.span_seconds(jobs))]
    course = timings.course_jobs(jobs)
    if len(course) < len(jobs) and set(timings.COURSE_ARCHITECTURES) <= set(archs):
        rows.append(summary("the course's four architectures (data, their training and evaluation)",
                            timings.total_seconds(course)))
    return rows


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


def format_cell(column: str, value: Any) -> str:
    """A figure as people read it: 86.4 %, 2.49 M, 12.5 min, 1,190."""
    if _is_missing(value):
        return "–"
    if column in {"val_accuracy", "course_val_accuracy"}:
        return f"{float(value):.1%}"
    if column == "parameters":
        return format_count(float(value))
    if column == "gflops_per_image":
        return f"{float(value):.3g}"
    if column in {"train_images_per_s", "inference_images_per_s"}:
        return f"{float(value):,.1f}" if float(value) < 100 else f"{float(value):,.0f}"
    if column == "training_seconds":
        return format_seconds(float(value))
    if column == "epochs":
        return str(int(value))
    return str(value)


def summary_table(metrics: Any) -> Any:
    """The report's summary: one row per architecture, formatted, columns named for readers.
    The training device column is left out when it equals the inference device everywhere."""
    import pandas as pd

    columns = [c for c in SUMMARY_COLUMNS if c in metrics.columns]
    if {"device", "training_device"} <= set(columns) and (
        metrics["device"].fillna("") == metrics["training_device"].fillna("")
    ).all():
        columns.remove("training_device")
        headings = {**SUMMARY_COLUMNS, "device": "device"}
    else:
        headings = SUMMARY_COLUMNS
    rows = [{headings[c]: format_cell(c, row[c]) for c in columns} for _, row in metrics.iterrows()]
    return pd.DataFrame(rows, columns=[headings[c] for c in columns])

