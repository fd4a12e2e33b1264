"""bench/bench_backend.py --quick works, and its study estimate is the arithmetic it claims."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bench_scripts import load_bench_script


@pytest.mark.slow
def test_quick_run_times_each_architecture_and_policy_with_the_study_batch_size(
    repo_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bench" / "backend.csv"
    done = subprocess.run(
        [sys.executable, str(repo_root / "bench" / "bench_backend.py"), "--quick",
         "--backend", "tensorflow", "--archs", "dense", "squeezenet", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["architecture"], row["policy"]) for row in rows] == [
        ("dense", "float32"), ("dense", "mixed_bfloat16"),
        ("squeezenet", "float32"), ("squeezenet", "mixed_bfloat16"),
    ]
    # The study's per-replica batch sizes and epochs, from config/config.yaml.
    assert [(row["batch_size"], row["epochs_in_study"]) for row in rows][::2] == [("32", "10"), ("64", "35")]
    assert all(row["backend"] == "tensorflow" and float(row["images_per_second"]) > 0 for row in rows)
    assert "# study estimate" in done.stdout
    assert "course's four" not in done.stdout  # only two of the four were timed
    assert [path.name for path in out.parent.iterdir()] == ["backend.csv"]  # no temporary left


def test_study_estimate_uses_each_architecture_s_best_policy(
    repo_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = load_bench_script(repo_root, "bench_backend")
    recipes = {arch: {"epochs": epochs, "batch_size": 32}
               for arch, epochs in [("dense", 10), ("mobilenet_v2", 10), ("convnet", 20), ("squeezenet", 35)]}
    rows = [{"architecture": arch, "policy": policy, "images_per_second": rate}
            for arch, policy, rate in [
                ("dense", "float32", 1000.0), ("dense", "mixed_bfloat16", 500.0),
                ("mobilenet_v2", "float32", 100.0), ("convnet", "mixed_bfloat16", 200.0),
                ("squeezenet", "float32", 50.0), ("squeezenet", "mixed_bfloat16", 100.0)]]
    bench.print_study_estimate(rows, recipes, train_images=1000)
    printed = capsys.readouterr().out
    # 10 x 1000 / 1000 + 10 x 1000 / 100 + 20 x 1000 / 200 + 35 x 1000 / 100 = 10 + 100 + 100 + 350
    assert "course's four" in printed and "560.0 s" in printed
    assert "350.0 s  (mixed_bfloat16)" in printed and "10.0 s  (float32)" in printed


def test_an_architecture_missing_from_the_config_is_a_clear_error(
    repo_root: Path, tmp_path: Path
) -> None:
    bench = load_bench_script(repo_root, "bench_backend")
    config = tmp_path / "config.yaml"
    config.write_text("models:\n  dense: {epochs: 1, batch_size: 8}\n")
    with pytest.raises(SystemExit, match=r"has no models\.convnet"):
        bench.study_recipes(config, ["dense", "convnet"])
