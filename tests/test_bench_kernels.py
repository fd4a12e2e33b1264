"""bench/bench_kernels.py --quick: each kernel setting timed in a process of its own."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_each_setting_runs_the_kernels_it_names(repo_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "kernels.csv"
    # A user's own setting must not leak into the settings the benchmark compares.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "1"}
    # As an AVX2-only CPU (on any x86-64 CPU): TensorFlow's own default there is Eigen, so every
    # setting's library is known here, whatever this machine's own default would be.
    done = subprocess.run([sys.executable, str(repo_root / "bench" / "bench_kernels.py"), "--quick", "--threads", "2",
                           "--cpu-kind", "avx2", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(out, newline="") as handle:
        rows = {row["setting"]: row for row in csv.DictReader(handle)}
    assert list(rows) == ["tensorflow", "onednn", "flowerlab", "bfc", "onednn+bfc"]
    assert rows["onednn+bfc"]["kernels"] == rows["flowerlab"]["kernels"] == rows["onednn"]["kernels"] == "oneDNN"
    # --quick times the dense model, which has no convolution for flowerlab's weight-gradient kernel
    assert {row["flowerlab_weight_gradients"] for row in rows.values()} == {"0"}
    assert rows["bfc"]["kernels"] == rows["tensorflow"]["kernels"] == "Eigen"
    assert {row["cpu_kind"] for row in rows.values()} == {"avx2 (emulated)"}
    assert rows["tensorflow"]["vs_tensorflow_defaults"] == "1.0"
    for row in rows.values():
        assert float(row["images_per_s"]) > 0
        ratio = float(row["images_per_s"]) / float(rows["tensorflow"]["images_per_s"])
        assert abs(float(row["vs_tensorflow_defaults"]) - ratio) < 0.01 * ratio
    assert "vs TF defaults" in done.stdout
