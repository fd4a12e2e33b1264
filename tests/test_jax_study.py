"""The smoke study on Keras' JAX backend, data-parallel over the CPU split into 4 devices, end to end:
the same TFRecords, evaluation, report; its accuracies against the TensorFlow backend's smoke study."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import scipy.stats
import yaml
from workflow_runs import SMOKE, copy_workflow, snakemake

DEVICES = 4
FOUR_DEVICES = {"XLA_FLAGS": f"--xla_force_host_platform_device_count={DEVICES}"}


def metrics_by_run(workdir: Path) -> dict[tuple[str, str], dict[str, str]]:
    with open(workdir / "results" / "metrics.csv", newline="") as handle:
        return {(row["arch"], row["replicate"]): row for row in csv.DictReader(handle)}


def reuse_the_data_stage(study: Path, workdir: Path) -> None:
    """The TensorFlow study's photos, TFRecords and machine probes, with their Snakemake benchmark files
    (outputs Snakemake counts as made): the JAX study trains on the very same records, and its run
    starts at the trainings."""
    shutil.copytree(study / "resources", workdir / "resources")
    shutil.copytree(study / "results" / "data", workdir / "results" / "data")
    (workdir / "benchmarks").mkdir()
    for benchmark in (study / "benchmarks").glob("make_*.tsv"):
        shutil.copy2(benchmark, workdir / "benchmarks" / benchmark.name)


def per_device_batches(workdir: Path) -> str:
    """--config value giving each device a quarter of the smoke study's batch: the same global batch,
    so the same steps, as the TensorFlow study on one device."""
    models = yaml.safe_load((workdir / "config" / "smoke.yaml").read_text())["models"]
    per_device = {arch: {"batch_size": hparams["batch_size"] // DEVICES} for arch, hparams in models.items()}
    return "models=" + json.dumps(per_device)


@pytest.mark.slow
def test_the_smoke_study_on_jax_over_four_devices_runs_end_to_end_as_accurate_as_on_tensorflow(
        smoke_study: Path, tmp_path: Path) -> None:
    workdir = copy_workflow(tmp_path / "jax", with_source=True)
    reuse_the_data_stage(smoke_study, workdir)
    result = snakemake(workdir, "--cores", "2", *SMOKE, "--config", "backend=jax", per_device_batches(workdir),
                       environment=FOUR_DEVICES)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    assert (workdir / "results" / "report" / "index.html").stat().st_size > 0
    assert "make_tfrecords" not in result.stdout + result.stderr  # the same records, not written anew

    on_jax, on_tensorflow = metrics_by_run(workdir), metrics_by_run(smoke_study)
    assert set(on_jax) == set(on_tensorflow)
    for arch, replicate in on_jax:
        record = json.loads((workdir / "results" / "models" / arch / replicate / "training.json").read_text())
        reference = json.loads((smoke_study / "results" / "models" / arch / replicate / "training.json").read_text())
        assert record["backend"]["name"] == "jax" and record["kernels"]["library"] == "XLA"
        assert record["device"]["replicas"] == DEVICES and record["device"]["distribution"] == "DataParallel"
        assert record["global_batch_size"] == reference["global_batch_size"]
        assert record["parameters"] == reference["parameters"]
        assert on_jax[arch, replicate]["backend"].startswith("jax ")
        assert on_tensorflow[arch, replicate]["backend"].startswith("tensorflow ")

    # Within the spread: per architecture, the JAX runs' right answers (pooled over the seeds) against the
    # TensorFlow runs', by Fisher's exact test; a p-value under 0.01 would say the backends train to
    # different accuracies. The runs differ by their random numbers (JAX draws its own from the same
    # seed) and JAX's whole batches leave 4 of 68 images out of each epoch, so equal accuracies are not
    # expected, only accuracies that 2 seeds x 18 validation photos cannot tell apart.
    for arch in sorted({arch for arch, _ in on_jax}):
        counts = [right_and_wrong([row for (name, _), row in runs.items() if name == arch])
                  for runs in (on_tensorflow, on_jax)]
        p_value = scipy.stats.fisher_exact(counts).pvalue
        assert p_value >= 0.01, (arch, "tensorflow, jax [right, wrong]:", counts, p_value)


def right_and_wrong(rows: list[dict[str, str]]) -> list[int]:
    right = sum(round(float(row["val_accuracy"]) * int(row["validation_images"])) for row in rows)
    return [right, sum(int(row["validation_images"]) for row in rows) - right]
