"""bench/bench_full_study.py: one command runs a study from nothing and reports its time per stage
and per model; it never times a partial rerun by mistake and never deletes earlier results."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bench_scripts import load_bench_script

pytestmark = pytest.mark.slow


def test_quick_study_reports_its_stages_wall_time_and_models(repo_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "study.csv"
    done = subprocess.run(
        [sys.executable, str(repo_root / "bench" / "bench_full_study.py"), "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, check=False,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    stages = {(row["rule"], row["wildcards"]) for row in rows if row["row"] == "stage"}
    assert {("make_tfrecords", ""), ("train_model", "dense/seed-1"), ("evaluate_model", "dense/seed-1")} <= stages
    by_kind = {row["row"]: row for row in rows}
    assert "accelerator=cpu" in by_kind["wall"]["rule"]
    # The wall time of the run holds every job's time (they ran one after another inside it).
    assert float(by_kind["wall"]["seconds"]) >= float(by_kind["total"]["seconds"]) > 0
    model_lines = [line for line in done.stdout.splitlines() if line.startswith("dense seed-1 ")]
    # config/smoke.yaml sets float32 (auto would be measured on the machine and could be either).
    assert len(model_lines) == 1 and "cpu" in model_lines[0] and "float32" in model_lines[0].split()
    assert "study wall time" in done.stdout


def test_a_folder_with_a_study_in_it_is_refused_unless_fresh(repo_root: Path, tmp_path: Path) -> None:
    bench = load_bench_script(repo_root, "bench_full_study")
    (tmp_path / "results" / "models" / "dense").mkdir(parents=True)
    (tmp_path / "results" / "models" / "dense" / "model.keras").write_bytes(b"weights")
    (tmp_path / "results" / "README.md").write_text("tracked by git\n")
    (tmp_path / "results" / "bench").mkdir()
    (tmp_path / "results" / "bench" / "training.csv").write_text("arch\n")
    (tmp_path / "logs").mkdir()
    assert bench.existing_outputs(tmp_path) == ["results"]
    assert bench.main(["--workdir", str(tmp_path), "--accelerator", "cpu"]) != 0  # refused before snakemake
    assert (tmp_path / "results" / "models" / "dense" / "model.keras").exists()

    moved = bench.move_aside(tmp_path, "20260101-000000")
    assert sorted(path.name for path in moved) == ["logs.before-20260101-000000", "results.before-20260101-000000"]
    assert (tmp_path / "results.before-20260101-000000" / "models" / "dense" / "model.keras").read_bytes() == b"weights"
    assert (tmp_path / "results" / "README.md").read_text() == "tracked by git\n"  # git's file stays
    assert (tmp_path / "results" / "bench" / "training.csv").read_text() == "arch\n"  # so do the benchmarks
    assert not (tmp_path / "results" / "models").exists()
    assert (tmp_path / "logs").is_dir() and not any((tmp_path / "logs").iterdir())
    assert bench.existing_outputs(tmp_path) == []


def test_results_with_only_its_readme_and_benchmarks_is_not_a_study(repo_root: Path, tmp_path: Path) -> None:
    bench = load_bench_script(repo_root, "bench_full_study")
    (tmp_path / "results" / "bench").mkdir(parents=True)
    (tmp_path / "results" / "README.md").write_text("generated outputs land here\n")
    (tmp_path / "results" / "bench" / "summary.csv").write_text("part\n")
    assert bench.existing_outputs(tmp_path) == []
    (tmp_path / "results" / "metrics.csv").write_text("arch\n")
    assert bench.existing_outputs(tmp_path) == ["results"]


def test_run_all_summarises_the_wall_row(repo_root: Path) -> None:
    summaries = load_bench_script(repo_root, "summaries")
    rows = [{"row": "stage", "rule": "train_model", "seconds": "10"},
            {"row": "total", "rule": "1 jobs", "seconds": "10"},
            {"row": "wall", "rule": "snakemake --cores 2 --config accelerator=gpu", "seconds": "12.5"}]
    summary = {row["measure"]: row for row in summaries.summarise_study(rows)}
    assert summary["wall (the snakemake run)"]["value"] == "12.5"
    assert "accelerator=gpu" in summary["wall (the snakemake run)"]["note"]
