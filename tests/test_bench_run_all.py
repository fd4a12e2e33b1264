"""bench/run_all.py: one command runs every benchmark, prints one summary, writes summary.csv and
benchmarks.png; a part whose inputs are missing is skipped with the reason."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from bench_scripts import QuickBenchmarks

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PARTS = ["tfrecords", "pipeline", "training", "models", "concurrency", "study"]


def run_all(repo_root: Path, cwd: Path, *arguments: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(repo_root / "bench" / "run_all.py"), *arguments],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd, check=False)


def summary(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_quick_runs_every_part_and_summarises_each(quick_benchmarks: QuickBenchmarks) -> None:
    out, done = quick_benchmarks.out_dir, quick_benchmarks.run
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    for number, part in enumerate(PARTS, start=1):
        assert f"[{number}/6] {part}: ran in" in done.stdout, part  # progress, part by part
        assert (out / f"{part}.csv").is_file(), part
    rows = summary(out / "summary.csv")
    assert {row["part"] for row in rows} == set(PARTS)
    assert all(row["source"] == "this run" for row in rows)
    by_part: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_part.setdefault(row["part"], []).append(row)
    for part, found in by_part.items():
        assert any(float(row["value"]) > 0 for row in found if row["value"]), part
    training = {row["measure"]: row for row in by_part["training"]}
    assert set(training) == {"dense", "convnet", "squeezenet"}
    for row in training.values():
        assert float(row["ratio"]) > 0 and float(row["baseline_value"]) > 0 and "MFU" in row["note"]
    assert [row["measure"] for row in by_part["pipeline"]] == [
        "pipeline_cold", "pipeline_cached", "pipeline_cached_augment"]
    assert {row["measure"] for row in by_part["concurrency"]} == {
        "trainings at once: wall seconds", "trainings at once: steady images/s"}
    study = {row["measure"]: row for row in by_part["study"]}
    assert {"stage train_model", "total (sum of the jobs)", "no-op rerun (snakemake -n)"} <= set(study)
    assert study["no-op rerun (snakemake -n)"]["note"] == "a true no-op"
    assert "Summary" in done.stdout and "trainings at once" in done.stdout
    assert (out / "benchmarks.png").read_bytes().startswith(PNG_SIGNATURE)
    assert (out / "benchmarks.png").stat().st_size > 20_000  # four drawn panels, not an empty canvas
    # nothing outside --out-dir, and no part left a temporary in it
    assert sorted(path.name for path in quick_benchmarks.cwd.iterdir()) == ["bench"]
    assert sorted(path.name for path in out.iterdir()) == sorted(
        [f"{part}.csv" for part in PARTS] + ["summary.csv", "benchmarks.png"])


@pytest.mark.slow
def test_a_part_without_its_inputs_is_skipped_with_the_reason(repo_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    done = run_all(repo_root, tmp_path, "--only", "study,pipeline", "--workdir", str(tmp_path),
                   "--manifest", str(tmp_path / "absent.json"), "--out-dir", str(out), timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[1/2] pipeline: skipped: manifest" in done.stdout and "absent.json not found" in done.stdout
    assert "[2/2] study: skipped: no Snakemake benchmark files" in done.stdout
    rows = summary(out / "summary.csv")
    assert [(row["part"], row["measure"]) for row in rows] == [(part, "not measured") for part in PARTS]
    assert rows[1]["note"].startswith("skipped: manifest") and rows[0]["note"] == "not selected"
    assert (out / "benchmarks.png").read_bytes().startswith(PNG_SIGNATURE)


@pytest.mark.slow
def test_an_unknown_part_is_refused(repo_root: Path, tmp_path: Path) -> None:
    done = run_all(repo_root, tmp_path, "--only", "training,nonsense", "--out-dir", str(tmp_path), timeout=60)
    assert done.returncode != 0 and "unknown part(s) nonsense" in done.stderr
