"""The concurrency benchmark's results: per mode (one at a time, all at once), its wall time and rates.

A row per round and mode, and a total row per mode, with the speed-ups of the concurrent mode
against the sequential one.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MODES = ("sequential", "concurrent")
COLUMNS = (
    "row", "round", "mode", "archs", "processes", "threads_each", "cpus", "wall_seconds", "steady_images",
    "steady_seconds", "steady_images_per_s", "wall_speedup", "steady_speedup", "overlap", "per_training",
    "batch_size", "warmup_steps", "timed_steps", "load_average", "source",
)



@dataclass(frozen=True)
class Training:
    """What one training process reported (its JSON result file)."""

    arch: str
    threads: int
    images: int  # timed images
    steady_seconds: float
    timed_start: float  # wall clock (time.time()) of the end of the last warm-up step
    timed_end: float
    ready_seconds: float  # process start to model built and cache filled
    precision: str

    @property
    def images_per_s(self) -> float:
        return self.images / self.steady_seconds


@dataclass(frozen=True)
class ModeResult:
    mode: str
    round: int
    trainings: list[Training]
    wall_seconds: float

    @property
    def steady_images(self) -> int:
        return sum(t.images for t in self.trainings)

    @property
    def steady_seconds(self) -> float:
        """Sequential: the trainings' timed seconds added up; concurrent: their common span."""
        if self.mode == "sequential":
            return sum(t.steady_seconds for t in self.trainings)
        return max(t.timed_end for t in self.trainings) - min(t.timed_start for t in self.trainings)

    @property
    def steady_images_per_s(self) -> float:
        return self.steady_images / self.steady_seconds

    @property
    def overlap(self) -> float | None:
        """Share of the concurrent timed span in which every training was timing its steps."""
        if self.mode == "sequential" or len(self.trainings) < 2:
            return None
        common = min(t.timed_end for t in self.trainings) - max(t.timed_start for t in self.trainings)
        return max(0.0, common) / self.steady_seconds


def per_training_text(trainings: Sequence[Training]) -> str:
    """Each training's rate, its start-up, and when its timed steps ran (seconds after the first
    timed step of the set began: concurrent ones should overlap)."""
    first = min(t.timed_start for t in trainings)
    return "; ".join(f"{t.arch} {t.images_per_s:.1f} img/s, ready after {t.ready_seconds:.1f} s, timed "
                     f"+{t.timed_start - first:.1f}..+{t.timed_end - first:.1f} s" for t in trainings)


def mode_row(row: str, result: ModeResult | None, *, mode: str, round_label: Any, wall: float, images: int,
             seconds: float, trainings: Sequence[Training], baseline: tuple[float, float] | None,
             overlap: float | None, context: dict[str, Any]) -> dict[str, Any]:
    rate = images / seconds
    return {
        "row": row, "round": round_label, "mode": mode, "archs": " ".join(context["archs_list"]),
        "processes": len(context["archs_list"]), "threads_each": trainings[0].threads, "cpus": context["cpus"],
        "wall_seconds": round(wall, 2), "steady_images": images, "steady_seconds": round(seconds, 3),
        "steady_images_per_s": round(rate, 2),
        "wall_speedup": "" if baseline is None else round(baseline[0] / wall, 3),
        "steady_speedup": "" if baseline is None else round(rate / baseline[1], 3),
        "overlap": "" if overlap is None else round(overlap, 3),
        "per_training": per_training_text(trainings) if result is not None else "",
        "batch_size": context["batch_size"], "warmup_steps": context["warmup"], "timed_steps": context["steps"],
        "load_average": context["load_average"], "source": context["source"],
    }


def result_rows(results: Sequence[ModeResult], context: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per mode and round, then one `total` row per mode (all rounds together) with the
    speedups of concurrency over the sequential baseline."""
    rows = []
    for result in results:
        rows.append(mode_row("round", result, mode=result.mode, round_label=result.round, wall=result.wall_seconds,
                             images=result.steady_images, seconds=result.steady_seconds, trainings=result.trainings,
                             baseline=None, overlap=result.overlap, context=context))
    totals: dict[str, tuple[float, int, float, list[Training], list[float]]] = {}
    for mode in MODES:
        mine = [r for r in results if r.mode == mode]
        overlaps = [r.overlap for r in mine if r.overlap is not None]
        totals[mode] = (sum(r.wall_seconds for r in mine), sum(r.steady_images for r in mine),
                        sum(r.steady_seconds for r in mine), [t for r in mine for t in r.trainings], overlaps)
    wall, images, seconds, _, _ = totals["sequential"]
    baseline = (wall, images / seconds)
    for mode in MODES:
        wall, images, seconds, trainings, overlaps = totals[mode]
        rows.append(mode_row("total", None, mode=mode, round_label="all", wall=wall, images=images,
                             seconds=seconds, trainings=trainings,
                             baseline=None if mode == "sequential" else baseline,
                             overlap=statistics.mean(overlaps) if overlaps else None, context=context))
    return rows


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    print(f"{'row':<7}{'round':>6}  {'mode':<11}{'processes':>10}{'threads':>9}{'wall s':>9}{'steady img/s':>14}"
          f"{'wall x':>8}{'steady x':>10}{'overlap':>9}")
    for row in rows:
        print(f"{row['row']:<7}{row['round']!s:>6}  {row['mode']:<11}{row['processes']:>10}{row['threads_each']:>9}"
              f"{row['wall_seconds']:>9.1f}{row['steady_images_per_s']:>14.1f}{row['wall_speedup']!s:>8}"
              f"{row['steady_speedup']!s:>10}{row['overlap']!s:>9}", flush=True)
    first = rows[0]
    print(f"({first['archs']}; batch {first['batch_size']}, {first['warmup_steps']} + {first['timed_steps']} steps "
          f"each; {first['cpus']} CPUs, load average {first['load_average']} at the start; {first['source']})")
    total = {row["mode"]: row for row in rows if row["row"] == "total"}
    faster = "concurrent" if float(total["concurrent"]["wall_speedup"]) > 1 else "sequential"
    print(f"concurrent vs sequential: {total['concurrent']['wall_speedup']}x wall, "
          f"{total['concurrent']['steady_speedup']}x steady images/s; faster end to end: {faster}")

