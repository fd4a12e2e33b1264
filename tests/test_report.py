"""The report: figure functions, the summary table, the papermill notebook on a fake study (two
architectures, and one), and the published landing page."""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

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
from flowerlab.training import schedules

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def metrics_table(archs: list[str], seeds: tuple[int, ...] = (1,)) -> pd.DataFrame:
    """A metrics.csv-like table (one row per run) with plausible figures for `archs` x `seeds`."""
    from flowerlab.evaluation import statistics

    rows = []
    for index, arch in enumerate(archs):
        for seed in seeds:
            accuracy = 0.6 + 0.05 * index + 0.01 * (seed - 1)
            low, high = statistics.wilson(round(accuracy * 200), 200)
            rows.append(
                {
                    "arch": arch,
                    "replicate": f"seed-{seed}",
                    "seed": seed,
                    "split_seed": 35155,
                    "val_accuracy": accuracy,
                    "val_accuracy_ci_low": low,
                    "val_accuracy_ci_high": high,
                    "course_val_accuracy": {"convnet": 0.7043, "squeezenet": 0.8101}.get(arch),
                    "val_macro_f1": accuracy - 0.02,
                    "parameters": 10 ** (4 + index),
                    "trainable_parameters": 10 ** (4 + index),
                    "gflops_per_image": 0.5 + index,
                    "image_size": 192,
                    "model_mb": 1.0,
                    "train_images_per_s": 100.0 / (index + 1) + seed,
                    "inference_images_per_s": 900.0 / (index + 1) + seed,
                    "eval_batch_size": 64,
                    "latency_ms_median": 3.0,
                    "latency_ms_p95": 4.0,
                    "training_seconds": 60.0 * 10**index + seed,
                    "epochs": 10,
                    "device": "cpu: AMD EPYC",
                    "training_device": "cpu: AMD EPYC",
                    "precision": "float32",
                    "training_code": "ab12ab12ab12",
                }
            )
    return pd.DataFrame(rows)


def architectures_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """architectures.csv for a metrics table, as flowerlab collect summarises it."""
    from flowerlab.evaluation import summaries

    runs = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
            for row in metrics.to_dict("records")]
    return pd.DataFrame(summaries.architecture_rows(runs), columns=list(summaries.ARCHITECTURE_COLUMNS))


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


def histories(epochs: dict[str, int], seeds: tuple[int, ...] = (1,)) -> pd.DataFrame:
    """Every run's history in one long table, as results.load_histories returns it."""
    return pd.concat([history(count).assign(arch=arch, replicate=f"seed-{seed}", val_accuracy=lambda f, s=seed:
                                            f["val_accuracy"] - 0.01 * s)
                      for arch, count in epochs.items() for seed in seeds], ignore_index=True)


def evaluation(matrix: list[list[int]]) -> dict:
    matrix = np.asarray(matrix)
    return {
        "classes": ["daisy", "roses", "tulips"],
        "confusion_matrix": matrix.tolist(),
        "accuracy": float(np.trace(matrix) / matrix.sum()),
    }


def scatter_points(ax) -> int:
    from matplotlib.collections import PathCollection

    return sum(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection))


# ------------------------------------------------------------------------------------------
# Figure functions
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seeds", [(1,), (1, 2, 3)])
@pytest.mark.parametrize("archs", [["convnet"], ["dense", "convnet", "squeezenet"]])
def test_comparison_figures_draw_every_run_and_each_architectures_mean(archs: list[str], seeds) -> None:
    metrics = metrics_table(archs, seeds)
    architectures = architectures_table(metrics)
    with_course = int(architectures["course_val_accuracy"].notna().sum())
    for function in (figures.accuracy_vs_parameters, figures.accuracy_vs_training_time):
        figure = function(metrics, architectures)
        ax = figure.axes[0]
        assert [text.get_text() for text in ax.texts] == archs  # one label per architecture, at its mean
        assert ax.get_xscale() == "log"
        # a dot per run, a hollow course marker per architecture the course trained
        assert scatter_points(ax) == len(metrics) + with_course
        means = [line for line in ax.lines if line.get_marker() == "s"]
        assert len(means) == len(archs)
    figure = figures.throughput(metrics)
    training, inference = figure.axes[:2]
    assert [t.get_text() for t in training.get_yticklabels()] == archs
    assert len(training.patches) == len(inference.patches) == len(archs)
    assert scatter_points(training) == len(metrics)
    assert "AMD EPYC" in training.get_title() and "batch 64" in inference.get_title()


@pytest.mark.parametrize("seeds", [(1,), (1, 2, 3)])
def test_accuracy_intervals_show_each_run_with_its_wilson_interval_and_the_mean(seeds) -> None:
    metrics = metrics_table(["dense", "convnet"], seeds)
    architectures = architectures_table(metrics)
    figure = figures.accuracy_intervals(metrics, architectures)
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["dense", "convnet"]
    run_markers = [line for line in ax.lines if line.get_marker() == "o"]
    assert len(run_markers) == len(metrics)
    # the wide band of the t-interval only where there are replicates
    bands = [line for line in ax.lines if line.get_linewidth() == 5]
    assert len(bands) == (2 if len(seeds) > 1 else 0)
    assert scatter_points(ax) == 1  # the course's convnet
    assert f"{len(seeds)} run" in ax.get_title()


def test_probability_of_improvement_is_a_heatmap_of_every_pair() -> None:
    from flowerlab.evaluation import summaries

    metrics = metrics_table(["dense", "convnet", "squeezenet"], (1, 2, 3))
    comparisons = pd.DataFrame(summaries.comparison_rows(metrics.to_dict("records"), []))
    figure = figures.probability_of_improvement(comparisons, ["dense", "convnet", "squeezenet"])
    ax = figure.axes[0]
    values = [t.get_text() for t in ax.texts]
    assert values.count("1.00") == 3 and values.count("0.00") == 3  # accuracy rises with the architecture
    one_seed = pd.DataFrame(summaries.comparison_rows(metrics_table(["dense", "convnet"]).to_dict("records"), []))
    with pytest.raises(DataError, match="at least two runs"):
        figures.probability_of_improvement(one_seed, ["dense", "convnet"])


def test_throughput_marks_a_missing_measurement_instead_of_failing() -> None:
    metrics = metrics_table(["dense", "convnet"])
    metrics.loc[0, "train_images_per_s"] = np.nan
    texts = [t.get_text() for t in figures.throughput(metrics).axes[0].texts]
    assert " not measured" in texts


def test_learning_curves_one_column_per_architecture_with_a_band_across_runs() -> None:
    from matplotlib.collections import PolyCollection

    table = pd.DataFrame({"arch": ["dense", "convnet"], "course_val_accuracy": [None, 0.704]})
    figure = figures.learning_curves(histories({"dense": 3, "convnet": 5}, seeds=(1, 2, 3)), table)
    assert len(figure.axes) == 4
    assert [ax.get_title() for ax in figure.axes[:2]] == ["dense (3 runs)", "convnet (3 runs)"]
    assert len(figure.axes[1].lines) == 3  # train, validation (means), the course's accuracy for convnet
    # on synthetic photos the table has no course figure, and the curves none either
    convnet = histories({"convnet": 5}, seeds=(1, 2, 3))
    with_course = len(figures.learning_curves(convnet, table).axes[0].lines)
    synthetic = figures.learning_curves(convnet, table.assign(course_val_accuracy=None))
    assert len(synthetic.axes[0].lines) == with_course - 1  # no course line
    assert sum(isinstance(c, PolyCollection) for c in figure.axes[0].collections) == 2  # the two bands
    single = figures.learning_curves(histories({"dense": 1}))
    assert len(single.axes) == 2 and single.axes[0].get_title() == "dense (1 run)"
    with pytest.raises(DataError, match="lack the column"):
        figures.learning_curves(histories({"dense": 2}).drop(columns=["val_loss"]))


def test_confusion_matrices_are_row_normalised_with_class_names_and_runs_pooled() -> None:
    matrix = [[2, 1, 0], [0, 3, 0], [0, 0, 0]]  # tulips absent: a row of zeros, not NaN
    np.testing.assert_allclose(
        figures.row_normalised(np.array(matrix)), [[2 / 3, 1 / 3, 0], [0, 1, 0], [0, 0, 0]]
    )
    figure = figures.confusion_matrices(
        {("convnet", "seed-1"): evaluation(matrix), ("dense", "seed-1"): evaluation(np.eye(3, dtype=int))}
    )
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["daisy", "roses", "tulips"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["daisy", "roses", "tulips"]
    assert [t.get_text() for t in ax.texts][:3] == ["67", "33", "0"]
    assert "convnet: 83.3% correct" in ax.get_title()
    pooled = figures.confusion_matrices({("convnet", "seed-1"): evaluation(matrix),
                                         ("convnet", "seed-2"): evaluation([[3, 0, 0], [0, 3, 0], [0, 0, 0]])})
    assert len([a for a in pooled.axes if a.get_visible()]) == 1
    assert "convnet: 91.7% correct, 2 runs pooled" in pooled.axes[0].get_title()  # (5 + 6) of 12


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
    for nothing_skipped in ({}, {"zero_bytes": 0, "not_an_image": 0}):  # inventory.json lists every reason
        figure = photo_figures.data_overview(manifest, {"files_found": 9, "kept": 9, "skipped_by_reason": nothing_skipped})
        assert "no file skipped" in [t.get_text() for t in figure.axes[1].texts]


def test_save_figure_writes_png_svg_and_the_caption_atomically(tmp_path: Path) -> None:
    metrics = metrics_table(["convnet"])
    figure = figures.accuracy_vs_parameters(metrics, architectures_table(metrics))
    paths = plotting.save_figure(figure, "accuracy_vs_parameters", "A  caption\non two lines.", tmp_path)
    assert paths["png"].read_bytes().startswith(PNG_SIGNATURE)
    assert b"<svg" in paths["svg"].read_bytes()[:500]
    plotting.save_figure(
        figures.learning_curves(histories({"convnet": 2})), "learning_curves", "Curves.", tmp_path
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


def test_every_figure_of_the_table_has_its_drawing_function() -> None:
    from flowerlab.reporting import drawing

    for name in captions.FIGURES:
        assert callable(drawing.drawing_function(name)), name
    with pytest.raises(KeyError, match="unknown figure"):
        drawing.drawing_function("pie_chart")


def test_every_figure_has_a_one_line_caption_naming_the_devices() -> None:
    metrics = metrics_table(["convnet"])
    for name in captions.FIGURES:
        caption = captions.figure_caption(name, metrics, gallery_arch="convnet")
        assert caption and "\n" not in caption
    assert "AMD EPYC" in captions.figure_caption("throughput", metrics)


def test_study_time_draws_every_job_and_stage_with_the_total(tmp_path: Path) -> None:
    from flowerlab.reporting import timings

    seconds = fake_study.write_benchmarks(tmp_path / "benchmarks", ["dense", "convnet"], seeds=(1, 2))
    jobs = timings.read_study_jobs(tmp_path / "benchmarks", fake_study.runs_of(["dense", "convnet"], (1, 2)))
    figure = time_figures.study_time(jobs)
    per_job, per_stage, scale = figure.axes
    assert [tick.get_text() for tick in per_job.get_yticklabels()] == [job.label for job in jobs]
    assert len(per_job.patches) == len(seconds) == 10
    assert sorted(round(bar.get_width(), 3) for bar in per_job.patches) == sorted(seconds.values())
    assert [tick.get_text() for tick in per_stage.get_yticklabels()] == [
        "make_inventory", "make_tfrecords", "train_model", "evaluate_model"]
    total = sum(seconds.values())
    assert [tick.get_text() for tick in scale.get_yticklabels()] == ["sum of the jobs", "this run (span)",
                                                                    "critical path"]
    widths = [bar.get_width() for bar in scale.patches]
    assert widths[0] == pytest.approx(total) and widths[2] == pytest.approx(timings.critical_path_seconds(jobs))
    assert widths[2] < widths[0]  # four independent runs: the critical path holds one of them
    assert tables.format_seconds(total) in figure.get_suptitle()
    assert tables.format_seconds(total) in captions.figure_caption("study_time", study_seconds=total)
    with pytest.raises(DataError, match="no job"):
        time_figures.study_time([])


def test_forget_figure_removes_a_stale_optional_figure(tmp_path: Path) -> None:
    figure, _ = plotting.new_figure()
    plotting.save_figure(figure, "study_time", "kept", tmp_path)
    plotting.save_figure(figure, "probability_of_improvement", "stale", tmp_path)
    captions.forget_figure(tmp_path, "probability_of_improvement")
    assert list(json.loads((tmp_path / "captions.json").read_text())) == ["study_time"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["captions.json", "study_time.png", "study_time.svg"]
    captions.forget_figure(tmp_path, "probability_of_improvement")  # nothing left to remove: no error


def test_figures_refuse_an_empty_study() -> None:
    with pytest.raises(DataError, match="no architecture"):
        figures.accuracy_vs_parameters(
            metrics_table([]).reindex(columns=["arch", "val_accuracy", "parameters"]),
            architectures_table(metrics_table(["dense"])),
        )
    with pytest.raises(DataError, match="no training history"):
        figures.learning_curves(pd.DataFrame())


# ------------------------------------------------------------------------------------------
# Summary table and formatting
# ------------------------------------------------------------------------------------------


def test_summary_tables_format_figures_for_readers() -> None:
    architectures = architectures_table(metrics_table(["dense", "convnet"], (1, 2, 3)))
    accuracy = tables.accuracy_table(architectures)
    assert list(accuracy.columns) == [
        "architecture",
        "runs",
        "validation accuracy (95% CI)",
        "macro-F1 (95% CI)",
        "course's accuracy",
        "course's figure against ours",
        "P(run beats course)",
    ]
    convnet = accuracy.iloc[1]
    # 0.65, 0.66, 0.67: mean 66.0%, t-interval 66 +- 4.303 x 0.01 / sqrt(3) x sqrt(3) = 63.5-68.5
    assert convnet["validation accuracy (95% CI)"] == "66.0% (63.5–68.5%)"
    assert convnet["course's accuracy"] == "70.4%" and convnet["course's figure against ours"] == "above"
    assert convnet["P(run beats course)"] == "0.00" and convnet["runs"] == "3"
    assert accuracy.iloc[0]["course's accuracy"] == "–" and accuracy.iloc[0]["P(run beats course)"] == "–"
    cost = tables.cost_table(architectures)
    assert list(cost.columns) == [
        "architecture",
        "parameters",
        "GFLOPs / image",
        "epochs",
        "training images/s",
        "training time per run",
        "inference images/s",
        "device",
    ]  # one device column: training and inference agree
    assert cost.iloc[1]["parameters"] == "100k" and cost.iloc[1]["training time per run"] == "10.0 min"
    different = architectures_table(metrics_table(["dense"]).assign(training_device="gpu: NVIDIA H100"))
    assert "device (training)" in tables.cost_table(different).columns
    assert tables.interval_kinds(architectures) == ["across runs"]


def test_one_run_shows_its_wilson_interval_in_the_summary() -> None:
    """With one seed there is no interval across runs, but the run's own (its photos' sampling) is
    shown, and the note under the table says which interval it is."""
    runs = metrics_table(["convnet"])
    architectures = architectures_table(runs)
    assert tables.accuracy_table(architectures).iloc[0]["validation accuracy (95% CI)"] == "60.0%"  # no metrics given
    shown = tables.accuracy_table(architectures, runs).iloc[0]["validation accuracy (95% CI)"]
    assert shown == "60.0% (53.1–66.5%)"  # 120 of 200 photos: the Wilson interval of runs_table below
    assert tables.interval_kinds(architectures) == ["one run"]
    assert "Wilson" in tables.INTERVAL_NOTES["one run"]


def test_runs_and_mcnemar_tables_for_readers() -> None:
    runs = tables.runs_table(metrics_table(["convnet"], (1, 2)))
    assert list(runs["replicate"]) == ["seed-1", "seed-2"]
    assert runs.iloc[0]["validation accuracy (95% Wilson CI)"] == "60.0% (53.1–66.5%)"  # 120 of 200 photos
    mcnemar = pd.DataFrame([{"arch_a": "dense", "arch_b": "convnet", "replicate": "seed-1", "a_accuracy": 0.5,
                             "b_accuracy": 0.7, "a_only": 2, "b_only": 12, "p_value": 0.0129, "p_value_holm": 0.0387}])
    row = tables.mcnemar_table(mcnemar).iloc[0]
    assert (row["only A right"], row["only B right"], row["p (Holm)"]) == (2, 12, "0.0387")


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
    # A folder where the workflow is deployed as a module holds only workflow/Snakefile.
    deployed = tmp_path / "deployed"
    (deployed / "workflow").mkdir(parents=True)
    (deployed / "workflow" / "Snakefile").write_text("use rule * from flowerlab\n")
    assert results.find_repo_root(deployed / "workflow") == deployed
    assert results.find_repo_root(deployed / "results" / "report") == deployed


# ------------------------------------------------------------------------------------------
# The notebook on a fake study, and the landing page
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_architectures(two_architecture_report: Path) -> Path:
    return two_architecture_report


@pytest.fixture(scope="module")
def one_seed(one_seed_report: Path) -> Path:
    return one_seed_report


def expected_figures(replicated: bool) -> list[str]:
    """Every figure of a replicated study; one without replicates lacks the optional ones."""
    return [name for name in captions.FIGURES if replicated or name not in captions.OPTIONAL_FIGURES]


def assert_every_figure_written(figures_dir: Path, expected: list[str]) -> None:
    captions = json.loads((figures_dir / "captions.json").read_text())
    assert list(captions) == expected
    for name in expected:
        png, svg = figures_dir / f"{name}.png", figures_dir / f"{name}.svg"
        assert png.read_bytes().startswith(PNG_SIGNATURE), png
        assert svg.stat().st_size > 1000 and b"<svg" in svg.read_bytes()[:500], svg
        assert captions[name]["caption"]


@pytest.mark.slow
@pytest.mark.parametrize("study", ["two_architectures", "one_seed"])
def test_notebook_executes_and_writes_every_figure(study: str, request: pytest.FixtureRequest) -> None:
    index = request.getfixturevalue(study)
    results = index.parent.parent
    expected = expected_figures(replicated=study == "two_architectures")
    assert_every_figure_written(results / "figures", expected)
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
def test_report_shows_the_studys_wall_time_and_nothing_from_bench(
    two_architectures: Path, one_seed: Path
) -> None:
    from flowerlab.reporting import timings

    shown = {}
    for name, index in (("two", two_architectures), ("one", one_seed)):
        results = index.parent.parent
        html = (results / "report" / "report.html").read_text()
        assert "<h2" in html and "Time" in html and "benchmark run" not in html
        shown[name] = notebook_outputs(results / "report" / "report.ipynb")
        runs = [tuple(line.split(",")[:2]) for line in (results / "metrics.csv").read_text().splitlines()[1:]]
        jobs = timings.read_study_jobs(results.parent / "benchmarks", runs)
        assert tables.format_seconds(timings.total_seconds(jobs)) in shown[name]
        assert "total (sum of the jobs)" in shown[name] and "critical path" in shown[name]
        assert f"train_model {runs[0][0]}/{runs[0][1]}" in shown[name]


@pytest.mark.slow
def test_report_shows_the_statistics_with_replicates_and_says_what_one_seed_lacks(
    two_architectures: Path, one_seed: Path
) -> None:
    replicated = notebook_outputs(two_architectures.parent / "report.ipynb")
    single = notebook_outputs(one_seed.parent / "report.ipynb")
    assert "validation accuracy (95% CI)" in replicated and "validation accuracy (95% CI)" in single
    assert "train_images_per_s" not in replicated and "training images/s" in replicated  # tables for readers
    assert "only A right" in replicated and "p (Holm)" in replicated  # McNemar, per seed
    assert replicated.count("seed-3") >= 2  # the runs table and the McNemar table
    assert "needs two architectures with at least two runs each" in single
    assert "only A right" in single  # one seed still pairs the two runs on the same photos
    page = html.unescape(one_seed.read_text())
    assert "one run each, so the intervals are each run's photos' sampling alone" in page
    assert "that run's 95% Wilson interval" in page
    assert "each trained 3 times" in two_architectures.read_text()


@pytest.mark.slow
def test_landing_page_resolves_every_image_and_link(two_architectures: Path) -> None:
    assert report_checks.broken_references(two_architectures) == []
    found = report_checks.references(two_architectures)
    assert len(found.images) == len(captions.FIGURES)
    assert all(src.startswith("data:image/png;base64,") for src in found.images)
    assert {"report.html", "../metrics.csv", "../architectures.csv"} <= set(found.links)
    page = two_architectures.read_text()
    for text in (
        "dense",
        "convnet",
        "70.4%",
        "snakemake --report",
        "Training recipes",
        "image size",
        "0.001, constant",  # the learning rate with its schedule, no unused schedule keys
        "split seed",
        "1, 2, 3",  # the seeds of each architecture
        "0123456789ab",
        "tensorflow",
    ):
        assert text in page, text
    assert "lr start" not in page and "rampup" not in page
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
        "--architectures",
        str(results / "architectures.csv"),
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
            architectures=results / "architectures.csv",
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
                "--architectures",
                str(results / "architectures.csv"),
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
    return publish_parts(text, writer="html", settings_overrides={"halt_level": 2, "report_level": 5})[
        "body"
    ]


def test_snakemake_report_captions_render_as_snakemake_renders_them(repo_root: Path) -> None:
    import types

    import yaml

    from flowerlab.config import prepare_config

    # what the workflow hands Snakemake: config.yaml with the schema's defaults (common.smk)
    config = prepare_config(yaml.safe_load((repo_root / "config" / "config.yaml").read_text()))
    folder = repo_root / "workflow" / "report"
    for name in ("metrics", "architectures", "report_notebook", "landing_page"):
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


def assert_exports_every_figure(html: str) -> None:
    """The report notebook's HTML export: code folded under toggles, every figure embedded."""
    assert "<details" in html and html.count("data:image/png;base64") >= len(captions.FIGURES)


# In a fresh interpreter, before nbconvert is imported (it reads the Jupyter data paths then): no
# data path holds nbconvert's templates, as in a virtual environment that sees a base Python's
# nbconvert; then the export.
EXPORT_WITHOUT_JUPYTER_PATHS = """
import site, sys
from pathlib import Path
from jupyter_core import paths
empty = Path(sys.argv[1])
paths.ENV_JUPYTER_PATH[:] = [str(empty / "env")]
paths.SYSTEM_JUPYTER_PATH[:] = [str(empty / "system")]
site.ENABLE_USER_SITE = False
assert not any((Path(folder) / "lab").is_dir() for folder in paths.jupyter_path("nbconvert", "templates"))
from flowerlab.reporting import render
render.export_html(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
"""


@pytest.mark.slow
def test_export_finds_nbconvert_templates_outside_the_jupyter_data_paths(two_architectures: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    html_path = tmp_path / "report.html"
    environment = {key: value for key, value in os.environ.items() if not key.startswith("JUPYTER")}
    environment["JUPYTER_DATA_DIR"] = str(tmp_path / "jupyter" / "user")
    done = subprocess.run(
        [sys.executable, "-c", EXPORT_WITHOUT_JUPYTER_PATHS, str(tmp_path / "jupyter"),
         str(two_architectures.parent / "report.ipynb"), str(html_path), str(fake_study.HTML_TEMPLATE)],
        env=environment, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert_exports_every_figure(html_path.read_text())


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
    assert_exports_every_figure(html)
    assert not any(cdn in html for cdn in ("cdnjs.cloudflare.com", "unpkg.com", "cdn.jsdelivr.net"))


def test_study_time_rows_give_each_job_the_total_the_span_and_the_course_subtotal() -> None:
    from flowerlab.reporting.timings import Job

    def job(rule: str, wildcards: str, seconds: float, ended: float) -> Job:
        return Job(rule, wildcards, seconds, max_rss_mb=100.0, cpu_seconds=seconds, repeats=1,
                   file=f"{rule}/{wildcards}.tsv", ended=ended)

    jobs = [job("make_tfrecords", "", 4.0, 104.0)] + [
        job("train_model", f"{arch}/seed-1", 100.0, 204.0 + 100 * index)
        for index, arch in enumerate(["dense", "mobilenet_v2", "convnet", "squeezenet", "mobilenet_v2_finetune"])
    ]
    archs = ["dense", "mobilenet_v2", "convnet", "squeezenet", "mobilenet_v2_finetune"]
    rows = tables.study_time_rows(jobs, archs)
    assert [row["job"] for row in rows[:2]] == ["make_tfrecords", "train_model dense/seed-1"]
    assert rows[1]["max RSS (MB)"] == 100.0 and rows[1]["wall time"] == "100 s"
    summaries = {row["job"]: row["seconds"] for row in rows[len(jobs):]}
    assert summaries == {
        "total (sum of the jobs)": 504.0,
        "span (first start to last end)": 504.0,  # 100 -> 604
        "critical path (the longest chain of dependent jobs)": 104.0,  # the data, then one training
        "the course's four architectures (data, their training and evaluation)": 404.0,
    }
    # No subtotal when the study is the course's four alone, or lacks one of them.
    assert len(tables.study_time_rows(jobs[:5], archs[:4])) == 5 + 3
    assert len(tables.study_time_rows(jobs[:4], archs[:3])) == 4 + 3


@pytest.mark.parametrize(
    "hparams, text",
    [
        ({"learning_rate": 0.001, "schedule": "constant", "lr_min": 1e-5}, "0.001, constant"),
        ({"learning_rate": 0.001, "schedule": "cosine", "lr_min": 1e-5}, "cosine from 0.001 to 1e-05"),
        ({"learning_rate": 5e-5, "schedule": "ramp_decay", "lr_start": 1e-5, "lr_min": 1e-5, "rampup_epochs": 5,
          "decay": 0.8}, "ramp from 1e-05 to 5e-05 x replicas over 5 epochs, then x0.8 per epoch towards 1e-05"),
    ],
)
def test_recipes_say_the_learning_rate_with_only_its_schedule_settings(hparams: dict, text: str) -> None:
    """Training writes the schedule in words into its record; the landing page shows that."""
    hparams = {"epochs": 3, "batch_size": 8, "augment": False, **hparams}
    assert schedules.describe(hparams) == text
    cells = landing.recipe_cells("dense", {"hparams": hparams, "learning_rate_schedule": schedules.describe(hparams)})
    assert cells["learning rate"] == text
    assert "backbone weights" not in cells and "backbone features cached" not in cells


def test_recipes_name_the_backbone_weights_and_the_feature_cache_only_for_a_frozen_backbone() -> None:
    local = {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3, "weights": "/data/w/mobilenet_no_top.h5",
             "cache_features": True}
    frozen = landing.recipe_cells("mobilenet_v2", {"hparams": local})
    assert frozen["backbone weights"] == "local file mobilenet_no_top.h5"
    assert frozen["backbone features cached"] == "yes"
    finetuned = landing.recipe_cells("mobilenet_v2_finetune", {"hparams": {**local, "weights": "imagenet"}})
    assert frozen["learning rate"] == "0.001 (constant)"  # a record from before the words
    assert finetuned["backbone weights"] == "imagenet" and "backbone features cached" not in finetuned


def test_data_settings_explain_themselves() -> None:
    manifest = {"data_source": "official", "classes": ["daisy", "roses"],
                "settings": {"seed": 35155, "validation_fraction": 0.19, "shards": 16},
                "splits": {"train": {"records": 3001}, "validation": {"records": 665}}}
    settings = dict(landing.data_settings(manifest))
    assert settings["split seed"] == "35155 (the course's): which photos go to validation"
    assert settings["held out for validation"] == "19% of each class"
    assert settings["train images"] == "3,001"


@pytest.mark.parametrize(
    "low, high, candidates, expected",
    [
        (12, 200, None, [20.0, 50.0, 100.0, 200.0]),  # 1-2-5 within the range, no 3x10^1
        (0.5, 60_000, None, [1.0, 10.0, 100.0, 1000.0, 10_000.0]),  # many decades: the decades alone
        (15, 150, plotting.NICE_SECONDS, [20, 30, 60, 120]),
    ],
)
def test_log_ticks_are_few_and_round(low: float, high: float, candidates: Any, expected: list[float]) -> None:
    ticks = plotting.log_ticks(low, high, candidates)
    assert ticks == expected
    assert [plotting.seconds_label(s) for s in (30, 120, 7200)] == ["30 s", "2 min", "2 h"]


def test_accuracy_figure_labels_do_not_overlap_and_the_legend_is_off_the_axes() -> None:
    """Three architectures at the same size and accuracy: their labels stack instead of printing
    over each other, the legend sits outside the axes, and no tick label is in scientific notation."""
    runs = metrics_table(["dense", "convnet", "squeezenet"]).assign(parameters=5000.0, val_accuracy=0.6)
    architectures = architectures_table(runs)
    figure = figures.accuracy_vs_parameters(runs, architectures)
    figure.canvas.draw()
    ax = figure.axes[0]
    boxes = [text.get_window_extent() for text in ax.texts]
    assert len(boxes) == 3
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert ax.get_legend() is None and figure.legends  # the figure's legend, not the axes'
    assert figure.legends[0].get_window_extent().y1 <= ax.get_window_extent().y0
    labels = [tick.get_text() for tick in ax.get_xticklabels() if tick.get_text()]
    assert labels and not any("times" in label or "^" in label or "×" in label for label in labels), labels


@pytest.mark.slow
def test_the_executed_notebook_shows_no_stderr(two_architectures: Path, one_seed: Path) -> None:
    """Nothing in a pink stderr block: no TensorFlow start-up notice, INFO log or stray warning
    (flowerlab.startup_noise; a warning that a reader should see is said in the notebook's text)."""
    for page in (two_architectures, one_seed):
        cells = json.loads((page.parent / "report.ipynb").read_text())["cells"]
        stderr = ["".join(output.get("text", "")) for cell in cells for output in cell.get("outputs", [])
                  if output.get("name") == "stderr"]
        assert stderr == [], stderr


def test_learning_curves_of_one_epoch_have_whole_epoch_ticks() -> None:
    """A one-epoch study (a quick real-data check) draws one point per curve at epoch 1, with
    the ticks on whole epochs, not 0.96, 0.98, ..."""
    history = pd.DataFrame([{"arch": "dense", "replicate": "seed-1", "epoch": 1, "accuracy": 0.4,
                             "val_accuracy": 0.35, "loss": 1.4, "val_loss": 1.5}])
    figure = figures.learning_curves(history)
    figure.canvas.draw()
    ticks = [tick for tick in figure.axes[0].get_xticks() if figure.axes[0].get_xlim()[0] <= tick
             <= figure.axes[0].get_xlim()[1]]
    assert ticks == [1.0]
