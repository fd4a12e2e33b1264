"""flowerlab.reporting.timings: reading Snakemake's benchmark files for the report."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flowerlab.errors import DataError
from flowerlab.reporting import timings

HEADER = "s\th:m:s\tmax_rss\tcpu_time\n"


def write_benchmark(folder: Path, name: str, seconds: float, *, ended: float | None = None) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{HEADER}{seconds}\t0:00:00\t100.0\t{seconds * 1.5}\n")
    if ended is not None:
        os.utime(path, (ended, ended))
    return path


def test_reads_rule_wildcards_and_repeats(tmp_path: Path) -> None:
    folder = tmp_path / "benchmarks"
    (folder / "train_model").mkdir(parents=True)
    plain = folder / "train_model" / "squeezenet.tsv"
    plain.write_text(f"{HEADER}10.0\t0:00:10\t100.5\t19.0\n30.0\t0:00:30\t300.5\t55.0\n20.0\t0:00:20\t200.5\t38.0\n")
    job = timings.read_job(plain, folder)
    assert (job.rule, job.wildcards, job.repeats, job.label) == ("train_model", "squeezenet", 3,
                                                                 "train_model squeezenet")
    assert job.seconds == 20.0 and job.max_rss_mb == 300.5 and job.cpu_seconds == 38.0
    extended = folder / "odd_name.tsv"
    extended.write_text("s\th:m:s\tmax_rss\tcpu_time\trule_name\twildcards\n"
                        "5.0\t0:00:05\t-\t4.0\tevaluate_model\tarch=convnet\n")
    job = timings.read_job(extended, folder)
    assert (job.rule, job.wildcards, job.max_rss_mb) == ("evaluate_model", "arch=convnet", None)
    garbage = folder / "notes.tsv"
    garbage.write_text("name\tvalue\nx\t1\n")
    with pytest.raises(DataError, match="not a Snakemake benchmark file"):
        timings.read_job(garbage, folder)


def test_a_study_reads_only_its_own_jobs_in_stage_order(tmp_path: Path) -> None:
    folder = tmp_path / "benchmarks"
    seconds = {"make_inventory.tsv": 1.0, "make_tfrecords.tsv": 3.0, "train_model/dense/seed-1.tsv": 40.0,
               "train_model/convnet/seed-1.tsv": 100.0, "evaluate_model/dense/seed-1.tsv": 5.0,
               "evaluate_model/convnet/seed-1.tsv": 7.0}
    for index, (name, value) in enumerate(seconds.items()):
        write_benchmark(folder, name, value, ended=1_000_000 + 200 * index)
    write_benchmark(folder, "train_model/xception/seed-1.tsv", 999.0)  # an earlier study's: not this one's
    runs = [("dense", "seed-1"), ("convnet", "seed-1")]
    assert timings.study_benchmark_files(runs) == list(seconds)
    jobs = timings.read_study_jobs(folder, runs)
    assert [job.file for job in jobs] == timings.study_benchmark_files(runs)
    assert timings.total_seconds(jobs) == pytest.approx(156.0)
    assert timings.seconds_per_stage(jobs) == {"make_inventory": 1.0, "make_tfrecords": 3.0,
                                               "train_model": 140.0, "evaluate_model": 12.0}
    # first start: 1_000_000 - 1; last end: 1_000_000 + 1000
    assert timings.span_seconds(jobs) == pytest.approx(1001.0)
    # the data, then convnet's training and evaluation: the longest chain
    assert timings.critical_path_seconds(jobs) == pytest.approx(1.0 + 3.0 + 100.0 + 7.0)
    with pytest.raises(DataError, match=r"train_model/squeezenet/seed-1\.tsv"):
        timings.read_study_jobs(folder, [("squeezenet", "seed-1")])
    # dense and convnet are course architectures, xception is not; the data stages count too.
    write_benchmark(folder, "evaluate_model/xception/seed-1.tsv", 9.0)
    everything = timings.read_study_jobs(folder, [*runs, ("xception", "seed-1")])
    assert sorted(job.file for job in timings.course_jobs(everything)) == sorted([
        "train_model/convnet/seed-1.tsv", "train_model/dense/seed-1.tsv", "evaluate_model/convnet/seed-1.tsv",
        "evaluate_model/dense/seed-1.tsv", "make_tfrecords.tsv", "make_inventory.tsv"])


def test_repeated_splits_have_their_own_tfrecords_jobs_on_the_critical_path(tmp_path: Path) -> None:
    folder = tmp_path / "benchmarks"
    runs = [("dense", "split-5-seed-1"), ("dense", "split-6-seed-1")]
    assert timings.study_benchmark_files(runs) == [
        "make_inventory.tsv", "make_tfrecords/split-5.tsv", "make_tfrecords/split-6.tsv",
        "train_model/dense/split-5-seed-1.tsv", "train_model/dense/split-6-seed-1.tsv",
        "evaluate_model/dense/split-5-seed-1.tsv", "evaluate_model/dense/split-6-seed-1.tsv"]
    values = [2.0, 30.0, 5.0, 10.0, 20.0, 1.0, 1.0]
    for name, value in zip(timings.study_benchmark_files(runs), values, strict=True):
        write_benchmark(folder, name, value)
    jobs = timings.read_study_jobs(folder, runs)
    # split 5's chain: 2 + 30 + 10 + 1 = 43; split 6's: 2 + 5 + 20 + 1 = 28
    assert timings.critical_path_seconds(jobs) == pytest.approx(43.0)
    assert timings.total_seconds(jobs) == pytest.approx(69.0)


def test_a_resumed_training_counts_every_part(tmp_path: Path) -> None:
    """Snakemake's benchmark file of a resumed training times its last job only (here 30 s); the
    training's record says the parts before took 70 s, and the study's time counts them."""
    folder = tmp_path / "benchmarks"
    runs = [("dense", "seed-1"), ("convnet", "seed-1")]
    for name in timings.study_benchmark_files(runs):
        write_benchmark(folder, name, 30.0 if name.startswith("train_model/convnet") else 1.0)
    plain = timings.read_study_jobs(folder, runs)
    counted = timings.read_study_jobs(folder, runs, {("convnet", "seed-1"): 70.0, ("dense", "seed-1"): None})
    convnet = next(job for job in counted if job.label == "train_model convnet/seed-1")
    assert (convnet.seconds, convnet.earlier_seconds) == (100.0, 70.0)
    assert timings.total_seconds(counted) == pytest.approx(timings.total_seconds(plain) + 70.0)
    assert timings.critical_path_seconds(counted) == pytest.approx(1.0 + 1.0 + 100.0 + 1.0)
