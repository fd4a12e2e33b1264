"""flowerlab.reporting.timings: reading Snakemake's benchmark files, shared by the report and bench_study."""

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
    seconds = {"make_inventory.tsv": 1.0, "make_tfrecords.tsv": 3.0, "train_model/dense.tsv": 40.0,
               "train_model/convnet.tsv": 100.0, "evaluate_model/dense.tsv": 5.0,
               "evaluate_model/convnet.tsv": 7.0}
    for index, (name, value) in enumerate(seconds.items()):
        write_benchmark(folder, name, value, ended=1_000_000 + 200 * index)
    write_benchmark(folder, "train_model/xception.tsv", 999.0)  # an earlier study's: not this one's
    assert timings.study_benchmark_files(["dense", "convnet"]) == [
        "make_inventory.tsv", "make_tfrecords.tsv", "train_model/dense.tsv", "train_model/convnet.tsv",
        "evaluate_model/dense.tsv", "evaluate_model/convnet.tsv"]
    jobs = timings.read_study_jobs(folder, ["dense", "convnet"])
    assert [job.file for job in jobs] == timings.study_benchmark_files(["dense", "convnet"])
    assert timings.total_seconds(jobs) == pytest.approx(156.0)
    assert timings.seconds_per_stage(jobs) == {"make_inventory": 1.0, "make_tfrecords": 3.0,
                                               "train_model": 140.0, "evaluate_model": 12.0}
    # first start: 1_000_000 - 1; last end: 1_000_000 + 1000
    assert timings.span_seconds(jobs) == pytest.approx(1001.0)
    assert len(timings.read_jobs(folder)) == 7  # the whole folder, for bench_study
    assert timings.read_jobs(folder)[0].wildcards == "xception"  # slowest first
    with pytest.raises(DataError, match=r"train_model/squeezenet\.tsv"):
        timings.read_study_jobs(folder, ["squeezenet"])
    # dense and convnet are course architectures, xception is not; the data stages count too.
    assert [job.file for job in timings.course_jobs(timings.read_jobs(folder))] == [
        "train_model/convnet.tsv", "train_model/dense.tsv", "evaluate_model/convnet.tsv",
        "evaluate_model/dense.tsv", "make_tfrecords.tsv", "make_inventory.tsv"]
