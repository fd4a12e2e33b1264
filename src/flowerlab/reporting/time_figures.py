"""The report's time figures: this study's jobs and stages, and the last training benchmark.

Inputs: the study's jobs from its Snakemake benchmark files (`flowerlab.reporting.timings.Job`)
and the measured rows of bench/bench_training.py's results/bench/training.csv.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from flowerlab.errors import DataError
from flowerlab.reporting import timings
from flowerlab.reporting.plotting import new_mosaic, style
from flowerlab.reporting.tables import format_seconds

STAGE_COLOURS = "deep"





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


def draw_scale_out(ax: Any, jobs: Sequence[timings.Job]) -> None:
    """Three bars: the jobs' summed wall time (one machine, one job at a time), this run's span
    (first start to last end), and the critical path (a machine per run, as on a cluster)."""
    bars = {
        "sum of the jobs": timings.total_seconds(jobs),
        "this run (span)": timings.span_seconds(jobs),
        "critical path": timings.critical_path_seconds(jobs),
    }
    values = list(bars.values())
    ax.barh(list(bars), values, color=["#64748b", "#2563eb", "#16a34a"])
    for position, value in enumerate(values):
        ax.text(value + max(values) * 0.01, position, f" {format_seconds(value)}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(*values, 1e-9) * 1.35)
    ax.set_xlabel("wall seconds")


def study_time(jobs: Sequence[timings.Job]) -> Figure:
    """Each job's wall time (left), each stage's (top right, with its share of the total), and
    what the study costs one job at a time against its critical path (bottom right), from the
    study's Snakemake benchmark files; the total and the span in the title."""
    if not jobs:
        raise DataError("no job to draw: the study has no benchmark file")
    frame = jobs_frame(jobs)
    colours = stage_colours(list(frame["stage"]))
    with style():
        figure, axes = new_mosaic([["jobs", "stages"], ["jobs", "scale"]], width=11,
                                  height=max(4.2, 0.3 * len(frame) + 1.6), gridspec_kw={"width_ratios": [3, 2]})
        draw_job_seconds(axes["jobs"], frame, colours)
        axes["jobs"].set_title("per job")
        draw_stage_seconds(axes["stages"], timings.seconds_per_stage(jobs), colours)
        axes["stages"].set_title("per stage")
        draw_scale_out(axes["scale"], jobs)
        axes["scale"].set_title("one machine against a machine per run", fontsize=10)
        figure.suptitle(
            f"Wall time of this study: {format_seconds(timings.total_seconds(jobs))} of jobs, "
            f"{format_seconds(timings.span_seconds(jobs))} from the first job's start to the last one's end, "
            f"{format_seconds(timings.critical_path_seconds(jobs))} on its critical path"
        )
    return figure
