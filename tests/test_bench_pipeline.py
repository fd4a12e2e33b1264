"""bench/bench_pipeline.py --quick works (CI runs only pytest, so this is what keeps it working)."""

from __future__ import annotations

import csv

import pytest
from bench_scripts import QuickBenchmarks


@pytest.mark.slow
def test_quick_benchmark_writes_every_measure_with_its_baseline(quick_benchmarks: QuickBenchmarks) -> None:
    """`bench_pipeline.py --quick`, as the shared quick run of every benchmark ran it."""
    out, done = quick_benchmarks.part_csv("pipeline"), quick_benchmarks.run
    with open(out, newline="") as handle:
        rows = {row["measure"]: row for row in csv.DictReader(handle)}
    assert list(rows) == ["jpeg_one_by_one", "pipeline_cold", "pipeline_cached", "pipeline_cached_augment"]
    assert all(float(row["images_per_second"]) > 0 for row in rows.values())
    assert float(rows["jpeg_one_by_one"]["speedup_vs_jpeg_one_by_one"]) == 1.0
    # Serving decoded images from the cache must beat decoding them (by ~20x when measured).
    assert float(rows["pipeline_cached"]["images_per_second"]) > float(rows["pipeline_cold"]["images_per_second"])
    assert "pipeline_cached" in done.stdout and f"wrote {out}" in done.stdout
