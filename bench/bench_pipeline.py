"""Input-pipeline throughput: TFRecords through `make_dataset`, cold and cached, vs one-by-one JPEGs.

    python bench/bench_pipeline.py --manifest results/data/manifest.json      # the real records
    python bench/bench_pipeline.py --quick                                    # CI: tiny synthetic set

Measured in one run, on the same machine and threads:

* `jpeg_one_by_one` (the baseline): read and `tf.io.decode_jpeg` the original photos one file at
  a time, as a loop over a folder of JPEGs would (the course's starting point);
* `pipeline_cold`: the first pass of the training pipeline (`training=True`, shuffle, batch):
  read the shards, parse, decode the 192 px JPEGs, fill the uint8 cache;
* `pipeline_cached`: later passes, served from the cache (the steady state of training);
* `pipeline_cached_augment`: the same with the course's augmentation (flip + saturation).

Figures are images/s; `speedup` is relative to the baseline of the same run. Results go to
results/bench/pipeline.csv (--out). Target from the brief: >= 2,500 images/s cached on 2 cores.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger("bench_pipeline")

COLUMNS = ("measure", "images", "seconds", "images_per_second", "speedup_vs_jpeg_one_by_one", "batch_size",
           "image_size", "threads", "cpus", "source", "tensorflow")


# --------------------------------------------------------------------------------------------
# Inputs


def photo_root_for(manifest_path: Path) -> Path | None:
    """The photo folder the records were made from: `root` of the inventory.json beside the manifest."""
    inventory = manifest_path.parent / "inventory.json"
    if inventory.is_file():
        root = json.loads(inventory.read_text(encoding="utf-8")).get("root")
        if root and Path(root).is_dir():
            return Path(root)
    return None


def sample_photos(root: Path, limit: int) -> list[Path]:
    """Up to `limit` JPEGs spread evenly over the sorted list (so every class is sampled)."""
    photos = sorted(p for p in root.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg"} and p.is_file())
    if not photos:
        raise SystemExit(f"no JPEG photos under {root}")
    step = max(1, len(photos) // limit)
    return photos[::step][:limit]


def write_quick_set(folder: Path, *, records: int = 256, image_size: int = 64, photos: int = 64) -> tuple[list[str], list[Path]]:
    """A tiny synthetic set: `records` TFRecords in 4 shards and `photos` 320x240 JPEG files."""
    import numpy as np
    import tensorflow as tf

    from flowerlab.data.tfrecords import serialize_example, write_shard

    rng = np.random.default_rng(0)
    classes = ["a", "b", "c"]
    serialized = []
    for index in range(records):
        pixels = rng.integers(0, 255, (image_size, image_size, 3), dtype=np.uint8)
        serialized.append(serialize_example(
            image=tf.io.encode_jpeg(pixels, quality=95).numpy(), class_index=index % 3, label=classes[index % 3],
            height=image_size, width=image_size, num_classes=3, photo_id=f"{index:064x}", source=f"q/{index}.jpg"))
    files = []
    for shard, part in enumerate(np.array_split(np.arange(records), 4)):
        path = folder / f"train-{shard:02d}-{len(part)}.tfrec"
        write_shard(path, [serialized[i] for i in part])
        files.append(str(path))
    photo_dir = folder / "photos" / "a"
    photo_dir.mkdir(parents=True)
    photo_paths = []
    for index in range(photos):
        path = photo_dir / f"{index}.jpg"
        path.write_bytes(tf.io.encode_jpeg(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8), quality=90).numpy())
        photo_paths.append(path)
    return files, photo_paths


# --------------------------------------------------------------------------------------------
# Measurements


def time_jpeg_one_by_one(photos: list[Path]) -> tuple[int, float]:
    """Read + decode each photo in its own eager call (no batching, no parallelism)."""
    import tensorflow as tf

    tf.io.decode_jpeg(tf.io.read_file(str(photos[0])), channels=3)  # warm-up: kernels
    for path in photos:  # from the page cache, like the shards just written: decode vs decode, not disk
        path.read_bytes()
    started = time.perf_counter()
    for path in photos:
        tf.io.decode_jpeg(tf.io.read_file(str(path)), channels=3)
    return len(photos), time.perf_counter() - started


def time_pass(dataset: Any) -> tuple[int, float]:
    """One full pass; the images are pulled to the host so that nothing is left queued."""
    images = 0
    started = time.perf_counter()
    for batch, _ in dataset:
        images += int(batch.shape[0])
    return images, time.perf_counter() - started


def row(measure: str, images: int, seconds: float, baseline: float | None, **context: Any) -> dict[str, Any]:
    rate = images / seconds if seconds > 0 else float("nan")
    return {"measure": measure, "images": images, "seconds": round(seconds, 4), "images_per_second": round(rate, 1),
            "speedup_vs_jpeg_one_by_one": round(rate / baseline, 2) if baseline else 1.0, **context}


def run(files: list[str], photos: list[Path], *, image_size: int, num_classes: int, batch_size: int, passes: int,
        threads: int | None, source: str) -> list[dict[str, Any]]:
    import tensorflow as tf

    from flowerlab.data.pipeline import make_dataset

    context = {"batch_size": batch_size, "image_size": image_size, "threads": threads or "default",
               "cpus": os.cpu_count(), "source": source, "tensorflow": tf.__version__}
    images, seconds = time_jpeg_one_by_one(photos)
    baseline = images / seconds
    rows = [row("jpeg_one_by_one", images, seconds, None, **context)]
    logger.info("baseline: %d photos decoded one by one at %.0f images/s", images, baseline)

    def pipeline(augment: bool) -> Any:
        return make_dataset(files, image_size=image_size, num_classes=num_classes, batch_size=batch_size,
                            training=True, augment=augment, seed=0, threads=threads)

    plain = pipeline(augment=False)
    rows.append(row("pipeline_cold", *time_pass(plain), baseline, **context))
    cached = [time_pass(plain) for _ in range(passes)]
    rows.append(row("pipeline_cached", sum(n for n, _ in cached), sum(s for _, s in cached), baseline, **context))
    logger.info("cached passes: %s images/s", ", ".join(f"{n / s:.0f}" for n, s in cached))

    augmented = pipeline(augment=True)
    time_pass(augmented)  # fills this dataset's own cache
    cached = [time_pass(augmented) for _ in range(passes)]
    rows.append(row("pipeline_cached_augment", sum(n for n, _ in cached), sum(s for _, s in cached), baseline, **context))
    return rows


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """Atomically (temporary file + rename), so a killed benchmark leaves no half CSV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(temporary, path)


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'measure':<26}{'images':>8}{'seconds':>10}{'images/s':>11}{'speedup':>9}")
    for r in rows:
        print(f"{r['measure']:<26}{r['images']:>8}{r['seconds']:>10.2f}{r['images_per_second']:>11.0f}"
              f"{r['speedup_vs_jpeg_one_by_one']:>8.1f}x")
    context = rows[0]
    print(f"({context['source']}; batch {context['batch_size']}, {context['image_size']} px records, "
          f"threads {context['threads']}, {context['cpus']} CPUs, TensorFlow {context['tensorflow']})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, help="results/data/manifest.json of real TFRecords")
    parser.add_argument("--quick", action="store_true", help="tiny synthetic set made here (seconds; for CI)")
    parser.add_argument("--split", default="train", choices=("train", "validation"))
    parser.add_argument("--photos", type=Path, help="original photo folder (default: the inventory's root)")
    parser.add_argument("--jpeg-limit", type=int, default=400, help="photos decoded one by one for the baseline")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--passes", type=int, default=3, help="cached passes timed after the cold one")
    parser.add_argument("--threads", type=int, default=None, help="TensorFlow and tf.data threads")
    parser.add_argument("--out", type=Path, default=Path("results/bench/pipeline.csv"))
    args = parser.parse_args(argv)
    if not args.quick and args.manifest is None:
        parser.error("give --manifest (real TFRecords) or --quick")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    if args.threads:
        from flowerlab.devices import configure_threads

        configure_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="bench_pipeline-") as scratch:
        if args.quick:
            files, photos = write_quick_set(Path(scratch))
            image_size, num_classes, source = 64, 3, "quick synthetic set"
            passes = min(args.passes, 2)
        else:
            from flowerlab.data.manifest import load_manifest, shard_paths

            manifest = load_manifest(args.manifest)
            files = shard_paths(args.manifest, args.split)
            image_size, num_classes = int(manifest["image_size"]), int(manifest["num_classes"])
            root = args.photos or photo_root_for(args.manifest)
            if root is None:
                parser.error("cannot find the original photos: give --photos")
            photos = sample_photos(root, args.jpeg_limit)
            source = f"{args.manifest} ({args.split}), photos {root}"
            passes = args.passes
        rows = run(files, photos, image_size=image_size, num_classes=num_classes, batch_size=args.batch_size,
                   passes=passes, threads=args.threads, source=source)
    write_csv(rows, args.out)
    print_table(rows)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
