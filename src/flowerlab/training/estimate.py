"""How long the study's trainings will take on this machine, said before they start.

    flowerlab estimate                                   # the study of config/config.yaml
    flowerlab estimate --configfile config/smoke.yaml --threads 2

For each planned training: its training FLOPs per image (flowerlab.models.flops), its epochs and
images, and this machine's measured rate for it, which is what makes the estimate hold on any
CPU: a few training steps of the architecture on random images, at the run's batch, image size,
precision and threads, timed as the precision probe times them (flowerlab.training.precision) and
cached under `speed_cache` keyed the same way; a frozen backbone trained on its cached features is
timed by its feature extraction, where that training spends its time.

    seconds = epochs x (train images + validation images / 3) / images/s + setup   (image path)
    seconds = (train images + validation images) / extraction images/s + setup       (feature cache)

Validation is a forward pass, a third of a training step's FLOPs (flowerlab.models.flops); setup is
the probe's own model build and first steps (graph tracing). The Snakemake workflow prints this
for the trainings it is about to run (workflow/rules/common.smk, `onstart`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from flowerlab import filesystem
from flowerlab.console import duration

VALIDATION_SHARE = 1 / 3  # a forward pass, of a training step's forward + backward FLOPs
OFFICIAL_PHOTOS = 3670  # photos in the official flower_photos.tgz (docs/course.md), before it is downloaded
CACHE_FORMAT = 1


@dataclass(frozen=True)
class Speed:
    """What the probe measured for one architecture's training on this machine."""

    images_per_second: float  # training steps, or feature extraction for the feature cache
    setup_seconds: float  # building the model and its first (tracing) steps
    gflops_per_image: float  # of one training step's image (forward only for the feature cache)


@dataclass(frozen=True)
class PlannedTraining:
    arch: str
    runs: int  # replicates
    epochs: int
    train_images: int
    validation_images: int
    feature_cache: bool
    speed: Speed

    @property
    def seconds_per_run(self) -> float:
        return training_seconds(self)


def training_seconds(plan: PlannedTraining) -> float:
    """One training's seconds from its images, epochs and measured rate (see the module's docstring)."""
    rate = plan.speed.images_per_second
    if plan.feature_cache:
        return (plan.train_images + plan.validation_images) / rate + plan.speed.setup_seconds
    per_epoch = (plan.train_images + plan.validation_images * VALIDATION_SHARE) / rate
    return plan.epochs * per_epoch + plan.speed.setup_seconds


def total_seconds(plans: Sequence[PlannedTraining]) -> float:
    """All trainings one after another, as a local run gives each the whole machine."""
    return sum(plan.runs * plan.seconds_per_run for plan in plans)


def report(plans: Sequence[PlannedTraining], machine: str) -> str:
    """The table the run prints before its trainings."""
    lines = [f"Estimated training time on this machine ({machine}), from each architecture's FLOPs and "
             "the rate measured here:",
             f"  {'architecture':<22} {'runs':>4} {'epochs':>6} {'images/s':>9} {'GFLOP/img':>9} "
             f"{'GFLOP/s':>8} {'per run':>14} {'all runs':>14}"]
    for plan in plans:
        speed = plan.speed
        lines.append(
            f"  {plan.arch:<22} {plan.runs:>4} {plan.epochs:>6} {speed.images_per_second:>9.1f} "
            f"{speed.gflops_per_image:>9.3f} {speed.gflops_per_image * speed.images_per_second:>8.1f} "
            f"{duration(plan.seconds_per_run):>14} {duration(plan.runs * plan.seconds_per_run):>14}")
    lines.append(f"  all trainings, one after another: {duration(total_seconds(plans))} "
                 "(the data stage, evaluations and report add a few minutes)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The data a study will train on, before the data stage has run


def photo_count(config: Mapping[str, Any]) -> tuple[int, int]:
    """(photos, classes) the study's data stage will find: counted in the photo folder when it
    exists, from the synthetic settings, or the official archive's before it is downloaded."""
    from flowerlab.config import photos_dir

    source = config["data_source"]
    if source == "synthetic":
        synthetic = config["synthetic"]
        return int(synthetic["classes"]) * int(synthetic["images_per_class"]), int(synthetic["classes"])
    root = Path(photos_dir(config))
    if not root.is_dir():
        return OFFICIAL_PHOTOS, 5
    classes = [folder for folder in root.iterdir() if folder.is_dir() and not folder.name.startswith(".")]
    photos = sum(1 for folder in classes for path in folder.iterdir()
                 if path.is_file() and not path.name.startswith("."))
    return photos, len(classes)


def split_sizes(config: Mapping[str, Any], manifest: Path) -> tuple[int, int, int]:
    """(train images, validation images, classes): the manifest's when the TFRecords exist, else
    the photo count split by data.validation_fraction."""
    if manifest.is_file():
        from flowerlab.data.manifest import load_manifest
        from flowerlab.data.records import count_records

        loaded = load_manifest(manifest)
        return count_records(loaded, "train"), count_records(loaded, "validation"), int(loaded["num_classes"])
    photos, classes = photo_count(config)
    validation = round(photos * float(config["data"]["validation_fraction"]))
    return photos - validation, validation, classes


# ---------------------------------------------------------------------------------------------
# Measuring


def speed_cache_path(cache_dir: Path, setup: Any, policy: str, device_name: str) -> Path:
    import tensorflow as tf

    from flowerlab import kernels
    from flowerlab.training.precision import cache_key

    name = cache_key(setup, device_name, tf.__version__).removesuffix(".json")
    return cache_dir / f"{name}__{policy}__{kernels.kernel_library()}.json"


def measure_speed(setup: Any, policy: str, *, cache_dir: Path | None, device_name: str,
                  measured_rate: float | None = None) -> Speed:
    """The architecture's training (or extraction) rate under `policy`, cached; `measured_rate`:
    one the precision probe has just measured."""
    from flowerlab.training.precision import measure_training_speed

    path = speed_cache_path(cache_dir, setup, policy, device_name) if cache_dir is not None else None
    cached = filesystem.read_cache(path, CACHE_FORMAT)
    if cached is not None:
        with contextlib.suppress(TypeError, KeyError):  # the fields of another version: measure
            return Speed(**cached["speed"])
    started = time.perf_counter()
    rate = measured_rate or measure_training_speed(policy, setup)
    setup_seconds = max(0.0, time.perf_counter() - started - _timed_seconds(setup, rate))
    speed = Speed(rate, setup_seconds, _gflops_per_image(setup))
    filesystem.write_cache(path, CACHE_FORMAT, {"speed": asdict(speed), "setup": asdict(setup), "policy": policy,
                                                "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return speed


def _timed_seconds(setup: Any, rate: float) -> float:
    """The probe's timed steps (at least MIN_STEPS and MIN_SECONDS): the rest of its time is setup."""
    from flowerlab.training.precision import MIN_SECONDS, MIN_STEPS

    return max(MIN_SECONDS, MIN_STEPS * setup.batch_size / rate)


def _gflops_per_image(setup: Any) -> float:
    """Training FLOPs of one image of `setup` (forward only for a frozen backbone's extraction)."""
    import keras

    from flowerlab.models.flops import FORWARD_ONLY, forward_flops, training_flops_factor
    from flowerlab.models.registry import NO_WEIGHTS, get_spec

    model = get_spec(setup.arch).build_function()(num_classes=setup.num_classes, image_size=setup.image_size,
                                                  weights=NO_WEIGHTS)
    factor = FORWARD_ONLY if setup.cached_features else training_flops_factor(model)
    gflops = forward_flops(model, setup.image_size)[0] * factor / 1e9
    keras.backend.clear_session()  # the real model's layer names must not depend on this one
    return gflops


def plan_training(config: Mapping[str, Any], arch: str, runs: int, device: Any, *, threads: int | None,
                  manifest: Path, speed_cache: Path | None, precision_cache: Path | None) -> PlannedTraining:
    """One architecture's planned trainings, with its rate measured (or read) on this machine."""
    from flowerlab.config import hparams_for, study_image_size
    from flowerlab.models.registry import get_spec
    from flowerlab.training import frozen_backbone, weight_gradients
    from flowerlab.training.precision import ProbeSetup, choose_precision

    hparams = hparams_for(dict(config), arch)
    train, validation, classes = split_sizes(config, manifest)
    cached = frozen_backbone.image_path_reason(get_spec(arch), hparams, device.kind) is None
    setup = ProbeSetup(arch, hparams, study_image_size(dict(config), arch), classes, int(hparams["batch_size"]),
                       cached_features=cached, threads=threads, weight_gradients=weight_gradients.kernel_name(device.kind))
    choice = choose_precision(hparams["precision"], device.kind, setup, cache_dir=precision_cache)
    speed = measure_speed(setup, choice.policy, cache_dir=speed_cache, device_name=device.name,
                          measured_rate=choice.images_per_second.get(choice.policy))
    return PlannedTraining(arch, runs, int(hparams["epochs"]), train, validation, cached, speed)


def estimate(config: Mapping[str, Any], runs: Mapping[str, int], *, threads: int | None, manifest: Path,
             speed_cache: Path | None, precision_cache: Path | None) -> tuple[list[PlannedTraining], str]:
    """The planned trainings of `runs` ({arch: replicates}) and the machine's name."""
    from flowerlab import devices, kernels

    if threads is not None:
        devices.configure_threads(threads)
    device = devices.select_strategy(config["accelerator"])
    plans = [plan_training(config, arch, count, device, threads=threads, manifest=manifest,
                           speed_cache=speed_cache, precision_cache=precision_cache)
             for arch, count in runs.items()]
    machine = f"{device.name}, {threads or 'all'} threads, {kernels.kernel_library()} kernels"
    return plans, machine


# ---------------------------------------------------------------------------------------------
# Command line


def study_run_counts(config: Mapping[str, Any], only: Sequence[str] = ()) -> dict[str, int]:
    """{arch: trainings} of the study, or of `only` (arch/replicate names, as the workflow plans)."""
    from flowerlab.config import study_runs

    counts: dict[str, int] = {}
    for arch, replicate in study_runs(dict(config)):
        if not only or f"{arch}/{replicate.name}" in only:
            counts[arch] = counts.get(arch, 0) + 1
    return counts


def build_parser(prog: str) -> argparse.ArgumentParser:
    from flowerlab.console import thread_count, usable_cpus

    parser = argparse.ArgumentParser(prog=prog, description="Say how long the study's trainings will take on "
                                     "this machine, from each architecture's FLOPs and a rate measured here.")
    parser.add_argument("--configfile", type=Path, action="append", default=[],
                        help="a config file over config/config.yaml (repeatable, as snakemake's)")
    parser.add_argument("--base", type=Path, default=Path("config/config.yaml"), help="the study's config file")
    parser.add_argument("--config-json", default=None,
                        help="the resolved configuration as JSON instead of the files (the workflow passes it)")
    parser.add_argument("--runs", nargs="*", default=(),
                        help="only these trainings, as ARCH/REPLICATE (default: every one of the study)")
    parser.add_argument("--threads", type=thread_count, default=usable_cpus(),
                        help="threads each training will use (default: every CPU this process may use)")
    parser.add_argument("--manifest", type=Path, default=Path("results/data/manifest.json"),
                        help="the TFRecords' manifest, when they exist (their counts are exact)")
    parser.add_argument("--speed-cache", type=Path, default=Path("resources/speed"),
                        help="where the measured rates are cached (default %(default)s)")
    parser.add_argument("--precision-cache", type=Path, default=Path("resources/precision"),
                        help="where precision auto's measurements are cached (default %(default)s)")
    return parser


def cli(argv: list[str]) -> int:
    from flowerlab.config import prepare_config, resolved_config
    from flowerlab.console import configure_logging, run_command

    args = build_parser(f"flowerlab {argv[0]}").parse_args(argv[1:])
    configure_logging()

    def work() -> None:
        if args.config_json is not None:
            config = prepare_config(json.loads(args.config_json))
        else:
            config = resolved_config([args.base, *args.configfile])
        runs = study_run_counts(config, args.runs)
        if not runs:
            print("no training to run")
            return
        from flowerlab import backends

        if backends.resolve(config["backend"], config["accelerator"]) != "tensorflow":
            # The probe times Keras on TensorFlow on this machine's CPU; a JAX training's devices and
            # compiler are another machine as far as its rate goes.
            print("no estimate: the trainings run on Keras' JAX backend, and the estimate's probe measures "
                  "Keras on TensorFlow; `flowerlab status` shows each training's time left once it runs")
            return
        plans, machine = estimate(config, runs, threads=args.threads, manifest=args.manifest,
                                  speed_cache=args.speed_cache, precision_cache=args.precision_cache)
        print(report(plans, machine), flush=True)

    return run_command(argv[0], work)
