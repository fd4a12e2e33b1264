"""The report: loading the study's results for the notebook, the summary table, and the
published landing page (`flowerlab publish`).

`flowerlab publish --figures results/figures --metrics results/metrics.csv --notebook-html
results/report/report.html --out results/report/index.html [--manifest ...] [--evaluations
...]` writes one self-contained HTML page: the summary table, every figure (embedded as base64
PNG, with a relative link to its SVG) with its caption, the study's settings, provenance, and
relative links to the notebook, metrics.csv and the Snakemake report. It opens from disk with
no server and loads nothing from the network. It is written atomically.

`flowerlab render --notebook workflow/notebooks/report.ipynb --executed results/report/report.ipynb
--html results/report/report.html --metrics ... --figures results/figures` executes the report
notebook with papermill and exports it to HTML with the folded-code, offline template beside it;
both outputs are written atomically, and a failing notebook is kept as `*.failed.ipynb` with the
cell that failed named in the error.

No TensorFlow here (the notebook's kernel imports it for the gallery, in its own process).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import html
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from flowerlab import atomic
from flowerlab.data.common import (
    configure_logging,
    positive_int,
    read_json,
    remove_stale_temporaries,
    run_command,
)
from flowerlab.errors import DataError

logger = logging.getLogger(__name__)

CAPTIONS_FILE = "captions.json"  # written by flowerlab.figures.save_figure
SNAKEMAKE_REPORT = "snakemake.html"
SNAKEMAKE_REPORT_COMMAND = "snakemake --report results/report/snakemake.html"

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
}


# --------------------------------------------------------------------------------------------
# Loading the study's results (used by the notebook)
# --------------------------------------------------------------------------------------------


def load_metrics(path: str | os.PathLike[str]) -> Any:
    """results/metrics.csv as a DataFrame, one row per evaluated architecture."""
    import pandas as pd

    if not Path(path).is_file():
        raise DataError(f"metrics table not found: {path} (run flowerlab collect first)")
    metrics = pd.read_csv(path)
    if "arch" not in metrics.columns or metrics.empty:
        raise DataError(f"{path} has no architecture rows; rerun flowerlab collect")
    return metrics


def load_histories(models_dir: str | os.PathLike[str], archs: Sequence[str]) -> dict[str, Any]:
    """{arch: models_dir/arch/history.csv as a DataFrame} for every architecture given."""
    import pandas as pd

    histories = {}
    for arch in archs:
        path = Path(models_dir) / arch / "history.csv"
        if not path.is_file():
            raise DataError(f"training history of {arch} not found: {path} (train {arch} first)")
        histories[arch] = pd.read_csv(path)
    return histories


def load_evaluations(
    evaluation_dir: str | os.PathLike[str], archs: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """{arch: evaluation_dir/arch/metrics.json} for every architecture given."""
    return {
        arch: read_json(Path(evaluation_dir) / arch / "metrics.json", f"evaluation of {arch}")
        for arch in archs
    }


def load_predictions(evaluation_dir: str | os.PathLike[str], arch: str) -> Any:
    import pandas as pd

    path = Path(evaluation_dir) / arch / "predictions.csv"
    if not path.is_file():
        raise DataError(f"predictions of {arch} not found: {path} (run flowerlab evaluate first)")
    return pd.read_csv(path)


def find_repo_root(start: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding the Snakefile, searched upwards from `start` (default: the working
    directory). Jupyter starts a notebook's kernel in the notebook's own folder, papermill in
    the folder it is told: resolving `results/...` against this root works in both."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "Snakefile").is_file():
            return folder
    raise DataError(
        f"no Snakefile in {here} or above: run the notebook inside the flowerlab repository, "
        "or pass absolute paths as its parameters"
    )


def resolve(path: str | os.PathLike[str], root: Path | None = None) -> Path:
    """`path` itself when absolute, else relative to `root` (default: the repository root)."""
    path = Path(path)
    return path if path.is_absolute() else (root or find_repo_root()) / path


# Where each input of the report sits inside a study's results folder (docs/architecture.md).
STUDY_LAYOUT = {
    "metrics_csv": "metrics.csv",
    "models_dir": "models",
    "evaluation_dir": "evaluation",
    "manifest": "data/manifest.json",
    "inventory_csv": "data/inventory.csv",
    "inventory_json": "data/inventory.json",
    "figures_dir": "figures",
    # The rules' Snakemake benchmark files sit beside results/, in the study's working folder.
    "benchmarks_dir": "../benchmarks",
    # bench/*.py's CSVs: read when present, never required (a benchmark is run by hand).
    "bench_dir": "bench",
}
TRAINING_BENCHMARK_CSV = "training.csv"  # bench/bench_training.py --out's default name


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


def load_training_benchmark(bench_dir: str | os.PathLike[str]) -> tuple[Any, str] | None:
    """bench/bench_training.py's results (bench_dir/training.csv) as a DataFrame and when that
    file was written ("written 2026-11-28 04:12 UTC"), or None when there is none: the report
    shows the last benchmark run when one was made, and does not depend on it."""
    import pandas as pd

    path = Path(bench_dir) / TRAINING_BENCHMARK_CSV
    if not path.is_file():
        return None
    written = dt.datetime.fromtimestamp(path.stat().st_mtime, tz=dt.UTC)
    return pd.read_csv(path), f"{path.name} written {written:%Y-%m-%d %H:%M} UTC"


def best_arch(metrics: Any) -> str:
    """The architecture with the highest validation accuracy (the first one on a tie)."""
    return str(metrics.loc[metrics["val_accuracy"].idxmax(), "arch"])


# --------------------------------------------------------------------------------------------
# The summary table
# --------------------------------------------------------------------------------------------


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
    """The report's table of the study's wall time: one row per job (flowerlab.timings.Job), then
    the total, the span, and the course's four architectures' subtotal when the study trained them
    and more."""
    from flowerlab import timings

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


# --------------------------------------------------------------------------------------------
# The landing page
# --------------------------------------------------------------------------------------------

CSS = """
:root { --ink: #1f2933; --muted: #52606d; --line: #d9e2ec; --accent: #2563eb; --bg-alt: #f5f7fa; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff;
       font: 16px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1200px; margin: 0 auto; padding: 2rem 1.5rem 4rem; }
header { border-bottom: 1px solid var(--line); margin-bottom: 1.5rem; padding-bottom: 1rem; }
h1 { font-size: 1.9rem; margin: 0 0 .3rem; }
h2 { font-size: 1.35rem; margin: 2.5rem 0 .8rem; padding-bottom: .3rem; border-bottom: 1px solid var(--line); }
h3 { font-size: 1.05rem; margin: 1.6rem 0 .5rem; }
.lead { color: var(--muted); margin: 0; }
nav ul { list-style: none; padding: 0; margin: .8rem 0 0; display: flex; flex-wrap: wrap; gap: .6rem; }
nav a { display: inline-block; padding: .35rem .8rem; border: 1px solid var(--line); border-radius: 6px;
        text-decoration: none; color: var(--accent); background: var(--bg-alt); }
nav a:hover { border-color: var(--accent); }
.note { color: var(--muted); font-size: .9rem; }
code { background: var(--bg-alt); padding: .1rem .3rem; border-radius: 4px; font-size: .9em; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: .92rem; }
th, td { padding: .45rem .6rem; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
th { white-space: normal; vertical-align: bottom; }
th:first-child, td:first-child { text-align: left; }
th { background: var(--bg-alt); font-weight: 600; }
tbody tr:nth-child(even) { background: #fbfcfd; }
td.text { text-align: left; white-space: normal; }
figure { margin: 2rem 0; }
figure img { display: block; max-width: min(100%, 1000px); height: auto; margin: 0 auto;
             background: #fff; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: .92rem; margin-top: .5rem; }
figcaption a { color: var(--accent); }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1.2rem; }
dt { font-weight: 600; }
dd { margin: 0; }
footer { margin-top: 3rem; color: var(--muted); font-size: .85rem; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def relative_href(target: str | os.PathLike[str], page_dir: str | os.PathLike[str]) -> str:
    """`target` as a URL relative to the page's folder (POSIX separators, spaces etc. quoted)."""
    from urllib.parse import quote

    relative = os.path.relpath(os.path.abspath(target), os.path.abspath(page_dir))
    return quote(Path(relative).as_posix())


def html_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str], *, text_columns: Sequence[str] = ()
) -> str:
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="text">{esc(row.get(c, ""))}</td>'
            if c in text_columns
            else f"<td>{esc(row.get(c, ''))}</td>"
            for c in columns
        )
        + "</tr>"
        for row in rows
    )
    return f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def load_captions(figures_dir: str | os.PathLike[str]) -> dict[str, dict[str, str]]:
    """captions.json of the figures folder; every figure it lists must have its PNG."""
    captions = read_json(Path(figures_dir) / CAPTIONS_FILE, "figure captions")
    for name, entry in captions.items():
        png = Path(figures_dir) / entry.get("png", f"{name}.png")
        if not png.is_file():
            raise DataError(
                f"figure {name} is listed in {CAPTIONS_FILE} but {png} is missing; rerun the report notebook"
            )
    return captions


def figures_section(figures_dir: Path, page_dir: Path) -> str:
    parts = []
    for name, entry in load_captions(figures_dir).items():
        png = figures_dir / entry.get("png", f"{name}.png")
        encoded = base64.b64encode(png.read_bytes()).decode("ascii")
        svg = figures_dir / entry.get("svg", f"{name}.svg")
        svg_link = f' <a href="{relative_href(svg, page_dir)}">SVG</a>' if svg.is_file() else ""
        title = entry.get("title", name)
        parts.append(
            f'<figure id="{esc(name)}"><h3>{esc(title)}</h3>'
            f'<img src="data:image/png;base64,{encoded}" alt="{esc(title)}">'
            f"<figcaption>{esc(entry.get('caption', ''))}{svg_link}</figcaption></figure>"
        )
    return "\n".join(parts)


def summary_section(metrics_path: Path) -> tuple[str, str]:
    """The summary table's HTML and a one-sentence headline."""
    metrics = load_metrics(metrics_path)
    table = summary_table(metrics)
    rows = table.to_dict("records")
    text_columns = [c for c in table.columns if c.startswith("device")]
    best = best_arch(metrics)
    accuracy = float(metrics.loc[metrics["arch"] == best, "val_accuracy"].iloc[0])
    headline = (
        f"{len(metrics)} architecture{'s' if len(metrics) != 1 else ''} compared; "
        f"the best, {best}, classifies {accuracy:.1%} of the validation photos correctly."
    )
    return html_table(rows, list(table.columns), text_columns=text_columns), headline


def settings_section(manifest_path: Path | None, evaluation_paths: Sequence[Path]) -> str:
    """The data settings (manifest) and each architecture's training recipe (evaluations)."""
    parts = []
    if manifest_path is not None:
        manifest = read_json(manifest_path, "manifest")
        settings = manifest.get("settings", {})
        splits = manifest.get("splits", {})
        items = [("classes", ", ".join(manifest.get("classes", [])))]
        items += [(key.replace("_", " "), value) for key, value in settings.items()]
        items += [(f"{split} images", f"{int(info.get('records', 0)):,}") for split, info in splits.items()]
        parts.append(
            "<h3>Data</h3><dl>" + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items) + "</dl>"
        )
    rows, keys = [], ["architecture"]
    for path in evaluation_paths:
        evaluation = read_json(path, "evaluation")
        training = evaluation.get("training") or {}
        hparams = dict(training.get("hparams") or {})
        row = {
            "architecture": evaluation.get("arch", path.parent.name),
            **{k.replace("_", " "): _plain(v) for k, v in hparams.items()},
            "precision": training.get("precision"),
            "seed": training.get("seed"),
        }
        rows.append(row)
        keys += [k for k in row if k not in keys]
    if rows:
        parts.append("<h3>Training recipes</h3>" + html_table(rows, keys, text_columns=["weights"]))
    return "\n".join(parts)


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "–" if value is None else value


def provenance_section(evaluation_paths: Sequence[Path]) -> str:
    """Which code and libraries produced the numbers, and when the page was made."""
    from flowerlab import provenance

    now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    code = provenance.code_version()
    commit = code.get("commit") or "unknown (not a git checkout)"
    items = [
        ("page generated", now),
        ("code version", f"{commit}{' (uncommitted changes)' if code.get('dirty') else ''}"),
    ]
    trained = {}
    for path in evaluation_paths:
        evaluation = read_json(path, "evaluation")
        version = (evaluation.get("training") or {}).get("code_version") or {}
        if version.get("commit"):
            trained[evaluation.get("arch", path.parent.name)] = (
                f"{version['commit'][:12]}{' (dirty)' if version.get('dirty') else ''}"
            )
    if trained:
        items.append(("trained with code", "; ".join(f"{arch} {commit}" for arch, commit in trained.items())))
    versions = provenance.library_versions(
        (
            "flowerlab",
            "tensorflow",
            "keras",
            "numpy",
            "pandas",
            "matplotlib",
            "seaborn",
            "snakemake",
            "papermill",
        )
    )
    items.append(
        ("libraries", ", ".join(f"{name} {version or 'not installed'}" for name, version in versions.items()))
    )
    return "<dl>" + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items) + "</dl>"


def navigation(page_dir: Path, *, notebook_html: Path, metrics: Path, snakemake_report: Path) -> str:
    links = [("The full report notebook", notebook_html), ("metrics.csv", metrics)]
    items = [
        f'<li><a href="{relative_href(target, page_dir)}">{esc(label)}</a></li>' for label, target in links
    ]
    if snakemake_report.is_file():
        items.append(
            f'<li><a href="{relative_href(snakemake_report, page_dir)}">Snakemake report '
            "(provenance of every file)</a></li>"
        )
        note = ""
    else:
        note = (
            f'<p class="note">The Snakemake report (every rule, its code, inputs and run time) is made after '
            f"the run with <code>{esc(SNAKEMAKE_REPORT_COMMAND)}</code>.</p>"
        )
    return f"<nav><ul>{''.join(items)}</ul></nav>{note}"


def render_page(
    *,
    figures_dir: Path,
    metrics: Path,
    notebook_html: Path,
    out: Path,
    manifest: Path | None = None,
    evaluations: Sequence[Path] = (),
    snakemake_report: Path | None = None,
    title: str = "flowerlab: the flowers study",
) -> str:
    """The landing page's HTML."""
    page_dir = out.parent
    snakemake_report = snakemake_report or page_dir / SNAKEMAKE_REPORT
    table, headline = summary_section(metrics)
    settings = settings_section(manifest, evaluations)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<style>{CSS}</style>
</head>
<body>
<main>
<header>
<h1>{esc(title)}</h1>
<p class="lead">Google's <em>Fast and Lean Data Science</em> Keras flowers labs, rerun as one reproducible
pipeline. {esc(headline)}</p>
{navigation(page_dir, notebook_html=notebook_html, metrics=metrics, snakemake_report=snakemake_report)}
</header>
<section id="summary">
<h2>Summary</h2>
{table}
<p class="note">Accuracy on the validation split; the course's accuracy is the final validation accuracy its
notebooks printed (– where the course did not train the architecture). FLOPs count a multiply-add as 2.
Training throughput is steady state (first epoch excluded); inference throughput is the forward pass alone.</p>
</section>
<section id="figures">
<h2>Figures</h2>
{figures_section(figures_dir, page_dir)}
</section>
<section id="settings">
<h2>Study settings</h2>
{settings or '<p class="note">No settings given to flowerlab publish (--manifest, --evaluations).</p>'}
</section>
<section id="provenance">
<h2>Provenance</h2>
{provenance_section(evaluations)}
</section>
<footer>Made by <code>flowerlab publish</code>. Every number comes from the files under
<code>results/</code>; rerun <code>snakemake</code> to reproduce them.</footer>
</main>
</body>
</html>
"""


def publish(
    *,
    figures_dir: str | os.PathLike[str],
    metrics: str | os.PathLike[str],
    notebook_html: str | os.PathLike[str],
    out: str | os.PathLike[str],
    manifest: str | os.PathLike[str] | None = None,
    evaluations: Sequence[str | os.PathLike[str]] = (),
    snakemake_report: str | os.PathLike[str] | None = None,
) -> Path:
    """Write the landing page atomically; returns its path."""
    out = Path(out)
    for path, what in (
        (figures_dir, "figures folder"),
        (metrics, "metrics table"),
        (notebook_html, "report notebook HTML"),
    ):
        if not Path(path).exists():
            raise DataError(f"{what} not found: {path} (run the stage that makes it first)")
    page = render_page(
        figures_dir=Path(figures_dir),
        metrics=Path(metrics),
        notebook_html=Path(notebook_html),
        out=out,
        manifest=Path(manifest) if manifest else None,
        evaluations=[Path(p) for p in evaluations],
        snakemake_report=Path(snakemake_report) if snakemake_report else None,
    )
    atomic.write_text(out, page)
    logger.info("published %s (%d kB)", out, len(page) // 1024)
    return out


# --------------------------------------------------------------------------------------------
# Executing the report notebook
# --------------------------------------------------------------------------------------------

# flowerlab render option -> the notebook's parameter (workflow/notebooks/report.ipynb)
NOTEBOOK_PARAMETERS = {
    "results_dir": "results_dir",
    "metrics": "metrics_csv",
    "models_dir": "models_dir",
    "evaluation_dir": "evaluation_dir",
    "manifest": "manifest",
    "inventory_csv": "inventory_csv",
    "inventory_json": "inventory_json",
    "figures": "figures_dir",
    "benchmarks_dir": "benchmarks_dir",
    "bench_dir": "bench_dir",
    "gallery_arch": "gallery_arch",
    "gallery_size": "gallery_size",
}


def execute_notebook(
    notebook: Path, executed: Path, parameters: Mapping[str, Any], *, cwd: Path, kernel: str = "python3"
) -> None:
    """Run `notebook` with papermill into `executed`, atomically.

    Papermill saves the output notebook after every cell, so it writes to a temporary name and
    the result is renamed into place only when every cell ran. A failure keeps the partly
    executed notebook as `<executed>.failed.ipynb` (the traceback is in it) and raises a
    DataError naming the failing cell.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    executed.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(executed)  # left by a killed run
    temporary = executed.with_name(f".{executed.name}.tmp-{os.getpid()}.ipynb")
    failed = executed.with_name(f"{executed.stem}.failed.ipynb")
    try:
        papermill.execute_notebook(
            str(notebook),
            str(temporary),
            parameters=dict(parameters),
            kernel_name=kernel,
            cwd=str(cwd),
            log_output=True,
            progress_bar=False,
        )
    except PapermillExecutionError as error:
        os.replace(temporary, failed)
        raise DataError(
            f"the report notebook failed in cell {error.exec_count}: {error.ename}: {error.evalue}; "
            f"the notebook with the traceback is {failed}"
        ) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    failed.unlink(missing_ok=True)
    os.replace(temporary, executed)


def export_html(executed: Path, html_path: Path, template: Path) -> None:
    """The executed notebook as one HTML page (figures embedded), written atomically."""
    from nbconvert import HTMLExporter

    if not template.is_file():
        raise DataError(f"nbconvert template not found: {template}")
    body, _ = HTMLExporter(template_file=str(template.resolve())).from_filename(str(executed))
    atomic.write_text(html_path, body)


def render(
    *,
    notebook: str | os.PathLike[str],
    executed: str | os.PathLike[str],
    html_path: str | os.PathLike[str],
    parameters: Mapping[str, Any],
    template: str | os.PathLike[str] | None = None,
    kernel: str = "python3",
) -> Path:
    """Execute the report notebook with `parameters` and export it to HTML; returns the HTML path.

    The kernel runs in the repository root (relative parameters are resolved against it by the
    notebook in any case). `template` defaults to `report.html.j2` beside the notebook.
    """
    notebook = Path(notebook)
    if not notebook.is_file():
        raise DataError(f"report notebook not found: {notebook}")
    template = Path(template) if template else notebook.with_name("report.html.j2")
    execute_notebook(notebook, Path(executed), parameters, cwd=find_repo_root(notebook.parent), kernel=kernel)
    export_html(Path(executed), Path(html_path), template)
    logger.info("rendered %s and %s", executed, html_path)
    return Path(html_path)


def build_render_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Execute the report notebook and export it to HTML."
    )
    parser.add_argument("--notebook", required=True, help="workflow/notebooks/report.ipynb")
    parser.add_argument(
        "--executed", required=True, help="the executed notebook, e.g. results/report/report.ipynb"
    )
    parser.add_argument("--html", required=True, help="its HTML export, e.g. results/report/report.html")
    parser.add_argument("--template", help="nbconvert template (default: report.html.j2 beside the notebook)")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel (default python3)")
    parser.add_argument(
        "--results-dir",
        default="results",
        help="the study's results; each path below defaults to its place in it",
    )
    parser.add_argument("--metrics", help="RESULTS/metrics.csv")
    parser.add_argument("--models-dir", help="RESULTS/models ({arch}/history.csv)")
    parser.add_argument("--evaluation-dir", help="RESULTS/evaluation ({arch}/metrics.json, predictions.csv)")
    parser.add_argument("--manifest", help="RESULTS/data/manifest.json")
    parser.add_argument("--inventory-csv", help="RESULTS/data/inventory.csv")
    parser.add_argument("--inventory-json", help="RESULTS/data/inventory.json")
    parser.add_argument("--figures", help="where the figures go: RESULTS/figures")
    parser.add_argument(
        "--benchmarks-dir",
        help="the study's Snakemake benchmark files (default: RESULTS/../benchmarks)",
    )
    parser.add_argument(
        "--bench-dir",
        help="bench/*.py results, shown when RESULTS/bench/training.csv exists (default: RESULTS/bench)",
    )
    parser.add_argument(
        "--gallery-arch", default="", help="whose predictions the gallery shows (default: the best)"
    )
    parser.add_argument(
        "--gallery-size", type=positive_int, default=24, help="photos in the gallery (default 24)"
    )
    return parser


def render_cli(argv: list[str]) -> int:
    args = build_render_parser(f"flowerlab {argv[0]}").parse_args(argv[1:])
    configure_logging()
    # Options left out keep the notebook's defaults (their place under --results-dir).
    parameters = {
        name: getattr(args, option)
        for option, name in NOTEBOOK_PARAMETERS.items()
        if getattr(args, option) is not None
    }
    return run_command(
        argv[0],
        lambda: render(
            notebook=args.notebook,
            executed=args.executed,
            html_path=args.html,
            parameters=parameters,
            template=args.template,
            kernel=args.kernel,
        ),
    )


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--figures", required=True, help="results/figures (PNG, SVG and captions.json)")
    parser.add_argument("--metrics", required=True, help="results/metrics.csv")
    parser.add_argument("--notebook-html", required=True, help="the executed report notebook as HTML")
    parser.add_argument("--out", required=True, help="the landing page, e.g. results/report/index.html")
    parser.add_argument("--manifest", help="results/data/manifest.json, for the data settings")
    parser.add_argument(
        "--evaluations",
        nargs="*",
        default=[],
        help="results/evaluation/*/metrics.json, for the training recipes and provenance",
    )
    parser.add_argument(
        "--snakemake-report",
        help=f"the Snakemake report to link when it exists (default: {SNAKEMAKE_REPORT} beside --out)",
    )
    return parser


def cli(argv: list[str]) -> int:
    """`flowerlab publish ...`, or `flowerlab render ...` when cli.py maps that command here."""
    if argv[0] == "render":
        return render_cli(argv)
    args = build_parser(f"flowerlab {argv[0]}").parse_args(argv[1:])
    configure_logging()
    return run_command(
        argv[0],
        lambda: publish(
            figures_dir=args.figures,
            metrics=args.metrics,
            notebook_html=args.notebook_html,
            out=args.out,
            manifest=args.manifest,
            evaluations=args.evaluations,
            snakemake_report=args.snakemake_report,
        ),
    )
