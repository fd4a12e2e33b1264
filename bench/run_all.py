"""Every benchmark in one command, then one summary table, summary.csv and benchmarks.png.

    python bench/run_all.py                                   # the real data, results in results/bench/
    python bench/run_all.py --only training,study             # some parts
    python bench/run_all.py --quick                           # CI: every part on tiny synthetic inputs

Runs the scripts of bench/ one after another, each as its own process with the same inputs and
thread limit (a part whose inputs are missing is skipped with the reason):

| part          | script              | needs                                | headline figures |
|---------------|---------------------|--------------------------------------|------------------|
| `tfrecords`   | bench_tfrecords.py  | `--photos`                           | TFRecords stage images/s vs the single-thread decode→resize→encode limit |
| `pipeline`    | bench_pipeline.py   | `--manifest`                         | input pipeline cold and cached images/s vs one-by-one JPEG decoding |
| `training`    | bench_training.py   | `--manifest`, `--photos` (`--weights`) | flowerlab vs plain Keras images/s per architecture, ratio, MFU |
| `models`      | bench_models.py     | nothing (random images)              | images/s per precision and batch-norm kernel vs the baseline |
| `concurrency` | bench_concurrency.py | `--manifest`                        | trainings at once with CPUs/N threads vs one at a time with all CPUs |
| `study`       | bench_study.py      | `--benchmarks` of a finished study   | wall seconds per stage and in all, the no-op rerun's seconds |

Each script writes its CSV into `--out-dir` (results/bench/); then every part's CSV found there
is summarised, the parts not run now marked with their file's time: the table is printed and
written to summary.csv, and benchmarks.png draws the training, study, throughput and concurrency
panels. `--quick` runs every part in its quick mode and writes into a temporary folder (printed)
unless `--out-dir` is given, so that it never replaces real results. Exits 1 when a part failed.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import default_photos, default_weights
from summaries import SUMMARISERS, draw_figure, file_time, print_summary, read_rows, summary_row, write_summary

BENCH = Path(__file__).resolve().parent
REPO_ROOT = BENCH.parent
# The course's architectures trained end to end: the quick run stays well under a minute without MobileNetV2.
QUICK_TRAINING_ARCHS = ("dense", "convnet", "squeezenet")


@dataclass(frozen=True)
class Part:
    name: str
    script: str
    csv: str  # the file it writes in --out-dir
    needs: Callable[[argparse.Namespace], str]  # why it cannot run here, or ""
    arguments: Callable[[argparse.Namespace, Path], list[str]]  # its arguments (full run)
    quick_arguments: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------
# What each part needs, and its arguments


def needs_photos(args: argparse.Namespace) -> str:
    return "" if args.photos.is_dir() else f"photo folder {args.photos} not found (--photos or $FLOWERLAB_REAL_DATA)"


def needs_manifest(args: argparse.Namespace) -> str:
    return "" if args.manifest.is_file() else f"manifest {args.manifest} not found (--manifest; flowerlab tfrecords)"


def needs_manifest_and_photos(args: argparse.Namespace) -> str:
    return needs_manifest(args) or needs_photos(args)


def needs_benchmarks(args: argparse.Namespace) -> str:
    if not args.benchmarks.is_dir() or not any(args.benchmarks.rglob("*.tsv")):
        return f"no Snakemake benchmark files under {args.benchmarks}: run a study first (--benchmarks, --workdir)"
    return ""


def needs_nothing(args: argparse.Namespace) -> str:
    return ""


def weights_arguments(args: argparse.Namespace) -> list[str]:
    return ["--weights", str(args.weights)] if args.weights is not None else []


PARTS = (
    Part("tfrecords", "bench_tfrecords.py", "tfrecords.csv", needs_photos,
         lambda a, out: ["--photos", str(a.photos), "--threads", str(a.threads), "--out", str(out)]),
    Part("pipeline", "bench_pipeline.py", "pipeline.csv", needs_manifest,
         lambda a, out: ["--manifest", str(a.manifest), *(["--photos", str(a.photos)] if a.photos.is_dir() else []),
                         "--threads", str(a.threads), "--out", str(out)]),
    Part("training", "bench_training.py", "training.csv", needs_manifest_and_photos,
         lambda a, out: ["--manifest", str(a.manifest), "--photos", str(a.photos), *weights_arguments(a),
                         "--threads", str(a.threads), "--out", str(out)],
         quick_arguments=("--archs", *QUICK_TRAINING_ARCHS)),
    Part("models", "bench_models.py", "models.csv", needs_nothing,
         lambda a, out: ["--threads", str(a.threads), "--out", str(out)],
         quick_arguments=("--compare", "precision", "--archs", "dense")),  # 2 models to trace, not 6
    Part("concurrency", "bench_concurrency.py", "concurrency.csv", needs_manifest,
         lambda a, out: ["--manifest", str(a.manifest), "--cpus", str(a.threads), *weights_arguments(a),
                         "--out", str(out)],
         quick_arguments=("--cpus", "2")),
    Part("study", "bench_study.py", "study.csv", needs_benchmarks,
         lambda a, out: ["--benchmarks", str(a.benchmarks), "--workdir", str(a.workdir), "--cores", str(a.cores),
                         "--snakemake-args", a.snakemake_args, "--out", str(out)]),
)
PART_NAMES = tuple(part.name for part in PARTS)


def command_for(part: Part, args: argparse.Namespace) -> list[str]:
    out = args.out_dir / part.csv
    arguments = ["--quick", *part.quick_arguments, "--out", str(out)] if args.quick else part.arguments(args, out)
    return [sys.executable, str(BENCH / part.script), *arguments]


# --------------------------------------------------------------------------------------------
# Running the parts


def run_parts(parts: Sequence[Part], args: argparse.Namespace) -> dict[str, str]:
    """Run each part in turn, its output shown as it comes; returns {part: status}."""
    status = {}
    for number, part in enumerate(parts, start=1):
        header = f"[{number}/{len(parts)}] {part.name}"
        reason = "" if args.quick else part.needs(args)
        if reason:
            print(f"{header}: skipped: {reason}", flush=True)
            status[part.name] = f"skipped: {reason}"
            continue
        command = command_for(part, args)
        print(f"{header}: {shlex.join(['python', *command[1:]])}", flush=True)
        started = time.perf_counter()
        # In the quick mode the scripts make their inputs in their own temporary folders; their
        # working folder is the output folder, so that nothing lands in the caller's.
        environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
        done = subprocess.run(command, cwd=args.out_dir if args.quick else None, env=environment, check=False)
        seconds = time.perf_counter() - started
        status[part.name] = "ran" if done.returncode == 0 else f"failed (exit {done.returncode})"
        print(f"{header}: {status[part.name]} in {seconds:.1f} s", flush=True)
    return status


# --------------------------------------------------------------------------------------------
# Summary: each part's CSV in (bench/summaries.py reads them), summary rows out


def summarise(out_dir: Path, status: dict[str, str]) -> list[dict[str, Any]]:
    """Every part's headline figures from its CSV in `out_dir`: this run's, or an earlier one's
    (marked with the file time); a part with neither gets one row saying why."""
    rows = []
    for part in PARTS:
        path = out_dir / part.csv
        ran = status.get(part.name, "not selected")
        if ran == "ran" or (path.is_file() and not ran.startswith("failed")):
            source = "this run" if ran == "ran" else f"earlier run ({file_time(path)}); {ran} now"
            try:
                found = SUMMARISERS[part.name](read_rows(path)) if path.is_file() else []
            except (KeyError, StopIteration, ValueError, IndexError) as error:
                found = [summary_row(part.name, "unreadable CSV", "", "", note=f"{path}: {error!r}")]
            rows += [{**row, "source": source} for row in found]
        else:
            rows.append({**summary_row(part.name, "not measured", "", "", note=ran), "source": ""})
    return rows


# --------------------------------------------------------------------------------------------
# Command line


def selected_parts(text: str | None) -> list[Part]:
    if not text:
        return list(PARTS)
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in PART_NAMES]
    if unknown:
        raise SystemExit(f"run_all: unknown part(s) {', '.join(unknown)}; the parts are {', '.join(PART_NAMES)}")
    return [part for part in PARTS if part.name in names]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help=f"comma-separated parts to run (default all: {','.join(PART_NAMES)})")
    parser.add_argument("--manifest", type=Path, default=Path("results/data/manifest.json"),
                        help="TFRecords manifest (default %(default)s)")
    parser.add_argument("--photos", type=Path, default=None,
                        help="the photos the TFRecords were made from (default $FLOWERLAB_REAL_DATA or "
                             "../shared/data/flower_photos)")
    parser.add_argument("--weights", type=Path, default=None,
                        help="MobileNetV2 no-top .h5 (default $FLOWERLAB_MOBILENET_WEIGHTS or ../shared/data/"
                             "weights/mobilenet_v2_1.0_224_no_top.h5 when present)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="threads (workers, TensorFlow pools) of every part; CPUs shared by the "
                             "concurrency part (default: this machine's CPUs, %(default)s)")
    parser.add_argument("--workdir", type=Path, default=Path("."), help="the study's folder (default .)")
    parser.add_argument("--benchmarks", type=Path, default=None,
                        help="its Snakemake benchmark files (default WORKDIR/benchmarks)")
    parser.add_argument("--cores", type=int, default=None,
                        help="the study's --cores, for the no-op rerun (default: --threads)")
    parser.add_argument("--snakemake-args", default="",
                        help="the study's other snakemake arguments, one quoted string (e.g. "
                             "\"--config data_source=/data/flower_photos\"), or the no-op finds jobs pending")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="where the CSVs, summary.csv and benchmarks.png go (default results/bench; with "
                             "--quick a new temporary folder)")
    parser.add_argument("--quick", action="store_true", help="every part in its quick mode (CI)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    parts = selected_parts(args.only)
    args.photos = (args.photos or default_photos()).resolve()
    args.weights = (args.weights or default_weights())
    args.manifest = args.manifest.resolve()
    args.workdir = args.workdir.resolve()
    args.benchmarks = (args.benchmarks or args.workdir / "benchmarks").resolve()
    args.cores = args.cores or args.threads
    if args.out_dir is None:
        args.out_dir = Path(tempfile.mkdtemp(prefix="flowerlab-bench-quick-")) if args.quick else Path("results/bench")
    args.out_dir = args.out_dir.resolve()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    print(f"benchmarks: {', '.join(part.name for part in parts)}{' (quick)' if args.quick else ''}; "
          f"results in {args.out_dir}", flush=True)
    started = time.perf_counter()
    status = run_parts(parts, args)
    rows = summarise(args.out_dir, status)
    print_summary(rows)
    write_summary(args.out_dir / "summary.csv", rows)
    draw_figure(args.out_dir, rows, args.out_dir / "benchmarks.png")
    print(f"wrote {args.out_dir / 'summary.csv'} and {args.out_dir / 'benchmarks.png'} "
          f"({time.perf_counter() - started:.0f} s in all)")
    return 1 if any(value.startswith("failed") for value in status.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
