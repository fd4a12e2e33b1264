"""results/data/manifest.json: what the TFRecords stage wrote, and how later stages find the shards.

The manifest lists every shard with its split, record count and sha256, the classes, the data
settings and the split rule (docs/architecture.md). `load_manifest` checks it; `shard_paths`
finds a split's shards beside it.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from flowerlab.data.splits import SPLIT_RULE, SPLITS, Photo
from flowerlab.errors import DataError

FORMAT_VERSION = 1


DEFAULT_SHARD_DIR = "tfrecords"  # manifest key "shard_dir" overrides it (relative to the manifest)



# The data_source of generated photos (flowerlab.data.synthetic): no flowers, no comparison with the course.
SYNTHETIC = "synthetic"

def load_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and sanity-check a manifest.json; DataError naming the problem otherwise."""
    path = Path(path)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"manifest {path} not found: run `flowerlab tfrecords` first") from None
    except (OSError, ValueError) as error:
        raise DataError(f"manifest {path} is unreadable or not JSON ({error}); rerun `flowerlab tfrecords`") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        version = manifest.get("format_version") if isinstance(manifest, dict) else None
        raise DataError(f"manifest {path} has format_version {version!r}, this flowerlab reads {FORMAT_VERSION}")
    missing = [key for key in ("settings", "classes", "num_classes", "image_size", "splits", "shards") if key not in manifest]
    if missing:
        raise DataError(f"manifest {path} lacks {', '.join(missing)}; rerun `flowerlab tfrecords`")
    return manifest


def shard_folder(manifest_path: str | os.PathLike[str], manifest: dict[str, Any]) -> Path:
    """Where the manifest's shards are: its folder + `shard_dir` ("tfrecords" by default)."""
    return Path(manifest_path).parent / manifest.get("shard_dir", DEFAULT_SHARD_DIR)


def shard_paths(manifest_path: str | os.PathLike[str], split: str) -> list[str]:
    """The shard files of `split` ("train" or "validation"), in order, as paths (str).

    They live in the manifest's folder + `shard_dir` ("tfrecords" by default). A listed shard
    that is missing is a DataError (a clear message now beats a TensorFlow NotFound later).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    manifest_path = Path(manifest_path)
    manifest = load_manifest(manifest_path)
    folder = shard_folder(manifest_path, manifest)
    paths = [str(folder / shard["file"]) for shard in manifest["shards"] if shard["split"] == split]
    missing = [path for path in paths if not os.path.exists(path)]
    if missing:
        raise DataError(
            f"{len(missing)} shard(s) listed in {manifest_path} are missing (first: {missing[0]}); "
            "rerun `flowerlab tfrecords`"
        )
    return paths


def manifest_for(classes: list[str], photos: list[Photo], shards: list[dict[str, Any]], settings: dict[str, Any],
                 inventory_sha256: str, shard_dir: str, data_source: str) -> dict[str, Any]:
    splits = {}
    for split in SPLITS:
        counts = Counter(photo.class_name for photo in photos if photo.split == split)
        splits[split] = {"records": sum(counts.values()), "per_class": {name: counts[name] for name in classes}}
    return {
        "format_version": FORMAT_VERSION,
        "settings": settings,
        "classes": classes,
        "num_classes": len(classes),
        "image_size": settings["image_size"],
        "inventory_sha256": inventory_sha256,
        # What the photos are: "official" (the course's archive), "synthetic" (generated for
        # smoke runs, no flowers), or the local folder they came from.
        "data_source": data_source,
        "split_rule": SPLIT_RULE,
        "splits": splits,
        "shard_dir": shard_dir,
        "shards": shards,
    }

