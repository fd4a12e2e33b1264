"""A tiny fake study for the evaluation and report tests: the files every stage before them writes.

`make_fake_study(results, archs)` writes, under `results/`, what the data and training stages
would (docs/architecture.md): an inventory with a few skipped files, TFRecords of small
synthetic photos with their manifest, and per architecture an untrained tiny model, a
history.csv and a training.json. Nothing is trained: the tests exercise the evaluation and
report code, not the models' quality. Everything takes a few seconds on 2 cores.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

CLASSES = ["daisy", "roses", "tulips"]
IMAGE_SIZE = 16
TRAIN_PER_CLASS = 4
VALIDATION_PER_CLASS = 3


def synthetic_jpeg(rng: np.random.Generator, class_index: int, size: int) -> bytes:
    """A small noisy JPEG whose dominant colour depends on the class."""
    import io

    from PIL import Image

    base = np.zeros((size, size, 3), dtype=np.float64)
    base[..., class_index % 3] = 180
    pixels = np.clip(base + rng.normal(40, 30, size=base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def write_data(
    data_dir: Path, *, classes: list[str] = CLASSES, size: int = IMAGE_SIZE, seed: int = 0
) -> dict:
    """TFRecords (2 train shards, 1 validation shard), manifest.json, inventory.csv/.json.

    Records are made by the data stage's own writer (flowerlab.data.tfrecords)."""
    from flowerlab.data.tfrecords import serialize_example, write_shard

    rng = np.random.default_rng(seed)
    records: dict[str, list[bytes]] = {"train": [], "validation": []}
    per_class: dict[str, dict[str, int]] = {"train": {}, "validation": {}}
    inventory_rows = []
    for split, count in (("train", TRAIN_PER_CLASS), ("validation", VALIDATION_PER_CLASS)):
        for class_index, name in enumerate(classes):
            per_class[split][name] = count
            for number in range(count):
                jpeg = synthetic_jpeg(rng, class_index, size)
                source = f"{name}/{split}_{number:03d}.jpg"
                photo_id = hashlib.sha256(source.encode() + jpeg).hexdigest()
                records[split].append(
                    serialize_example(
                        image=jpeg,
                        class_index=class_index,
                        label=name,
                        height=size,
                        width=size,
                        num_classes=len(classes),
                        photo_id=photo_id,
                        source=source,
                    )
                )
                inventory_rows.append([source, name, len(jpeg), photo_id, "JPEG", size, size, "kept", "", ""])
    skipped = [
        ["daisy/empty.jpg", "daisy", 0, "", "", "", "", "skipped", "zero_bytes", ""],
        ["roses/notes.txt", "roses", 12, "ab" * 32, "", "", "", "skipped", "not_an_image", ""],
        [
            "roses/copy.jpg",
            "roses",
            300,
            "cd" * 32,
            "JPEG",
            size,
            size,
            "skipped",
            "duplicate_same_class",
            inventory_rows[0][0],
        ],
    ]
    inventory_rows += skipped

    shard_dir = data_dir / "tfrecords"
    shard_dir.mkdir(parents=True, exist_ok=True)
    shards = []
    train_parts = np.array_split(np.arange(len(records["train"])), 2)
    for split, parts in (("train", train_parts), ("validation", [np.arange(len(records["validation"]))])):
        for index, part in enumerate(parts):
            name = f"{split}-{index:02d}-{len(part)}.tfrec"
            write_shard(shard_dir / name, (records[split][row] for row in part))
            digest = hashlib.sha256((shard_dir / name).read_bytes()).hexdigest()
            shards.append({"file": name, "split": split, "records": len(part), "sha256": digest})

    with open(data_dir / "inventory.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "path",
                "class",
                "bytes",
                "sha256",
                "format",
                "width",
                "height",
                "status",
                "reason",
                "duplicate_of",
            ]
        )
        writer.writerows(inventory_rows)
    kept = len(inventory_rows) - len(skipped)
    inventory = {
        "root": "/nonexistent/flower_photos",
        "classes": classes,
        "files_found": len(inventory_rows),
        "kept": kept,
        "skipped": len(skipped),
        "skipped_by_reason": {"zero_bytes": 1, "not_an_image": 1, "duplicate_same_class": 1},
        "kept_by_class": dict.fromkeys(classes, TRAIN_PER_CLASS + VALIDATION_PER_CLASS),
    }
    (data_dir / "inventory.json").write_text(json.dumps(inventory, indent=2))
    manifest = {
        "format_version": 1,
        "settings": {
            "image_size": size,
            "jpeg_quality": 95,
            "validation_fraction": 0.19,
            "shards": 3,
            "seed": 35155,
        },
        "classes": classes,
        "num_classes": len(classes),
        "image_size": size,
        "inventory_sha256": hashlib.sha256((data_dir / "inventory.csv").read_bytes()).hexdigest(),
        "splits": {
            split: {"records": len(records[split]), "per_class": per_class[split]} for split in records
        },
        "shards": shards,
    }
    (data_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def tiny_model(arch: str, num_classes: int, size: int, seed: int):
    """A small untrained model with the study's contract: [0, 1] images in, softmax out."""
    import keras

    keras.utils.set_random_seed(seed)
    layers = keras.layers
    if arch == "dense":
        body = [layers.Flatten(), layers.Dense(8, activation="relu")]
    else:
        body = [
            layers.Conv2D(4, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(6, 3, padding="same", activation="relu"),
            layers.GlobalAveragePooling2D(),
        ]
    return keras.Sequential(
        [keras.Input((size, size, 3)), *body, layers.Dense(num_classes, activation="softmax")], name=arch
    )


def write_model(models_dir: Path, arch: str, manifest_path: Path, *, epochs: int = 3, seed: int = 1) -> None:
    """model.keras, history.csv and training.json of one run (architecture and seed), in
    models_dir/{arch}/seed-{seed}/."""
    manifest = json.loads(manifest_path.read_text())
    folder = models_dir / arch / f"seed-{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    model = tiny_model(arch, manifest["num_classes"], manifest["image_size"], seed)
    model.save(folder / "model.keras")
    rng = np.random.default_rng(seed)
    rows = []
    for epoch in range(1, epochs + 1):
        progress = 1 - math.exp(-epoch / 2)
        rows.append(
            {
                "epoch": epoch,
                "loss": 1.2 - 0.6 * progress,
                "accuracy": 0.35 + 0.5 * progress,
                "val_loss": 1.25 - 0.5 * progress + rng.normal(0, 0.02),
                "val_accuracy": 0.33 + 0.4 * progress + rng.normal(0, 0.02),
                "learning_rate": 0.001,
                "epoch_seconds": 2.0 + rng.random(),
                "images_per_second": 40.0 + rng.random(),
            }
        )
    with open(folder / "history.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    total = sum(int(np.prod(w.shape)) for w in model.weights)
    record = {
        "arch": arch,
        "hparams": {"epochs": epochs, "batch_size": 4, "learning_rate": 0.001, "augment": False},
        "learning_rate_schedule": "0.001, constant",
        "device": {"kind": "cpu", "name": "test CPU (2 cores)", "replicas": 1},
        "precision": "float32",
        "seed": seed,
        "deterministic": False,
        "versions": {"tensorflow": "test"},
        "wall_seconds": 7.5 * epochs,
        "train_images_per_second": 40.0 if arch == "dense" else 12.0,
        # made-up figures in the shape flowerlab train records them (flowerlab.training.peak)
        "hardware_share": {"achieved_gflops_per_s": 20.0 + seed, "peak_gflops_per_s": 100.0,
                           "fraction_of_peak": (20.0 + seed) / 100.0},
        "kernels": {"library": "oneDNN", "environment": {}},
        "epochs": epochs,
        "best_val_accuracy": max(r["val_accuracy"] for r in rows),
        "final_val_accuracy": rows[-1]["val_accuracy"],
        "parameters": {"total": total, "trainable": total},
        "resumed_from_epoch": None,
        "manifest_sha256": hashlib.sha256(manifest_path.read_bytes()).hexdigest(),
        "code_version": {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": False,
                         "fingerprint": "5eed" * 16},
    }
    (folder / "training.json").write_text(json.dumps(record, indent=2))


BENCHMARK_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def runs_of(archs: list[str], seeds: Sequence[int] = (1,)) -> list[tuple[str, str]]:
    """(arch, replicate name) of a study of `archs` with `seeds`, in the workflow's order."""
    return [(arch, f"seed-{seed}") for arch in archs for seed in seeds]


def write_benchmarks(benchmarks: Path, archs: list[str], seeds: Sequence[int] = (1,)) -> dict[str, float]:
    """The Snakemake benchmark files of a study of `archs` x `seeds` (flowerlab.reporting.timings'
    layout), as the rules' `benchmark:` directive writes them; returns {file: seconds}."""
    from flowerlab.reporting.timings import study_benchmark_files

    seconds = {}
    for index, name in enumerate(study_benchmark_files(runs_of(archs, seeds))):
        wall = 1.5 + 10.0 * index
        path = benchmarks / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{BENCHMARK_HEADER}{wall}\t0:00:{int(wall):02d}\t310.2\t900.1\t280.0\t290.0\t"
                        f"0.1\t1.2\t150.0\t{wall * 1.6:.2f}\n")
        seconds[name] = wall
    return seconds


def make_fake_study(results: Path, archs: list[str], seeds: Sequence[int] = (1,)) -> Path:
    """results/data/* and results/models/{arch}/seed-{seed}/* for `archs` x `seeds`, and the jobs'
    benchmark files in benchmarks/ beside results/ (as in a workflow's folder); returns `results`.
    Architectures train for different numbers of epochs (3, 4, ...), their runs alike."""
    write_data(results / "data")
    for index, arch in enumerate(archs, start=1):
        for seed in seeds:
            write_model(results / "models", arch, results / "data" / "manifest.json", epochs=3 + index, seed=seed)
    write_benchmarks(results.parent / "benchmarks", archs, seeds)
    return results


# ------------------------------------------------------------------------------------------
# The stages after training, run on a fake study exactly as the workflow runs them
# ------------------------------------------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO_ROOT / "workflow" / "notebooks" / "report.ipynb"
HTML_TEMPLATE = REPO_ROOT / "workflow" / "notebooks" / "report.html.j2"


def evaluate_and_collect(results: Path, archs: list[str], seeds: Sequence[int] = (1,)) -> None:
    """results/evaluation/{arch}/seed-{seed}/ and the tables of results/ (metrics.csv, ...), in
    this process, TF default threads."""
    from flowerlab.evaluation import collect, stage

    runs = runs_of(archs, seeds)
    for arch, replicate in runs:
        stage.evaluate(
            arch=arch,
            model_path=results / "models" / arch / replicate / "model.keras",
            training_json=results / "models" / arch / replicate / "training.json",
            manifest_path=results / "data" / "manifest.json",
            out_dir=results / "evaluation" / arch / replicate,
            batch_size=4,
            latency_runs=3,
        )
    collect.collect([results / "evaluation" / arch / replicate / "metrics.json" for arch, replicate in runs],
                    collect_outputs(results))


def collect_outputs(results: Path):
    """Where the workflow's collect_metrics rule writes its tables, under `results`."""
    from flowerlab.evaluation.collect import Outputs

    return Outputs(results / "metrics.csv", results / "metrics.json", results / "architectures.csv",
                   results / "comparisons.csv", results / "mcnemar.csv")


def render_report(results: Path) -> Path:
    """Execute the report notebook and export it (flowerlab render), then publish the landing
    page (flowerlab publish), as the workflow does; returns results/report/index.html."""
    from flowerlab.reporting import landing, render

    report_dir = results / "report"
    assert (
        render.cli(
            [
                "render",
                "--notebook",
                str(NOTEBOOK),
                "--executed",
                str(report_dir / "report.ipynb"),
                "--html",
                str(report_dir / "report.html"),
                *render_options(results),
            ]
        )
        == 0
    )
    runs = [line.split(",")[:2] for line in (results / "metrics.csv").read_text().splitlines()[1:]]
    return landing.publish(
        figures_dir=results / "figures",
        metrics=results / "metrics.csv",
        architectures=results / "architectures.csv",
        notebook_html=report_dir / "report.html",
        out=report_dir / "index.html",
        manifest=results / "data" / "manifest.json",
        evaluations=[results / "evaluation" / arch / replicate / "metrics.json" for arch, replicate in runs],
    )


def render_options(results: Path) -> list[str]:
    """flowerlab render's data options for a study under `results`: its folder, the rest by default."""
    return ["--results-dir", str(results)]


def make_fake_report(results: Path, archs: list[str], *, seeds: Sequence[int] = (1,)) -> Path:
    """A whole fake study of `archs` x `seeds`, from data to the published landing page; returns
    index.html."""
    make_fake_study(results, archs, seeds)
    evaluate_and_collect(results, archs, seeds)
    return render_report(results)
