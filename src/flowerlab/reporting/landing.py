"""`flowerlab publish`: the report's landing page, from templates/landing.html.j2.

    flowerlab publish --figures results/figures --metrics results/metrics.csv \\
        --architectures results/architectures.csv --notebook-html results/report/report.html --out results/report/index.html \\
        [--manifest ...] [--evaluations ...]

One self-contained HTML page: the summary (one row per architecture in two tables, its accuracy with
the interval, its size and speed), every figure (embedded as base64 PNG, with a
relative link to its SVG) with its caption, the study's settings, provenance, and relative links
to the notebook, metrics.csv and the Snakemake report. It opens from disk with no server and
loads nothing from the network. It is written atomically. The template is autoescaped, so a
value (a photo folder's name, say) is always shown as text.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2

from flowerlab import filesystem, provenance, schema
from flowerlab.code_fingerprint import SHORT
from flowerlab.console import configure_logging, run_command
from flowerlab.data.manifest import SYNTHETIC
from flowerlab.errors import DataError
from flowerlab.filesystem import read_json
from flowerlab.models import registry
from flowerlab.reporting.captions import load_captions
from flowerlab.reporting.results import best_arch, load_architectures, load_metrics
from flowerlab.reporting.tables import (
    ACCURACY_COLUMNS,
    INTERVAL_NOTES,
    accuracy_table,
    cost_table,
    interval_kinds,
)

logger = logging.getLogger(__name__)

TEMPLATE = "landing.html.j2"
SNAKEMAKE_REPORT = "snakemake.html"
SNAKEMAKE_REPORT_COMMAND = "snakemake --report results/report/snakemake.html"
REPORTED_LIBRARIES = (
    "flowerlab", "tensorflow", "keras", "numpy", "pandas", "matplotlib", "seaborn", "snakemake", "papermill",
)


def relative_href(target: str | os.PathLike[str], page_dir: str | os.PathLike[str]) -> str:
    """`target` as a URL relative to the page's folder (POSIX separators, spaces etc. quoted)."""
    relative = os.path.relpath(os.path.abspath(target), os.path.abspath(page_dir))
    return quote(Path(relative).as_posix())


def figure_entries(figures_dir: Path, page_dir: Path) -> list[dict[str, str]]:
    """Every figure of captions.json with its PNG inlined and a link to its SVG when there is one."""
    entries = []
    for name, entry in load_captions(figures_dir).items():
        png = figures_dir / entry.get("png", f"{name}.png")
        svg = figures_dir / entry.get("svg", f"{name}.svg")
        entries.append({
            "name": name,
            "title": entry.get("title", name),
            "caption": entry.get("caption", ""),
            "png_base64": base64.b64encode(png.read_bytes()).decode("ascii"),
            "svg_href": relative_href(svg, page_dir) if svg.is_file() else "",
        })
    return entries


def html_table(columns: Sequence[str], rows: Sequence[dict[str, Any]],
               text_columns: Sequence[str] = ()) -> dict[str, Any]:
    """A table as the template's table macro takes it: its columns, its rows ({column: text}), and
    which columns hold text (left-aligned, wrapped)."""
    return {"columns": list(columns), "rows": list(rows),
            "text_columns": [column for column in columns if column in text_columns]}


def summary(architectures_path: Path, metrics_path: Path) -> tuple[dict[str, Any], str]:
    """The summary's two tables (accuracy; size and speed), what their intervals are, and a
    one-sentence headline."""
    architectures = load_architectures(architectures_path)
    if architectures.empty:
        raise DataError(f"{architectures_path} has no architecture; rerun flowerlab collect")
    accuracy = accuracy_table(architectures, load_metrics(metrics_path))
    cost = cost_table(architectures)
    best = best_arch(architectures)
    best_accuracy = accuracy.loc[list(architectures["arch"]).index(best), ACCURACY_COLUMNS["val_accuracy_mean"]]
    runs = int(architectures["runs"].min())
    count = len(architectures)
    replicates = (f"each trained {runs} times (seeds), the intervals are 95% across runs"
                  if runs > 1 else "one run each, so the intervals are each run's photos' sampling alone "
                                   "(replicates, seeds, are needed for the spread between runs)")
    headline = (
        f"{count} architecture{'s' if count != 1 else ''} compared, {replicates}; the "
        f"{'best on average' if runs > 1 else 'most accurate'}, {best}, classifies {best_accuracy} of the "
        "validation photos correctly."
    )
    tables = {
        "accuracy": html_table(accuracy.columns, accuracy.to_dict("records")),
        "cost": html_table(cost.columns, cost.to_dict("records"),
                           [column for column in cost.columns if column.startswith("device")]),
        "interval_notes": [INTERVAL_NOTES[kind] for kind in interval_kinds(architectures)],
    }
    return tables, headline


# The data stage's settings (the manifest's `settings`) named for a reader.
DATA_SETTING_LABELS = {
    "image_size": "image size (px)",
    "jpeg_quality": "JPEG quality",
    "validation_fraction": "held out for validation",
    "shards": "TFRecord files per split",
    "seed": "split seed",
}


def data_setting_value(key: str, value: Any) -> Any:
    """A data setting's value, explained where a bare number would puzzle a reader."""
    if key == "validation_fraction":
        return f"{float(value):.0%} of each class"
    if key == "seed":
        course = " (the course's)" if value == schema.default("data", "seed") else ""
        return f"{value}{course}: which photos go to validation"
    return value


def data_settings(manifest: dict[str, Any] | None) -> list[tuple[str, Any]]:
    """The data stage's settings and split sizes, from the manifest."""
    if manifest is None:
        return []
    items: list[tuple[str, Any]] = [("photos", photos_label(manifest.get("data_source"))),
                                    ("classes", ", ".join(manifest.get("classes", [])))]
    items += [(DATA_SETTING_LABELS.get(key, key.replace("_", " ")), data_setting_value(key, value))
              for key, value in manifest.get("settings", {}).items()]
    items += [(f"{split} images", f"{int(info.get('records', 0)):,}") for split, info in manifest.get("splits", {}).items()]
    return items


def photos_label(data_source: str | None) -> str:
    """The manifest's data_source, said for a reader."""
    return {"official": "the course's flower_photos (official archive, checksum-verified)",
            SYNTHETIC: "SYNTHETIC: generated shapes, not flowers (a smoke run)",
            None: "not recorded (TFRecords made before the data source was recorded)"}.get(
        data_source, f"the local folder {data_source}")


def weights_label(weights: Any) -> str:
    """The backbone's weights as a reader wants them: 'imagenet', 'none', or a local file's name."""
    if weights in (None, "none"):
        return "none (random)"
    return "imagenet" if weights == "imagenet" else f"local file {Path(str(weights)).name}"


def recipe_cells(arch: str, training: dict[str, Any]) -> dict[str, Any]:
    """One architecture's hyperparameters (a training.json's) as the recipes table shows them: the
    learning rate with only the schedule settings it uses (as training recorded it in words), the
    weights by name, the feature cache only for a frozen backbone."""
    hparams = training.get("hparams") or {}
    cells: dict[str, Any] = {"epochs": hparams.get("epochs"), "batch size": hparams.get("batch_size")}
    if training.get("learning_rate_schedule"):
        cells["learning rate"] = training["learning_rate_schedule"]
    elif "learning_rate" in hparams:  # a record from before the schedule was written in words
        cells["learning rate"] = f"{float(hparams['learning_rate']):g} ({hparams.get('schedule', 'constant')})"
    cells["augmentation"] = "yes" if hparams.get("augment") else "no"
    if hparams.get("image_size"):
        cells["image size (px)"] = hparams["image_size"]
    if "weights" in hparams:
        cells["backbone weights"] = weights_label(hparams["weights"])
    if arch in registry.ARCHITECTURES and registry.ARCHITECTURES[arch].frozen_backbone_features:
        cells["backbone features cached"] = "yes" if hparams.get("cache_features", True) else "no"
    return cells


def read_evaluations(evaluation_paths: Sequence[Path]) -> list[tuple[str, dict[str, Any]]]:
    """(architecture, a run's evaluation metrics.json) in the order given, each file read once for the page."""
    pairs = []
    for path in evaluation_paths:
        evaluation = read_json(path, "evaluation")
        pairs.append((evaluation.get("arch", path.parent.parent.name), evaluation))
    return pairs


def recipes(evaluations: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Each architecture's training recipe: its hyperparameters, precision and the seeds of its runs."""
    rows: dict[str, dict[str, Any]] = {}
    columns = ["architecture"]
    for arch, evaluation in evaluations:
        training = evaluation.get("training") or {}
        if arch not in rows:
            rows[arch] = {
                "architecture": arch,
                **recipe_cells(arch, training),
                "precision": training.get("precision"),
                "seeds": [],
            }
            columns += [key for key in rows[arch] if key not in columns]
        rows[arch]["seeds"].append(str(training.get("seed")))
    for row in rows.values():
        row["seeds"] = ", ".join(row["seeds"])
    return html_table(columns, rows.values(), ["learning rate", "backbone weights", "seeds"])


def training_code_label(version: dict[str, Any]) -> str:
    """'fingerprint 1a2b3c4d5e6f (git 0123456789ab, dirty)': the code a model was trained with."""
    parts = []
    if version.get("fingerprint"):
        parts.append(f"fingerprint {version['fingerprint'][:SHORT]}")
    if version.get("commit"):
        parts.append(f"git {version['commit'][:12]}{', dirty' if version.get('dirty') else ''}")
    if not parts:
        return ""
    return parts[0] if len(parts) == 1 else f"{parts[0]} ({parts[1]})"


def provenance_items(evaluations: Sequence[tuple[str, dict[str, Any]]]) -> list[tuple[str, str]]:
    """Which code and libraries produced the numbers, and when the page was made."""
    code = provenance.code_version()
    commit = code.get("commit") or "unknown (not a git checkout)"
    items = [
        ("page generated", dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()),
        ("code version", f"{commit}{' (uncommitted changes)' if code.get('dirty') else ''}"),
    ]
    trained: dict[str, list[str]] = {}
    for arch, evaluation in evaluations:
        label = training_code_label((evaluation.get("training") or {}).get("code_version") or {})
        if label and label not in trained.setdefault(arch, []):
            trained[arch].append(label)
    if any(trained.values()):
        items.append(("trained with code", "; ".join(f"{arch} {' and '.join(labels)}"
                                                      for arch, labels in trained.items() if labels)))
    versions = provenance.library_versions(REPORTED_LIBRARIES)
    items.append(("libraries", ", ".join(f"{name} {version or 'not installed'}" for name, version in versions.items())))
    return items


def render_page(
    *,
    figures_dir: Path,
    metrics: Path,
    architectures: Path,
    notebook_html: Path,
    out: Path,
    manifest: Path | None = None,
    evaluations: Sequence[Path] = (),
    snakemake_report: Path | None = None,
    title: str = "flowerlab: the flowers study",
    report_command: str = SNAKEMAKE_REPORT_COMMAND,
) -> str:
    """The landing page's HTML."""
    page_dir = out.parent
    snakemake_report = snakemake_report or page_dir / SNAKEMAKE_REPORT
    links = [("The full report notebook", notebook_html), ("metrics.csv (one row per run)", metrics),
             ("architectures.csv (one row per architecture)", architectures)]
    if snakemake_report.is_file():
        links.append(("Snakemake report (provenance of every file)", snakemake_report))
    tables, headline = summary(architectures, metrics)
    manifest_data = read_json(manifest, "manifest") if manifest is not None else None
    read = read_evaluations(evaluations)
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("flowerlab.reporting", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a misspelt name fails instead of rendering empty
        keep_trailing_newline=True,
    )
    return environment.get_template(TEMPLATE).render(
        title=title,
        headline=headline,
        links=[{"label": label, "href": relative_href(target, page_dir)} for label, target in links],
        snakemake_report_command="" if snakemake_report.is_file() else report_command,
        summary=tables,
        figures=figure_entries(figures_dir, page_dir),
        data_settings=data_settings(manifest_data),
        synthetic=manifest_data is not None and manifest_data.get("data_source") == SYNTHETIC,
        recipes=recipes(read),
        provenance=provenance_items(read),
    )


def publish(
    *,
    figures_dir: str | os.PathLike[str],
    metrics: str | os.PathLike[str],
    architectures: str | os.PathLike[str],
    notebook_html: str | os.PathLike[str],
    out: str | os.PathLike[str],
    manifest: str | os.PathLike[str] | None = None,
    evaluations: Sequence[str | os.PathLike[str]] = (),
    snakemake_report: str | os.PathLike[str] | None = None,
    report_command: str = SNAKEMAKE_REPORT_COMMAND,
) -> Path:
    """Write the landing page atomically; returns its path."""
    out = Path(out)
    for path, what in (
        (figures_dir, "figures folder"),
        (metrics, "metrics table"),
        (architectures, "architectures table"),
        (notebook_html, "report notebook HTML"),
    ):
        if not Path(path).exists():
            raise DataError(f"{what} not found: {path} (run the stage that makes it first)")
    page = render_page(
        figures_dir=Path(figures_dir),
        metrics=Path(metrics),
        architectures=Path(architectures),
        notebook_html=Path(notebook_html),
        out=out,
        manifest=Path(manifest) if manifest else None,
        evaluations=[Path(p) for p in evaluations],
        snakemake_report=Path(snakemake_report) if snakemake_report else None,
        report_command=report_command,
    )
    filesystem.write_text(out, page)
    logger.info("published %s (%d kB)", out, len(page) // 1024)
    return out


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--figures", required=True, help="results/figures (PNG, SVG and captions.json)")
    parser.add_argument("--metrics", required=True, help="results/metrics.csv (one row per run, linked)")
    parser.add_argument("--architectures", required=True,
                        help="results/architectures.csv (one row per architecture: the summary table)")
    parser.add_argument("--notebook-html", required=True, help="the executed report notebook as HTML")
    parser.add_argument("--out", required=True, help="the landing page, e.g. results/report/index.html")
    parser.add_argument("--manifest", help="results/data/manifest.json, for the data settings")
    parser.add_argument(
        "--evaluations",
        nargs="*",
        default=[],
        help="results/evaluation/*/*/metrics.json, for the training recipes and provenance",
    )
    parser.add_argument(
        "--report-command", default=SNAKEMAKE_REPORT_COMMAND,
        help="the command that makes Snakemake's report of this very run (with its config files and "
             "--config overrides), shown until that report exists (default: %(default)s)",
    )
    parser.add_argument(
        "--snakemake-report",
        help=f"the Snakemake report to link when it exists (default: {SNAKEMAKE_REPORT} beside --out)",
    )
    return parser


def cli(argv: list[str]) -> int:
    args = build_parser(f"flowerlab {argv[0]}").parse_args(argv[1:])
    configure_logging()
    return run_command(
        argv[0],
        lambda: publish(
            figures_dir=args.figures,
            metrics=args.metrics,
            architectures=args.architectures,
            notebook_html=args.notebook_html,
            out=args.out,
            manifest=args.manifest,
            evaluations=args.evaluations,
            report_command=args.report_command,
            snakemake_report=args.snakemake_report,
        ),
    )
