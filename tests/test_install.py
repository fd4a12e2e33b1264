"""A non-editable install (a wheel of the package, no source tree) runs the study."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from workflow_runs import REPO, SMOKE, copy_workflow

pytestmark = pytest.mark.slow


def test_a_non_editable_install_runs_the_study(tmp_path: Path) -> None:
    source = tmp_path / "source"  # built from a copy, so the checkout gets no build folders
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "workflow"):
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy2)(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(source)], check=True, capture_output=True, timeout=600)
    shutil.rmtree(source)  # nothing may still point into it
    env = {**os.environ, "PYTHONPATH": str(site), "PATH": f"{site / 'bin'}{os.pathsep}{os.environ['PATH']}"}

    where = subprocess.run([sys.executable, "-c", "import flowerlab.schema as s; print(s.SCHEMA_PATH, s.default('seeds')[0])"],
                           env=env, capture_output=True, text=True, check=True).stdout.split()
    assert Path(where[0]).is_file() and Path(where[0]).is_relative_to(site) and where[1] == "1"

    (tmp_path / "checkout").mkdir()
    workdir = copy_workflow(tmp_path / "checkout")
    # Up to the metrics table: the report's notebook runs in the second-Python smoke study of .ci/run.
    result = subprocess.run([sys.executable, "-m", "snakemake", "results/metrics.csv", "--cores", "2", *SMOKE,
                             "--config", "study=[dense]", "seeds=[1]"],
                            cwd=workdir, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    record = json.loads((workdir / "results" / "models" / "dense" / "seed-1" / "training.json").read_text())
    assert record["code_version"]["modules"]  # fingerprinted from the installed files
    assert (workdir / "results" / "evaluation" / "dense" / "seed-1" / "metrics.json").is_file()
