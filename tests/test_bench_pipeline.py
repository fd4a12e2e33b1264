"""bench/bench_pipeline.py --quick works (CI runs only pytest, so this is what keeps it working)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_quick_benchmark_writes_every_measure_with_its_baseline(repo_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench" / "pipeline.csv"
    done = subprocess.run([sys.executable, str(repo_root / "bench" / "bench_pipeline.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          check=False)
    assert done.returncode == 0, done.stderr
    with open(out, newline="") as handle:
        rows = {row["measure"]: row for row in csv.DictReader(handle)}
    assert list(rows) == ["jpeg_one_by_one", "pipeline_cold", "pipeline_cached", "pipeline_cached_augment"]
    assert all(float(row["images_per_second"]) > 0 for row in rows.values())
    assert float(rows["jpeg_one_by_one"]["speedup_vs_jpeg_one_by_one"]) == 1.0
    # Serving decoded images from the cache must beat decoding them (by ~20x when measured).
    assert float(rows["pipeline_cached"]["images_per_second"]) > float(rows["pipeline_cold"]["images_per_second"])
    assert "pipeline_cached" in done.stdout and f"wrote {out}" in done.stdout
    assert not [p for p in out.parent.iterdir() if p.name != "pipeline.csv"]  # no temporary left
