"""Which TensorFlow kernel settings pay on this CPU: flowerlab's training path under each, in one run.

    python bench/bench_kernels.py --manifest results/data/manifest.json --threads 2          # the real data
    python bench/bench_kernels.py --manifest results/data/manifest.json --archs squeezenet --batch-size 64
    python bench/bench_kernels.py --quick       # CI: synthetic TFRecords made here, a few steps

TensorFlow reads its kernel library and CPU allocator from the environment when it loads
(flowerlab.kernels), so each setting runs in a process of its own (bench/child_side.py) that
builds flowerlab's training path once (the model, precision and input pipeline `flowerlab train`
uses, bench/flowerlab_side.py); the processes' rounds alternate. The settings:

* tensorflow   TensorFlow's own defaults: Eigen kernels on an AVX2-only CPU, oneDNN on a CPU with
               AVX512_VNNI, AVX512_BF16, AVX_VNNI or AMX; the default allocator;
* onednn       flowerlab's kernel library (kernels.DEFAULTS): TF_ENABLE_ONEDNN_OPTS=1, which is also
               what an AVX-512 CPU runs by default, forced here on any CPU, with TensorFlow's
               weight gradients;
* flowerlab    what every flowerlab process runs unless the user says otherwise: the same, and the
               convolutions' weight gradients by flowerlab's kernel where it chooses that
               (FLOWERLAB_WEIGHT_GRADIENTS=auto, flowerlab.training.weight_gradients);
* bfc          TF_CPU_ALLOCATOR_USE_BFC=true alone (Eigen kernels on an AVX2-only CPU);
* onednn+bfc   the allocator on top of flowerlab's kernels, measured and not kept.

`--cpu-kind avx2` times them as an AVX2-only CPU would run them, on a CPU with AVX-512 or AMX:
oneDNN capped at AVX2 in every process, and TensorFlow's defaults those of such a CPU (Eigen);
bench/child_side.py says what this emulates and what it cannot.

Results go to results/bench/kernels.csv (--out): one row per architecture and setting, with its
images/s and its ratio to TensorFlow's defaults measured in the same run.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from child_side import (
    ChildSide,
    add_cpu_kind_argument,
    cpu_kind_label,
    emulate_cpu_kind,
    kernel_environment,
)
from common import make_quick_data, run_script
from steps import BenchSettings, Side, fill_cache, measure_sides

from flowerlab import kernels
from flowerlab.console import positive_int

logger = logging.getLogger("bench_kernels")

# setting -> the kernel variables its process starts with (beside FLOWERLAB_KERNELS=tensorflow)
TENSORFLOWS_GRADIENTS = {"FLOWERLAB_WEIGHT_GRADIENTS": "tensorflow"}
OURS_WHERE_FASTER = {"FLOWERLAB_WEIGHT_GRADIENTS": "auto"}
SETTINGS: dict[str, dict[str, str]] = {
    "tensorflow": TENSORFLOWS_GRADIENTS,
    "onednn": {**kernels.DEFAULTS, **TENSORFLOWS_GRADIENTS},
    "flowerlab": {**kernels.DEFAULTS, **OURS_WHERE_FASTER},
    "bfc": {"TF_CPU_ALLOCATOR_USE_BFC": "true", **TENSORFLOWS_GRADIENTS},
    "onednn+bfc": {**kernels.DEFAULTS, "TF_CPU_ALLOCATOR_USE_BFC": "true", **OURS_WHERE_FASTER},
}
COLUMNS = ("arch", "setting", "kernels", "flowerlab_weight_gradients", "images_per_s", "vs_tensorflow_defaults",
           "batch_size", "rounds", "timed_steps", "threads", "cpu", "cpu_kind")


def flowerlab_side(arch: str, manifest_path: Path, settings: BenchSettings, scratch: Path) -> Side:
    """flowerlab's training path for `arch`, its input cache filled (built in the child)."""
    from flowerlab_side import flowerlab_path

    path = flowerlab_path(arch, manifest_path, "none", settings, scratch)
    fill_cache(path.dataset)
    return Side(arch, path.model, path.dataset, path.run.batching.global_batch)


def bench_arch(arch: str, manifest: Path, settings: BenchSettings, scratch: Path, cpu_kind: str) -> list[dict[str, Any]]:
    children = {}
    try:
        for setting in SETTINGS:
            children[setting] = ChildSide(setting, kernel_environment(SETTINGS[setting]), flowerlab_side,
                                          (arch, manifest, settings, scratch / setting), settings)
        logger.info("%s: timing %s, %d rounds of %d + %d steps", arch, ", ".join(SETTINGS), settings.rounds,
                    settings.warmup, settings.steps)
        measure_sides([child.side for child in children.values()], settings)
    finally:
        for child in children.values():
            child.close()
    baseline = children["tensorflow"].side.images_per_second()
    from flowerlab.devices import cpu_model_name

    return [{"arch": arch, "setting": setting, "kernels": child.info["kernels"]["library"],
             "flowerlab_weight_gradients": child.info["flowerlab_weight_gradients"],
             "images_per_s": round(child.side.images_per_second(), 2),
             "vs_tensorflow_defaults": round(child.side.images_per_second() / baseline, 3),
             "batch_size": settings.batch_size, "rounds": settings.rounds, "timed_steps": settings.steps,
             "threads": settings.threads or "default", "cpu": cpu_model_name(),
             "cpu_kind": cpu_kind_label(cpu_kind)}
            for setting, child in children.items()]


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="bench_kernels-") as scratch_name:
        scratch = Path(scratch_name)
        manifest = make_quick_data(scratch / "quick", image_size=32)[1] if args.quick else args.manifest
        settings = BenchSettings(batch_size=args.batch_size, warmup=args.warmup, steps=args.steps, rounds=args.rounds,
                                 seed=1, precision="float32", threads=args.threads, accelerator="cpu")
        return [row for arch in args.archs for row in bench_arch(arch, manifest, settings, scratch, args.cpu_kind)]


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'arch':<14}{'setting':<12}{'kernels':<9}{'own wgrad':>10}{'images/s':>10}{'vs TF defaults':>16}")
    for row in rows:
        print(f"{row['arch']:<14}{row['setting']:<12}{row['kernels']:<9}{row['flowerlab_weight_gradients']:>10}"
              f"{row['images_per_s']:>10.1f}{row['vs_tensorflow_defaults']:>15.2f}x")
    print(f"({rows[0]['cpu']}, CPU kind {rows[0]['cpu_kind']}, batch {rows[0]['batch_size']}, "
          f"{rows[0]['threads']} threads, float32; own wgrad: convolutions whose weight gradients flowerlab's "
          "kernel computed)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, default=Path("results/data/manifest.json"))
    parser.add_argument("--archs", nargs="+", default=["convnet", "squeezenet"])
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--steps", type=positive_int, default=8, help="steps timed per round (default %(default)s)")
    parser.add_argument("--warmup", type=positive_int, default=2, help="steps before timing (default %(default)s)")
    parser.add_argument("--rounds", type=positive_int, default=2, help="rounds per setting (default %(default)s)")
    parser.add_argument("--threads", type=positive_int, default=None)
    parser.add_argument("--out", type=Path, default=Path("results/bench/kernels.csv"))
    parser.add_argument("--quick", action="store_true", help="synthetic 32 px TFRecords, one round of 2 steps (CI)")
    add_cpu_kind_argument(parser)
    args = parser.parse_args(argv)
    emulate_cpu_kind(args.cpu_kind)
    if args.quick:
        args.archs, args.batch_size, args.warmup, args.steps, args.rounds = ["dense"], 8, 1, 2, 1
    return run_script("bench_kernels", lambda: run(args), args.out, print_table, COLUMNS)


if __name__ == "__main__":
    sys.exit(main())
