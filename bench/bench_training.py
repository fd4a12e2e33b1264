"""Training throughput: flowerlab's training path vs the plain Keras a user would write, per architecture.

    python bench/bench_training.py --manifest results/data/manifest.json --threads 2   # the real data
    python bench/bench_training.py --manifest results/data/manifest.json --archs convnet --steps 30
    python bench/bench_training.py --quick      # CI: synthetic photos and TFRecords made here, ~20 s

Measured in one run, on the same machine, thread limits and data:

* plain  (the baseline): what a user writes without this project, the course's code in Keras 3:
         `keras.utils.image_dataset_from_directory(photos, image_size, batch_size,
         label_mode="categorical", validation_split=0.19, subset="training", seed)` mapped to
         x / 255, the architecture written with plain Keras layers in float32 (squeezenet with
         `keras.layers.BatchNormalization`, MobileNetV2 from `keras.applications` with
         `weights=PATH`), `compile(Adam, categorical cross-entropy, accuracy)`, `fit`;
* flowerlab: what `flowerlab train` runs: `flowerlab.models.build_model`, the precision
         `auto` resolves to on this device (`flowerlab.devices`), `flowerlab.training.stage.compile_model`
         and the datasets of `flowerlab.training.stage.make_datasets` on the manifest's TFRecords, with
         the uint8 cache already filled (the study's steady state: its first epoch fills it and
         is excluded from its images/s too). For a frozen-backbone model (`mobilenet_v2`, whose
         `flowerlab train` uses the feature cache, flowerlab.training.frozen_backbone) it is that path: the
         BN-folded backbone's features of every training image, extracted from the TFRecords,
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

Results go to results/bench/training.csv (--out), written atomically; one row per architecture.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import default_photos, default_weights, make_quick_data, write_csv
from plain_keras import LEARNING_RATE, build_plain, check_photos, plain_dataset
from steps import (
    BenchSettings,
    Side,
    best_peaks,
    check_timed_steps,
    fill_cache,
    measure_peaks,
    measure_sides,
)

from flowerlab.console import configure_logging, positive_int, run_command
from flowerlab.errors import ConfigError

logger = logging.getLogger("bench_training")

DEFAULT_ARCHS = ("dense", "mobilenet_v2", "convnet", "squeezenet", "mobilenet_v2_finetune")
QUICK_ARCHS = ("dense", "convnet", "squeezenet", "mobilenet_v2")

# Model FLOPs per image of one training step, as a multiple of the forward FLOPs.
FORWARD_AND_BACKWARD = 3.0  # the backward pass costs about twice the forward (input + weight gradients)
FORWARD_ONLY = 1.0  # a frozen backbone: nothing before the head needs a gradient

COMPUTE_DTYPES = {"float32": "float32", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}

COLUMNS = (
    "arch", "status", "batch_size", "image_size", "warmup_steps", "timed_steps", "rounds",
    "plain_images_per_s", "flowerlab_images_per_s", "ratio", "plain_precision", "precision",
    "plain_parameters", "flowerlab_parameters", "gflops_per_image", "flops_factor",
    "plain_train_gflops_per_s", "train_gflops_per_s", "plain_mfu", "mfu", "peak_dtype",
    "peak_gflops_per_s", "peak_float32_gflops_per_s", "peak_bfloat16_gflops_per_s",
    "device", "threads", "cpus", "load_average", "tensorflow", "keras", "source",
    "cache_epochs", "extraction_images_per_s", "head_images_per_s",
)


# --------------------------------------------------------------------------------------------
# Inputs


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
# The matmul peak


# --------------------------------------------------------------------------------------------
# The plain-Keras reference: the course's code, as a user would write it in Keras 3


# --------------------------------------------------------------------------------------------
# flowerlab's training path


@dataclass(frozen=True)
class FlowerlabPath:
    model: Any
    dataset: Any
    precision: str
    image_size: int
    global_batch: int
    full_batches: int  # full batches in one epoch: the steps that can be timed
    feature_cache: bool  # flowerlab train trains this model's head on cached backbone features
    run: Any  # flowerlab.training.stage.TrainSettings, DataPlan and Batching of the side
    plan: Any
    batching: Any


def flowerlab_path(arch: str, manifest_path: Path, manifest: dict[str, Any], device: Any, weights: str,
                   settings: BenchSettings, scratch: Path) -> FlowerlabPath:
    """Model and training dataset exactly as `flowerlab.training.stage.train` makes them (its helpers).

    The dataset holds one epoch: only full batches of the first epoch are timed
    (check_timed_steps), and every fit call starts a new iterator at its beginning.
    """
    import keras

    from flowerlab import devices
    from flowerlab.models.build import build_model
    from flowerlab.models.registry import get_spec
    from flowerlab.training import frozen_backbone, setup

    spec = get_spec(arch)
    hparams = setup.resolve_hparams({"epochs": 1, "batch_size": settings.batch_size,
                                     "learning_rate": LEARNING_RATE, "augment": False,
                                     "precision": settings.precision})
    plan = setup.load_data_plan(manifest_path, manifest, setup.model_image_size(hparams, spec.default_image_size))
    precision = devices.apply_precision(
        devices.resolve_precision(hparams["precision"], device.kind, cpu_precision=spec.cpu_precision))
    batching = setup.plan_batches(arch, settings.batch_size, device.kind, device.replicas, plan.train_records)
    run = setup.TrainSettings(arch=arch, manifest=manifest_path, out_dir=scratch / arch,
                              checkpoint_dir=scratch / f"{arch}-checkpoints", hparams=hparams,
                              seed=settings.seed, threads=settings.threads)
    try:
        with device.strategy.scope():
            model = build_model(arch, num_classes=plan.num_classes, image_size=plan.image_size, weights=weights)
            setup.compile_model(model, hparams["learning_rate"])
    finally:
        keras.mixed_precision.set_global_policy("float32")  # the plain side builds in float32
    dataset, _ = setup.make_datasets(run, plan, batching, first_epoch=0)
    cached = frozen_backbone.image_path_reason(spec, hparams, device.kind) is None
    return FlowerlabPath(model, dataset, precision, plan.image_size, batching.global_batch,
                         plan.train_records // batching.global_batch, cached, run, plan, batching)


@dataclass
class CacheTimes:
    """A feature-cache side's totals over its rounds (the side's own images/seconds hold the sum)."""

    extracted: int = 0
    extraction_seconds: float = 0.0
    head_images: int = 0
    head_seconds: float = 0.0


def feature_cache_side(arch: str, fl: FlowerlabPath, device: Any, settings: BenchSettings) -> tuple[Side, CacheTimes]:
    """The flowerlab side of a frozen-backbone model: what `flowerlab train` runs with the feature
    cache (flowerlab.training.frozen_backbone's split, extraction, batches and per-epoch order), one whole
    training per round, after an untimed warm-up that traces the extraction and the head's
    training step (for a full and a partial batch, as an epoch has)."""
    import numpy as np

    from flowerlab.data import pipeline
    from flowerlab.training import frozen_backbone, setup

    with device.strategy.scope():
        split = frozen_backbone.split_frozen_backbone(fl.model, fold=frozen_backbone.folds_batch_norms(fl.model))
        setup.compile_model(split.head, LEARNING_RATE)
    extract = frozen_backbone.extraction_function(split.extractor)
    images, _, _ = frozen_backbone.image_datasets(fl.run, fl.plan, fl.batching)
    batch, records, epochs = fl.global_batch, fl.plan.train_records, settings.cache_epochs
    warm = frozen_backbone.extract_features(extract, images.take(1), expected=min(batch, records),
                                          what=f"{arch}: warm-up batch")
    warm_order = np.concatenate([np.arange(warm.count), np.arange(max(1, warm.count // 2))])
    split.head.fit(frozen_backbone.feature_batches(warm, warm_order, batch_size=batch, drop_remainder=False),
                   epochs=1, verbose=0, shuffle=False)
    side, times = Side("flowerlab", fl.model, images, batch), CacheTimes()

    def time_round() -> float:
        cached = frozen_backbone.extract_features(extract, images, expected=records,
                                                what=f"{arch}: training features")
        head_seconds = 0.0
        for epoch in range(epochs):
            batches = frozen_backbone.feature_batches(cached, pipeline.epoch_order(records, epoch, seed=settings.seed),
                                                    batch_size=batch, drop_remainder=False)
            started = time.perf_counter()
            split.head.fit(batches, epochs=1, verbose=0, shuffle=False)
            head_seconds += time.perf_counter() - started
        times.extracted += records
        times.extraction_seconds += cached.seconds
        times.head_images += epochs * records
        times.head_seconds += head_seconds
        side.images += epochs * records
        side.seconds += cached.seconds + head_seconds
        side.round_rates.append(epochs * records / (cached.seconds + head_seconds))
        logger.info("  %s feature cache: extraction %.0f images/s, head %.0f images/s over %d epochs", arch,
                    records / cached.seconds, epochs * records / head_seconds, epochs)
        return side.round_rates[-1]

    side.time_round = time_round
    return side, times


# --------------------------------------------------------------------------------------------
# Timing


# --------------------------------------------------------------------------------------------
# Figures


def training_flops_factor(model: Any) -> float:
    """Training FLOPs per image as a multiple of the forward FLOPs: 3 (forward + backward), or 1
    when the model holds a frozen backbone (a nested model that is not trainable): then only
    the head needs gradients, and its backward pass is negligible."""
    import keras

    frozen = any(isinstance(layer, keras.Model) and not layer.trainable for layer in model.layers)
    return FORWARD_ONLY if frozen else FORWARD_AND_BACKWARD


def parameters(model: Any) -> int:
    from flowerlab.models.build import count_parameters

    return int(count_parameters(model)[0])


@dataclass(frozen=True)
class Measurement:
    """What one architecture's timing found; the MFU waits for the run's final peaks."""

    arch: str
    plain_images_per_s: float
    images_per_s: float
    precision: str
    image_size: int
    plain_parameters: int
    flowerlab_parameters: int
    forward_flops: int  # one image
    flops_factor: float  # training FLOPs / forward FLOPs, flowerlab's side
    plain_flops_factor: float  # the plain side's (it always trains on images)
    cache_epochs: int | None = None  # feature cache: head epochs per extraction; None: image path
    extraction_images_per_s: float | None = None
    head_images_per_s: float | None = None


def measured_row(m: Measurement, *, peaks: dict[str, float], settings: BenchSettings,
                 context: dict[str, Any]) -> dict[str, Any]:
    gflops = m.forward_flops / 1e9
    peak_dtype = COMPUTE_DTYPES[m.precision]
    plain_train = m.plain_flops_factor * gflops * m.plain_images_per_s
    train = m.flops_factor * gflops * m.images_per_s
    return {
        "arch": m.arch, "status": "measured", "batch_size": settings.batch_size, "image_size": m.image_size,
        "warmup_steps": settings.warmup, "timed_steps": settings.steps, "rounds": settings.rounds,
        "plain_images_per_s": round(m.plain_images_per_s, 2), "flowerlab_images_per_s": round(m.images_per_s, 2),
        "ratio": round(m.images_per_s / m.plain_images_per_s, 3), "plain_precision": "float32",
        "precision": m.precision, "plain_parameters": m.plain_parameters,
        "flowerlab_parameters": m.flowerlab_parameters, "gflops_per_image": round(gflops, 5),
        "flops_factor": m.flops_factor,
        "plain_train_gflops_per_s": round(plain_train, 3), "train_gflops_per_s": round(train, 3),
        "plain_mfu": round(plain_train / peaks["float32"], 5), "mfu": round(train / peaks[peak_dtype], 5),
        "peak_dtype": peak_dtype, "peak_gflops_per_s": round(peaks[peak_dtype], 1),
        **context,
        "cache_epochs": m.cache_epochs if m.cache_epochs is not None else "",
        "extraction_images_per_s": _rounded(m.extraction_images_per_s),
        "head_images_per_s": _rounded(m.head_images_per_s),
    }


def _rounded(value: float | None) -> float | str:
    return "" if value is None else round(value, 2)


def skipped_row(arch: str, reason: str, context: dict[str, Any]) -> dict[str, Any]:
    return {**dict.fromkeys(COLUMNS, ""), "arch": arch, "status": reason, **context}


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    print(f"{'arch':<22}{'plain img/s':>12}{'flowerlab img/s':>16}{'ratio':>8}  {'precision':<15}"
          f"{'GFLOPs/img':>11}{'plain MFU':>10}{'MFU':>8}")
    for row in rows:
        if row["status"] != "measured":
            print(f"{row['arch']:<22}{row['status']}")
            continue
        print(f"{row['arch']:<22}{row['plain_images_per_s']:>12.1f}{row['flowerlab_images_per_s']:>16.1f}"
              f"{row['ratio']:>7.2f}x  {row['precision']:<15}{row['gflops_per_image']:>11.3f}"
              f"{row['plain_mfu']:>10.2%}{row['mfu']:>8.2%}", flush=True)
        if row["cache_epochs"] != "":
            print(f"{'':<22}feature cache: extraction + {row['cache_epochs']} head epochs; extraction "
                  f"{row['extraction_images_per_s']:.1f} images/s, head alone {row['head_images_per_s']:.1f} images/s")
    first = rows[0]
    print(f"(batch {first['batch_size'] or '-'}, {first['device']}, {first['threads']} threads, {first['cpus']} CPUs, "
          f"load average {first['load_average']}; matmul peaks: float32 {first['peak_float32_gflops_per_s']} "
          f"GFLOP/s, bfloat16 {first['peak_bfloat16_gflops_per_s']} GFLOP/s; {first['source']})")


# --------------------------------------------------------------------------------------------
# The run


def bench_arch(arch: str, *, photos: Path, manifest_path: Path, manifest: dict[str, Any], device: Any,
               weights: str, settings: BenchSettings, scratch: Path) -> Measurement:
    import keras

    from flowerlab.evaluation.cost import forward_flops

    keras.utils.set_random_seed(settings.seed)
    fl = flowerlab_path(arch, manifest_path, manifest, device, weights, settings, scratch)
    if not fl.feature_cache:
        check_timed_steps(settings, fl.full_batches, fl.global_batch, f"{manifest_path}'s training records")
    plain_data, plain_images = plain_dataset(photos, image_size=fl.image_size, batch_size=settings.batch_size,
                                             seed=settings.seed)
    check_timed_steps(settings, plain_images // settings.batch_size, settings.batch_size,
                      f"{photos} (training subset)")
    plain_model = build_plain(arch, num_classes=int(manifest["num_classes"]), image_size=fl.image_size,
                              weights=weights)
    plain = Side("plain", plain_model, plain_data, settings.batch_size)
    times = None
    if fl.feature_cache:
        flowerlab, times = feature_cache_side(arch, fl, device, settings)
    else:
        logger.info("%s: filled the pipeline's cache in %.1f s", arch, fill_cache(fl.dataset))
        flowerlab = Side("flowerlab", fl.model, fl.dataset, fl.global_batch)
    measure_sides([plain, flowerlab], settings)
    flops, _ = forward_flops(fl.model, fl.image_size)
    measurement = Measurement(
        arch=arch, plain_images_per_s=plain.images_per_second(), images_per_s=flowerlab.images_per_second(),
        precision=fl.precision, image_size=fl.image_size, plain_parameters=parameters(plain_model),
        flowerlab_parameters=parameters(fl.model), forward_flops=flops,
        # With the cache the backbone's forward pass runs once per image for all the epochs.
        flops_factor=FORWARD_ONLY / settings.cache_epochs if times else training_flops_factor(fl.model),
        plain_flops_factor=training_flops_factor(plain_model),
        cache_epochs=settings.cache_epochs if times else None,
        extraction_images_per_s=times.extracted / times.extraction_seconds if times else None,
        head_images_per_s=times.head_images / times.head_seconds if times else None)
    logger.info("%s: plain %.1f, flowerlab %.1f images/s (%.2fx, %s), %.3f GFLOPs/image", arch,
                measurement.plain_images_per_s, measurement.images_per_s,
                measurement.images_per_s / measurement.plain_images_per_s, fl.precision, flops / 1e9)
    keras.backend.clear_session()  # free this architecture's models and graphs before the next
    return measurement


def peak_dtypes(archs: Sequence[str], device_kind: str, requested: str) -> list[str]:
    """float32 and bfloat16 always (both are reported); float16 too when a model will use it."""
    from flowerlab import devices
    from flowerlab.models.registry import get_spec

    dtypes = ["float32", "bfloat16"]
    for arch in archs:
        policy = devices.resolve_precision(requested, device_kind, cpu_precision=get_spec(arch).cpu_precision)
        if COMPUTE_DTYPES[policy] not in dtypes:
            dtypes.append(COMPUTE_DTYPES[policy])
    return dtypes


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
                                 cache_epochs=args.cache_epochs)
        device = devices.select_strategy(args.accelerator)
        size = args.matmul_size or (8192 if device.kind == "gpu" else 2048)
        dtypes = peak_dtypes(args.archs, device.kind, args.precision)
        first_peaks = measure_peaks(dtypes, size=size, seconds=args.matmul_seconds)
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
                                      device=device, weights=weights, settings=settings, scratch=scratch))
        # Measured again at the end and the better kept: a peak is what the chip can do, and on a
        # shared machine either measurement alone may fall on a busy moment.
        peaks = best_peaks(first_peaks, measure_peaks(dtypes, size=size, seconds=args.matmul_seconds))
        context = {
            "peak_float32_gflops_per_s": round(peaks["float32"], 1),
            "peak_bfloat16_gflops_per_s": round(peaks["bfloat16"], 1),
            "device": f"{device.kind}: {device.name}", "threads": args.threads or "default",
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
                        help=f"architectures (default: the study's, {' '.join(DEFAULT_ARCHS)})")
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
    args.archs = args.archs or list(DEFAULT_ARCHS)
    return args


def main(argv: list[str] | None = None) -> int:
    args = resolve_arguments(build_parser().parse_args(argv))
    configure_logging()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    def work() -> None:
        rows = [{column: row[column] for column in COLUMNS} for row in run(args)]
        write_csv(args.out, rows)
        print_table(rows)
        print(f"wrote {args.out}")

    return run_command("bench_training", work)


if __name__ == "__main__":
    sys.exit(main())
