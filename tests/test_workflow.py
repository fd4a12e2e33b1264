"""End to end: the whole workflow on synthetic data, reruns only what is stale.

One smoke study (config/smoke.yaml: 3 classes, 64 px, three small architectures, two seeds each;
the `smoke_study` fixture of conftest.py) runs once per session in a copy of the workflow; the tests then ask Snakemake (dry runs) what a change would
rerun. Real-data tests build the data stage from the real photos.
"""

from __future__ import annotations

import contextlib
import csv
import html
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from chromium_page import assert_page_loads_in_the_browser, screenshot
from workflow_runs import SMOKE, copy_workflow, planned_jobs, planned_outputs, snakemake

pytestmark = pytest.mark.slow


def test_smoke_study_builds_every_stage(smoke_study):
    results = smoke_study / "results"
    rows = list(csv.DictReader((results / "data" / "inventory.csv").read_text(encoding="utf-8").splitlines()))
    summary = json.loads((results / "data" / "inventory.json").read_text())
    assert summary["files_found"] == len(rows) == summary["kept"] + summary["skipped"]
    manifest = json.loads((results / "data" / "manifest.json").read_text())
    assert len(manifest["shards"]) == 4
    assert sum(s["records"] for s in manifest["shards"]) == summary["kept"]
    for arch in ("dense", "convnet", "squeezenet"):
        for seed in (1, 2):
            run = f"{arch}/seed-{seed}"
            for name in ("model.keras", "history.csv", "training.json"):
                assert (results / "models" / run / name).stat().st_size > 0
            assert json.loads((results / "models" / run / "training.json").read_text())["seed"] == seed
            assert (results / "evaluation" / run / "metrics.json").is_file()
    metrics = list(csv.DictReader((results / "metrics.csv").read_text(encoding="utf-8").splitlines()))
    assert [(row["arch"], row["replicate"]) for row in metrics] == [
        (arch, f"seed-{seed}") for arch in ("dense", "convnet", "squeezenet") for seed in (1, 2)]
    architectures = list(csv.DictReader((results / "architectures.csv").read_text(encoding="utf-8").splitlines()))
    assert [(row["arch"], row["runs"]) for row in architectures] == [("dense", "2"), ("convnet", "2"),
                                                                     ("squeezenet", "2")]
    assert all(row["val_accuracy_ci_low"] and row["val_accuracy_sd"] for row in architectures)
    mcnemar = list(csv.DictReader((results / "mcnemar.csv").read_text(encoding="utf-8").splitlines()))
    assert len(mcnemar) == 3 * 2  # three pairs of architectures, on each of the two seeds' photos
    assert (results / "report" / "index.html").stat().st_size > 0
    # Generated photos say so everywhere, and are never compared with the course's flowers.
    assert manifest["data_source"] == "synthetic" and {row["data_source"] for row in metrics} == {"synthetic"}
    assert all(not row["course_val_accuracy"] and not row["course_placement"] for row in architectures)
    assert "SYNTHETIC PHOTOS" in (results / "report" / "index.html").read_text(encoding="utf-8")
    assert "SYNTHETIC PHOTOS" in (results / "report" / "report.html").read_text(encoding="utf-8")
    assert (results / "report" / "report.html").stat().st_size > 0
    assert list((results / "figures").glob("*.png")) and list((results / "figures").glob("*.svg"))
    assert list((smoke_study / "logs").rglob("*.log"))
    assert list((smoke_study / "benchmarks").rglob("*.tsv"))
    # The report's time figure is drawn from this run's benchmark files.
    captions = json.loads((results / "figures" / "captions.json").read_text())
    assert "study_time" in captions


def test_the_run_says_how_long_its_trainings_will_take_before_they_start(smoke_study):
    output = (smoke_study / "snakemake-run.log").read_text(encoding="utf-8")
    estimate = output.index("Estimated training time on this machine")
    assert estimate < output.index("Training dense seed-1 for 2 epochs")  # before the first training starts
    table = output[estimate:].split("all trainings, one after another:")[0]
    for arch in ("dense", "convnet", "squeezenet"):
        assert f"  {arch} " in table
    # measured once per machine, then read by later runs
    assert list((smoke_study / "resources" / "speed").glob("*squeezenet*.json"))
    # and every training recorded how near the machine's peak it ran
    record = json.loads((smoke_study / "results" / "models" / "convnet" / "seed-1" / "training.json").read_text())
    assert record["hardware_share"]["fraction_of_peak"] > 0 and record["kernels"]["library"] in ("oneDNN", "Eigen")
    metrics = list(csv.DictReader((smoke_study / "results" / "metrics.csv").read_text(encoding="utf-8").splitlines()))
    assert all(float(row["fraction_of_peak"]) > 0 and float(row["peak_gflops_per_s"]) > 0 for row in metrics)


@pytest.mark.browser
def test_the_smoke_studys_published_report_works_in_chromium(smoke_study, chromium, tmp_path, artifacts_dir):
    page = smoke_study / "results" / "report" / "index.html"
    seen = assert_page_loads_in_the_browser(chromium, page, tmp_path)
    from flowerlab.reporting.captions import FIGURES

    # every figure, each decoded with a non-zero size (the smoke study has replicates to compare)
    assert len(seen["images"]) == len(FIGURES)
    screenshot(chromium, page, artifacts_dir / "smoke-report.png", tmp_path / "profile-shot")


def test_snakemakes_own_report_is_built_without_cores(smoke_study):
    """With the command the landing page gives: this run's config files and overrides, so the
    report describes the study that ran, every file with its metadata."""
    landing = (smoke_study / "results" / "report" / "index.html").read_text(encoding="utf-8")
    command = html.unescape(re.search(r"<code>(snakemake --report [^<]*)</code>", landing).group(1))
    assert command.endswith("--configfile results/report/config.yaml")
    study = yaml.safe_load((smoke_study / "results" / "report" / "config.yaml").read_text(encoding="utf-8"))
    assert study["data_source"] == "synthetic" and study["seeds"] == [1, 2]  # the study that ran
    result = snakemake(smoke_study, *shlex.split(command)[1:])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Missing metadata" not in result.stdout + result.stderr
    page = (smoke_study / "results" / "report" / "snakemake.html").read_text(encoding="utf-8")
    assert "accuracy_vs_parameters.png" in page and "metrics.csv" in page
    assert "1. Comparison" in page and "3. Report" in page


def test_a_second_run_does_nothing(smoke_study):
    assert planned_jobs(smoke_study, *SMOKE) == {}
    result = snakemake(smoke_study, "--cores", "2", *SMOKE)
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_a_benchmark_run_does_not_rerun_the_report(smoke_study):
    bench = smoke_study / "results" / "bench"
    bench.mkdir(parents=True)
    try:
        (bench / "training.csv").write_text("arch,status\nconvnet,measured\n")
        assert planned_jobs(smoke_study, *SMOKE) == {}
    finally:
        shutil.rmtree(bench)


def test_changing_shards_reruns_the_tfrecords_and_what_depends_on_them(smoke_study):
    jobs = planned_jobs(smoke_study, *SMOKE, "--config", "data={shards: 5}")
    assert "make_inventory" not in jobs and "make_synthetic_photos" not in jobs
    assert jobs["make_tfrecords"] == 1
    assert jobs["train_model"] == 6 and jobs["evaluate_model"] == 6
    assert {"collect_metrics", "render_report", "publish_report"} <= set(jobs)


def test_changing_one_models_hyperparameter_reruns_that_model_and_the_report_only(smoke_study):
    jobs = planned_jobs(smoke_study, *SMOKE, "--config", "models={convnet: {epochs: 4}}")
    assert jobs == {
        "train_model": 2, "evaluate_model": 2, "collect_metrics": 1,
        "render_report": 1, "publish_report": 1, "write_study_config": 1,
    }
    result = snakemake(smoke_study, "-n", "--cores", "2", *SMOKE, "--config", "models={convnet: {epochs: 4}}")
    assert "results/models/convnet/seed-1/model.keras" in result.stdout + result.stderr
    assert "results/models/dense/seed-1/model.keras" not in result.stdout + result.stderr


def test_adding_a_seed_runs_only_that_seeds_jobs_and_the_tables(smoke_study):
    args = (*SMOKE, "--config", "seeds=[1, 2, 3]")
    assert planned_jobs(smoke_study, *args) == {
        "train_model": 3, "evaluate_model": 3, "collect_metrics": 1, "render_report": 1, "publish_report": 1, "write_study_config": 1,
    }
    models = {path for path in planned_outputs(smoke_study, *args) if path.endswith("model.keras")}
    assert models == {f"results/models/{arch}/seed-3/model.keras" for arch in ("dense", "convnet", "squeezenet")}


def test_removing_a_seed_reruns_only_the_tables_and_the_report(smoke_study):
    assert planned_jobs(smoke_study, *SMOKE, "--config", "seeds=[2]") == {
        "collect_metrics": 1, "render_report": 1, "publish_report": 1, "write_study_config": 1}
    # one model's own seeds: a third convnet, the others as they are
    assert planned_jobs(smoke_study, *SMOKE, "--config", "models={convnet: {seeds: [1, 2, 3]}}") == {
        "train_model": 1, "evaluate_model": 1, "collect_metrics": 1, "render_report": 1, "publish_report": 1, "write_study_config": 1}


def test_repeated_splits_make_their_own_tfrecords_for_every_replicate(smoke_study):
    args = (*SMOKE, "--config", "data={split_seeds: [5, 6]}", "seeds=[1]")
    assert planned_jobs(smoke_study, *args) == {
        "make_split_tfrecords": 2, "train_model": 6, "evaluate_model": 6, "collect_metrics": 1,
        "render_report": 1, "publish_report": 1, "write_study_config": 1}
    planned = planned_outputs(smoke_study, *args)
    assert {"results/data/split-5/manifest.json", "results/data/split-6/manifest.json",
            "results/models/dense/split-5-seed-1/model.keras"} <= planned


def test_editing_the_report_notebook_reruns_only_the_report(smoke_study):
    notebook = smoke_study / "workflow" / "notebooks" / "report.ipynb"
    original = notebook.read_bytes()
    try:
        edited = json.loads(original)
        edited["cells"].append({"cell_type": "markdown", "metadata": {}, "source": ["A new remark."]})
        notebook.write_text(json.dumps(edited, indent=1))
        assert planned_jobs(smoke_study, *SMOKE) == {"render_report": 1, "publish_report": 1}
    finally:
        notebook.write_bytes(original)


def validation_predictions(study: Path, arch: str, rows: int = 6) -> list[dict]:
    lines = (study / "results" / "evaluation" / arch / "seed-1" / "predictions.csv").read_text(
        encoding="utf-8").splitlines()
    return list(csv.DictReader(lines))[:rows]


def test_predict_on_a_validation_photo_gives_the_evaluations_prediction(smoke_study):
    photos = smoke_study / "resources" / "synthetic_photos"
    for arch in ("dense", "convnet", "squeezenet"):
        expected = validation_predictions(smoke_study, arch)
        out = smoke_study / f"predict-{arch}.json"
        result = subprocess.run(
            ["flowerlab", "predict", "--model", str(smoke_study / "results" / "models" / arch / "seed-1" / "model.keras"),
             "--top-k", "3", "--format", "json", "--out", str(out), *(str(photos / row["source"]) for row in expected)],
            capture_output=True, text=True, check=False, env={**os.environ, "PYTHONPATH": str(smoke_study / "src")})
        assert result.returncode == 0, result.stderr[-3000:]
        for row, predicted in zip(expected, json.loads(out.read_text()), strict=True):
            assert predicted["error"] is None and predicted["top"][0]["class"] == row["predicted_class"], arch
            for entry in predicted["top"]:
                assert entry["probability"] == pytest.approx(float(row[f"prob_{entry['class']}"]), abs=2e-6), arch


def test_published_models_open_without_flowerlab_and_predict_as_evaluated(smoke_study, tmp_path):
    from portable import predict_without_flowerlab

    from flowerlab.data.images import prepare_photo
    from flowerlab.data.pipeline import decode_photos

    photos = smoke_study / "resources" / "synthetic_photos"
    models, images, expected = {}, {}, {}
    for arch in ("dense", "convnet", "squeezenet"):
        rows = validation_predictions(smoke_study, arch)
        models[arch] = smoke_study / "results" / "models" / arch / "seed-1" / "model.keras"
        jpegs = [prepare_photo(photos / row["source"], 64, 95) for row in rows]
        images[arch] = decode_photos(jpegs, image_size=64, target_size=None).numpy()
        classes = [name[len("prob_"):] for name in rows[0] if name.startswith("prob_")]
        expected[arch] = [[float(row[f"prob_{c}"]) for c in classes] for row in rows]
    loaded = predict_without_flowerlab(models, images, tmp_path)
    for arch, probabilities in expected.items():
        np.testing.assert_allclose(loaded[arch], probabilities, atol=2e-6, err_msg=arch)


@contextlib.contextmanager
def edited(path: Path, edit):
    """`path` rewritten by `edit(text)` for the duration of the block."""
    original = path.read_text(encoding="utf-8")
    try:
        path.write_text(edit(original), encoding="utf-8")
        yield
    finally:
        path.write_text(original, encoding="utf-8")


def test_editing_one_models_code_reruns_that_model_and_the_report_only(smoke_study):
    convnet = smoke_study / "src" / "flowerlab" / "models" / "convnet.py"
    with edited(convnet, lambda text: text + "\nKERNEL_NOTE = 'a change to what the module does'\n"):
        assert planned_jobs(smoke_study, *SMOKE) == {
            "train_model": 2, "evaluate_model": 2, "collect_metrics": 1, "render_report": 1, "publish_report": 1,
        }
        result = snakemake(smoke_study, "-n", "--cores", "2", *SMOKE)
        assert "results/models/convnet/seed-1/model.keras" in result.stdout
        assert "results/models/dense/seed-1/model.keras" not in result.stdout
        assert "results/models/squeezenet/seed-1/model.keras" not in result.stdout
        # The reason names the part of the code that changed, before and now.
        before, now = re.search(r"Params have changed.*?before: (.*?) now: (.*)", result.stdout).groups()
        changed = set(before.replace("'", " ").split()) ^ set(now.replace("'", " ").split())
        assert {part.split("=")[0] for part in changed} == {"flowerlab.models"}, changed


def test_editing_shared_training_code_reruns_every_training(smoke_study):
    schedules = smoke_study / "src" / "flowerlab" / "training" / "schedules.py"
    with edited(schedules, lambda text: text + "\nWARMUP_NOTE = 1\n"):
        jobs = planned_jobs(smoke_study, *SMOKE)
    assert jobs == {"train_model": 6, "evaluate_model": 6, "collect_metrics": 1, "render_report": 1,
                    "publish_report": 1}


def test_editing_the_reporting_code_reruns_only_the_report(smoke_study):
    figures = smoke_study / "src" / "flowerlab" / "reporting" / "figures.py"
    with edited(figures, lambda text: text + "\nPALETTE_NOTE = 1\n"):
        assert planned_jobs(smoke_study, *SMOKE) == {"render_report": 1, "publish_report": 1}


def test_comments_docstrings_and_layout_rerun_nothing(smoke_study):
    convnet = smoke_study / "src" / "flowerlab" / "models" / "convnet.py"

    def cosmetic(text: str) -> str:
        return text.replace('"""', '"""Reworded. ', 1) + "\n\n# a remark\n"

    with edited(convnet, cosmetic):
        assert planned_jobs(smoke_study, *SMOKE) == {}


@pytest.mark.real_data
def test_data_stage_on_the_real_photos(tmp_path, real_data_dir):
    workdir = copy_workflow(tmp_path)
    target = "results/data/manifest.json"
    result = snakemake(workdir, target, "--cores", "2", "--config", f"data_source={real_data_dir}")
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    summary = json.loads((workdir / "results" / "data" / "inventory.json").read_text())
    manifest = json.loads((workdir / "results" / "data" / "manifest.json").read_text())
    assert summary["files_found"] == 3671  # 3,670 photos and LICENSE.txt, as in the archive
    assert summary["kept"] == 3666  # less the roses/tulips photo and two same-class duplicates
    assert len(manifest["shards"]) == 16
    assert sum(s["records"] for s in manifest["shards"]) == summary["kept"]
    assert len(list((workdir / "results" / "data" / "tfrecords").glob("*.tfrec"))) == 16
    again = snakemake(workdir, target, "--cores", "2", "--config", f"data_source={real_data_dir}")
    assert "Nothing to be done" in again.stdout + again.stderr
