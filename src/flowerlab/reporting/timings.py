"""A study's wall time per job, read from the files of the rules' Snakemake `benchmark:` directive.

Snakemake writes one TSV per job when it ends (`benchmarks/<rule>.tsv`,
`benchmarks/make_tfrecords/split-<seed>.tsv` or `benchmarks/<rule>/<arch>/<replicate>.tsv` in
this workflow), one row per repeat: `s` (wall seconds),
`h:m:s`, `max_rss` (MB), ..., `cpu_time`, and in its extended format `rule_name` and `wildcards`.
A figure it could not measure is written as `NA` (or `-`) and is read as missing, never as 0.

A training that was interrupted and resumed ran as several jobs; Snakemake's benchmark file keeps
only the last one's time. Its training.json says how long the parts before took
(`wall_seconds_before_resume`), and `read_study_jobs` adds that to the training's job, so that
the study's time counts every part.

Read by the report's "Time" section. No TensorFlow, no pandas: the standard library only.
"""

from __future__ import annotations

import csv
import dataclasses
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from flowerlab.errors import DataError
from flowerlab.models.registry import COURSE_ARCHITECTURES
from flowerlab.replicates import parse, split_name

MISSING = {"", "-", "NA", "nan"}  # how Snakemake writes a figure it could not measure

# The workflow's benchmark files, in the order the stages run (workflow/rules/*.smk `benchmark:`).
INVENTORY_BENCHMARK = "make_inventory.tsv"
TFRECORDS_BENCHMARKS = ("make_tfrecords.tsv", "make_tfrecords/{split}.tsv")  # data.seed's, a repeated split's
PER_RUN_BENCHMARKS = ("train_model/{arch}/{replicate}.tsv", "evaluate_model/{arch}/{replicate}.tsv")
STAGE_ORDER = ("make_inventory", "make_tfrecords", "train_model", "evaluate_model")


@dataclass(frozen=True)
class Job:
    """One benchmark file: one job of the study."""

    rule: str
    wildcards: str
    seconds: float  # median wall seconds over the repeats
    max_rss_mb: float | None
    cpu_seconds: float | None
    repeats: int
    file: str  # relative to the benchmarks folder, POSIX separators
    ended: float  # the file's modification time (Snakemake writes it when the job ends)
    earlier_seconds: float = 0.0  # a resumed training's parts before the last job, in `seconds` too

    @property
    def label(self) -> str:
        """`train_model convnet/seed-1`, `make_inventory`: the job as people read it."""
        return f"{self.rule} {self.wildcards}".strip()

    @property
    def arch(self) -> str | None:
        """The architecture of a per-run job (`convnet/seed-1` -> convnet), else None."""
        return self.wildcards.split("/")[0] if self.rule in STAGE_ORDER[2:] else None


def number(text: str | None) -> float | None:
    """A TSV cell as a float, None where Snakemake wrote that it could not measure it."""
    if text is None or text.strip() in MISSING:
        return None
    return float(text)


def rule_and_wildcards(relative: Path) -> tuple[str, str]:
    """`train_model/convnet.tsv` -> ("train_model", "convnet"); `make_inventory.tsv` ->
    ("make_inventory", ""): the layout of the workflow's `benchmark:` paths."""
    parts = relative.with_suffix("").parts
    return parts[0], "/".join(parts[1:])


def read_job(path: Path, folder: Path) -> Job:
    """One benchmark file (`path`, inside `folder`); a file that is not one is a DataError naming it."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    relative = path.relative_to(folder)
    if not rows or "s" not in rows[0]:
        raise DataError(f"{path} is not a Snakemake benchmark file (no rows, or no 's' column); "
                        "remove it or point at the folder of the rules' benchmark: files")
    try:
        seconds = [float(row["s"]) for row in rows]
        rss = [value for row in rows if (value := number(row.get("max_rss"))) is not None]
        cpu = [value for row in rows if (value := number(row.get("cpu_time"))) is not None]
    except ValueError as error:
        raise DataError(f"{path}: a figure is not a number ({error}); is it a Snakemake benchmark file?") from None
    rule, wildcards = rule_and_wildcards(relative)
    # The extended format names the rule and the wildcards itself.
    named_rule, named_wildcards = ((rows[0].get(key) or "").strip() for key in ("rule_name", "wildcards"))
    rule = rule if named_rule in MISSING else named_rule
    wildcards = wildcards if named_wildcards in MISSING else named_wildcards
    return Job(rule=rule, wildcards=wildcards, seconds=statistics.median(seconds),
               max_rss_mb=max(rss) if rss else None, cpu_seconds=statistics.median(cpu) if cpu else None,
               repeats=len(rows), file=relative.as_posix(), ended=path.stat().st_mtime)


def tfrecords_benchmark(split: int | None) -> str:
    return TFRECORDS_BENCHMARKS[0] if split is None else TFRECORDS_BENCHMARKS[1].format(split=split_name(split))


def study_benchmark_files(runs: Sequence[tuple[str, str]]) -> list[str]:
    """The benchmark files one study of `runs` ((arch, replicate name) pairs) writes, relative to
    its benchmarks folder, in the order its stages run: the inventory, the TFRecords of each split
    the runs use, then each run's training, then each run's evaluation."""
    splits = list(dict.fromkeys(parse(replicate).split for _, replicate in runs))
    return [INVENTORY_BENCHMARK, *(tfrecords_benchmark(split) for split in splits),
            *(pattern.format(arch=arch, replicate=replicate) for pattern in PER_RUN_BENCHMARKS
              for arch, replicate in runs)]


def read_study_jobs(folder: Path, runs: Sequence[tuple[str, str]],
                    earlier_seconds: Mapping[tuple[str, str], float] | None = None) -> list[Job]:
    """The jobs of one study of `runs`, in stage order; files of other studies in the same
    folder (an architecture or seed since dropped) are left out. `earlier_seconds`: for a resumed
    training, (arch, replicate) -> the wall seconds of its parts before the last job (its
    training.json's `wall_seconds_before_resume`), added to its train_model job. A missing file is
    a DataError naming it."""
    names = study_benchmark_files(runs)
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise DataError(f"benchmark file(s) {', '.join(missing)} not found under {folder}: the study's jobs "
                        "write them (snakemake benchmark: directive); rerun the study with Snakemake")
    jobs = [read_job(folder / name, folder) for name in names]
    return [with_earlier_parts(job, earlier_seconds or {}) for job in jobs]


def with_earlier_parts(job: Job, earlier_seconds: Mapping[tuple[str, str], float]) -> Job:
    """A train_model job with its training's earlier parts added to its seconds (the last part's
    end stays its end: `span_seconds` then starts it at the first part's start)."""
    if job.rule != STAGE_ORDER[2]:
        return job
    arch, _, replicate = job.wildcards.partition("/")
    earlier = float(earlier_seconds.get((arch, replicate)) or 0.0)
    if earlier <= 0:
        return job
    return dataclasses.replace(job, seconds=job.seconds + earlier, earlier_seconds=earlier)


def total_seconds(jobs: Sequence[Job]) -> float:
    """The sum of the jobs' wall seconds: the study's cost when they run one after another."""
    return sum(job.seconds for job in jobs)


def course_jobs(jobs: Sequence[Job]) -> list[Job]:
    """The data stages' jobs and the course architectures' (COURSE_ARCHITECTURES) per-run jobs."""
    return [job for job in jobs if job.rule in STAGE_ORDER[:2] or job.arch in COURSE_ARCHITECTURES]


def critical_path_seconds(jobs: Sequence[Job]) -> float:
    """The longest chain of jobs that must run one after another: the inventory, a split's
    TFRecords, then one run's training and its evaluation (the workflow's DAG; every run is
    independent of the others). What the study would take with a machine per run, e.g. on a
    cluster, against the sum of the jobs on one machine. Jobs without a benchmark file (the
    download, the tables, the report) are not counted, here or in the sum."""
    inventory = sum(job.seconds for job in jobs if job.rule == STAGE_ORDER[0])
    tfrecords = {job.wildcards: job.seconds for job in jobs if job.rule == STAGE_ORDER[1]}
    chains: dict[str, float] = {}
    for job in jobs:
        if job.arch is None:
            continue
        chains[job.wildcards] = chains.get(job.wildcards, 0.0) + job.seconds
    longest = 0.0
    for wildcards, seconds in chains.items():
        split = parse(wildcards.split("/")[-1]).split
        # a split's TFRecords job: `make_tfrecords.tsv` (wildcards "") or `make_tfrecords/split-7.tsv`
        data = tfrecords.get(split_name(split), 0.0)
        longest = max(longest, data + seconds)
    return inventory + (longest or max(tfrecords.values(), default=0.0))


def span_seconds(jobs: Sequence[Job]) -> float:
    """First job's start (file time - seconds) to last job's end (file time): the study's wall time
    when one `snakemake` run wrote them all (less than the total when jobs overlapped, more when
    Snakemake or the machine idled between them)."""
    if not jobs:
        return 0.0
    return max(job.ended for job in jobs) - min(job.ended - job.seconds for job in jobs)


def seconds_per_stage(jobs: Sequence[Job]) -> dict[str, float]:
    """{rule: the sum of its jobs' wall seconds}, the workflow's stages first in their order."""
    totals: dict[str, float] = {}
    for job in jobs:
        totals[job.rule] = totals.get(job.rule, 0.0) + job.seconds
    order = {rule: index for index, rule in enumerate(STAGE_ORDER)}
    return dict(sorted(totals.items(), key=lambda item: (order.get(item[0], len(order)), item[0])))
