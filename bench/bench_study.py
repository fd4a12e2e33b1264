"""Where a finished study's time went: each job's wall time from Snakemake's benchmark files, their
total, and the fixed cost of a rerun that has nothing to do.

    python bench/bench_study.py --benchmarks benchmarks --workdir . --cores 2 \\
        --snakemake-args "--config data_source=/path/to/flower_photos"          # after a study
    python bench/bench_study.py --quick                                          # CI, ~3 s

Read from `--benchmarks` (the `benchmark:` files of the rules, `benchmarks/<rule>.tsv` or
`benchmarks/<rule>/<wildcards>.tsv`; Snakemake writes one row per repeat: `s`, `h:m:s`,
`max_rss` (MB), ..., `cpu_time`, plus `rule_name` and `wildcards` in its extended format):

| row       | what it is |
|-----------|------------|
| `stage`   | one job: its wall seconds (median over repeats), max RSS, CPU seconds, share of the total |
| `total`   | the sum of the jobs' wall seconds (the study's cost if they ran one after another) |
| `span`    | first job's start to last job's end, from the files' modification times minus their seconds: the wall time of the study when one `snakemake` run wrote them all (less than `total` when jobs overlapped; more when Snakemake or the machine idled between jobs) |

and timed in this run, in `--workdir` (where the study ran):

| row       | what it is |
|-----------|------------|
| `startup` | **baseline**: `snakemake --version` (Python and Snakemake's import) |
| `noop`    | `snakemake -n --cores N` (the dry run: parse the workflow, build the DAG, check every output against its inputs, code and parameters); `jobs_pending` says how many jobs it would run, 0 for a true no-op |
| `noop_run` | with `--real-noop`, and only when the dry run found nothing to do: a real `snakemake --cores N`, which also takes the lock and checks the outputs it would not touch |

The dry run must see the study's configuration, or changed parameters make jobs pending: give
the same `--cores` and `--snakemake-args` (e.g. `--config ...`) as the study had.
Results go to results/bench/study.csv (--out), written atomically.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import run_script

from flowerlab.console import positive_int
from flowerlab.errors import DataError
from flowerlab.reporting.timings import Job, read_jobs, span_seconds, total_seconds  # shared with the report

logger = logging.getLogger("bench_study")

COLUMNS = ("row", "rule", "wildcards", "seconds", "share_of_total", "max_rss_mb", "cpu_seconds", "repeats",
           "jobs_pending", "file")
NOTHING_TO_DO = "Nothing to be done"
JOB_TOTAL = re.compile(r"^\s*total\s+(\d+)\s*$", re.MULTILINE)


# --------------------------------------------------------------------------------------------
# Rows


def stage_rows(jobs: Sequence[Job]) -> list[dict[str, Any]]:
    total = total_seconds(jobs)
    return [
        {"row": "stage", "rule": job.rule, "wildcards": job.wildcards, "seconds": round(job.seconds, 2),
         "share_of_total": round(job.seconds / total, 4) if total else "",
         "max_rss_mb": "" if job.max_rss_mb is None else round(job.max_rss_mb, 1),
         "cpu_seconds": "" if job.cpu_seconds is None else round(job.cpu_seconds, 2), "repeats": job.repeats,
         "jobs_pending": "", "file": job.file}
        for job in jobs
    ]


def summary_rows(jobs: Sequence[Job]) -> list[dict[str, Any]]:
    total = total_seconds(jobs)
    rss = [job.max_rss_mb for job in jobs if job.max_rss_mb is not None]
    cpu = [job.cpu_seconds for job in jobs if job.cpu_seconds is not None]
    span = span_seconds(jobs)
    common = {"wildcards": "", "repeats": "", "jobs_pending": "", "file": ""}
    return [
        {**common, "row": "total", "rule": f"{len(jobs)} jobs", "seconds": round(total, 2), "share_of_total": 1.0,
         "max_rss_mb": round(max(rss), 1) if rss else "", "cpu_seconds": round(sum(cpu), 2) if cpu else ""},
        {**common, "row": "span", "rule": "first start to last end", "seconds": round(span, 2),
         "share_of_total": round(span / total, 4) if total else "", "max_rss_mb": "", "cpu_seconds": ""},
    ]


def timed_row(row: str, command: str, seconds: float, jobs_pending: int | None) -> dict[str, Any]:
    return {"row": row, "rule": command, "wildcards": "", "seconds": round(seconds, 3), "share_of_total": "",
            "max_rss_mb": "", "cpu_seconds": "", "repeats": 1,
            "jobs_pending": "" if jobs_pending is None else jobs_pending, "file": ""}


# --------------------------------------------------------------------------------------------
# Timing Snakemake in the study's folder


def snakemake_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", *arguments]


def pending_jobs(output: str) -> int | None:
    """Jobs a dry run would execute: 0 for "Nothing to be done", else its "total N" line;
    None when the output says neither (then the run failed or Snakemake changed its words)."""
    if NOTHING_TO_DO in output:
        return 0
    match = JOB_TOTAL.search(output)
    return int(match.group(1)) if match else None


def timed_command(command: list[str], workdir: Path) -> tuple[float, str]:
    """Wall seconds of `command` run in `workdir`, and its output; a failure is a DataError with its tail."""
    logger.info("timing: %s (in %s)", shlex.join(command), workdir)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=workdir, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    output = done.stdout + done.stderr
    if done.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-15:])
        raise DataError(f"`{shlex.join(command)}` failed in {workdir} (exit {done.returncode}):\n{tail}")
    return seconds, output


def find_snakefile(workdir: Path) -> Path | None:
    """Where Snakemake looks by default (Snakefile, snakefile, workflow/Snakefile, ...)."""
    for name in ("Snakefile", "snakefile", "workflow/Snakefile", "workflow/snakefile"):
        if (workdir / name).is_file():
            return workdir / name
    return None


def time_noop(workdir: Path, *, cores: int, extra: Sequence[str], real_run: bool) -> list[dict[str, Any]]:
    """The startup baseline, the dry run and (when asked and safe) a real no-op run."""
    seconds, _ = timed_command(snakemake_command("--version"), workdir)
    rows = [timed_row("startup", "snakemake --version", seconds, None)]
    # --nolock: a dry run changes nothing, and must not wait for (or break) a study still running here.
    dry = snakemake_command("-n", "--cores", str(cores), "--nolock", *extra)
    seconds, output = timed_command(dry, workdir)
    jobs = pending_jobs(output)
    rows.append(timed_row("noop", shlex.join(["snakemake", *dry[3:]]), seconds, jobs))
    if jobs != 0:
        logger.warning("the dry run would run %s jobs: not a no-op (changed code, config or inputs? give the "
                       "study's --cores and --snakemake-args); its time is still the cost of deciding that",
                       "some" if jobs is None else jobs)
    if real_run:
        if jobs != 0:
            logger.warning("--real-noop skipped: the dry run found jobs to run, and this benchmark never starts them")
        else:
            command = snakemake_command("--cores", str(cores), *extra)
            seconds, output = timed_command(command, workdir)
            rows.append(timed_row("noop_run", shlex.join(["snakemake", *command[3:]]), seconds, pending_jobs(output)))
    return rows


# --------------------------------------------------------------------------------------------
# Quick mode: a fake study made here


QUICK_JOBS = {  # file -> (s, max_rss MB, cpu_time s): the shape of a real study, seconds shrunk
    "make_inventory.tsv": (1.3, 118.4, 2.1),
    "make_tfrecords.tsv": (3.6, 119.5, 6.0),
    "train_model/convnet.tsv": (41.2, 2510.0, 80.3),
    "train_model/dense.tsv": (12.8, 3120.5, 24.9),
    "evaluate_model/convnet.tsv": (6.1, 1480.2, 9.8),
}
QUICK_SNAKEFILE = '''rule all:
    input: "done.txt"

rule make:
    output: "done.txt"
    shell: "echo done > {output}"
'''
BENCHMARK_HEADER = ("s", "h:m:s", "max_rss", "max_vms", "max_uss", "max_pss", "io_in", "io_out", "mean_load",
                    "cpu_time")


def make_quick_study(folder: Path) -> tuple[Path, Path]:
    """A benchmarks folder shaped like a real study's, and a one-rule workflow whose output is
    already there (so its dry run is a true no-op). Returns (benchmarks, workdir)."""
    benchmarks, workdir = folder / "benchmarks", folder / "workdir"
    for name, (seconds, rss, cpu) in QUICK_JOBS.items():
        path = benchmarks / name
        path.parent.mkdir(parents=True, exist_ok=True)
        values = (seconds, time.strftime("%H:%M:%S", time.gmtime(seconds)), rss, rss * 3, rss * 0.8, rss * 0.9,
                  0.0, 1.0, 100 * cpu / seconds, cpu)
        path.write_text("\t".join(BENCHMARK_HEADER) + "\n" + "\t".join(map(str, values)) + "\n", encoding="utf-8")
    workdir.mkdir()
    (workdir / "Snakefile").write_text(QUICK_SNAKEFILE, encoding="utf-8")
    (workdir / "done.txt").write_text("done\n", encoding="utf-8")
    return benchmarks, workdir


# --------------------------------------------------------------------------------------------
# Output


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    print(f"{'row':<9}{'rule':<36}{'wildcards':<24}{'seconds':>10}{'share':>8}{'max RSS MB':>12}{'CPU s':>9}"
          f"{'pending':>9}")
    for row in rows:
        share = f"{row['share_of_total']:.1%}" if row["share_of_total"] != "" else ""
        print(f"{row['row']:<9}{str(row['rule'])[:35]:<36}{str(row['wildcards'])[:23]:<24}{row['seconds']:>10}"
              f"{share:>8}{row['max_rss_mb']!s:>12}{row['cpu_seconds']!s:>9}{row['jobs_pending']!s:>9}", flush=True)


def run(args: argparse.Namespace, scratch: Path) -> list[dict[str, Any]]:
    if args.quick:
        benchmarks, workdir = make_quick_study(scratch)
    else:
        benchmarks, workdir = args.benchmarks, args.workdir
    jobs = read_jobs(benchmarks)
    rows = stage_rows(jobs) + summary_rows(jobs)
    if find_snakefile(workdir) is None:
        logger.warning("no Snakefile in %s: the no-op rerun is not timed (give --workdir, the study's folder)",
                       workdir)
        return rows
    extra = shlex.split(args.snakemake_args or "")
    return rows + time_noop(workdir, cores=args.cores, extra=extra, real_run=args.real_noop)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmarks", type=Path, default=Path("benchmarks"),
                        help="folder of the study's Snakemake benchmark files (default %(default)s)")
    parser.add_argument("--workdir", type=Path, default=Path("."),
                        help="the folder the study ran in, for the no-op rerun (default %(default)s)")
    parser.add_argument("--cores", type=positive_int, default=os.cpu_count() or 1,
                        help="--cores of the no-op rerun: the study's, or parameters that depend on it "
                             "make jobs pending (default: this machine's CPUs, %(default)s)")
    parser.add_argument("--snakemake-args", default="",
                        help="more arguments for the no-op rerun, as the study had them, in one "
                             "shell-quoted string (e.g. \"--config data_source=/data/flower_photos\")")
    parser.add_argument("--real-noop", action="store_true",
                        help="also time a real `snakemake --cores N` when the dry run finds nothing to do")
    parser.add_argument("--out", type=Path, default=Path("results/bench/study.csv"))
    parser.add_argument("--quick", action="store_true",
                        help="a fake benchmarks folder and a one-rule workflow made here (CI, seconds)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def produce() -> list[dict[str, Any]]:
        with tempfile.TemporaryDirectory(prefix="bench_study-") as scratch:
            return run(args, Path(scratch))

    return run_script("bench_study", produce, args.out, print_table)


if __name__ == "__main__":
    sys.exit(main())
