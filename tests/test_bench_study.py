"""bench/bench_study.py: --quick works end to end, and its reading of Snakemake's files is right."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from bench_scripts import load_bench_script

COLUMNS = ["row", "rule", "wildcards", "seconds", "share_of_total", "max_rss_mb", "cpu_seconds", "repeats",
           "jobs_pending", "file"]


@pytest.fixture(scope="module")
def bench_study(repo_root: Path) -> ModuleType:
    """The script as a module (bench/ is not a package; its sibling bench_models must import)."""
    return load_bench_script(repo_root, "bench_study")


def run_script(repo_root: Path, cwd: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(repo_root / "bench" / "bench_study.py"), *arguments],
                          capture_output=True, text=True, timeout=120, cwd=cwd, check=False)


@pytest.mark.slow
def test_quick_run_reports_every_job_the_total_and_a_true_noop(repo_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench" / "study.csv"
    done = run_script(repo_root, tmp_path, "--quick", "--real-noop", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    with open(out, newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == COLUMNS
        rows = list(reader)
    assert [row["row"] for row in rows] == ["stage"] * 5 + ["total", "span", "startup", "noop", "noop_run"]
    stages = rows[:5]
    # Slowest first, each named by rule and wildcards from its path.
    assert [(row["rule"], row["wildcards"]) for row in stages] == [
        ("train_model", "convnet"), ("train_model", "dense"), ("evaluate_model", "convnet"),
        ("make_tfrecords", ""), ("make_inventory", ""),
    ]
    for row in stages:
        for figure in ("seconds", "share_of_total", "max_rss_mb", "cpu_seconds", "repeats"):
            assert float(row[figure]) > 0, (row["file"], figure)
    total = rows[5]
    assert float(total["seconds"]) == pytest.approx(sum(float(row["seconds"]) for row in stages))
    assert float(total["max_rss_mb"]) == max(float(row["max_rss_mb"]) for row in stages)
    assert sum(float(row["share_of_total"]) for row in stages) == pytest.approx(1.0, abs=1e-3)
    assert float(rows[6]["seconds"]) > 0  # span
    for row in rows[7:]:
        assert float(row["seconds"]) > 0, row["row"]
    assert rows[8]["jobs_pending"] == "0" and rows[9]["jobs_pending"] == "0"  # a true no-op
    assert f"wrote {out}" in done.stdout
    assert [path.name for path in out.parent.iterdir()] == ["study.csv"]  # no temporary left


@pytest.mark.slow
def test_without_a_snakefile_the_noop_is_skipped_and_said(repo_root: Path, tmp_path: Path) -> None:
    benchmarks = tmp_path / "benchmarks" / "train_model"
    benchmarks.mkdir(parents=True)
    (benchmarks / "convnet.tsv").write_text("s\th:m:s\tmax_rss\tcpu_time\n12.5\t0:00:12\tNA\t20.0\n")
    out = tmp_path / "study.csv"
    done = run_script(repo_root, tmp_path, "--benchmarks", "benchmarks", "--workdir", str(tmp_path),
                      "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "no Snakefile" in done.stderr
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["row"] for row in rows] == ["stage", "total", "span"]
    assert rows[0]["max_rss_mb"] == ""  # Snakemake's NA stays missing, never 0


@pytest.mark.slow
def test_missing_benchmarks_folder_is_one_clear_error(repo_root: Path, tmp_path: Path) -> None:
    done = run_script(repo_root, tmp_path, "--benchmarks", "nowhere", "--out", str(tmp_path / "s.csv"))
    assert done.returncode == 1
    assert "benchmark folder nowhere not found" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("output", "jobs"),
    [
        ("Building DAG of jobs...\nNothing to be done (all requested files are present and up to date).\n", 0),
        ("Job stats:\njob      count\n-----  -------\nmake         1\nall          1\ntotal        2\n", 2),
        ("Error in rule make\n", None),
    ],
)
def test_pending_jobs_from_a_dry_run(bench_study: ModuleType, output: str, jobs: int | None) -> None:
    assert bench_study.pending_jobs(output) == jobs
