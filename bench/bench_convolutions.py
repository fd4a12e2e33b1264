"""Where a training step's convolution time goes, under each kernel library: every convolution of an
architecture in each of its three passes, timed alone.

    python bench/bench_convolutions.py --threads 2     # convnet and squeezenet at the study's batch and image size
    python bench/bench_convolutions.py --archs convnet --rounds 3 --repeats 8 --threads 2
    python bench/bench_convolutions.py --quick                          # CI: tiny shapes, one round
    python bench/bench_convolutions.py --threads 2 --cpu-kind avx2      # an AVX2-only CPU's kernels, on AVX-512

A training step runs each convolution three times, each with the forward pass's FLOPs: forward,
the input gradient (not for a convolution with no weights before it, whose input gradient nobody
needs) and the weight gradient. Here each of those runs alone, as the TensorFlow op a training
step runs (`Conv2D`, `Conv2DBackpropInput`, `Conv2DBackpropFilter`, without the bias and ReLU that
oneDNN fuses into them), on random tensors of the layer's shapes at the study's batch size and
image size, under three settings: TensorFlow's defaults; `onednn`, flowerlab's kernel library
(flowerlab.kernels) with TensorFlow's weight gradients; and `flowerlab`, what a flowerlab training
runs: the same, with the weight gradients by flowerlab's own kernel where it chooses that
(flowerlab.training.weight_gradients), called as a training step calls it. Each setting runs in a
process of its own, since TensorFlow reads it when it loads; the processes alternate round by
round, and each figure is the fastest call over all rounds.

It prints each pass's time per step under each setting, flowerlab's ratio to TensorFlow's
defaults, and its GFLOP/s against the float32 matmul peak measured in the same run. A pass that
runs no faster bounds the whole step's speed-up (Amdahl): oneDNN's weight gradients on an AVX2-only
CPU did (docs/results.md), which is why flowerlab carries a kernel of its own for them.

Results go to results/bench/convolutions.csv (--out): one row per architecture, layer, pass and setting.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from child_side import add_cpu_kind_argument, cpu_kind_label, emulate_cpu_kind, kernel_environment
from common import run_script, study_config
from steps import measure_peaks

from flowerlab import kernels
from flowerlab.console import positive_int

logger = logging.getLogger("bench_convolutions")

# setting -> its process's kernel variables: TensorFlow's defaults; flowerlab's kernel library with
# TensorFlow's weight gradients; and what flowerlab runs, its own weight-gradient kernel where
# flowerlab.training.weight_gradients chooses it.
SETTINGS: dict[str, dict[str, str]] = {
    "tensorflow": {"FLOWERLAB_WEIGHT_GRADIENTS": "tensorflow"},
    "onednn": {**kernels.DEFAULTS, "FLOWERLAB_WEIGHT_GRADIENTS": "tensorflow"},
    "flowerlab": {**kernels.DEFAULTS, "FLOWERLAB_WEIGHT_GRADIENTS": "auto"},
}
PASSES = ("forward", "input_gradient", "weight_gradient")
COLUMNS = ("arch", "layer", "shape", "pass", "setting", "kernels", "ms_per_step", "gflops_per_s", "share_of_peak",
           "vs_tensorflow_defaults", "batch_size", "image_size", "threads", "cpu", "cpu_kind", "peak_float32_gflops_per_s")


# ---------------------------------------------------------------------------------------------
# The child: one setting's process


def convolutions(model: Any) -> list[tuple[Any, bool]]:
    """(layer, whether a training step computes its input gradient) for each plain convolution:
    the gradient is needed only when some layer before it has weights."""
    import keras

    found, weights_before = [], False
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D) and layer.groups == 1:
            found.append((layer, weights_before))
        weights_before = weights_before or bool(layer.trainable_weights)
    return found


def pass_functions(layer: Any, batch: int, flowerlab_weight_gradient: bool) -> tuple[dict[str, Any], float, str]:
    """Each pass of `layer` as a tf.function on random tensors; its FLOPs per call; its shape. The
    weight gradient by flowerlab's kernel, called as a training step calls it, where
    `flowerlab_weight_gradient`."""
    import tensorflow as tf

    from flowerlab.training.weight_gradients import layers, native

    _, height, width, channels = layer.input.shape
    _, out_height, out_width, filters = layer.output.shape
    kernel = (*layer.kernel_size, channels, filters)
    strides, padding = [1, *layer.strides, 1], layer.padding.upper()
    x = tf.random.stateless_uniform((batch, height, width, channels), seed=(1, 2))
    w = tf.random.stateless_uniform(kernel, seed=(3, 4))
    dy = tf.random.stateless_uniform((batch, out_height, out_width, filters), seed=(5, 6))
    functions = {
        "forward": tf.function(lambda: tf.nn.conv2d(x, w, strides, padding)),
        "input_gradient": tf.function(lambda: tf.raw_ops.Conv2DBackpropInput(
            input_sizes=x.shape, filter=w, out_backprop=dy, strides=strides, padding=padding)),
        "weight_gradient": tf.function(lambda: tf.raw_ops.Conv2DBackpropFilter(
            input=x, filter_sizes=kernel, out_backprop=dy, strides=strides, padding=padding)),
    }
    if flowerlab_weight_gradient:
        threads = layers.intra_op_threads()
        functions["weight_gradient"] = tf.function(lambda: tf.numpy_function(
            lambda a, b: native.conv2d_weight_gradient(a, b, tuple(layer.kernel_size), threads), [x, dy],
            tf.float32, stateful=False))
    flops = 2.0 * batch * out_height * out_width * kernel[0] * kernel[1] * channels * filters
    shape = f"{height}x{width}x{channels}->{filters} {kernel[0]}x{kernel[1]}/{layer.strides[0]}"
    return functions, flops, shape


def fastest_call(function: Any, repeats: int) -> float:
    function().numpy()  # traced, and its kernels' primitives created, before timing
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        function().numpy()
        best = min(best, time.perf_counter() - started)
    return best


def time_convolutions(arch: str, image_size: int, batch: int, repeats: int) -> list[dict[str, Any]]:
    from flowerlab import devices
    from flowerlab.models.build import build_model
    from flowerlab.training.weight_gradients import layers, native, policy

    model = build_model(arch, num_classes=5, image_size=image_size, weights="none")
    chosen = policy.choose(device_kind="cpu", flags=devices.cpu_flags(), onednn=kernels.onednn_enabled(),
                           environ=os.environ).use_flowerlab
    if chosen:
        try:
            native.load()
        except native.NativeKernelUnavailable as error:  # a training falls back alike
            logger.warning("flowerlab's weight-gradient kernel is unavailable: %s", error)
            chosen = False
    timed = []
    for layer, needs_input_gradient in convolutions(model):
        ours = chosen and layers.eligible(layer)
        functions, flops, shape = pass_functions(layer, batch, ours)
        for name, function in functions.items():
            if name == "input_gradient" and not needs_input_gradient:
                continue
            timed.append({"layer": layer.name, "shape": shape, "pass": name, "flops": flops,
                          "kernels": "flowerlab" if ours and name == "weight_gradient" else kernels.kernel_library(),
                          "seconds": fastest_call(function, repeats)})
    return timed


def child_main(args: argparse.Namespace) -> int:
    from flowerlab import devices

    if args.threads:
        devices.configure_threads(args.threads)
    timed = time_convolutions(args.child, args.image_size, args.batch_size, args.repeats)
    print(json.dumps({"timed": timed}))
    return 0


# ---------------------------------------------------------------------------------------------
# The parent: the settings' processes, round by round


def run_setting(setting: str, arch: str, batch: int, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", arch, "--image-size", str(args.image_size), "--batch-size",
               str(batch), "--repeats", str(args.repeats)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    done = subprocess.run(command, env=kernel_environment(SETTINGS[setting]), capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{arch} under {setting}'s kernels failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_arch(arch: str, batch: int, args: argparse.Namespace, peak: float, cpu: str) -> list[dict[str, Any]]:
    best: dict[tuple[str, str, str], float] = {}  # (setting, layer, pass) -> fastest seconds
    facts: dict[tuple[str, str], dict[str, Any]] = {}
    library: dict[tuple[str, str, str], str] = {}  # (setting, layer, pass) -> the kernels that ran it
    for round_number in range(args.rounds):
        order = list(SETTINGS) if round_number % 2 == 0 else list(reversed(SETTINGS))
        for setting in order:
            logger.info("%s: round %d of %d, %s's kernels", arch, round_number + 1, args.rounds, setting)
            for row in run_setting(setting, arch, batch, args)["timed"]:
                key = (setting, row["layer"], row["pass"])
                best[key] = min(best.get(key, float("inf")), row["seconds"])
                library[key] = row["kernels"]
                facts[row["layer"], row["pass"]] = row
    rows = []
    for (layer, name), fact in facts.items():
        for setting in SETTINGS:
            seconds = best[setting, layer, name]
            rows.append({"arch": arch, "layer": layer, "shape": fact["shape"], "pass": name, "setting": setting,
                         "kernels": library[setting, layer, name], "ms_per_step": round(seconds * 1e3, 4),
                         "gflops_per_s": round(fact["flops"] / seconds / 1e9, 1),
                         "share_of_peak": round(fact["flops"] / seconds / 1e9 / peak, 3),
                         "vs_tensorflow_defaults": round(best["tensorflow", layer, name] / seconds, 3),
                         "batch_size": batch, "image_size": args.image_size,
                         "threads": args.threads or "default", "cpu": cpu, "cpu_kind": cpu_kind_label(args.cpu_kind),
                         "peak_float32_gflops_per_s": round(peak, 1)})
    return rows


def run(args: argparse.Namespace, study: dict[str, Any]) -> list[dict[str, Any]]:
    from flowerlab import devices

    if args.threads:
        devices.configure_threads(args.threads)
    # The peak in this process, under flowerlab's kernels; a convolution pass near it is compute-bound.
    peak = measure_peaks(["float32"], size=args.matmul_size, seconds=args.matmul_seconds)["float32"]
    return [row for arch in args.archs
            for row in bench_arch(arch, args.batch_size or study["models"][arch]["batch_size"], args, peak,
                                  devices.cpu_model_name())]


def print_table(rows: list[dict[str, Any]]) -> None:
    per_pass: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    ms = {(row["arch"], row["layer"], row["pass"], row["setting"]): row["ms_per_step"] for row in rows}
    print(f"{'arch':<11}{'layer':<12}{'shape':<21}{'pass':<16}{'TF defaults':>12}{'oneDNN':>11}{'flowerlab':>11}"
          f"{'ratio':>7}{'GFLOP/s':>9}{'of peak':>8}  kernel")
    for row in rows:
        key = (row["arch"], row["layer"], row["pass"])
        per_pass[row["arch"], row["pass"]][row["setting"]] += row["ms_per_step"]
        if row["setting"] != "flowerlab":
            continue
        print(f"{row['arch']:<11}{row['layer'][:11]:<12}{row['shape']:<21}{row['pass']:<16}"
              f"{ms[(*key, 'tensorflow')]:>9.1f} ms{ms[(*key, 'onednn')]:>8.1f} ms{row['ms_per_step']:>8.1f} ms"
              f"{row['vs_tensorflow_defaults']:>6.2f}x{row['gflops_per_s']:>9.1f}{row['share_of_peak']:>8.0%}  "
              f"{row['kernels']}")
    print("\nper step, all convolutions of each pass (TF defaults, oneDNN, flowerlab):")
    batches = {row["arch"]: row["batch_size"] for row in rows}
    for arch, batch in batches.items():
        total = sum(per_pass[arch, name]["flowerlab"] for name in PASSES)
        for name in PASSES:
            times = per_pass[arch, name]
            print(f"  {arch:<11}{name:<16}{times['tensorflow']:>9.1f} ms{times['onednn']:>8.1f} ms"
                  f"{times['flowerlab']:>8.1f} ms{times['tensorflow'] / times['flowerlab']:>6.2f}x  "
                  f"{times['flowerlab'] / total:>4.0%} of flowerlab's convolution time (batch {batch})")
    library = {row["setting"]: row["kernels"] for row in rows if row["pass"] == "forward"}
    first = rows[0]
    print(f"({first['cpu']}, CPU kind {first['cpu_kind']}; TF defaults ran {library['tensorflow']} kernels, "
          f"oneDNN and flowerlab {library['flowerlab']}, flowerlab its own weight gradients where the kernel column "
          f"says so; {first['image_size']} px, {first['threads']} threads, float32; float32 matmul peak "
          f"{first['peak_float32_gflops_per_s']} GFLOP/s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=["convnet", "squeezenet"])
    parser.add_argument("--image-size", type=positive_int, default=None, help="default: the study's")
    parser.add_argument("--batch-size", type=positive_int, default=None, help="default: each one's in the study")
    parser.add_argument("--rounds", type=positive_int, default=2, help="processes per setting (default %(default)s)")
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed calls per pass and round")
    parser.add_argument("--threads", type=positive_int, default=None)
    parser.add_argument("--matmul-size", type=positive_int, default=2048)
    parser.add_argument("--matmul-seconds", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=Path("results/bench/convolutions.csv"))
    parser.add_argument("--quick", action="store_true", help="16 px, batch 4, one round of 2 calls (CI)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # the architecture, timed in this process
    add_cpu_kind_argument(parser)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args)
    emulate_cpu_kind(args.cpu_kind)
    if args.quick:
        args.image_size, args.batch_size, args.rounds, args.repeats = 16, 4, 1, 2
        args.matmul_size, args.matmul_seconds = 256, 0.2
    study = study_config()
    args.image_size = args.image_size or study["data"]["image_size"]
    return run_script("bench_convolutions", lambda: run(args, study), args.out, print_table, COLUMNS)


if __name__ == "__main__":
    sys.exit(main())
