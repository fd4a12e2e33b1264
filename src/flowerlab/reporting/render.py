"""`flowerlab render`: execute the report notebook with papermill and export it to HTML.

    flowerlab render --notebook workflow/notebooks/report.ipynb --executed results/report/report.ipynb \\
        --html results/report/report.html --results-dir results --figures results/figures

Both outputs are written atomically (papermill executes into a temporary name), and a failing
notebook is kept as `*.failed.ipynb` with the cell that failed named in the error. The notebook's
kernel imports TensorFlow for the gallery, in its own process; this module does not.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flowerlab import filesystem
from flowerlab.console import configure_logging, positive_int, run_command
from flowerlab.errors import DataError
from flowerlab.filesystem import remove_stale_temporaries

logger = logging.getLogger(__name__)

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


def nbconvert_template_folders() -> list[str]:
    """The folder that holds nbconvert's own templates (lab, base, ...), where pip put them.

    nbconvert looks for them only in the Jupyter data paths, which name the running prefix, not
    the one nbconvert was installed into: from a virtual environment that sees a base Python's
    packages (or after a `pip install --user`) it finds no `lab` template and fails
    (https://github.com/jupyter/nbconvert/issues/1661). The installed files' list says where
    they went, wherever that is."""
    from importlib import metadata

    for file in metadata.distribution("nbconvert").files or ():
        if file.parts[-4:] == ("nbconvert", "templates", "lab", "conf.json"):
            return [str(Path(file.locate()).resolve().parent.parent)]
    return []


def export_html(executed: Path, html_path: Path, template: Path) -> None:
    """The executed notebook as one HTML page (figures embedded), written atomically."""
    from nbconvert import HTMLExporter

    if not template.is_file():
        raise DataError(f"nbconvert template not found: {template}")
    # as base folders for the template names (lab -> lab/conf.json) and as a search path for the
    # template's own `extends 'lab/index.html.j2'`
    folders = nbconvert_template_folders()
    exporter = HTMLExporter(template_file=str(template.resolve()), extra_template_basedirs=folders,
                            extra_template_paths=folders)
    body, _ = exporter.from_filename(str(executed))
    filesystem.write_text(html_path, body)


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

    The kernel runs in the working directory, where relative parameters point (Snakemake's
    working directory when the workflow runs it, also as a module of another workflow). `template` defaults to `report.html.j2` beside the notebook.
    """
    notebook = Path(notebook)
    if not notebook.is_file():
        raise DataError(f"report notebook not found: {notebook}")
    template = Path(template) if template else notebook.with_name("report.html.j2")
    execute_notebook(notebook, Path(executed), parameters, cwd=Path.cwd(), kernel=kernel)
    export_html(Path(executed), Path(html_path), template)
    logger.info("rendered %s and %s", executed, html_path)
    return Path(html_path)


def build_parser(prog: str) -> argparse.ArgumentParser:
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
    parser.add_argument("--models-dir", help="RESULTS/models ({arch}/{replicate}/history.csv)")
    parser.add_argument("--evaluation-dir",
                        help="RESULTS/evaluation ({arch}/{replicate}/metrics.json, predictions.csv)")
    parser.add_argument("--manifest", help="RESULTS/data/manifest.json")
    parser.add_argument("--inventory-csv", help="RESULTS/data/inventory.csv")
    parser.add_argument("--inventory-json", help="RESULTS/data/inventory.json")
    parser.add_argument("--figures", help="where the figures go: RESULTS/figures")
    parser.add_argument(
        "--benchmarks-dir",
        help="the study's Snakemake benchmark files (default: RESULTS/../benchmarks)",
    )
    parser.add_argument(
        "--gallery-arch", default="", help="whose predictions the gallery shows (default: the best)"
    )
    parser.add_argument(
        "--gallery-size", type=positive_int, default=24, help="photos in the gallery (default 24)"
    )
    return parser


def cli(argv: list[str]) -> int:
    args = build_parser(f"flowerlab {argv[0]}").parse_args(argv[1:])
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

