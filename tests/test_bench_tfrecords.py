"""bench/bench_tfrecords.py --quick works (CI runs only pytest, so this keeps it working)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_quick_benchmark_prints_and_appends_its_row(repo_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench" / "tfrecords.csv"
    command = [sys.executable, str(repo_root / "bench" / "bench_tfrecords.py"), "--quick", "--threads", "2",
               "--out", str(out)]
    for _ in range(2):
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False)
        assert done.returncode == 0, done.stderr
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2  # appended, one header
    row = rows[0]
    assert row["photos"] == "200" and row["threads"] == "2"
    assert float(row["single_thread_images_per_s"]) > 0 and float(row["tfrecords_images_per_s"]) > 0
    ratio = float(row["tfrecords_images_per_s"]) / float(row["single_thread_images_per_s"])
    assert abs(ratio - float(row["speedup_vs_single_thread"])) < 0.02
    assert "single_thread (baseline)" in done.stdout and f"wrote {out}" in done.stdout
    assert sorted(p.name for p in out.parent.iterdir()) == ["tfrecords.csv"]  # no temporary left
