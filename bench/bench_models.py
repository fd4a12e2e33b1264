"""Training-step throughput of the architectures under alternative settings, on this machine.

Three comparisons decide defaults in flowerlab.models, flowerlab.devices and flowerlab.training.stage:

  precision  each architecture (--archs; convnet and squeezenet by default) in float32 (the
             baseline) vs mixed_bfloat16, then what `precision: auto`'s short probe
             (flowerlab.training.precision) picks for it, as a fraction of the faster policy's
             throughput measured here at length: auto must come within 5% of the faster.
  batchnorm  squeezenet with keras.layers.BatchNormalization (the baseline) vs the fused-kernel
             FusedBatchNormalization (flowerlab.models.layers): decides squeezenet's default.
  optimizer  each architecture with keras.optimizers.Adam (the baseline) vs the study's
             flowerlab.training.optimizers.FusedAdam (same math, TensorFlow's one-pass kernel).

Random images, a fixed batch, Adam (FusedAdam unless the optimizer is compared), `train_on_batch` after warm-up steps (tracing excluded).
Configurations are measured in interleaved rounds and each figure is the median step time over
all rounds, so that load from other processes on a shared machine hits every configuration alike.

    python bench/bench_models.py --compare batchnorm --seconds 30
    python bench/bench_models.py --compare precision --seconds 20 --out results/bench/models.csv
    python bench/bench_models.py --compare precision --archs dense mobilenet_v2 --seconds 12
    python bench/bench_models.py --compare optimizer --archs dense convnet --seconds 20
    python bench/bench_models.py --quick          # seconds: checks that the benchmark works
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from common import write_csv

COMPARISONS = ("precision", "batchnorm", "optimizer")


@dataclass
class Config:
    label: str
    arch: str
    policy: str
    build: Callable[[], object]
    optimizer: str = "fused"  # "fused": flowerlab.training.optimizers.FusedAdam (the study's); "keras": keras Adam
    step_seconds: list[float] = field(default_factory=list)


def make_configs(
    compare: str, *, image_size: int, num_classes: int, archs: list[str]
) -> list[Config]:
    from flowerlab.models import squeezenet
    from flowerlab.models.build import build_model

    def registry(arch: str) -> Callable[[], object]:
        return lambda: build_model(arch, num_classes=num_classes, image_size=image_size)

    def squeeze(batch_norm: str) -> Callable[[], object]:
        return lambda: squeezenet.build(
            num_classes=num_classes, image_size=image_size, batch_norm=batch_norm
        )

    if compare == "precision":
        return [
            Config(f"{arch} {policy}", arch, policy, registry(arch))
            for arch in archs
            for policy in ("float32", "mixed_bfloat16")
        ]
    if compare == "batchnorm":
        return [
            Config(f"squeezenet {bn} BN float32", "squeezenet", "float32", squeeze(bn))
            for bn in ("keras", "fused")
        ]
    if compare == "optimizer":
        return [
            Config(f"{arch} {optimizer} Adam float32", arch, "float32", registry(arch), optimizer)
            for arch in archs
            for optimizer in ("keras", "fused")
        ]
    raise ValueError(compare)


def prepare(config: Config, batch: tuple[np.ndarray, np.ndarray], warmup_steps: int):
    import keras

    keras.mixed_precision.set_global_policy(config.policy)
    try:
        model = config.build()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    from flowerlab.training.optimizers import FusedAdam

    optimizer = FusedAdam(1e-3) if config.optimizer == "fused" else keras.optimizers.Adam(1e-3)
    model.compile(optimizer=optimizer, loss="categorical_crossentropy")
    for _ in range(warmup_steps):  # the first step traces the graph
        model.train_on_batch(*batch)
    return model


def time_steps(model, batch: tuple[np.ndarray, np.ndarray], steps: int) -> list[float]:
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(*batch)
        times.append(time.perf_counter() - start)
    return times


def measure(
    configs: list[Config], batch: tuple[np.ndarray, np.ndarray], *, seconds: float, rounds: int
) -> None:
    """Fill each configuration's step times, in interleaved rounds."""
    models = [prepare(config, batch, warmup_steps=2) for config in configs]
    for _ in range(rounds):
        for config, model in zip(configs, models, strict=True):
            # One step at least; then as many as fit this round's share of the time budget.
            step = time_steps(model, batch, 1)
            more = int(seconds / rounds / max(step[0], 1e-3)) - 1
            config.step_seconds += step + time_steps(model, batch, max(more, 0))


def result_rows(compare: str, configs: list[Config], batch_size: int) -> list[dict[str, object]]:
    """One row per configuration; the first configuration of each architecture is its baseline."""
    rows: list[dict[str, object]] = []
    baselines: dict[str, float] = {}
    for config in configs:
        seconds = statistics.median(config.step_seconds)
        rate = batch_size / seconds
        baseline = baselines.setdefault(config.arch, rate)
        rows.append(
            {
                "comparison": compare,
                "configuration": config.label,
                "arch": config.arch,
                "policy": config.policy,
                "steps": len(config.step_seconds),
                "seconds_per_step": round(seconds, 4),
                "images_per_second": round(rate, 2),
                "speedup_vs_baseline": round(rate / baseline, 3),
            }
        )
    return rows


def auto_rows(measured: list[dict[str, object]], args: argparse.Namespace, num_classes: int) -> list[dict[str, object]]:
    """What precision auto's probe picks per architecture (measured afresh, no cache), and the
    picked policy's long-measured throughput over the faster policy's."""
    from flowerlab.training.precision import ProbeSetup, choose_cpu_precision, measure_training_speed

    rows = []
    for arch in args.archs:
        rates = {row["policy"]: float(row["images_per_second"]) for row in measured if row["arch"] == arch}
        setup = ProbeSetup(arch, {"learning_rate": 1e-3}, args.image_size, num_classes, args.batch_size,
                           cached_features=False, threads=args.threads or None)
        choice = choose_cpu_precision(setup, cache_dir=None, cpu_model="", tensorflow="", measure=measure_training_speed)
        rows.append({"comparison": "auto", "configuration": f"{arch} auto", "arch": arch, "policy": choice.policy,
                     "images_per_second": rates[choice.policy],
                     "auto_vs_faster": round(rates[choice.policy] / max(rates.values()), 3),
                     "probe_images_per_second": choice.images_per_second})
    return rows


def print_auto(rows: list[dict[str, object]]) -> None:
    print(f"{'architecture':<24} {'auto picks':<16} {'of the faster':>13}")
    for row in rows:
        verdict = "ok" if float(row["auto_vs_faster"]) >= 0.95 else "MORE THAN 5% SLOWER"
        print(f"{row['arch']:<24} {row['policy']:<16} {float(row['auto_vs_faster']):>12.1%}  {verdict}", flush=True)


def print_rows(rows: list[dict[str, object]]) -> None:
    print(f"{'configuration':<36} {'steps':>5} {'s/step':>8} {'images/s':>9} {'vs baseline':>11}")
    for row in rows:
        print(
            f"{row['configuration']:<36} {row['steps']:>5} {row['seconds_per_step']:>8.3f} "
            f"{row['images_per_second']:>9.1f} {row['speedup_vs_baseline']:>10.2f}x",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--compare",
        nargs="+",
        choices=COMPARISONS,
        default=list(COMPARISONS),
        help="which comparisons to run (default: all)",
    )
    parser.add_argument(
        "--archs",
        nargs="+",
        default=["convnet", "squeezenet"],
        help="architectures of the precision comparison (random weights)",
    )
    parser.add_argument(
        "--seconds", type=float, default=30.0, help="timed seconds per configuration"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=192)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="TensorFlow intra-op threads (0: leave TensorFlow's setting)",
    )
    parser.add_argument("--out", type=Path, help="also write the figures to this CSV file")
    parser.add_argument("--quick", action="store_true", help="tiny images, 3 steps, convnet (and squeezenet's batch norms): a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.image_size, args.batch_size, args.seconds, args.rounds, args.archs = 32, 4, 0.0, 1, ["convnet"]

    from flowerlab.devices import configure_threads, cpu_bfloat16_kind, cpu_model_name

    if args.threads:
        configure_threads(args.threads)
    num_classes = 5
    rng = np.random.default_rng(0)
    images = rng.random((args.batch_size, args.image_size, args.image_size, 3), dtype=np.float32)
    labels = np.eye(num_classes, dtype=np.float32)[rng.integers(0, num_classes, args.batch_size)]
    batch = (images, labels)
    print(
        f"# {cpu_model_name()}, bfloat16: {cpu_bfloat16_kind() or 'emulated'}, "
        f"{args.threads or 'default'} threads, batch {args.batch_size}, {args.image_size} px",
        flush=True,
    )
    rows: list[dict[str, object]] = []
    for compare in args.compare:
        configs = make_configs(
            compare, image_size=args.image_size, num_classes=num_classes, archs=args.archs
        )
        measure(configs, batch, seconds=args.seconds, rounds=args.rounds)
        print(f"## {compare}")
        rows += (compared := result_rows(compare, configs, args.batch_size))
        print_rows(compared)
        if compare == "precision":
            rows += (picks := auto_rows(compared, args, num_classes))
            print_auto(picks)
    if args.out:
        write_csv(args.out, rows, columns=list(dict.fromkeys(key for row in rows for key in row)))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
