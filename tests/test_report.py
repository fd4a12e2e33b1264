"""The report: figure functions, the summary table, the papermill notebook on a fake study (two
architectures, and one), and the published landing page."""

from __future__ import annotations

import json
import os
from pathlib import Path

import fake_study
import numpy as np
import pandas as pd
import pytest
import report_checks

from flowerlab.cli import main
from flowerlab.errors import DataError
from flowerlab.reporting import (
    captions,
    figures,
    landing,
    photo_figures,
    plotting,
    render,
    results,
    tables,
    time_figures,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def metrics_table(archs: list[str]) -> pd.DataFrame:
    """A metrics.csv-like table with plausible figures for `archs`."""
    rows = []
    for index, arch in enumerate(archs):
        rows.append(
            {
                "arch": arch,
                "val_accuracy": 0.6 + 0.05 * index,
                "course_val_accuracy": {"convnet": 0.7043, "squeezenet": 0.8101}.get(arch, np.nan),
                "parameters": 10 ** (4 + index),
                "trainable_parameters": 10 ** (4 + index),
                "gflops_per_image": 0.5 + index,
                "train_images_per_s": 100.0 / (index + 1),
                "inference_images_per_s": 900.0 / (index + 1),
                "eval_batch_size": 64,
                "latency_ms_median": 3.0,
                "latency_ms_p95": 4.0,
                "training_seconds": 60.0 * 10**index,
                "epochs": 10,
                "device": "cpu: AMD EPYC",
                "training_device": "cpu: AMD EPYC",
                "precision": "float32",
            }
        )
    return pd.DataFrame(rows)


def history(epochs: int) -> pd.DataFrame:
    epoch = np.arange(1, epochs + 1)
    return pd.DataFrame(
        {
            "epoch": epoch,
            "loss": 1 / epoch,
            "accuracy": 1 - 0.5 / epoch,
            "val_loss": 1.1 / epoch,
            "val_accuracy": 0.9 - 0.5 / epoch,
        }
    )


def evaluation(matrix: list[list[int]]) -> dict:
    matrix = np.asarray(matrix)
    return {
        "classes": ["daisy", "roses", "tulips"],
        "confusion_matrix": matrix.tolist(),
        "accuracy": float(np.trace(matrix) / matrix.sum()),
    }


# ------------------------------------------------------------------------------------------
# Figure functions
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("archs", [["convnet"], ["dense", "convnet", "squeezenet"]])
def test_comparison_figures_draw_one_labelled_point_or_bar_per_architecture(archs: list[str]) -> None:
    metrics = metrics_table(archs)
    for function in (figures.accuracy_vs_parameters, figures.accuracy_vs_training_time):
        figure = function(metrics)
        ax = figure.axes[0]
        labels = [text.get_text() for text in ax.texts]
        assert labels == archs
        assert ax.get_xscale() == "log"
        # one filled point per architecture, one hollow course marker per architecture the course trained
        offsets = [collection.get_offsets() for collection in ax.collections]
        assert sum(len(o) for o in offsets) == len(archs) + metrics["course_val_accuracy"].notna().sum()
    figure = figures.throughput(metrics)
    training, inference = figure.axes[:2]
    assert [t.get_text() for t in training.get_yticklabels()] == archs
    assert len(training.patches) == len(inference.patches) == len(archs)
    assert "AMD EPYC" in training.get_title() and "batch 64" in inference.get_title()


def test_throughput_marks_a_missing_measurement_instead_of_failing() -> None:
    metrics = metrics_table(["dense", "convnet"])
    metrics.loc[0, "train_images_per_s"] = np.nan
    texts = [t.get_text() for t in figures.throughput(metrics).axes[0].texts]
    assert " not measured" in texts


def test_learning_curves_one_column_per_architecture() -> None:
    figure = figures.learning_curves({"dense": history(3), "convnet": history(5)})
    assert len(figure.axes) == 4
    assert [ax.get_title() for ax in figure.axes[:2]] == ["dense", "convnet"]
    assert len(figure.axes[1].lines) == 3  # train, validation, the course's accuracy for convnet
    assert len(figures.learning_curves({"dense": history(1)}).axes) == 2
    with pytest.raises(DataError, match="lacks the column"):
        figures.learning_curves({"dense": history(2).drop(columns=["val_loss"])})


def test_confusion_matrices_are_row_normalised_with_class_names() -> None:
    matrix = [[2, 1, 0], [0, 3, 0], [0, 0, 0]]  # tulips absent: a row of zeros, not NaN
    np.testing.assert_allclose(
        figures.row_normalised(np.array(matrix)), [[2 / 3, 1 / 3, 0], [0, 1, 0], [0, 0, 0]]
    )
    figure = figures.confusion_matrices(
        {"convnet": evaluation(matrix), "dense": evaluation(np.eye(3, dtype=int))}
    )
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["daisy", "roses", "tulips"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["daisy", "roses", "tulips"]
    assert [t.get_text() for t in ax.texts][:3] == ["67", "33", "0"]
    assert "convnet: 83.3% correct" in ax.get_title()


def predictions_table(count: int, wrong: int) -> pd.DataFrame:
    rows = []
    for index in range(count):
        true = ["daisy", "roses", "tulips"][index % 3]
        predicted = "roses" if index < wrong and true != "roses" else true
        rows.append(
            {
                "id": f"{index:04d}",
                "true_class": true,
                "predicted_class": predicted,
                "prob_daisy": 0.2,
                "prob_roses": 0.5,
                "prob_tulips": 0.3,
            }
        )
    return pd.DataFrame(rows)


def test_gallery_sample_is_reproducible_and_mixes_right_and_wrong() -> None:
    predictions = predictions_table(60, wrong=30)
    wrong_total = int((predictions["true_class"] != predictions["predicted_class"]).sum())
    sample = photo_figures.select_gallery(predictions, 12, seed=3)
    assert len(sample) == 12
    assert int((sample["true_class"] != sample["predicted_class"]).sum()) == min(6, wrong_total)
    pd.testing.assert_frame_equal(sample, photo_figures.select_gallery(predictions, 12, seed=3))
    assert len(photo_figures.select_gallery(predictions_table(5, wrong=0), 12)) == 5


def test_gallery_marks_misclassified_photos_in_red() -> None:
    sample = predictions_table(4, wrong=2)
    images = {row_id: np.full((8, 8, 3), 100, np.uint8) for row_id in sample["id"]}
    figure = photo_figures.prediction_gallery(sample, images, arch="convnet", columns=2)
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    assert sum(title.startswith("✗") for title in titles) == int(
        (sample["true_class"] != sample["predicted_class"]).sum()
    )
    assert "convnet" in figure.get_suptitle()
    with pytest.raises(DataError, match="none of the gallery's photos"):
        photo_figures.prediction_gallery(sample, {})


def test_data_overview_with_and_without_skipped_files() -> None:
    manifest = {
        "classes": ["daisy", "roses"],
        "splits": {
            "train": {"records": 7, "per_class": {"daisy": 4, "roses": 3}},
            "validation": {"records": 2, "per_class": {"daisy": 1, "roses": 1}},
        },
    }
    figure = photo_figures.data_overview(
        manifest, {"files_found": 11, "kept": 9, "skipped_by_reason": {"zero_bytes": 2}}
    )
    bars, skipped = figure.axes[:2]
    assert sorted(p.get_height() for p in bars.patches if p.get_height() > 0) == [1, 1, 3, 4]
    assert [t.get_text() for t in skipped.get_yticklabels()] == ["zero_bytes"]
    figure = photo_figures.data_overview(manifest, {"files_found": 9, "kept": 9, "skipped_by_reason": {}})
    assert "no file skipped" in [t.get_text() for t in figure.axes[1].texts]


def test_save_figure_writes_png_svg_and_the_caption_atomically(tmp_path: Path) -> None:
    figure = figures.accuracy_vs_parameters(metrics_table(["convnet"]))
    paths = plotting.save_figure(figure, "accuracy_vs_parameters", "A  caption\non two lines.", tmp_path)
    assert paths["png"].read_bytes().startswith(PNG_SIGNATURE)
    assert b"<svg" in paths["svg"].read_bytes()[:500]
    plotting.save_figure(
        figures.learning_curves({"convnet": history(2)}), "learning_curves", "Curves.", tmp_path
    )
    plotting.save_figure(figure, "accuracy_vs_parameters", "Replaced.", tmp_path)
    captions = json.loads((tmp_path / "captions.json").read_text())
    assert list(captions) == ["accuracy_vs_parameters", "learning_curves"]  # the report's order
    assert captions["accuracy_vs_parameters"]["caption"] == "Replaced."
    assert captions["learning_curves"] == {
        "title": "Learning curves",
        "caption": "Curves.",
        "png": "learning_curves.png",
        "svg": "learning_curves.svg",
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [
            "accuracy_vs_parameters.png",
            "accuracy_vs_parameters.svg",
            "learning_curves.png",
            "learning_curves.svg",
            "captions.json",
        ]
    )


def test_every_figure_has_a_one_line_caption_naming_the_devices() -> None:
    metrics = metrics_table(["convnet"])
    for name in captions.FIGURES:
        caption = captions.figure_caption(name, metrics, gallery_arch="convnet")
        assert caption and "\n" not in caption
    assert "AMD EPYC" in captions.figure_caption("throughput", metrics)


def test_study_time_draws_every_job_and_stage_with_the_total(tmp_path: Path) -> None:
    from flowerlab.reporting import timings

    seconds = fake_study.write_benchmarks(tmp_path / "benchmarks", ["dense", "convnet"])
    jobs = timings.read_study_jobs(tmp_path / "benchmarks", ["dense", "convnet"])
    figure = time_figures.study_time(jobs)
    per_job, per_stage = figure.axes
    assert [tick.get_text() for tick in per_job.get_yticklabels()] == [job.label for job in jobs]
    assert len(per_job.patches) == len(seconds) == 6
    assert sorted(round(bar.get_width(), 3) for bar in per_job.patches) == sorted(seconds.values())
    assert [tick.get_text() for tick in per_stage.get_yticklabels()] == [
        "make_inventory", "make_tfrecords", "train_model", "evaluate_model"]
    total = sum(seconds.values())
    assert tables.format_seconds(total) in figure.get_suptitle()
    assert tables.format_seconds(total) in captions.figure_caption("study_time", study_seconds=total)
    with pytest.raises(DataError, match="no job"):
        time_figures.study_time([])


def test_training_benchmark_pairs_plain_and_flowerlab_with_the_ratio(tmp_path: Path) -> None:
    path = fake_study.write_training_benchmark(tmp_path / "bench", ["dense", "convnet"])
    loaded = results.load_training_benchmark(tmp_path / "bench")
    assert loaded is not None
    training, when = loaded
    assert when.startswith("training.csv written ") and when.endswith(" UTC")
    figure = time_figures.training_benchmark(training, when=when)
    ax = figure.axes[0]
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["dense", "convnet"]  # the skipped row left out
    heights = sorted(round(bar.get_height(), 1) for bar in ax.patches if bar.get_height() > 0)
    assert heights == [100.0, 150.0, 200.0, 300.0]
    assert [text.get_text() for text in ax.texts] == ["1.50×", "1.50×"]
    assert when in ax.get_title()
    assert when in captions.figure_caption("training_benchmark", benchmark_time=when)
    skipped_only = training[training["status"] != "measured"]
    with pytest.raises(DataError, match="measured no architecture"):
        time_figures.training_benchmark(skipped_only)
    path.unlink()
    assert results.load_training_benchmark(tmp_path / "bench") is None


def test_forget_figure_removes_a_stale_optional_figure(tmp_path: Path) -> None:
    figure, _ = plotting.new_figure()
    plotting.save_figure(figure, "study_time", "kept", tmp_path)
    plotting.save_figure(figure, "training_benchmark", "stale", tmp_path)
    captions.forget_figure(tmp_path, "training_benchmark")
    assert list(json.loads((tmp_path / "captions.json").read_text())) == ["study_time"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["captions.json", "study_time.png", "study_time.svg"]
    captions.forget_figure(tmp_path, "training_benchmark")  # nothing left to remove: no error


def test_figures_refuse_an_empty_study() -> None:
    with pytest.raises(DataError, match="no architecture"):
        figures.accuracy_vs_parameters(
            metrics_table([]).reindex(columns=["arch", "val_accuracy", "parameters"])
        )
    with pytest.raises(DataError, match="no training history"):
        figures.learning_curves({})


# ------------------------------------------------------------------------------------------
# Summary table and formatting
# ------------------------------------------------------------------------------------------


def test_summary_table_formats_figures_for_readers() -> None:
    table = tables.summary_table(metrics_table(["dense", "convnet"]))
    assert list(table.columns) == [
        "architecture",
        "validation accuracy",
        "course's accuracy",
        "parameters",
        "GFLOPs / image",
        "training images/s",
        "inference images/s",
        "training time",
        "epochs",
        "device",
    ]  # one device column: training and inference agree
    convnet = table.iloc[1]
    assert convnet["validation accuracy"] == "65.0%" and convnet["course's accuracy"] == "70.4%"
    assert table.iloc[0]["course's accuracy"] == "–"
    assert convnet["parameters"] == "100k" and convnet["training time"] == "10.0 min"
    different = metrics_table(["dense"]).assign(training_device="gpu: NVIDIA H100")
    assert "device (training)" in tables.summary_table(different).columns


@pytest.mark.parametrize(
    "seconds, text", [(45, "45 s"), (750, "12.5 min"), (12_240, "3.4 h"), (float("nan"), "–")]
)
def test_format_seconds(seconds: float, text: str) -> None:
    assert tables.format_seconds(seconds) == text


@pytest.mark.parametrize(
    "count, text", [(355, "355"), (293_233, "293k"), (2_488_389, "2.49M"), (55_321_805, "55.3M")]
)
def test_format_count(count: int, text: str) -> None:
    assert tables.format_count(count) == text


def test_study_paths_default_to_the_standard_layout_under_results_dir(
    repo_root: Path, tmp_path: Path
) -> None:
    paths = results.study_paths()
    assert paths["metrics_csv"] == repo_root / "results" / "metrics.csv"
    assert paths["manifest"] == repo_root / "results" / "data" / "manifest.json"
    paths = results.study_paths(tmp_path / "study", figures_dir=tmp_path / "elsewhere", models_dir=None)
    assert paths["figures_dir"] == tmp_path / "elsewhere"
    assert paths["models_dir"] == tmp_path / "study" / "models"
    with pytest.raises(ValueError, match="unknown report path"):
        results.study_paths(figures=tmp_path)


def test_relative_paths_resolve_against_the_repository_root(repo_root: Path, tmp_path: Path) -> None:
    assert results.find_repo_root(repo_root / "workflow" / "notebooks") == repo_root
    assert results.resolve("results/metrics.csv", repo_root) == repo_root / "results/metrics.csv"
    assert results.resolve(tmp_path / "x.csv") == tmp_path / "x.csv"
    with pytest.raises(DataError, match="no Snakefile"):
        results.find_repo_root(tmp_path)


# ------------------------------------------------------------------------------------------
# The notebook on a fake study, and the landing page
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_architectures(two_architecture_report: Path) -> Path:
    return two_architecture_report


@pytest.fixture(scope="module")
def one_architecture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fake_study.make_fake_report(tmp_path_factory.mktemp("one") / "results", ["squeezenet"])


def expected_figures(with_training_benchmark: bool) -> list[str]:
    return [
        name
        for name in captions.FIGURES
        if with_training_benchmark or name not in captions.OPTIONAL_FIGURES
    ]


def assert_every_figure_written(figures_dir: Path, expected: list[str]) -> None:
    captions = json.loads((figures_dir / "captions.json").read_text())
    assert list(captions) == expected
    for name in expected:
        png, svg = figures_dir / f"{name}.png", figures_dir / f"{name}.svg"
        assert png.read_bytes().startswith(PNG_SIGNATURE), png
        assert svg.stat().st_size > 1000 and b"<svg" in svg.read_bytes()[:500], svg
        assert captions[name]["caption"]


@pytest.mark.slow
@pytest.mark.parametrize("study", ["two_architectures", "one_architecture"])
def test_notebook_executes_and_writes_every_figure(study: str, request: pytest.FixtureRequest) -> None:
    index = request.getfixturevalue(study)
    results = index.parent.parent
    expected = expected_figures(with_training_benchmark=study == "two_architectures")
    assert_every_figure_written(results / "figures", expected)
    assert not (results / "figures" / "training_benchmark.png").exists() or "training_benchmark" in expected
    executed = json.loads((results / "report" / "report.ipynb").read_text())
    errors = [
        output
        for cell in executed["cells"]
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors
    html_path = results / "report" / "report.html"
    html = html_path.read_text()
    assert html.count("data:image/png;base64") >= len(expected)
    assert "<details" in html  # code folded under a toggle
    # offline: no script or stylesheet from a CDN (nbconvert's lab template loads several by default)
    assert not [src for src in report_checks.references(html_path).external if "://" in src]
    assert not any(cdn in html for cdn in ("cdnjs.cloudflare.com", "unpkg.com", "cdn.jsdelivr.net"))


def notebook_outputs(executed: Path) -> str:
    """Every text and HTML output of an executed notebook (not its code, which mentions both cases)."""
    cells = json.loads(executed.read_text())["cells"]
    texts = []
    for cell in cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            for kind in ("text/markdown", "text/html", "text/plain"):
                texts.append("".join(data.get(kind, "")))
            texts.append("".join(output.get("text", "")))
    return "\n".join(texts)


@pytest.mark.slow
def test_report_shows_the_studys_wall_time_and_the_last_benchmark_run(
    two_architectures: Path, one_architecture: Path
) -> None:
    from flowerlab.reporting import timings

    shown = {}
    for name, index in (("two", two_architectures), ("one", one_architecture)):
        results = index.parent.parent
        assert "Time and benchmarks" in (results / "report" / "report.html").read_text()
        shown[name] = notebook_outputs(results / "report" / "report.ipynb")
        archs = [line.split(",")[0] for line in (results / "metrics.csv").read_text().splitlines()[1:]]
        jobs = timings.read_study_jobs(results.parent / "benchmarks", archs)
        assert tables.format_seconds(timings.total_seconds(jobs)) in shown[name]
        assert "total (sum of the jobs)" in shown[name] and "train_model " + archs[0] in shown[name]
    assert "From the last benchmark run (training.csv written " in shown["two"]
    assert "not from this study run" in shown["two"] and "No training benchmark in" not in shown["two"]
    assert "No training benchmark in" in shown["one"] and "From the last benchmark run" not in shown["one"]


@pytest.mark.slow
def test_landing_page_resolves_every_image_and_link(two_architectures: Path) -> None:
    assert report_checks.broken_references(two_architectures) == []
    found = report_checks.references(two_architectures)
    assert len(found.images) == len(captions.FIGURES)  # the training benchmark's figure included
    assert all(src.startswith("data:image/png;base64,") for src in found.images)
    assert {"report.html", "../metrics.csv"} <= set(found.links)
    page = two_architectures.read_text()
    for text in (
        "dense",
        "convnet",
        "70.4%",
        "snakemake --report",
        "Training recipes",
        "image size",
        "0123456789ab",
        "tensorflow",
    ):
        assert text in page, text
    assert not list(two_architectures.parent.glob(".*.tmp"))


@pytest.mark.slow
def test_landing_page_links_the_snakemake_report_only_when_it_exists(
    two_architectures: Path, tmp_path: Path
) -> None:
    results = two_architectures.parent.parent
    arguments = [
        "publish",
        "--figures",
        str(results / "figures"),
        "--metrics",
        str(results / "metrics.csv"),
        "--notebook-html",
        str(results / "report/report.html"),
        "--out",
        str(tmp_path / "index.html"),
    ]
    (tmp_path / "snakemake.html").write_text("<html></html>")
    assert main(arguments) == 0
    assert report_checks.broken_references(tmp_path / "index.html") == []
    assert 'href="snakemake.html"' in (tmp_path / "index.html").read_text()
    assert 'href="../figures/learning_curves.svg"' not in (tmp_path / "index.html").read_text()


@pytest.mark.slow
def test_publish_refuses_missing_inputs_without_writing(two_architectures: Path, tmp_path: Path) -> None:
    results = two_architectures.parent.parent
    figures_copy = tmp_path / "figures"
    figures_copy.mkdir()
    (figures_copy / "captions.json").write_text((results / "figures/captions.json").read_text())
    with pytest.raises(DataError, match="is missing; rerun the report notebook"):
        landing.publish(
            figures_dir=figures_copy,
            metrics=results / "metrics.csv",
            notebook_html=results / "report/report.html",
            out=tmp_path / "index.html",
        )
    assert (
        main(
            [
                "publish",
                "--figures",
                str(results / "figures"),
                "--metrics",
                str(tmp_path / "absent.csv"),
                "--notebook-html",
                str(results / "report/report.html"),
                "--out",
                str(tmp_path / "index.html"),
            ]
        )
        == 1
    )
    assert not (tmp_path / "index.html").exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


# ------------------------------------------------------------------------------------------
# Captions of the Snakemake report (workflow/report/*.rst)
# ------------------------------------------------------------------------------------------


def render_caption(path: Path, config: dict, params: object = None, **wildcards: str) -> str:
    """A caption rendered as Snakemake's report does: Jinja2 (its settings), then docutils with
    every warning an error."""
    import types

    import jinja2
    from docutils.core import publish_parts

    snakemake = types.SimpleNamespace(config=config, wildcards=types.SimpleNamespace(**wildcards), params=params)
    environment = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    text = environment.from_string(path.read_text()).render(snakemake=snakemake)
    return publish_parts(text, writer_name="html", settings_overrides={"halt_level": 2, "report_level": 5})[
        "body"
    ]


def test_snakemake_report_captions_render_as_snakemake_renders_them(repo_root: Path) -> None:
    import types

    import yaml

    from flowerlab.config import prepare_config

    # what the workflow hands Snakemake: config.yaml with the schema's defaults (common.smk)
    config = prepare_config(yaml.safe_load((repo_root / "config" / "config.yaml").read_text()))
    folder = repo_root / "workflow" / "report"
    for name in ("metrics", "report_notebook", "landing_page"):
        body = render_caption(folder / f"{name}.rst", config)
        assert "<p>" in body and "{{" not in body, name
    assert "batch 64" in render_caption(folder / "metrics.rst", config).replace("\n", " ")
    # figures.rst: one caption per figure file, chosen by the {name} wildcard of the PNG; the text
    # is the notebook's and the landing page's (flowerlab.reporting.captions), through the params.
    params = types.SimpleNamespace(captions=captions.snakemake_captions())
    shown = {name: render_caption(folder / "figures.rst", config, params, name=name) for name in captions.FIGURES}
    fallback = render_caption(folder / "figures.rst", config, params, name="something_else")
    assert "captions.json" in fallback
    for name, body in shown.items():
        assert "<p>" in body and body != fallback, name
        assert " ".join(captions.figure_caption(name).split()[:6]) in " ".join(body.split()), name
    assert len(set(shown.values())) == len(shown)


# ------------------------------------------------------------------------------------------
# flowerlab render: atomic outputs, failures kept for debugging
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_render_keeps_a_failing_notebook_aside_and_writes_no_output(
    two_architectures: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = two_architectures.parent.parent
    # explicit paths override the study's layout: a metrics table that does not exist
    options = [
        *fake_study.render_options(results),
        "--metrics",
        str(tmp_path / "absent.csv"),
        "--figures",
        str(tmp_path / "figures"),
    ]
    executed, html_path = tmp_path / "report.ipynb", tmp_path / "report.html"
    arguments = [
        "render",
        "--notebook",
        str(fake_study.NOTEBOOK),
        "--executed",
        str(executed),
        "--html",
        str(html_path),
        *options,
    ]
    assert render.cli(arguments) == 1  # what `flowerlab render ...` runs
    error = capsys.readouterr().err
    assert "flowerlab render: error: the report notebook failed in cell" in error
    assert "metrics table not found" in error
    assert not executed.exists() and not html_path.exists()
    assert (tmp_path / "report.failed.ipynb").is_file()
    assert not list(tmp_path.glob(".*tmp*"))


@pytest.mark.slow
def test_the_template_also_works_with_jupyter_nbconvert(two_architectures: Path, tmp_path: Path) -> None:
    """The export the lead may run by hand: jupyter nbconvert --template-file report.html.j2."""
    import subprocess
    import sys

    executed = two_architectures.parent / "report.ipynb"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "jupyter",
            "nbconvert",
            "--to",
            "html",
            "--template-file",
            str(fake_study.HTML_TEMPLATE),
            "--output-dir",
            str(tmp_path),
            str(executed),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    html = (tmp_path / "report.html").read_text()
    assert "<details" in html and html.count("data:image/png;base64") >= len(captions.FIGURES)
    assert not any(cdn in html for cdn in ("cdnjs.cloudflare.com", "unpkg.com", "cdn.jsdelivr.net"))


def test_study_time_rows_give_each_job_the_total_the_span_and_the_course_subtotal() -> None:
    from flowerlab.reporting.timings import Job

    def job(rule: str, wildcards: str, seconds: float, ended: float) -> Job:
        return Job(rule, wildcards, seconds, max_rss_mb=100.0, cpu_seconds=seconds, repeats=1,
                   file=f"{rule}/{wildcards}.tsv", ended=ended)

    jobs = [job("make_tfrecords", "", 4.0, 104.0)] + [
        job("train_model", arch, 100.0, 204.0 + 100 * index)
        for index, arch in enumerate(["dense", "mobilenet_v2", "convnet", "squeezenet", "mobilenet_v2_finetune"])
    ]
    archs = ["dense", "mobilenet_v2", "convnet", "squeezenet", "mobilenet_v2_finetune"]
    rows = tables.study_time_rows(jobs, archs)
    assert [row["job"] for row in rows[:2]] == ["make_tfrecords", "train_model dense"]
    assert rows[1]["max RSS (MB)"] == 100.0 and rows[1]["wall time"] == "100 s"
    summaries = {row["job"]: row["seconds"] for row in rows[len(jobs):]}
    assert summaries == {
        "total (sum of the jobs)": 504.0,
        "span (first start to last end)": 504.0,  # 100 -> 604
        "the course's four architectures (data, their training and evaluation)": 404.0,
    }
    # No subtotal when the study is the course's four alone, or lacks one of them.
    assert len(tables.study_time_rows(jobs[:5], archs[:4])) == 5 + 2
    assert len(tables.study_time_rows(jobs[:4], archs[:3])) == 4 + 2
