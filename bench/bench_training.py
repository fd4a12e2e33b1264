"""Training throughput: flowerlab's training path vs the plain Keras a user would write, per architecture.

    python bench/bench_training.py --manifest results/data/manifest.json --threads 2   # the real data
    python bench/bench_training.py --manifest results/data/manifest.json --archs convnet --steps 30
    python bench/bench_training.py --quick      # CI: synthetic photos and TFRecords made here, ~20 s
    python bench/bench_training.py --manifest results/data/manifest.json --cpu-kind avx2   # see below

Measured in one run, on the same machine, thread limits and data:

* plain  (the baseline): what a user writes without this project, the course's code in Keras 3:
         `keras.utils.image_dataset_from_directory(photos, image_size, batch_size,
         label_mode="categorical", validation_split=0.19, subset="training", seed)` mapped to
         x / 255, the architecture written with plain Keras layers in float32 (squeezenet with
         `keras.layers.BatchNormalization`, MobileNetV2 from `keras.applications` with
         `weights=PATH`), `compile(Adam, categorical cross-entropy, accuracy)`, `fit`;
* flowerlab: what `flowerlab train` runs, by its own steps: `flowerlab.training.stage.prepare_run`
         (device, the precision `auto` resolves to, batching), `stage.build_or_restore` (the model,
         compiled) and `setup.make_datasets` on the manifest's TFRecords, with the uint8 cache already filled (the study's steady state: its first epoch fills it and
         is excluded from its images/s too). For a frozen-backbone model (`mobilenet_v2`, whose
         `flowerlab train` uses the feature cache, flowerlab.training.frozen_backbone) it is that path: the
         backbone's features of every training image, extracted from the TFRecords,
         then `--cache-epochs` epochs of head training on them (default 10, the course's).

Each side trains the same batch size (flowerlab's per replica, as `flowerlab train`); the figure is steady-state images/s: `--steps` steps
timed after `--warmup` steps (graph tracing, pipeline start-up) in each of `--rounds` `fit`
calls, the two sides alternating, so that load from other processes hits both alike. Every
timed step is a full batch of the first epoch (the last, partial batch is never timed).
A feature-cache round is a whole training instead: the extraction of all training images plus
`--cache-epochs` head epochs (one `fit` call each, timed whole), after one untimed extraction
batch and one untimed head epoch (graph tracing); its images/s = cache epochs x training images /
(extraction + head seconds), the rate `flowerlab train` amortises over a run, and the head-only
rate is reported beside it (`head_images_per_s`).

Model FLOPs utilisation (MFU) = training FLOPs/s over the matmul peak measured in this run:
training FLOPs per image = 3 x the forward FLOPs of `flowerlab.evaluation.cost.forward_flops` (forward +
backward, which costs about twice the forward), except for a frozen backbone (`mobilenet_v2`):
backpropagation stops at its head, so a step is one forward pass (factor 1; the head's backward
pass is < 0.1 % of it), and with the feature cache 1 / cache epochs (that forward pass runs once
per image for all the epochs). The peak is the best rate of a square `tf.linalg.matmul` in float32 and
in bfloat16 (and float16 when an architecture trains in mixed_float16), timed for
`--matmul-seconds` each with the same threads at the start and at the end of the run (the better
kept: on a shared machine one may fall on a busy moment); an architecture's MFU uses the peak of
its compute dtype, the plain side's the float32 peak.

`--cpu-kind avx2` measures, on a CPU with AVX-512 or AMX, what an AVX2-only CPU runs: the plain
side with that CPU's TensorFlow defaults (Eigen), both sides with oneDNN capped at AVX2
(bench/child_side.py); the `cpu_kind` column says so.

Results go to results/bench/training.csv (--out), written atomically; one row per architecture.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from child_side import (
    ChildSide,
    add_cpu_kind_argument,
    cpu_kind_label,
    emulate_cpu_kind,
    float32_only,
    tensorflow_defaults,
)
from common import default_photos, default_weights, make_quick_data, run_script, study_config
from flowerlab_side import feature_cache_side, flowerlab_path
from plain_keras import check_photos, plain_image_count, plain_side
from roofline import layer_costs
from steps import (
    BenchSettings,
    Side,
    best_peaks,
    check_timed_steps,
    fill_cache,
    measure_bandwidth,
    measure_peaks,
    measure_sides,
)
from training_results import (
    COLUMNS,
    Measurement,
    measured_row,
    parameters,
    print_table,
    skipped_row,
)

from flowerlab.console import positive_int
from flowerlab.errors import ConfigError

logger = logging.getLogger("bench_training")

QUICK_ARCHS = ("dense", "convnet", "squeezenet", "mobilenet_v2")


# --------------------------------------------------------------------------------------------
# Inputs


def flowerlab_kernels(model: Any) -> str:
    """The flowerlab side's kernels: TensorFlow's library, and flowerlab's weight-gradient kernel
    where it took some convolutions ("oneDNN + own wgrad 6/7")."""
    from flowerlab import kernels
    from flowerlab.training.weight_gradients import layers

    routed = layers.routed_count(model)
    library = kernels.kernel_library()
    return f"{library} + own wgrad {routed}/{layers.convolution_count(model)}" if routed else library


def weights_for(arch: str, weights: Path | None) -> tuple[str | None, str]:
    """(weights argument for both sides, or None to skip; why). Throughput does not depend on
    weight values, except that a frozen MobileNetV2 needs its real weights to be the real workload
    (with random ones its frozen batch norms shrink activations to ~1e-12)."""
    from flowerlab.models.registry import get_spec

    spec = get_spec(arch)
    if not spec.uses_backbone_weights:
        return "none", ""
    if weights is not None:
        if not weights.is_file():
            raise ConfigError(f"--weights {weights} is not a file: give the MobileNetV2 no-top .h5 weights")
        if arch.startswith("mobilenet_v2"):
            return str(weights), ""
    if spec.needs_pretrained_weights:
        return None, "skipped: needs local MobileNetV2 weights (--weights PATH)"
    return "none", "random backbone weights"  # xception: same FLOPs and step time as with ImageNet's


# --------------------------------------------------------------------------------------------
# Figures


# --------------------------------------------------------------------------------------------
# The run


def bench_arch(arch: str, *, photos: Path, manifest_path: Path, manifest: dict[str, Any],
               weights: str, settings: BenchSettings, scratch: Path, cpu_kind: str) -> Measurement:
    import keras

    from flowerlab import kernels
    from flowerlab.models.flops import FORWARD_ONLY, forward_flops, training_flops_factor

    keras.utils.set_random_seed(settings.seed)
    fl = flowerlab_path(arch, manifest_path, weights, settings, scratch)
    cached, image_size, batch = fl.run.cached, fl.run.plan.image_size, fl.run.batching.global_batch
    if not cached:
        check_timed_steps(settings, fl.full_batches, batch, f"{manifest_path}'s training records")
    plain_images = plain_image_count(photos, image_size=image_size, batch_size=settings.batch_size,
                                     seed=settings.seed)
    check_timed_steps(settings, plain_images // settings.batch_size, settings.batch_size,
                      f"{photos} (training subset)")
    # The baseline runs where TensorFlow has its own kernel defaults, as in a user's process (on a
    # CPU of the kind --cpu-kind emulates).
    plain_env = {**kernels.tensorflow_defaults_environment(), **tensorflow_defaults(cpu_kind)}
    child = ChildSide("plain", plain_env, plain_side,
                      (arch, photos, image_size, settings.batch_size, settings.seed, weights,
                       int(manifest["num_classes"])), settings)
    plain = child.side
    times = None
    if cached:
        flowerlab, times = feature_cache_side(arch, fl, fl.run.device, settings)
    else:
        logger.info("%s: filled the pipeline's cache in %.1f s", arch, fill_cache(fl.dataset))
        flowerlab = Side("flowerlab", fl.model, fl.dataset, batch)
    try:
        measure_sides([plain, flowerlab], settings)
    finally:
        child.close()
    flops, _ = forward_flops(fl.model, image_size)
    measurement = Measurement(
        arch=arch, plain_images_per_s=plain.images_per_second(), images_per_s=flowerlab.images_per_second(),
        precision=fl.run.precision, image_size=image_size, plain_parameters=child.info["parameters"],
        flowerlab_parameters=parameters(fl.model), forward_flops=flops,
        # With the cache the backbone's forward pass runs once per image for all the epochs.
        flops_factor=FORWARD_ONLY / settings.cache_epochs if times else training_flops_factor(fl.model),
        plain_flops_factor=child.info["flops_factor"],
        plain_kernels=child.info["kernels"]["library"], kernels=flowerlab_kernels(fl.model),
        layer_costs=None if times else layer_costs(fl.model, batch),
        cache_epochs=settings.cache_epochs if times else None,
        extraction_images_per_s=times.extracted / times.extraction_seconds if times else None,
        head_images_per_s=times.head_images / times.head_seconds if times else None)
    logger.info("%s: plain %.1f, flowerlab %.1f images/s (%.2fx, %s), %.3f GFLOPs/image", arch,
                measurement.plain_images_per_s, measurement.images_per_s,
                measurement.images_per_s / measurement.plain_images_per_s, fl.run.precision, flops / 1e9)
    keras.backend.clear_session()  # free this architecture's models and graphs before the next
    return measurement


def peak_dtypes(device_kind: str, requested: str, cpu_kind: str) -> list[str]:
    """float32 and bfloat16 always (both are reported), float32 alone as an emulated AVX2-only CPU;
    float16 too when the models will use it (the policy is the same for every architecture, or
    measured: float32 or bfloat16)."""
    from flowerlab import devices
    from flowerlab.models.flops import COMPUTE_DTYPES

    if float32_only(cpu_kind):
        return ["float32"]
    policy = devices.resolve_precision(requested, device_kind) or "float32"
    return list(dict.fromkeys(["float32", "bfloat16", COMPUTE_DTYPES[policy]]))


def prepare_inputs(args: argparse.Namespace, scratch: Path) -> tuple[Path, Path, dict[str, Any], str]:
    """(photos, manifest path, manifest, source description), checked before TensorFlow starts,
    so a wrong path fails in a second."""
    from flowerlab.data.manifest import load_manifest

    if args.quick:
        photos, manifest_path = make_quick_data(scratch / "quick", image_size=args.image_size)
        source = f"quick synthetic set ({args.image_size} px)"
    else:
        photos, manifest_path = args.photos, args.manifest
        source = f"{manifest_path} and {photos}"
    manifest = load_manifest(manifest_path)
    check_photos(photos, manifest)
    return photos, manifest_path, manifest, source


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="bench_training-") as scratch_name:
        scratch = Path(scratch_name)
        photos, manifest_path, manifest, source = prepare_inputs(args, scratch)

        from flowerlab import devices  # imports TensorFlow

        if args.threads:
            devices.configure_threads(args.threads)  # before TensorFlow's runtime starts
        import keras
        import tensorflow as tf

        from flowerlab.data.records import verify_shards
        from flowerlab.models.registry import get_spec

        for arch in args.archs:
            get_spec(arch)  # ConfigError naming the allowed ones
        verify_shards(manifest_path, "train")  # as flowerlab train: a corrupt shard is named now
        settings = BenchSettings(batch_size=args.batch_size, warmup=args.warmup, steps=args.steps,
                                 rounds=args.rounds, seed=args.seed, precision=args.precision, threads=args.threads,
                                 cache_epochs=args.cache_epochs, accelerator=args.accelerator)
        device = devices.select_strategy(args.accelerator)
        size = args.matmul_size or (8192 if device.kind == "gpu" else 2048)
        dtypes = peak_dtypes(device.kind, args.precision, args.cpu_kind)
        first_peaks = measure_peaks(dtypes, size=size, seconds=args.matmul_seconds)
        first_bandwidth = measure_bandwidth(args.matmul_seconds)
        load_average = round(os.getloadavg()[0], 2)
        results: list[Measurement | tuple[str, str]] = []
        for arch in args.archs:
            weights, note = weights_for(arch, args.weights)
            if weights is None:
                logger.warning("%s %s", arch, note)
                results.append((arch, note))
                continue
            if note:
                logger.info("%s: %s", arch, note)
            logger.info("%s: timing plain Keras and flowerlab, %d rounds of %d + %d steps of %d images", arch,
                        settings.rounds, settings.warmup, settings.steps, settings.batch_size)
            results.append(bench_arch(arch, photos=photos, manifest_path=manifest_path, manifest=manifest,
                                      weights=weights, settings=settings, scratch=scratch, cpu_kind=args.cpu_kind))
        # Measured again at the end and the better kept: a peak is what the chip can do, and on a
        # shared machine either measurement alone may fall on a busy moment.
        peaks = best_peaks(first_peaks, measure_peaks(dtypes, size=size, seconds=args.matmul_seconds))
        bandwidth = max(first_bandwidth, measure_bandwidth(args.matmul_seconds))
        context = {
            "peak_float32_gflops_per_s": round(peaks["float32"], 1),
            "peak_bfloat16_gflops_per_s": round(peaks["bfloat16"], 1) if "bfloat16" in peaks else "",
            "bandwidth_gb_per_s": round(bandwidth, 1),
            "device": f"{device.kind}: {device.name}", "cpu_kind": cpu_kind_label(args.cpu_kind),
            "threads": args.threads or "default",
            "cpus": os.cpu_count(), "load_average": load_average,
            "tensorflow": tf.__version__, "keras": keras.__version__, "source": source,
        }
        rows = [measured_row(result, peaks=peaks, settings=settings, context=context)
                if isinstance(result, Measurement) else skipped_row(*result, context) for result in results]
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, default=None,
                        help="the photo folder the TFRecords were made from (plain side; default "
                             "$FLOWERLAB_REAL_DATA or ../shared/data/flower_photos)")
    parser.add_argument("--manifest", type=Path, default=Path("results/data/manifest.json"),
                        help="manifest.json of the TFRecords (flowerlab side; default %(default)s)")
    parser.add_argument("--archs", nargs="+", default=None,
                        help="architectures (default: the study's, config/config.yaml)")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="both sides (default %(default)s)")
    parser.add_argument("--steps", type=positive_int, default=15, help="steps timed per fit call (default %(default)s)")
    parser.add_argument("--warmup", type=positive_int, default=3,
                        help="steps run before timing in every fit call (default %(default)s)")
    parser.add_argument("--rounds", type=positive_int, default=2,
                        help="fit calls per side, alternating plain / flowerlab (default %(default)s)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="TensorFlow and tf.data threads (default: TensorFlow's choice, all cores)")
    parser.add_argument("--cache-epochs", type=positive_int, default=10,
                        help="head epochs per round for models flowerlab trains on cached backbone features "
                             "(mobilenet_v2; default %(default)s, the course's epochs)")
    parser.add_argument("--weights", type=Path, default=None,
                        help="MobileNetV2 no-top .h5 weights (default $FLOWERLAB_MOBILENET_WEIGHTS or "
                             "../shared/data/weights/mobilenet_v2_1.0_224_no_top.h5; without them the "
                             "MobileNetV2 architectures are skipped, recorded in the CSV)")
    parser.add_argument("--precision", default="auto", choices=("auto", "float32", "mixed_bfloat16", "mixed_float16"),
                        help="flowerlab side's precision (default auto, as the study)")
    parser.add_argument("--accelerator", default="auto", choices=("auto", "tpu", "gpu", "cpu"))
    parser.add_argument("--seed", type=int, default=42, help="weights and the plain side's split")
    parser.add_argument("--matmul-size", type=positive_int, default=None,
                        help="side of the square matmuls timed for the peak (default 2048, 8192 on a GPU)")
    parser.add_argument("--matmul-seconds", type=float, default=2.0, help="seconds per dtype (default %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("results/bench/training.csv"))
    add_cpu_kind_argument(parser)
    parser.add_argument("--quick", action="store_true",
                        help="synthetic photos and TFRecords made here, 32 px, a few steps (CI, ~20 s)")
    return parser


def resolve_arguments(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the defaults that depend on --quick and on what exists on this machine."""
    if args.weights is None:
        args.weights = default_weights()
    if args.quick:
        args.image_size = 32
        args.batch_size, args.warmup, args.steps, args.rounds = 8, 1, 2, 1
        args.matmul_size, args.matmul_seconds = args.matmul_size or 256, 0.2
        if args.archs is None:
            args.archs = [arch for arch in QUICK_ARCHS if arch != "mobilenet_v2" or args.weights is not None]
    else:
        args.photos = args.photos or default_photos()
    args.archs = args.archs or study_config()["study"]
    if float32_only(args.cpu_kind):
        if args.precision not in ("auto", "float32"):
            raise SystemExit(f"--cpu-kind {args.cpu_kind} trains in float32 (such a CPU has no bfloat16 or float16"
                             f" instructions), not {args.precision}")
        args.precision = "float32"
    return args


def main(argv: list[str] | None = None) -> int:
    args = resolve_arguments(build_parser().parse_args(argv))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    emulate_cpu_kind(args.cpu_kind)
    return run_script("bench_training", lambda: run(args), args.out, print_table, COLUMNS)


if __name__ == "__main__":
    sys.exit(main())
