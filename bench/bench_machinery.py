"""What each piece of flowerlab's speed machinery saves in a whole study, in seconds of that study.

    python bench/bench_machinery.py --photos ../shared/data/flower_photos --weights W --threads 2
    python bench/bench_machinery.py --quick     # CI: synthetic photos, a few steps, no accuracy runs

Each piece is measured against what would replace it, on the same data, threads and machine,
and scaled to the default study (config/config.yaml's epochs):

* tfrecord_writer: the TFRecords stage (`flowerlab tfrecords`, a process of its own, TensorFlow's
  import included) with flowerlab's own record framing against `tf.io.TFRecordWriter`;
* fused_adam: training steps of each model with `FusedAdam` against Keras' `Adam`, per step
  (median of timed `train_on_batch` calls after a warm-up) x the study's steps;
* batch_norm_folding: the study's frozen-MobileNetV2 training job (features extracted once, the
  head trained on them) with the backbone's batch norms folded into its convolutions, against
  the same job unfolded;
* batch_order_replay: the same job with the head's batches in the image path's own per-epoch
  order (`pipeline.epoch_order`), against a plain seeded permutation per epoch: the seconds it
  costs, and both jobs' validation accuracy over `--seeds`.

Results go to results/bench/machinery.csv (--out); one row per piece and comparison.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import PRECISION_CACHE, default_photos, default_weights, make_quick_data, run_script

from flowerlab.console import positive_int

logger = logging.getLogger("bench_machinery")
COLUMNS = ("piece", "measure", "with_it", "without_it", "unit", "study_seconds_saved", "note")
# The default study's epochs (config/config.yaml): what a per-epoch saving is multiplied by.
STUDY_EPOCHS = {"dense": 10, "mobilenet_v2": 10, "convnet": 20, "squeezenet": 35, "mobilenet_v2_finetune": 12}
TF_WRITER = """
import sys, tensorflow as tf
from flowerlab.data import tfrecord_io, tfrecords
class Writer:
    def __init__(self, path): self._w = tf.io.TFRecordWriter(str(path)); self.records = 0
    def write(self, record): self._w.write(record); self.records += 1
    def close(self): self._w.close()
    def __enter__(self): return self
    def __exit__(self, *exc): self.close()
tfrecord_io.RecordWriter = Writer
sys.exit(tfrecords.cli(sys.argv[1:]))
"""


def row(piece: str, measure: str, with_it: float, without_it: float, unit: str, saved: float, note: str = "") -> dict:
    return {"piece": piece, "measure": measure, "with_it": round(with_it, 4), "without_it": round(without_it, 4),
            "unit": unit, "study_seconds_saved": round(saved, 1), "note": note}


def timed_command(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def tfrecord_writer(photos: Path, inventory: Path, scratch: Path, threads: int, image_size: int) -> list[dict]:
    common = ["tfrecords", "--root", str(photos), "--inventory", str(inventory), "--image-size", str(image_size),
              "--threads", str(threads)]
    seconds = {}
    for name, prefix in (("own", [sys.executable, "-m", "flowerlab"]), ("tf", [sys.executable, "-c", TF_WRITER])):
        out = scratch / f"records-{name}"
        seconds[name] = timed_command([*prefix, *common, "--out-dir", str(out / "tfrecords"),
                                       "--manifest", str(out / "manifest.json")])
    same = all((scratch / "records-own/tfrecords" / f.name).read_bytes() == f.read_bytes()
               for f in (scratch / "records-tf/tfrecords").iterdir())
    return [row("tfrecord_writer", "TFRecords stage wall time", seconds["own"], seconds["tf"], "s",
                seconds["tf"] - seconds["own"], f"byte-identical shards: {same}")]


def step_seconds(model: Any, images: Any, labels: Any, steps: int) -> float:
    for _ in range(3):  # trace, allocate, pick kernels
        model.train_on_batch(images, labels)
    durations = []
    for _ in range(steps):
        started = time.perf_counter()
        model.train_on_batch(images, labels)
        durations.append(time.perf_counter() - started)
    return statistics.median(durations)


def fused_adam(manifest: Path, archs: list[str], steps: int) -> list[dict]:
    import keras

    from flowerlab import devices
    from flowerlab.data.manifest import load_manifest
    from flowerlab.models.build import build_model
    from flowerlab.training.optimizers import FusedAdam
    from flowerlab.training.precision import ProbeSetup, choose_precision
    from flowerlab.training.setup import plan_batches

    data = load_manifest(manifest)
    rows = []
    for arch in archs:
        batch = {"dense": 32, "convnet": 32, "squeezenet": 64}[arch]
        images = keras.random.uniform((batch, data["image_size"], data["image_size"], 3), seed=1)
        labels = keras.ops.one_hot(keras.ops.arange(batch) % data["num_classes"], data["num_classes"])
        probe = ProbeSetup(arch, {"learning_rate": 1e-3}, data["image_size"], data["num_classes"], batch,
                           cached_features=False, threads=None)
        devices.apply_precision(choose_precision("auto", "cpu", probe, cache_dir=PRECISION_CACHE).policy)
        seconds = {}
        for name, optimizer in (("fused", FusedAdam), ("keras", keras.optimizers.Adam)):
            model = build_model(arch, num_classes=data["num_classes"], image_size=data["image_size"])
            model.compile(optimizer=optimizer(learning_rate=1e-3), loss="categorical_crossentropy")
            seconds[name] = step_seconds(model, images, labels, steps)
        keras.mixed_precision.set_global_policy("float32")
        study_steps = STUDY_EPOCHS[arch] * plan_batches(arch, batch, "cpu", 1, data["splits"]["train"]["records"]).steps_per_epoch
        rows.append(row("fused_adam", f"{arch} training step", seconds["fused"], seconds["keras"], "s/step",
                        (seconds["keras"] - seconds["fused"]) * study_steps, f"{study_steps} steps in the study"))
    return rows


def train_frozen_mobilenet(manifest: Path, weights: str, seed: int, out: Path, **variant: Any) -> dict:
    """One `flowerlab train` of the frozen MobileNetV2 (the default study's job, on cached features),
    with `fold` or `replay` switched off when asked; returns its training.json record."""
    import numpy as np

    from flowerlab.data import pipeline
    from flowerlab.training import frozen_backbone, setup, stage

    replay, folds = pipeline.epoch_order, frozen_backbone.folds_batch_norms
    if not variant.get("replay", True):
        pipeline.epoch_order = lambda records, epoch, *, seed, **_: np.random.default_rng([seed, epoch]).permutation(
            records)
    if not variant.get("fold", True):
        frozen_backbone.folds_batch_norms = lambda model: False
    try:
        hparams = setup.resolve_hparams({"epochs": STUDY_EPOCHS["mobilenet_v2"], "batch_size": 64, "weights": weights})
        return stage.train(setup.TrainSettings(arch="mobilenet_v2", manifest=manifest, out_dir=out,
                                               checkpoint_dir=out.with_name(f"{out.name}-checkpoints"),
                                               hparams=hparams, seed=seed))
    finally:
        pipeline.epoch_order, frozen_backbone.folds_batch_norms = replay, folds


def frozen_backbone_pieces(manifest: Path, weights: str, seeds: list[int], scratch: Path) -> list[dict]:
    """Batch-norm folding and the batch-order replay, each as whole training jobs of the study."""
    runs: dict[str, list[dict]] = {"as built": [], "permutation": []}
    for seed in seeds:
        for name in runs:
            runs[name].append(train_frozen_mobilenet(manifest, weights, seed, scratch / f"{name}-{seed}",
                                                     replay=name == "as built"))
    unfolded = train_frozen_mobilenet(manifest, weights, seeds[0], scratch / "unfolded", fold=False)
    folded = runs["as built"][0]

    def mean(name: str, key: str) -> float:
        return statistics.mean(record[key] for record in runs[name])

    def listed(name: str) -> str:
        return ", ".join(f"{record['final_val_accuracy']:.4f}" for record in runs[name])

    cache = {name: record["feature_cache"] for name, record in (("folded", folded), ("unfolded", unfolded))}
    return [
        row("batch_norm_folding", f"frozen MobileNetV2 training job, seed {seeds[0]}", folded["wall_seconds"],
            unfolded["wall_seconds"], "s", unfolded["wall_seconds"] - folded["wall_seconds"],
            f"training-feature extraction {cache['folded']['train_extraction_seconds']:.1f} s folded, "
            f"{cache['unfolded']['train_extraction_seconds']:.1f} s unfolded; final accuracy "
            f"{folded['final_val_accuracy']:.4f} folded, {unfolded['final_val_accuracy']:.4f} unfolded"),
        row("batch_order_replay", f"frozen MobileNetV2 training job, mean of seeds {seeds}",
            mean("as built", "wall_seconds"), mean("permutation", "wall_seconds"), "s",
            mean("permutation", "wall_seconds") - mean("as built", "wall_seconds"),
            f"final validation accuracy with the replay {listed('as built')}; "
            f"with a plain permutation {listed('permutation')}"),
    ]


def run(args: argparse.Namespace) -> list[dict]:
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(args.threads))
    with tempfile.TemporaryDirectory(prefix="bench_machinery-") as folder:
        scratch = Path(folder)
        photos = args.photos
        if args.quick:
            photos, _ = make_quick_data(scratch / "quick", image_size=args.image_size)
        inventory = scratch / "inventory.csv"
        subprocess.run([sys.executable, "-m", "flowerlab", "inventory", "--root", str(photos), "--out-csv",
                        str(inventory), "--out-json", str(scratch / "inventory.json"), "--threads", str(args.threads)],
                       check=True, capture_output=True)
        rows = tfrecord_writer(photos, inventory, scratch, args.threads, args.image_size)
        manifest = scratch / "records-own" / "manifest.json"
        if "fused_adam" in args.parts:
            rows += fused_adam(manifest, args.archs, args.steps)
        if args.weights and args.seeds and "frozen_backbone" in args.parts:
            rows += frozen_backbone_pieces(manifest, str(args.weights), args.seeds, scratch)
    return rows


def print_table(rows: list[dict]) -> None:
    for item in rows:
        print(f"{item['piece']:<20} {item['measure']:<48} with {item['with_it']:>10} without {item['without_it']:>10} "
              f"{item['unit']:<9} saves {item['study_seconds_saved']:>7} s  {item['note']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, default=None, help="the photo folder (default: the real data)")
    parser.add_argument("--weights", type=Path, default=None, help="MobileNetV2 no-top .h5 (folding, replay)")
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--archs", nargs="+", default=["dense", "convnet", "squeezenet"])
    parser.add_argument("--steps", type=positive_int, default=20, help="timed training steps per optimizer")
    parser.add_argument("--seeds", type=int, nargs="*", default=[1, 2, 3],
                        help="seeds of the frozen MobileNetV2 jobs (folding: the first; the replay: all)")
    parser.add_argument("--parts", nargs="+", default=["fused_adam", "frozen_backbone"],
                        choices=["fused_adam", "frozen_backbone"], help="what to measure beside the writer")
    parser.add_argument("--image-size", type=positive_int, default=192)
    parser.add_argument("--quick", action="store_true", help="synthetic photos, 3 steps, no weights, no seeds")
    parser.add_argument("--out", type=Path, default=Path("results/bench/machinery.csv"))
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.seeds, args.weights, args.image_size, args.archs = 3, [], None, 64, ["dense", "convnet"]
    else:
        args.photos = args.photos or default_photos()
        args.weights = args.weights or default_weights()
    return run_script("bench_machinery", lambda: run(args), args.out, print_table, COLUMNS)


if __name__ == "__main__":
    sys.exit(main())
