"""The smoke study on Keras' JAX backend, data-parallel over the CPU split into 4 devices, started in
the background once the TensorFlow smoke study (conftest.smoke_study) has written its TFRecords,
and collected by tests/test_workflow_on_jax.py."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import yaml
from workflow_runs import SMOKE, copy_workflow, start_snakemake

DEVICES = 4
FOUR_DEVICES = {"XLA_FLAGS": f"--xla_force_host_platform_device_count={DEVICES}"}
_RUNNING: dict[str, tuple[Path, subprocess.Popen]] = {}


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


def start_jax_smoke_study(tensorflow_study: Path, folder: Path) -> None:
    workdir = copy_workflow(folder / "study", with_source=True)
    reuse_the_data_stage(tensorflow_study, workdir)
    process = start_snakemake(workdir, "--cores", "2", *SMOKE, "--config", "backend=jax", per_device_batches(workdir),
                              log=folder / "snakemake-run.log", environment=FOUR_DEVICES)
    _RUNNING["smoke"] = (workdir, process)


def finish_jax_smoke_study(tensorflow_study: Path, folder: Path) -> tuple[Path, int, str]:
    """(its workflow copy, Snakemake's exit status, its output), started now if it was not yet."""
    if "smoke" not in _RUNNING:
        start_jax_smoke_study(tensorflow_study, folder)
    workdir, process = _RUNNING["smoke"]
    status = process.wait(timeout=1800)
    return workdir, status, (workdir.parent / "snakemake-run.log").read_text(encoding="utf-8")
