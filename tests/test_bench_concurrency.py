"""bench/bench_concurrency.py: --quick runs both modes end to end, and its figures are computed right."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from bench_scripts import QuickBenchmarks, load_bench_script


@pytest.fixture(scope="module")
def bench_concurrency(repo_root: Path) -> ModuleType:
    """The script as a module (bench/ is not a package; its siblings must import)."""
    return load_bench_script(repo_root, "bench_concurrency")


def training(module: ModuleType, arch: str, threads: int, start: float, seconds: float, images: int = 320):
    return module.Training(arch=arch, threads=threads, images=images, steady_seconds=seconds, timed_start=start,
                           timed_end=start + seconds, ready_seconds=5.0, precision="float32")


def test_sequential_adds_the_timed_seconds_and_concurrent_takes_their_span(bench_concurrency: ModuleType) -> None:
    m = bench_concurrency
    sequential = m.ModeResult("sequential", 1, [training(m, "convnet", 2, 100.0, 2.0),
                                                training(m, "dense", 2, 200.0, 1.0)], wall_seconds=20.0)
    assert sequential.steady_seconds == pytest.approx(3.0) and sequential.overlap is None
    assert sequential.steady_images_per_s == pytest.approx(640 / 3.0)
    # Together from t=10: dense ends at 11.5, convnet at 14: one common second and a half of four.
    concurrent = m.ModeResult("concurrent", 1, [training(m, "convnet", 1, 10.0, 4.0),
                                                training(m, "dense", 1, 10.0, 1.5)], wall_seconds=16.0)
    assert concurrent.steady_seconds == pytest.approx(4.0)
    assert concurrent.overlap == pytest.approx(1.5 / 4.0)
    context = {"archs_list": ["convnet", "dense"], "cpus": 2, "batch_size": 32, "warmup": 3, "steps": 10,
               "load_average": 0.5, "source": "test"}
    rows = m.result_rows([sequential, concurrent], context)
    assert [(row["row"], row["mode"]) for row in rows] == [
        ("round", "sequential"), ("round", "concurrent"), ("total", "sequential"), ("total", "concurrent")]
    total = rows[-1]
    assert total["wall_speedup"] == pytest.approx(20.0 / 16.0, abs=1e-3)
    assert total["steady_speedup"] == pytest.approx((640 / 4.0) / (640 / 3.0), abs=1e-3)
    assert rows[2]["wall_speedup"] == "" and total["threads_each"] == 1 and rows[2]["threads_each"] == 2


@pytest.mark.slow
def test_quick_run_times_both_modes(quick_benchmarks: QuickBenchmarks) -> None:
    """`bench_concurrency.py --quick --cpus 2`, as the shared quick run of every benchmark ran it."""
    out, done = quick_benchmarks.part_csv("concurrency"), quick_benchmarks.run
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["row"], row["mode"]) for row in rows] == [
        ("round", "sequential"), ("round", "concurrent"), ("total", "sequential"), ("total", "concurrent")]
    assert [row["threads_each"] for row in rows] == ["2", "1", "2", "1"]
    for row in rows:
        assert float(row["wall_seconds"]) > 0 and float(row["steady_images_per_s"]) > 0, row
        assert int(row["steady_images"]) == 2 * 8 * 3  # two trainings, batch 8, 3 timed steps each
    assert float(rows[-1]["wall_speedup"]) > 0 and float(rows[-1]["steady_speedup"]) > 0
    assert 0.0 <= float(rows[-1]["overlap"]) <= 1.0
    assert "convnet" in rows[0]["per_training"] and "dense" in rows[0]["per_training"]
    assert "concurrent vs sequential:" in done.stdout and f"wrote {out}" in done.stdout


@pytest.mark.slow
def test_a_missing_manifest_is_one_clear_error(repo_root: Path, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(repo_root / "bench" / "bench_concurrency.py"), "--manifest",
                           str(tmp_path / "absent.json"), "--out", str(tmp_path / "c.csv")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False)
    assert done.returncode == 1
    assert "absent.json not found" in done.stderr and "Traceback" not in done.stderr
