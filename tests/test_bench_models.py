"""bench/bench_models.py --quick works (CI runs only pytest, so this is what keeps it working)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_quick_benchmark_reports_every_configuration_against_its_baseline(
    repo_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bench" / "models.csv"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [
            sys.executable,
            str(repo_root / "bench" / "bench_models.py"),
            "--quick",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["comparison"], row["configuration"]) for row in rows] == [
        ("precision", "convnet float32"),
        ("precision", "convnet mixed_bfloat16"),
        ("auto", "convnet auto"),
        ("batchnorm", "squeezenet keras BN float32"),
        ("batchnorm", "squeezenet fused BN float32"),
        ("optimizer", "convnet keras Adam float32"),
        ("optimizer", "convnet fused Adam float32"),
    ]
    measured = [row for row in rows if row["comparison"] != "auto"]
    assert all(float(row["images_per_second"]) > 0 and int(row["steps"]) >= 1 for row in measured)
    # The first configuration of each architecture in a comparison is its baseline.
    assert [float(row["speedup_vs_baseline"]) for row in measured][::2] == [1.0] * 3
    # precision auto's probe picks one of the two, and its pick is compared with the faster.
    for row in (row for row in rows if row["comparison"] == "auto"):
        assert row["policy"] in ("float32", "mixed_bfloat16") and 0 < float(row["auto_vs_faster"]) <= 1.0
    assert all(f"## {name}" in done.stdout for name in ("precision", "batchnorm", "optimizer"))
    assert [path.name for path in out.parent.iterdir()] == ["models.csv"]  # no temporary left
