"""TFRecords conversion throughput: `flowerlab tfrecords` vs one core doing the same per-photo work.

    python bench/bench_tfrecords.py --photos ../shared/data/flower_photos --threads 2   # real data
    python bench/bench_tfrecords.py --quick                                           # CI: synthetic, seconds

Measured in one run, on the same machine:

* baseline `single_thread`: read + sha256 + decode + fill-resize-crop + JPEG encode
  (`flowerlab.data.images.prepare_photo`) of a sample of the photos, one after another in this
  process: what one core can do per photo;
* `tfrecords`: the whole stage (`build_tfrecords`) with `--threads` worker processes, wall time
  from the call to the manifest: worker start, the work, writing and hashing the shards;
* `inventory`: the inventory of the same folder (`make_inventory`, same threads), files/s.

Everything is written into a temporary folder that is deleted afterwards. One CSV row per run
is appended to results/bench/tfrecords.csv (--out). Target from the brief: >= 800 images/s on
the 2-core machine for the real data.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import tempfile
import time
from pathlib import Path

COLUMNS = (
    "source", "photos", "image_size", "threads", "cpus", "load_average",
    "single_thread_images_per_s", "tfrecords_seconds", "tfrecords_images_per_s", "speedup_vs_single_thread",
    "inventory_seconds", "inventory_files_per_s", "pillow",
)


def kept_sample(inventory_csv: Path, limit: int) -> list[str]:
    """Up to `limit` kept photo paths, spread evenly over the sorted list (every class sampled)."""
    with open(inventory_csv, newline="", encoding="utf-8") as handle:
        kept = [row["path"] for row in csv.DictReader(handle) if row["status"] == "kept"]
    step = max(1, len(kept) // limit)
    return kept[::step][:limit]


def single_thread_rate(root: Path, paths: list[str], image_size: int, quality: int) -> float:
    """Photos per second through read -> sha256 -> prepare_photo in this one process."""
    import hashlib

    from flowerlab.data.images import prepare_photo

    data = [(root / path).read_bytes() for path in paths]  # warm the page cache, as the stage sees it
    started = time.perf_counter()
    for photo in data:
        hashlib.sha256(photo).hexdigest()
        prepare_photo(photo, image_size, quality)
    return len(data) / (time.perf_counter() - started)


def append_row(out: Path, row: dict[str, object]) -> None:
    """Add one row to the CSV (header when new), rewriting the file atomically."""
    from flowerlab import filesystem

    existing = out.read_text(encoding="utf-8") if out.exists() else ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    if not existing:
        writer.writeheader()
    writer.writerow(row)
    filesystem.write_text(out, existing + buffer.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, default=None, help="photo folder (ROOT/<class>/<photo>)")
    parser.add_argument("--quick", action="store_true", help="a synthetic set of 200 photos (CI)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="worker processes")
    parser.add_argument("--image-size", type=int, default=192)
    parser.add_argument("--jpeg-quality", type=int, default=95)
    parser.add_argument("--baseline-photos", type=int, default=400, help="photos timed for the single-thread baseline")
    parser.add_argument("--out", type=Path, default=Path("results/bench/tfrecords.csv"))
    args = parser.parse_args(argv)
    if not args.quick and args.photos is None:
        parser.error("give --photos DIR (e.g. ../shared/data/flower_photos) or --quick")

    from flowerlab.data.inventory import make_inventory
    from flowerlab.data.synthetic import synthesize
    from flowerlab.data.tfrecords import build_tfrecords

    with tempfile.TemporaryDirectory(prefix="bench_tfrecords_") as scratch:
        work = Path(scratch)
        if args.quick:
            root = work / "photos"
            synthesize(root, classes=5, per_class=40, seed=0)
            source = "synthetic 5x40"
        else:
            root = args.photos
            source = str(root)

        started = time.perf_counter()
        summary = make_inventory(root, work / "inventory.csv", work / "inventory.json", threads=args.threads)
        inventory_seconds = time.perf_counter() - started

        baseline = single_thread_rate(root, kept_sample(work / "inventory.csv", args.baseline_photos),
                                      args.image_size, args.jpeg_quality)

        started = time.perf_counter()
        build_tfrecords(root, work / "inventory.csv", work / "data" / "tfrecords", work / "data" / "manifest.json",
                        image_size=args.image_size, jpeg_quality=args.jpeg_quality, threads=args.threads)
        seconds = time.perf_counter() - started

    from PIL import __version__ as pillow_version

    photos = int(summary["kept"])
    rate = photos / seconds
    row = {
        "source": source, "photos": photos, "image_size": args.image_size, "threads": args.threads,
        "cpus": os.cpu_count(), "load_average": f"{os.getloadavg()[0]:.2f}",
        "single_thread_images_per_s": f"{baseline:.1f}", "tfrecords_seconds": f"{seconds:.2f}",
        "tfrecords_images_per_s": f"{rate:.1f}", "speedup_vs_single_thread": f"{rate / baseline:.2f}",
        "inventory_seconds": f"{inventory_seconds:.2f}",
        "inventory_files_per_s": f"{int(summary['files_found']) / inventory_seconds:.1f}",
        "pillow": pillow_version,
    }
    print(f"source: {source}; {photos} photos at {args.image_size} px; {args.threads} worker(s) on "
          f"{os.cpu_count()} CPUs, load average {row['load_average']}")
    print(f"  {'measure':<36}{'images/s':>10}{'vs baseline':>13}")
    print(f"  {'single_thread (baseline)':<36}{baseline:>10.0f}{1.0:>12.2f}x")
    print(f"  {f'tfrecords ({args.threads} workers, whole stage)':<36}{rate:>10.0f}{rate / baseline:>12.2f}x"
          f"   ({seconds:.2f} s)")
    print(f"  {'inventory (files/s)':<36}{float(row['inventory_files_per_s']):>10.0f}"
          f"{'':>13}   ({inventory_seconds:.2f} s)")
    append_row(args.out, row)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
