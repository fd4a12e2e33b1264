"""Training images/s of the study's architectures in plain Keras 3, on any Keras backend and device.

flowerlab itself trains with TensorFlow (tf.data, TensorFlow kernels). This benchmark needs only
Keras and one backend (JAX, PyTorch or TensorFlow), so it also runs where TensorFlow cannot be
installed, e.g. a GPU machine without internet access whose image holds JAX and PyTorch only.
It answers "how fast do these models train on this device" and so bounds what the study's
training could take there; it does not run the study (no TFRecords, no Snakemake).

    KERAS_BACKEND=jax python bench/bench_backend.py --out results/bench/backend.csv
    python bench/bench_backend.py --backend torch --archs convnet squeezenet
    python bench/bench_backend.py --quick          # CI: tiny images, seconds

For each architecture (the plain-Keras builders of bench_training.py: the course's layers,
keras.layers.BatchNormalization, keras.applications' MobileNetV2 with random weights, which train
at the speed of ImageNet ones) and each precision policy (float32, mixed_bfloat16; --policies),
with the study's batch size (config/config.yaml, `models.ARCH.batch_size`): one `fit` epoch over
random images in host memory compiles and warms up, then `--rounds` more epochs are timed; the
figure is images / median epoch seconds. An epoch holds `ceil(train images / batch)` full batches
(3,001 training images in the real split; a partial batch would recompile under JAX), so per-step
overheads (Python dispatch, host-to-device copies) are in the figure as they would be in training.

The study estimate is the training-step time of the study's epochs on this device: for each
architecture, epochs (config/config.yaml) x training images / its best images/s. It leaves out the
data pipeline, validation, start-up and compilation, so the real study takes longer.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from common import write_csv
from plain_keras import PLAIN_BUILDERS  # no Keras import: the builders take the keras module

from flowerlab.models.registry import COURSE_ARCHITECTURES

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "config" / "config.yaml"
STUDY_ARCHS = ("dense", "mobilenet_v2", "convnet", "squeezenet", "mobilenet_v2_finetune")
COURSE_TOTAL = "course's four"
POLICIES = ("float32", "mixed_bfloat16")
TRAIN_IMAGES = 3001  # the real data's training split (results/data/manifest.json)
NUM_CLASSES = 5


def study_recipes(config_path: Path, archs: list[str]) -> dict[str, dict[str, int]]:
    """Each architecture's epochs and batch size from the study's config file (read as YAML, not
    through flowerlab.config, whose schema check needs jsonschema, which a JAX-only machine may lack;
    every model there sets both keys)."""
    import yaml

    models = yaml.safe_load(config_path.read_text())["models"]
    missing = [arch for arch in archs if arch not in models]
    if missing:
        raise SystemExit(f"{config_path} has no models.{missing[0]} (architectures: {sorted(models)})")
    return {arch: {"epochs": int(models[arch]["epochs"]), "batch_size": int(models[arch]["batch_size"])}
            for arch in archs}


def epoch_images(train_images: int, batch_size: int) -> int:
    """Images in an epoch of full batches (a partial last batch would recompile under JAX)."""
    return math.ceil(train_images / batch_size) * batch_size


def describe_device(backend: str) -> str:
    """The device the backend computes on, in words."""
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return f"{device.platform}: {getattr(device, 'device_kind', device)}"
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return f"cuda: {torch.cuda.get_device_name(0)}"
        return f"cpu: {platform.processor() or platform.machine()}"
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return f"gpu: {gpus[0].name}" if gpus else f"cpu: {platform.processor() or platform.machine()}"
    return backend


def time_architecture(keras: Any, builder: Any, policy: str, *, images: Any, labels: Any,
                      batch_size: int, rounds: int) -> dict[str, float]:
    """Compile-and-warm seconds of the first epoch, then images/s of the median timed epoch."""
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = builder(keras, NUM_CLASSES, images.shape[1], "none")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    start = time.perf_counter()
    model.fit(images, labels, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    first_epoch = time.perf_counter() - start
    epochs = []
    for _ in range(rounds):
        start = time.perf_counter()
        model.fit(images, labels, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
        epochs.append(time.perf_counter() - start)
    keras.backend.clear_session()
    return {"first_epoch_seconds": first_epoch, "epoch_seconds": statistics.median(epochs),
            "images_per_second": len(images) / statistics.median(epochs)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("jax", "torch", "tensorflow"),
                        help="Keras backend (default: $KERAS_BACKEND, else Keras' default)")
    parser.add_argument("--archs", nargs="+", default=list(STUDY_ARCHS))
    parser.add_argument("--policies", nargs="+", default=list(POLICIES),
                        choices=("float32", "mixed_bfloat16", "mixed_float16"))
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help="the study's config (epochs and batch sizes)")
    parser.add_argument("--train-images", type=int, default=TRAIN_IMAGES,
                        help="training images per epoch (the real split's 3,001)")
    parser.add_argument("--image-size", type=int, default=192)
    parser.add_argument("--rounds", type=int, default=2, help="timed epochs per configuration")
    parser.add_argument("--out", type=Path, help="also write the rows to this CSV file (after each row)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny images, few images, one timed epoch: checks that it works")
    args = parser.parse_args(argv)
    if args.quick:
        args.image_size, args.train_images, args.rounds = 32, 64, 1
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend  # read once, when keras is first imported
    import keras
    import numpy as np

    unknown = [arch for arch in args.archs if arch not in PLAIN_BUILDERS]
    if unknown:
        raise SystemExit(f"unknown architecture {unknown[0]!r}; known: {', '.join(PLAIN_BUILDERS)}")
    recipes = study_recipes(args.config, args.archs)
    backend = keras.backend.backend()
    device = describe_device(backend)
    print(f"# Keras {keras.__version__}, backend {backend}, device {device}, "
          f"{args.image_size} px, {args.train_images} training images per epoch", flush=True)

    largest = max(epoch_images(args.train_images, recipe["batch_size"]) for recipe in recipes.values())
    rng = np.random.default_rng(0)
    all_images = rng.random((largest, args.image_size, args.image_size, 3), dtype=np.float32)
    all_labels = np.eye(NUM_CLASSES, dtype=np.float32)[rng.integers(0, NUM_CLASSES, largest)]

    rows: list[dict[str, object]] = []
    print(f"{'architecture':<24} {'policy':<15} {'batch':>5} {'first epoch s':>13} {'epoch s':>8} "
          f"{'images/s':>9}", flush=True)
    for arch in args.archs:
        batch_size = recipes[arch]["batch_size"]
        count = epoch_images(args.train_images, batch_size)
        for policy in args.policies:
            result = time_architecture(keras, PLAIN_BUILDERS[arch], policy, images=all_images[:count],
                                       labels=all_labels[:count], batch_size=batch_size,
                                       rounds=args.rounds)
            rows.append({"architecture": arch, "policy": policy, "batch_size": batch_size,
                         "backend": backend, "device": device, "image_size": args.image_size,
                         "epochs_in_study": recipes[arch]["epochs"],
                         "first_epoch_seconds": round(result["first_epoch_seconds"], 3),
                         "epoch_seconds": round(result["epoch_seconds"], 4),
                         "images_per_second": round(result["images_per_second"], 1)})
            print(f"{arch:<24} {policy:<15} {batch_size:>5} {result['first_epoch_seconds']:>13.1f} "
                  f"{result['epoch_seconds']:>8.2f} {result['images_per_second']:>9.1f}", flush=True)
            if args.out:
                write_csv(args.out, rows)

    print_study_estimate(rows, recipes, args.train_images)
    return 0


def print_study_estimate(rows: list[dict[str, object]], recipes: dict[str, dict[str, int]],
                         train_images: int) -> None:
    """Training-step seconds of the study's epochs at each architecture's best images/s."""
    print("\n# study estimate: epochs x training images / best images/s (training steps only)")
    seconds = {}
    for arch, recipe in recipes.items():
        best = max((row for row in rows if row["architecture"] == arch),
                   key=lambda row: float(row["images_per_second"]))
        seconds[arch] = recipe["epochs"] * train_images / float(best["images_per_second"])
        print(f"{arch:<24} {recipe['epochs']:>3} epochs  {seconds[arch]:8.1f} s  ({best['policy']})")
    if set(COURSE_ARCHITECTURES) <= set(seconds):
        course_seconds = sum(seconds[arch] for arch in COURSE_ARCHITECTURES)
        print(f"{COURSE_TOTAL:<24} {'':>10} {course_seconds:8.1f} s")
    print(f"{'all timed':<24} {'':>10} {sum(seconds.values()):8.1f} s")


if __name__ == "__main__":
    raise SystemExit(main())
