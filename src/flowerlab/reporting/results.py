"""Loading a finished study's results for the report: metrics, histories, evaluations, benchmarks.

Where each file sits is `STUDY_LAYOUT` (docs/architecture.md); relative paths resolve against the
repository root, so the notebook finds them whether Jupyter or papermill started its kernel.
No TensorFlow here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flowerlab.errors import DataError
from flowerlab.filesystem import read_json

# Where each input of the report sits inside a study's results folder (docs/architecture.md).
STUDY_LAYOUT = {
    "metrics_csv": "metrics.csv",
    "architectures_csv": "architectures.csv",
    "comparisons_csv": "comparisons.csv",
    "mcnemar_csv": "mcnemar.csv",
    "models_dir": "models",
    "evaluation_dir": "evaluation",
    "manifest": "data/manifest.json",
    "inventory_csv": "data/inventory.csv",
    "inventory_json": "data/inventory.json",
    "figures_dir": "figures",
    # The rules' Snakemake benchmark files sit beside results/, in the study's working folder.
    "benchmarks_dir": "../benchmarks",
}



def _table(path: str | os.PathLike[str], what: str, required: Sequence[str]) -> Any:
    import pandas as pd

    if not Path(path).is_file():
        raise DataError(f"{what} not found: {path} (run flowerlab collect first)")
    table = pd.read_csv(path)
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise DataError(f"{path} lacks the column(s) {missing}; rerun flowerlab collect")
    return table


def load_metrics(path: str | os.PathLike[str]) -> Any:
    """results/metrics.csv as a DataFrame, one row per evaluated run (architecture, replicate)."""
    metrics = _table(path, "metrics table", ["arch", "replicate"])
    if metrics.empty:
        raise DataError(f"{path} has no run; rerun flowerlab collect")
    return metrics


def load_architectures(path: str | os.PathLike[str]) -> Any:
    """results/architectures.csv: one row per architecture, its replicates summarised."""
    return _table(path, "architectures table", ["arch", "runs", "val_accuracy_mean"])


def load_comparisons(path: str | os.PathLike[str]) -> Any:
    """results/comparisons.csv: P(A > B) per ordered pair of architectures."""
    return _table(path, "comparisons table", ["arch_a", "arch_b", "p_a_beats_b"])


def load_mcnemar(path: str | os.PathLike[str]) -> Any:
    """results/mcnemar.csv: the McNemar test per pair of architectures and replicate."""
    return _table(path, "McNemar table", ["arch_a", "arch_b", "replicate", "p_value"])


def runs_of(metrics: Any) -> list[tuple[str, str]]:
    """(arch, replicate) of every run in the metrics table, in its order."""
    return list(zip(metrics["arch"], metrics["replicate"], strict=True))


def load_histories(models_dir: str | os.PathLike[str], runs: Sequence[tuple[str, str]]) -> Any:
    """Every run's models_dir/{arch}/{replicate}/history.csv in one long DataFrame, with `arch`
    and `replicate` columns."""
    import pandas as pd

    frames = []
    for arch, replicate in runs:
        path = Path(models_dir) / arch / replicate / "history.csv"
        if not path.is_file():
            raise DataError(f"training history of {arch} {replicate} not found: {path} (train it first)")
        frames.append(pd.read_csv(path).assign(arch=arch, replicate=replicate))
    return pd.concat(frames, ignore_index=True)


def load_evaluations(
    evaluation_dir: str | os.PathLike[str], runs: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], dict[str, Any]]:
    """{(arch, replicate): evaluation_dir/{arch}/{replicate}/metrics.json} for every run given."""
    return {
        (arch, replicate): read_json(Path(evaluation_dir) / arch / replicate / "metrics.json",
                                     f"evaluation of {arch} {replicate}")
        for arch, replicate in runs
    }


def load_predictions(evaluation_dir: str | os.PathLike[str], arch: str, replicate: str) -> Any:
    import pandas as pd

    path = Path(evaluation_dir) / arch / replicate / "predictions.csv"
    if not path.is_file():
        raise DataError(f"predictions of {arch} {replicate} not found: {path} (run flowerlab evaluate first)")
    return pd.read_csv(path)


def find_repo_root(start: str | os.PathLike[str] | None = None) -> Path:
    """The study's folder (where results/ is): the nearest folder at or above `start` (default:
    the working directory) with a Snakefile where Snakemake looks for one, at its top or in
    workflow/ (a deployed module's folder has only the latter). Jupyter starts a notebook's
    kernel in the notebook's own folder, papermill in the folder it is told: resolving
    `results/...` against this root works in both."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "workflow" / "Snakefile").is_file():
            return folder
        if (folder / "Snakefile").is_file() and folder.name != "workflow":
            return folder
    raise DataError(
        f"no Snakefile in {here} or above: run the notebook inside the flowerlab repository, "
        "or pass absolute paths as its parameters"
    )


def resolve(path: str | os.PathLike[str], root: Path | None = None) -> Path:
    """`path` itself when absolute, else relative to `root` (default: the repository root)."""
    path = Path(path)
    return path if path.is_absolute() else (root or find_repo_root()) / path


def study_paths(
    results_dir: str | os.PathLike[str] = "results",
    **overrides: str | os.PathLike[str] | None,
) -> dict[str, Path]:
    """The report's input and output paths: each one given in `overrides`, else its standard
    place under `results_dir`; relative paths are resolved against the repository root."""
    unknown = set(overrides) - set(STUDY_LAYOUT)
    if unknown:
        raise ValueError(f"unknown report path(s) {sorted(unknown)}; known: {', '.join(STUDY_LAYOUT)}")
    paths = {}
    for name, relative in STUDY_LAYOUT.items():
        given = overrides.get(name)
        paths[name] = Path(os.path.normpath(resolve(given if given else Path(results_dir) / relative)))
    return paths


def best_arch(architectures: Any) -> str:
    """The architecture with the highest mean validation accuracy (the first one on a tie)."""
    return str(architectures.loc[architectures["val_accuracy_mean"].idxmax(), "arch"])


def median_run(metrics: Any, arch: str) -> str:
    """The replicate of `arch` whose accuracy is the median of its runs (the lower middle for an
    even count): a typical run, not the luckiest."""
    own = metrics[metrics["arch"] == arch].sort_values(["val_accuracy", "replicate"]).reset_index(drop=True)
    if own.empty:
        raise DataError(f"no run of {arch} in the metrics table")
    return str(own.loc[(len(own) - 1) // 2, "replicate"])
