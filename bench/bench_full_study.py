"""The whole study from nothing on this machine's accelerator, in one command: wall time, each
stage's seconds and each model's training throughput.

    python bench/bench_full_study.py --accelerator gpu                          # the default study
    python bench/bench_full_study.py --accelerator gpu --cores 16 --config data_source=/data/flower_photos
    python bench/bench_full_study.py --fresh ...      # move earlier results/, benchmarks/, logs/ aside first
    python bench/bench_full_study.py --quick          # CI: the synthetic smoke study (dense, one seed), CPU

In --workdir (the repository by default) it

1. refuses when a study's outputs are already there (results/, benchmarks/): the figure would be a
   partial rerun's. `--fresh` moves results/, benchmarks/ and logs/ aside to `<name>.before-<UTC time>`
   (nothing is deleted; results/README.md and the benchmarks' results/bench/ stay, copied back, and
   the official download's cache in resources/ is kept, as a rerun would);
2. runs `snakemake --cores N --config accelerator=A [ITEM ...]` and times it (wall). With `gpu` or
   `tpu` the training jobs fail in seconds, with the reason, when TensorFlow does not see one: no
   hour of CPU training by mistake;
3. prints each job's seconds from the `benchmark:` files (bench_study.py's table: stages, total,
   span), then per model the training images/s, precision, training seconds, validation accuracy
   and device of the study's results/metrics.csv;
4. writes those job rows plus a `wall` row to results/bench/study.csv (`--out`), the file
   run_all.py summarises.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_study import (
    print_table,
    snakemake_command,
    stage_rows,
    summary_rows,
    timed_row,
)
from common import write_csv

from flowerlab.console import configure_logging, positive_int, run_command
from flowerlab.errors import DataError
from flowerlab.reporting.timings import read_jobs

logger = logging.getLogger("bench_full_study")

REPO_ROOT = Path(__file__).resolve().parents[1]
OUTPUT_FOLDERS = ("results", "benchmarks", "logs")  # what a study writes (resources/ is the download cache)
# Not the study's outputs, though inside results/: git's README, and the benchmarks' figures (bench/),
# which the report shows beside the study's own times when they are there.
KEPT = {"results": ("README.md", "bench")}
QUICK_CONFIG = ["study=[dense]", "models={dense: {epochs: 1}}", "seeds=[1]"]


def is_kept(folder_name: str, relative: Path) -> bool:
    return relative.parts[0] in KEPT.get(folder_name, ())


def existing_outputs(workdir: Path) -> list[str]:
    """The output folders in `workdir` that hold a study's files (not only the KEPT ones)."""
    found = []
    for name in ("results", "benchmarks"):
        folder = workdir / name
        if folder.is_dir() and any(path.is_file() and not is_kept(name, path.relative_to(folder))
                                   for path in folder.rglob("*")):
            found.append(name)
    return found


def move_aside(workdir: Path, stamp: str) -> list[Path]:
    """Each output folder renamed to `<name>.before-<stamp>`; copies of the KEPT files and folders
    in them (results/README.md, results/bench/) stay where they were."""
    moved = []
    for name in OUTPUT_FOLDERS:
        folder = workdir / name
        if not folder.exists():
            continue
        target = workdir / f"{name}.before-{stamp}"
        folder.rename(target)
        moved.append(target)
        folder.mkdir()
        for kept in KEPT.get(name, ()):
            if (target / kept).is_dir():
                shutil.copytree(target / kept, folder / kept)
            elif (target / kept).is_file():
                shutil.copy2(target / kept, folder / kept)
    return moved


def copy_workflow(dest: Path) -> Path:
    """A user's checkout without its results (Snakefile, environment.yml, workflow/, config/), for --quick."""
    for name in ("Snakefile", "environment.yml"):
        shutil.copy2(REPO_ROOT / name, dest / name)
    for name in ("workflow", "config"):
        shutil.copytree(REPO_ROOT / name, dest / name)
    return dest


def model_rows(workdir: Path) -> list[dict[str, str]]:
    """Per trained model (architecture and replicate), from the study's results/metrics.csv."""
    with open(workdir / "results" / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def print_models(rows: list[dict[str, str]]) -> None:
    print(f"\n{'model':<30}{'train images/s':>15}{'precision':>17}{'train s':>9}{'val acc':>9}  device")
    for row in rows:
        print(f"{row['arch'] + ' ' + row['replicate']:<30}{float(row['train_images_per_s']):>15.1f}{row['precision']:>17}"
              f"{float(row['training_seconds']):>9.0f}{float(row['val_accuracy']):>9.4f}  {row['training_device']}",
              flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accelerator", choices=("auto", "tpu", "gpu", "cpu"), default="auto",
                        help="the study's accelerator (gpu/tpu: fail when absent; default %(default)s)")
    parser.add_argument("--cores", type=positive_int, default=os.cpu_count() or 1,
                        help="snakemake --cores (default: this machine's CPUs, %(default)s)")
    parser.add_argument("--config", nargs="*", default=[], metavar="ITEM",
                        help="more --config items, e.g. data_source=/data/flower_photos 'study=[convnet]'")
    parser.add_argument("--snakemake-args", default="",
                        help="other snakemake arguments in one shell-quoted string (e.g. \"--configfile x.yaml\")")
    parser.add_argument("--workdir", type=Path, default=REPO_ROOT, help="where the study runs (default: the repo)")
    parser.add_argument("--fresh", action="store_true",
                        help="move earlier results/, benchmarks/ and logs/ aside to <name>.before-<UTC time>")
    parser.add_argument("--out", type=Path, help="CSV of the job rows (default WORKDIR/results/bench/study.csv)")
    parser.add_argument("--quick", action="store_true",
                        help="CI: the synthetic smoke study, dense only, on the CPU, in a temporary copy")
    return parser


def run_study(args: argparse.Namespace, workdir: Path) -> None:
    found = existing_outputs(workdir)
    if found and not args.fresh:
        raise DataError(f"{workdir} already holds a study's outputs ({', '.join(f'{name}/' for name in found)}): its time would be a "
                        "partial rerun's. Pass --fresh to move results/, benchmarks/ and logs/ aside first")
    if args.fresh:
        for target in move_aside(workdir, time.strftime("%Y%m%d-%H%M%S", time.gmtime())):
            logger.info("moved aside: %s", target)
    command = snakemake_command("--cores", str(args.cores), *shlex.split(args.snakemake_args),
                                "--config", f"accelerator={args.accelerator}", *args.config)
    logger.info("running: %s", shlex.join(command))
    started = time.perf_counter()
    done = subprocess.run(command, cwd=workdir, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise DataError(f"the study failed after {wall:.0f} s (snakemake exit {done.returncode}); "
                        f"its logs are in {workdir / 'logs'}")
    jobs = read_jobs(workdir / "benchmarks")
    rows = stage_rows(jobs) + summary_rows(jobs) + [timed_row("wall", shlex.join(command[2:]), wall, None)]
    out = args.out or workdir / "results" / "bench" / "study.csv"
    write_csv(out, rows)
    print_table(rows)
    print_models(model_rows(workdir))
    print(f"\nstudy wall time {wall:.1f} s ({wall / 60:.1f} min), accelerator {args.accelerator}, "
          f"--cores {args.cores}; wrote {out}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()

    def work() -> None:
        if not args.quick:
            run_study(args, args.workdir.resolve())
            return
        args.accelerator, args.cores = "cpu", min(args.cores, 2)
        args.snakemake_args = f"--configfile config/smoke.yaml {args.snakemake_args}"
        args.config = [*QUICK_CONFIG, *args.config]
        with tempfile.TemporaryDirectory(prefix="bench_full_study-") as scratch:
            run_study(args, copy_workflow(Path(scratch)))

    return run_command("bench_full_study", work)


if __name__ == "__main__":
    sys.exit(main())
