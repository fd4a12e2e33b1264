"""run_all's summary: each benchmark's headline figures as rows against their baselines, and one figure.

Each part's CSV (written by its own script into the output folder) is read back and summarised
as (part, measure, value, unit, baseline, baseline value, ratio, note, source).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

SUMMARY_COLUMNS = ("part", "measure", "value", "unit", "baseline", "baseline_value", "ratio", "note", "source")


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def number(text: Any) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def summary_row(part: str, measure: str, value: Any, unit: str, *, baseline: str = "", baseline_value: Any = "",
                ratio: Any = "", note: str = "") -> dict[str, Any]:
    return {"part": part, "measure": measure, "value": value, "unit": unit, "baseline": baseline,
            "baseline_value": baseline_value, "ratio": ratio, "note": note}


def summarise_tfrecords(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    last = rows[-1]  # the script appends one row per run
    return [summary_row("tfrecords", "TFRecords stage", last["tfrecords_images_per_s"], "images/s",
                        baseline="single-thread decode→resize→encode",
                        baseline_value=last["single_thread_images_per_s"], ratio=last["speedup_vs_single_thread"],
                        note=f"{last['photos']} photos, {last['threads']} workers, {last['tfrecords_seconds']} s, "
                             f"load average {last['load_average']}")]


def summarise_pipeline(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    baseline = next(row for row in rows if row["measure"] == "jpeg_one_by_one")
    return [summary_row("pipeline", row["measure"], row["images_per_second"], "images/s",
                        baseline="JPEG decode one by one", baseline_value=baseline["images_per_second"],
                        ratio=row["speedup_vs_jpeg_one_by_one"],
                        note=f"batch {row['batch_size']}, {row['threads']} threads")
            for row in rows if row is not baseline]


def summarise_training(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    summary = []
    for row in rows:
        if row["status"] != "measured":
            summary.append(summary_row("training", row["arch"], "", "images/s", note=row["status"]))
            continue
        summary.append(summary_row(
            "training", row["arch"], row["flowerlab_images_per_s"], "images/s", baseline="plain Keras",
            baseline_value=row["plain_images_per_s"], ratio=row["ratio"],
            note=f"MFU {float(row['mfu']):.1%} (plain {float(row['plain_mfu']):.1%}), {row['precision']}, "
                 f"batch {row['batch_size']}, {row['threads']} threads"))
    return summary


def summarise_models(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    return [summary_row("models", row["configuration"], row["images_per_second"], "images/s",
                        baseline=f"first configuration of {row['arch']}", ratio=row["speedup_vs_baseline"],
                        note=f"{row['comparison']}, {row['steps']} steps")
            for row in rows]


def summarise_concurrency(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    totals = {row["mode"]: row for row in rows if row["row"] == "total"}
    sequential, concurrent = totals["sequential"], totals["concurrent"]
    note = (f"{concurrent['archs']}: {concurrent['processes']} processes x {concurrent['threads_each']} threads vs "
            f"one at a time x {sequential['threads_each']}; overlap {concurrent['overlap']}")
    return [
        summary_row("concurrency", "trainings at once: wall seconds", concurrent["wall_seconds"], "s",
                    baseline="one at a time", baseline_value=sequential["wall_seconds"],
                    ratio=concurrent["wall_speedup"], note=f"ratio > 1: at once is faster; {note}"),
        summary_row("concurrency", "trainings at once: steady images/s", concurrent["steady_images_per_s"],
                    "images/s", baseline="one at a time", baseline_value=sequential["steady_images_per_s"],
                    ratio=concurrent["steady_speedup"], note=note),
    ]


def summarise_study(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    per_rule: dict[str, float] = {}
    for row in rows:
        if row["row"] == "stage":
            per_rule[row["rule"]] = per_rule.get(row["rule"], 0.0) + float(row["seconds"])
    summary = [summary_row("study", f"stage {rule}", round(seconds, 2), "s") for rule, seconds in per_rule.items()]
    by_kind = {row["row"]: row for row in rows}
    if "total" in by_kind:
        summary.append(summary_row("study", "total (sum of the jobs)", by_kind["total"]["seconds"], "s",
                                   note=by_kind["total"]["rule"]))
    if "span" in by_kind:
        summary.append(summary_row("study", "span (first start to last end)", by_kind["span"]["seconds"], "s"))
    if "wall" in by_kind:  # bench_full_study.py: the whole `snakemake` run, timed from outside
        summary.append(summary_row("study", "wall (the snakemake run)", by_kind["wall"]["seconds"], "s",
                                   note=by_kind["wall"]["rule"]))
    startup = by_kind.get("startup", {}).get("seconds", "")
    for kind, measure in (("noop", "no-op rerun (snakemake -n)"), ("noop_run", "no-op rerun (snakemake)")):
        if kind in by_kind:
            pending = by_kind[kind]["jobs_pending"]
            summary.append(summary_row(
                "study", measure, by_kind[kind]["seconds"], "s", baseline="snakemake --version",
                baseline_value=startup,
                note="a true no-op" if pending == "0" else f"NOT a no-op: {pending or 'some'} jobs pending "
                                                              "(give the study's --cores and --snakemake-args)"))
    return summary


SUMMARISERS: dict[str, Callable[[list[dict[str, str]]], list[dict[str, Any]]]] = {
    "tfrecords": summarise_tfrecords, "pipeline": summarise_pipeline, "training": summarise_training,
    "models": summarise_models, "concurrency": summarise_concurrency, "study": summarise_study,
}


def file_time(path: Path) -> str:
    return f"{dt.datetime.fromtimestamp(path.stat().st_mtime, tz=dt.UTC):%Y-%m-%d %H:%M} UTC"


def print_summary(rows: Sequence[dict[str, Any]]) -> None:
    print("\nSummary (value vs baseline; ratio > 1: better than the baseline)")
    print(f"{'part':<12}{'measure':<36}{'value':>12} {'unit':<9}{'baseline':>12}  {'ratio':>7}  note")
    for row in rows:
        value = number(row["value"])
        baseline = number(row["baseline_value"])
        ratio = number(row["ratio"])
        print(f"{row['part']:<12}{str(row['measure'])[:35]:<36}"
              f"{'' if value is None else f'{value:,.2f}':>12} {row['unit']:<9}"
              f"{'' if baseline is None else f'{baseline:,.2f}':>12}  {'' if ratio is None else f'{ratio:.2f}x':>7}  "
              f"{row['note']}{' [' + row['source'] + ']' if row['source'] not in ('', 'this run') else ''}",
              flush=True)


def write_summary(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    from common import write_csv

    write_csv(path, [{column: row[column] for column in SUMMARY_COLUMNS} for row in rows])


def draw_rates(ax: Any, rows: Sequence[dict[str, Any]], parts: Sequence[str], title: str) -> bool:
    """Bars of value and baseline for the rows of `parts` with both (images/s); False if none."""
    import pandas as pd
    import seaborn as sns

    pairs = [(f"{row['part']}: {row['measure']}", number(row["value"]), number(row["baseline_value"]))
             for row in rows if row["part"] in parts and number(row["value"]) and number(row["baseline_value"])]
    if not pairs:
        return False
    data = pd.DataFrame([{"measure": name, "side": side, "value": value} for name, measured, baseline in pairs
                         for side, value in (("baseline", baseline), ("measured", measured))])
    sns.barplot(data=data, y="measure", x="value", hue="side", palette=["#9aa5b1", "#2563eb"], ax=ax, orient="h")
    ax.set_xscale("log")
    ax.set_xlabel("images / s (log scale)")
    ax.set_ylabel("")
    ax.set_title(title)
    ax.legend(title=None, fontsize=8)
    return True


def nothing_to_draw(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def draw_figure(out_dir: Path, rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Four panels: training plain vs flowerlab; study seconds per stage; TFRecords and pipeline
    against their baselines; concurrency against one at a time."""
    import matplotlib
    import pandas as pd

    from flowerlab import filesystem
    from flowerlab.errors import DataError
    from flowerlab.reporting import plotting, time_figures
    from flowerlab.reporting.tables import format_seconds

    with plotting.style():
        figure, axes = plotting.new_figure(2, 2, width=15, height=10)
        training_csv = out_dir / "training.csv"
        try:
            time_figures.draw_training_benchmark(axes[0, 0], pd.read_csv(training_csv))
            axes[0, 0].set_title("training: plain Keras vs flowerlab (ratio above)")
        except (FileNotFoundError, DataError) as error:
            nothing_to_draw(axes[0, 0], f"training: not measured ({error})")
        stages = {str(row["measure"]).removeprefix("stage "): float(row["value"])
                  for row in rows if row["part"] == "study" and str(row["measure"]).startswith("stage ")}
        if stages:
            time_figures.draw_stage_seconds(axes[0, 1], stages, time_figures.stage_colours(list(stages)))
            total = sum(stages.values())
            axes[0, 1].set_title(f"study: wall seconds per stage ({format_seconds(total)} of jobs)")
        else:
            nothing_to_draw(axes[0, 1], "study: not measured")
        if not draw_rates(axes[1, 0], rows, ("tfrecords", "pipeline"), "data: measured vs baseline"):
            nothing_to_draw(axes[1, 0], "tfrecords, pipeline: not measured")
        concurrency = [row for row in rows if row["part"] == "concurrency" and number(row["value"])]
        if concurrency:
            wall = concurrency[0]
            axes[1, 1].barh(["one at a time\n(all CPUs each)", "at once\n(CPUs / N each)"],
                            [number(wall["baseline_value"]), number(wall["value"])], color=["#9aa5b1", "#2563eb"])
            axes[1, 1].invert_yaxis()
            axes[1, 1].set_xlabel("wall seconds for the set of trainings (lower is better)")
            axes[1, 1].set_title(f"concurrency: at once is {number(wall['ratio']):.2f}x as fast end to end")
        else:
            nothing_to_draw(axes[1, 1], "concurrency: not measured")
        figure.suptitle(f"flowerlab benchmarks ({out_dir})")
        buffer = io.BytesIO()
        with matplotlib.rc_context({"svg.fonttype": "none"}):
            figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
        filesystem.write_bytes(path, buffer.getvalue())

