"""The replicated study's tables beyond the runs: one row per architecture, the comparisons
between architectures, and the McNemar tests per replicate. The statistics come from
`flowerlab.evaluation.statistics` (scipy, statsmodels); this module only arranges them.

Each table is a list of row dicts whose keys are its COLUMNS (the descriptions written into
results/metrics.json beside them). A run is a row of results/metrics.csv
(`flowerlab.evaluation.collect.COLUMNS`).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from itertools import combinations, permutations
from pathlib import Path
from typing import Any

import numpy as np

from flowerlab.errors import DataError
from flowerlab.evaluation import statistics

SIGNIFICANCE = 0.05

ARCHITECTURE_COLUMNS: dict[str, str] = {
    "arch": "architecture",
    "runs": "replicates evaluated (seeds, times splits when they vary)",
    "val_accuracy_mean": "mean validation accuracy across the runs",
    "val_accuracy_sd": "sample standard deviation of the runs' validation accuracy (empty for one run)",
    "val_accuracy_ci_low": "95% Student-t confidence interval of the mean accuracy, lower end (empty for one run)",
    "val_accuracy_ci_high": "the same interval's upper end",
    "val_macro_f1_mean": "mean macro-F1 across the runs",
    "val_macro_f1_sd": "sample standard deviation of the runs' macro-F1",
    "val_macro_f1_ci_low": "95% Student-t confidence interval of the mean macro-F1, lower end",
    "val_macro_f1_ci_high": "the same interval's upper end",
    "course_val_accuracy": "final validation accuracy the course's notebooks printed (empty where none)",
    "course_placement": "where the course's figure falls against our interval: inside, above or below",
    "course_placement_interval": "the interval it was placed against: the t-interval across runs, "
    "or with one run that run's Wilson interval (the photos' sampling alone)",
    "p_beats_course": "fraction of runs above the course's figure, ties one half (Mann-Whitney U / n); "
    "empty with fewer than two runs",
    "parameters": "parameters, total",
    "trainable_parameters": "parameters updated by training",
    "gflops_per_image": "forward-pass GFLOPs per image",
    "image_size": "model input size in pixels (square)",
    "model_mb": "size of model.keras in megabytes (10^6 bytes)",
    "train_images_per_s_mean": "training throughput, images/s, mean across runs",
    "train_images_per_s_sd": "its sample standard deviation across runs",
    "inference_images_per_s_mean": "inference throughput, images/s, mean across runs",
    "inference_images_per_s_sd": "its sample standard deviation across runs",
    "training_seconds_mean": "training wall time in seconds, mean across runs",
    "training_seconds_total": "training wall time in seconds, summed over the runs",
    "epochs": "training epochs",
    "device": "device(s) of the evaluations",
    "training_device": "device(s) of the trainings",
    "precision": "training precision policy (or policies)",
    "training_code": "fingerprint(s) of the code that trained the runs, first 12 hex digits",
}

COMPARISON_COLUMNS: dict[str, str] = {
    "arch_a": "architecture A",
    "arch_b": "architecture B",
    "runs_a": "runs of A",
    "runs_b": "runs of B",
    "p_a_beats_b": "probability of improvement P(A > B): the share of (run of A, run of B) pairs in which A's "
    "validation accuracy is higher, ties one half (Mann-Whitney U / (n_a n_b)); empty unless both have 2+ runs",
    "mannwhitney_p": "two-sided Mann-Whitney U test p-value of the same accuracies",
    "replicates_paired": "replicates that both architectures ran (same seed and split): McNemar tests",
    "mcnemar_a_better": "of those, how many McNemar tests found A significantly better (Holm-adjusted p < 0.05)",
    "mcnemar_b_better": "of those, how many found B significantly better",
}

MCNEMAR_COLUMNS: dict[str, str] = {
    "arch_a": "architecture A (the earlier in the study)",
    "arch_b": "architecture B",
    "replicate": "the replicate both ran (same seed and split, so the same validation photos)",
    "photos": "validation photos",
    "both_correct": "photos both classified correctly",
    "a_only": "photos only A classified correctly",
    "b_only": "photos only B classified correctly",
    "both_wrong": "photos both got wrong",
    "a_accuracy": "A's validation accuracy in this replicate",
    "b_accuracy": "B's validation accuracy in this replicate",
    "statistic": "exact McNemar statistic, min(a_only, b_only)",
    "p_value": "exact McNemar test p-value (binomial on the discordant photos)",
    "p_value_holm": "p-value Holm-adjusted over every McNemar test of this table",
}


def _by_arch(runs: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for run in runs:
        grouped.setdefault(run["arch"], []).append(run)
    return grouped


def _values(runs: Sequence[Mapping[str, Any]], column: str) -> list[float]:
    return [float(run[column]) for run in runs if run.get(column) is not None]


def _joined(runs: Sequence[Mapping[str, Any]], column: str) -> str | None:
    """The runs' distinct values of a text column, in order, joined with '; '."""
    values = list(dict.fromkeys(str(run[column]) for run in runs if run.get(column) not in (None, "")))
    return "; ".join(values) or None


def _spread(runs: Sequence[Mapping[str, Any]], column: str) -> statistics.Spread | None:
    values = _values(runs, column)
    return statistics.across_runs(values) if values else None


def _spread_columns(prefix: str, spread: statistics.Spread | None, *parts: str) -> dict[str, Any]:
    """`{prefix}_mean`, `{prefix}_sd`, ... of the `parts` asked for (empty without a spread)."""
    return {f"{prefix}_{part}": getattr(spread, part) if spread else None for part in parts}


def _course_fields(runs: Sequence[Mapping[str, Any]], accuracy: statistics.Spread) -> dict[str, Any]:
    course = runs[0].get("course_val_accuracy")
    if accuracy.runs >= 2:
        low, high, interval = accuracy.ci_low, accuracy.ci_high, "t 95% across runs"
    else:
        low, high = runs[0]["val_accuracy_ci_low"], runs[0]["val_accuracy_ci_high"]
        interval = "Wilson 95% of the one run"
    beats = None
    if course is not None and accuracy.runs >= 2:
        beats = statistics.probability_of_improvement(_values(runs, "val_accuracy"), [course]).probability
    placement = statistics.course_placement(course, low, high)
    return {"course_val_accuracy": course, "course_placement": placement,
            "course_placement_interval": interval if placement else None, "p_beats_course": beats}


def architecture_row(arch: str, runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One architecture's summary across its runs."""
    accuracy = statistics.across_runs(_values(runs, "val_accuracy"))
    interval = ("mean", "sd", "ci_low", "ci_high")
    seconds = _values(runs, "training_seconds")
    first = runs[0]
    row = {
        "arch": arch,
        "runs": len(runs),
        **_spread_columns("val_accuracy", accuracy, *interval),
        **_spread_columns("val_macro_f1", _spread(runs, "val_macro_f1"), *interval),
        **_course_fields(runs, accuracy),
        # the same architecture and input size in every run: the first run's figures
        "parameters": first.get("parameters"),
        "trainable_parameters": first.get("trainable_parameters"),
        "gflops_per_image": first.get("gflops_per_image"),
        "image_size": first.get("image_size"),
        "model_mb": first.get("model_mb"),
        **_spread_columns("train_images_per_s", _spread(runs, "train_images_per_s"), "mean", "sd"),
        **_spread_columns("inference_images_per_s", _spread(runs, "inference_images_per_s"), "mean", "sd"),
        "training_seconds_mean": float(np.mean(seconds)) if seconds else None,
        "training_seconds_total": float(np.sum(seconds)) if seconds else None,
        "epochs": first.get("epochs"),
        "device": _joined(runs, "device"),
        "training_device": _joined(runs, "training_device"),
        "precision": _joined(runs, "precision"),
        "training_code": _joined(runs, "training_code"),
    }
    assert list(row) == list(ARCHITECTURE_COLUMNS), "architecture_row and ARCHITECTURE_COLUMNS must agree"
    return row


def architecture_rows(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per architecture, in the order the runs list them."""
    return [architecture_row(arch, arch_runs) for arch, arch_runs in _by_arch(runs).items()]


def read_correctness(path: str | os.PathLike[str]) -> dict[str, bool]:
    """{photo id: predicted class == true class} of one evaluation's predictions.csv."""
    if not Path(path).is_file():
        raise DataError(f"predictions not found: {path} (evaluate the run again)")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"id", "true_class", "predicted_class"} - set(reader.fieldnames or ())
        if missing:
            raise DataError(f"{path} lacks the column(s) {sorted(missing)}: not a flowerlab predictions.csv")
        return {row["id"]: row["true_class"] == row["predicted_class"] for row in reader}


def _paired(a: Mapping[str, bool], b: Mapping[str, bool], label: str) -> tuple[list[bool], list[bool]]:
    if a.keys() != b.keys():
        raise DataError(f"{label}: the two runs' predictions cover different photos ({len(a)} and {len(b)}); "
                        "were they evaluated on the same split? Rerun their evaluations")
    ids = sorted(a)
    return [a[i] for i in ids], [b[i] for i in ids]


def mcnemar_rows(runs: Sequence[Mapping[str, Any]], correctness: Mapping[tuple[str, str], Mapping[str, bool]]
                 ) -> list[dict[str, Any]]:
    """Every pair of architectures (in study order) on every replicate both ran: the exact
    McNemar test on the same validation photos; p-values Holm-adjusted over the whole table.
    `correctness`: {(arch, replicate): {photo id: correct}}."""
    by_arch = _by_arch(runs)
    rows = []
    for arch_a, arch_b in combinations(by_arch, 2):
        accuracy_b = {run["replicate"]: run["val_accuracy"] for run in by_arch[arch_b]}
        for run in by_arch[arch_a]:
            replicate = run["replicate"]
            if replicate not in accuracy_b:
                continue
            a, b = _paired(correctness[arch_a, replicate], correctness[arch_b, replicate],
                           f"{arch_a} and {arch_b}, {replicate}")
            test = statistics.mcnemar_test(a, b)
            rows.append({"arch_a": arch_a, "arch_b": arch_b, "replicate": replicate, "photos": test.photos,
                         "both_correct": test.both_correct, "a_only": test.a_only, "b_only": test.b_only,
                         "both_wrong": test.both_wrong, "a_accuracy": run["val_accuracy"],
                         "b_accuracy": accuracy_b[replicate], "statistic": test.statistic,
                         "p_value": test.p_value})
    for row, adjusted in zip(rows, statistics.holm([row["p_value"] for row in rows]), strict=True):
        row["p_value_holm"] = adjusted
    return rows


def comparison_rows(runs: Sequence[Mapping[str, Any]], mcnemar: Sequence[Mapping[str, Any]]
                    ) -> list[dict[str, Any]]:
    """Every ordered pair (A, B) of architectures: P(A > B) across their runs, and how many of
    their paired McNemar tests favour each significantly."""
    by_arch = _by_arch(runs)
    rows = []
    for arch_a, arch_b in permutations(by_arch, 2):
        a, b = _values(by_arch[arch_a], "val_accuracy"), _values(by_arch[arch_b], "val_accuracy")
        improvement = statistics.probability_of_improvement(a, b) if len(a) >= 2 and len(b) >= 2 else None
        tests = [row for row in mcnemar if {row["arch_a"], row["arch_b"]} == {arch_a, arch_b}]
        rows.append({"arch_a": arch_a, "arch_b": arch_b, "runs_a": len(a), "runs_b": len(b),
                     "p_a_beats_b": improvement.probability if improvement else None,
                     "mannwhitney_p": improvement.p_value if improvement else None,
                     "replicates_paired": len(tests), "mcnemar_a_better": _significant_for(arch_a, tests),
                     "mcnemar_b_better": _significant_for(arch_b, tests)})
    return rows


def _significant_for(arch: str, tests: Sequence[Mapping[str, Any]]) -> int:
    """How many McNemar tests found `arch` significantly better (Holm-adjusted); a test's a_only
    counts the photos only its arch_a got right."""
    return sum(1 for row in tests if row["p_value_holm"] < SIGNIFICANCE
               and row["a_only"] != row["b_only"] and (row["a_only"] > row["b_only"]) == (row["arch_a"] == arch))
