"""Independent trainings: one at a time with every CPU, or all at once with a share of the CPUs each?

    python bench/bench_concurrency.py --manifest results/data/manifest.json          # the real TFRecords
    python bench/bench_concurrency.py --manifest results/data/manifest.json --archs convnet convnet
    python bench/bench_concurrency.py --quick                                        # CI: synthetic, ~30 s

The same set of short trainings (`--archs`, default convnet and dense: one architecture of each
kind the study trains), each a separate Python process running flowerlab's own training path
(bench/bench_training.py's helpers: `flowerlab.models.build.build_model`, `flowerlab.training.setup.compile_model`,
`flowerlab.training.setup.make_datasets` on the manifest's TFRecords), is run

* `sequential` (**baseline**, what the workflow does today): one process after another, each with
  all `--cpus` as TensorFlow and tf.data threads;
* `concurrent`: all processes started at once, each with `--cpus` / N threads (at least 1); each
  waits for the others at the end of its first, untimed step, so that their timed steps start together.

Each training: start Python and TensorFlow, build and compile the model, fill the pipeline's uint8
cache with one pass over the training records (as a study's first epoch does), `fit` `--warmup`
steps (tracing the training step), then `fit` 1 + `--steps` steps of `--batch-size` images, the
`--steps` timed (from the end of the first step to the end of the last; that first step of a new
`fit` fills the shuffle buffer; it took 2 s longer for convnet than for dense in a run here).

Figures per mode (alternating the order of the modes in each of `--rounds` rounds, so drifting load
from other processes hits both alike):

| figure | meaning |
|---|---|
| `wall_seconds` | first process started to last process ended: what the set costs, start-up included |
| `steady_images_per_s` | timed images of all trainings / the time they took: sequential, the sum of each training's timed seconds; concurrent, the first timed step's start to the last one's end (the steady state of long trainings, start-up left out) |
| `wall_speedup`, `steady_speedup` | concurrent against sequential (> 1: running them at once is faster) |
| `overlap` | concurrent only: the share of the timed span in which every training was in its timed steps (a fast architecture that finishes early leaves the slow one alone with its share of the CPUs) |

Results go to results/bench/concurrency.csv (--out), written atomically.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import write_csv
from concurrency_results import COLUMNS, MODES, ModeResult, Training, per_training_text, print_table, result_rows

from flowerlab.console import configure_logging, positive_int, run_command
from flowerlab.errors import DataError

logger = logging.getLogger("bench_concurrency")

SCRIPT = Path(__file__).resolve()
DEFAULT_ARCHS = ("convnet", "dense")


# --------------------------------------------------------------------------------------------
# One training (the worker process)


def train_once(args: argparse.Namespace) -> dict[str, Any]:
    """One short training as `flowerlab train` runs it; returns what the parent needs."""
    started = time.time()
    from flowerlab import devices  # imports TensorFlow

    devices.configure_threads(args.threads)  # before TensorFlow's runtime starts
    import keras
    from bench_training import flowerlab_path, weights_for
    from steps import BenchSettings, check_timed_steps, fill_cache

    from flowerlab.data.manifest import load_manifest

    weights, note = weights_for(args.worker, args.weights)
    if weights is None:
        raise DataError(f"{args.worker} {note}")
    manifest = load_manifest(args.manifest)
    settings = BenchSettings(batch_size=args.batch_size, warmup=args.warmup, steps=args.steps, rounds=1,
                             seed=args.seed, precision="auto", threads=args.threads)
    keras.utils.set_random_seed(args.seed)
    device = devices.select_strategy(args.accelerator)
    with tempfile.TemporaryDirectory(prefix="bench_concurrency-") as scratch:
        path = flowerlab_path(args.worker, args.manifest, manifest, device, weights, settings, Path(scratch))
        check_timed_steps(settings, path.full_batches, path.global_batch, f"{args.manifest}'s training records")
        fill_cache(path.dataset)  # the study's first epoch fills it too
        # The warm-up steps trace the training step (Keras keeps the traced function for the next fit).
        path.model.fit(path.dataset, epochs=1, steps_per_epoch=args.warmup, verbose=0, shuffle=False)
        ready = time.time()
        ends = timed_fit(path.model, path.dataset, args)
    seconds = ends[-1] - ends[0]
    timed_end = time.time() - (time.perf_counter() - ends[-1])  # the last step's end on the wall clock
    return {"arch": args.worker, "threads": args.threads, "images": args.steps * path.global_batch,
            "steady_seconds": seconds, "timed_start": timed_end - seconds, "timed_end": timed_end,
            "ready_seconds": ready - started, "precision": path.precision}


def timed_fit(model: Any, dataset: Any, args: argparse.Namespace) -> list[float]:
    """One `fit` of 1 + `--steps` steps; returns the perf_counter at the end of each step. The
    first step (a new iterator: the shuffle buffer fills, kernels warm up, seconds apart between
    architectures) is untimed; in the concurrent mode every training waits for the others at its
    end, so that their timed steps start together."""
    import keras
    from steps import make_step_timer, warn_about_outliers

    class WaitForTheOthers(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            if batch == 0 and args.barrier is not None:
                wait_for_the_others(args.barrier, args.index, args.processes)

    timer = make_step_timer()  # after the barrier's callback: the clock starts once all are ready
    model.fit(dataset, epochs=1, steps_per_epoch=1 + args.steps, callbacks=[WaitForTheOthers(), timer],
              verbose=0, shuffle=False)
    if len(timer.ends) != 1 + args.steps:
        raise RuntimeError(f"{args.worker}: fit ran {len(timer.ends)} steps, expected {1 + args.steps}")
    warn_about_outliers(args.worker, timer.ends)
    return timer.ends


BARRIER_TIMEOUT_SECONDS = 900.0


def wait_for_the_others(folder: Path, index: int, processes: int) -> None:
    """Say this training is ready (a file in `folder`) and wait until all `processes` are: the
    concurrent trainings then time their steps together, whatever their start-up took."""
    (folder / f"ready-{index}").touch()
    deadline = time.monotonic() + BARRIER_TIMEOUT_SECONDS
    while len(list(folder.glob("ready-*"))) < processes:
        if time.monotonic() > deadline:
            raise DataError(f"the other trainings were not ready after {BARRIER_TIMEOUT_SECONDS:.0f} s")
        time.sleep(0.01)


# --------------------------------------------------------------------------------------------
# The parent: starting the processes


def worker_command(arch: str, threads: int, result: Path, args: argparse.Namespace, manifest: Path, *,
                   barrier: tuple[Path, int, int] | None) -> list[str]:
    """The command of one training; `barrier` (folder, this one's index, processes) makes it wait
    for the others before its timed steps."""
    command = [sys.executable, str(SCRIPT), "--worker", arch, "--threads", str(threads), "--result", str(result),
               "--manifest", str(manifest), "--batch-size", str(args.batch_size), "--warmup", str(args.warmup),
               "--steps", str(args.steps), "--seed", str(args.seed), "--accelerator", args.accelerator]
    if args.weights is not None:
        command += ["--weights", str(args.weights)]
    if barrier is not None:
        folder, index, processes = barrier
        command += ["--barrier", str(folder), "--index", str(index), "--processes", str(processes)]
    return command


def run_processes(commands: Sequence[list[str]], *, at_once: bool, logs: Path) -> float:
    """Run the commands one after another or all at once; returns the wall seconds from the
    first start to the last end. A failed process is a DataError with the tail of its log."""
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    started = time.perf_counter()
    running: list[tuple[subprocess.Popen[bytes], Path]] = []
    for index, command in enumerate(commands):
        log = logs / f"{len(list(logs.iterdir()))}-{index}.log"
        with open(log, "wb") as handle:
            process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=environment)
        running.append((process, log))
        if not at_once:
            wait_for(process, log)
    for process, log in running:
        wait_for(process, log)
    return time.perf_counter() - started


def wait_for(process: subprocess.Popen[bytes], log: Path) -> None:
    if process.wait() != 0:
        tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-12:])
        raise DataError(f"a training process failed (exit {process.returncode}):\n{tail}")


def run_mode(mode: str, round_index: int, archs: Sequence[str], cpus: int, args: argparse.Namespace,
             manifest: Path, scratch: Path) -> ModeResult:
    threads = cpus if mode == "sequential" else max(1, cpus // len(archs))
    results = [scratch / f"round{round_index}-{mode}-{index}-{arch}.json" for index, arch in enumerate(archs)]
    barrier = scratch / f"round{round_index}-{mode}-barrier"
    barrier.mkdir()
    commands = [worker_command(arch, threads, result, args, manifest,
                               barrier=(barrier, index, len(archs)) if mode == "concurrent" else None)
                for index, (arch, result) in enumerate(zip(archs, results, strict=True))]
    logger.info("round %d, %s: %s, %d thread(s) each", round_index, mode, " ".join(archs), threads)
    wall = run_processes(commands, at_once=mode == "concurrent", logs=scratch / "logs")
    trainings = [Training(**json.loads(path.read_text())) for path in results]
    outcome = ModeResult(mode, round_index, trainings, wall)
    logger.info("round %d, %s: %.1f s wall, %.1f images/s steady (%s)", round_index, mode, wall,
                outcome.steady_images_per_s, per_training_text(trainings))
    return outcome


# --------------------------------------------------------------------------------------------
# Rows


# --------------------------------------------------------------------------------------------
# The run


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from common import make_quick_data

    with tempfile.TemporaryDirectory(prefix="bench_concurrency-") as scratch_name:
        scratch = Path(scratch_name)
        (scratch / "logs").mkdir()
        if args.quick:
            _, manifest = make_quick_data(scratch / "quick", image_size=32)
            source = "quick synthetic set (32 px)"
        else:
            manifest = args.manifest
            if not manifest.is_file():
                raise DataError(f"manifest {manifest} not found: build the TFRecords (flowerlab tfrecords) or "
                                "give --manifest")
            source = str(manifest)
        context = {"archs_list": list(args.archs), "cpus": args.cpus, "batch_size": args.batch_size,
                   "warmup": args.warmup, "steps": args.steps, "load_average": round(os.getloadavg()[0], 2),
                   "source": source}
        results = []
        for round_index in range(1, args.rounds + 1):
            order = MODES if round_index % 2 else tuple(reversed(MODES))
            for mode in order:
                results.append(run_mode(mode, round_index, args.archs, args.cpus, args, manifest, scratch))
        return result_rows(results, context)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, default=Path("results/data/manifest.json"),
                        help="manifest.json of the TFRecords (default %(default)s)")
    parser.add_argument("--archs", nargs="+", default=list(DEFAULT_ARCHS),
                        help="the trainings of the set, one process each (default: %(default)s)")
    parser.add_argument("--cpus", type=positive_int, default=os.cpu_count() or 1,
                        help="CPUs to share: sequential trainings get all, concurrent ones CPUS / N each "
                             "(default: this machine's, %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--warmup", type=positive_int, default=3, help="untimed steps first (default %(default)s)")
    parser.add_argument("--steps", type=positive_int, default=40, help="timed steps (default %(default)s)")
    parser.add_argument("--rounds", type=positive_int, default=2,
                        help="rounds of both modes, their order alternating (default %(default)s)")
    parser.add_argument("--weights", type=Path, default=None,
                        help="MobileNetV2 no-top .h5 weights, for MobileNetV2 architectures (default "
                             "$FLOWERLAB_MOBILENET_WEIGHTS or ../shared/data/weights/...)")
    parser.add_argument("--accelerator", default="auto", choices=("auto", "tpu", "gpu", "cpu"))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=positive_int, default=None, help=argparse.SUPPRESS)  # worker's
    parser.add_argument("--out", type=Path, default=Path("results/bench/concurrency.csv"))
    parser.add_argument("--quick", action="store_true",
                        help="synthetic TFRecords made here, 32 px, batch 8, 1 + 3 steps, one round (CI)")
    # One training, run by the parent in its own process.
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--barrier", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--processes", type=int, default=1, help=argparse.SUPPRESS)
    return parser


def resolve_arguments(args: argparse.Namespace) -> argparse.Namespace:
    from common import default_weights

    if args.weights is None:
        args.weights = default_weights()
    if args.quick and not args.worker:
        args.batch_size, args.warmup, args.steps, args.rounds = 8, 1, 3, 1
    return args


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()

    def work() -> None:
        args = resolve_arguments(parser.parse_args(argv))
        if args.worker:
            args.result.write_text(json.dumps(train_once(args)))
            return
        rows = [{column: row[column] for column in COLUMNS} for row in run(args)]
        write_csv(args.out, rows)
        print_table(rows)
        print(f"wrote {args.out}")

    return run_command("bench_concurrency", work)


if __name__ == "__main__":
    sys.exit(main())
