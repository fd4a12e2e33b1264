"""The smoke study on Keras' JAX backend, data-parallel over the CPU split into 4 devices, end to end:
the same TFRecords, evaluation, report; its accuracies against the TensorFlow backend's smoke study.
(Named to run last among the smoke study's tests: the JAX study runs in the background meanwhile.)"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import scipy.stats
from jax_study import DEVICES, finish_jax_smoke_study
from workflow_runs import SMOKE, planned_jobs


@pytest.fixture(scope="session")
def jax_smoke_study(smoke_study: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir, status, output = finish_jax_smoke_study(smoke_study, tmp_path_factory.mktemp("jax-smoke-late"))
    assert status == 0, output[-8000:]
    return workdir


def metrics_by_run(workdir: Path) -> dict[tuple[str, str], dict[str, str]]:
    with open(workdir / "results" / "metrics.csv", newline="") as handle:
        return {(row["arch"], row["replicate"]): row for row in csv.DictReader(handle)}


@pytest.mark.slow
def test_switching_the_backend_retrains_and_reevaluates_every_model_and_nothing_else(smoke_study: Path) -> None:
    jobs = planned_jobs(smoke_study, *SMOKE, "--config", "backend=jax")
    assert jobs["train_model"] == jobs["evaluate_model"] == 6 and "make_tfrecords" not in jobs, jobs


@pytest.mark.slow
def test_the_smoke_study_on_jax_over_four_devices_runs_end_to_end_as_accurate_as_on_tensorflow(
        smoke_study: Path, jax_smoke_study: Path) -> None:
    workdir = jax_smoke_study
    assert (workdir / "results" / "report" / "index.html").stat().st_size > 0
    # The same records: the TensorFlow study's, not written anew.
    manifest = Path("results") / "data" / "manifest.json"
    assert (workdir / manifest).stat().st_mtime_ns == (smoke_study / manifest).stat().st_mtime_ns

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
