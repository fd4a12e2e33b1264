"""Small synthetic TFRecord shards + manifest, written as docs/architecture.md specifies.

Used by the pipeline, training and resume tests: tiny (16-64 px) noisy images whose dominant
colour depends on the class, so that a tiny model learns them in a couple of epochs. Nothing
binary is committed; everything is generated in a temporary folder.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from flowerlab.data.tfrecords import serialize_example, write_shard

CLASS_NAMES = ["daisy", "dandelion", "roses", "sunflowers", "tulips", "c5", "c6", "c7"]


def class_image(rng: np.random.Generator, class_index: int, size: int) -> np.ndarray:
    """A uint8 (size, size, 3) image: one bright channel per class (+ a brightness level beyond
    three classes), with noise and a random horizontal gradient so that flips change it."""
    base = np.full((size, size, 3), 40.0)
    base[..., class_index % 3] = 150.0 + 50.0 * (class_index // 3)
    gradient = np.linspace(-30.0, 30.0, size)[None, :, None] * rng.choice([-1.0, 1.0])
    pixels = base + gradient + rng.normal(0.0, 12.0, size=base.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def encode_jpeg(pixels: np.ndarray) -> bytes:
    return tf.io.encode_jpeg(tf.constant(pixels), quality=95).numpy()


def example_bytes(*, jpeg: bytes, class_index: int, classes: list[str], height: int, width: int,
                  photo_id: str, source: str) -> bytes:
    """One serialized record, by the real writer's serializer (so tests read what it writes).

    `make_example` refuses an out-of-range class, which the bad-input tests need: those records
    are built here with the same features by hand.
    """
    if 0 <= class_index < len(classes):
        return serialize_example(image=jpeg, class_index=class_index, label=classes[class_index],
                                 height=height, width=width, num_classes=len(classes),
                                 photo_id=photo_id, source=source)
    features = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg])),
        "class": tf.train.Feature(int64_list=tf.train.Int64List(value=[class_index])),
    }
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_dataset(
    folder: Path,
    *,
    image_size: int = 32,
    num_classes: int = 3,
    train_per_class: int = 8,
    validation_per_class: int = 4,
    shards_per_split: int = 2,
    seed: int = 0,
) -> Path:
    """Write shards under folder/tfrecords and folder/manifest.json; return the manifest path."""
    rng = np.random.default_rng(seed)
    classes = CLASS_NAMES[:num_classes]
    shard_dir = folder / "tfrecords"
    shard_dir.mkdir(parents=True, exist_ok=True)
    shards, splits = [], {}
    shard_index = 0
    for split, per_class in (("train", train_per_class), ("validation", validation_per_class)):
        records = []
        for class_index in range(num_classes):
            for n in range(per_class):
                pixels = class_image(rng, class_index, image_size)
                source = f"{classes[class_index]}/{split}-{n}.jpg"
                records.append(example_bytes(
                    jpeg=encode_jpeg(pixels), class_index=class_index, classes=classes,
                    height=image_size, width=image_size,
                    photo_id=hashlib.sha256(source.encode()).hexdigest(), source=source,
                ))
        order = rng.permutation(len(records))
        records = [records[i] for i in order]
        for part in np.array_split(np.arange(len(records)), shards_per_split):
            name = f"{split}-{shard_index:02d}-{len(part)}.tfrec"
            write_shard(shard_dir / name, [records[i] for i in part])
            shards.append({"file": name, "split": split, "records": len(part), "sha256": sha256(shard_dir / name)})
            shard_index += 1
        splits[split] = {"records": len(records), "per_class": dict.fromkeys(classes, per_class)}
    manifest = {
        "format_version": 1,
        "settings": {"image_size": image_size, "jpeg_quality": 95, "validation_fraction": 0.33,
                     "shards": shards_per_split * 2, "seed": seed},
        "classes": classes,
        "num_classes": num_classes,
        "image_size": image_size,
        "inventory_sha256": hashlib.sha256(f"inventory-{seed}".encode()).hexdigest(),
        "splits": splits,
        "shards": shards,
    }
    path = folder / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return path


def split_files(manifest_path: Path, split: str) -> list[str]:
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    return [str(manifest_path.parent / "tfrecords" / s["file"]) for s in manifest["shards"] if s["split"] == split]


def decoded_records(files: list[str]) -> list[tuple[bytes, int]]:
    """(raw uint8 pixels, class) of every record, decoded independently of the pipeline."""
    out = []
    for serialized in tf.data.TFRecordDataset(files):
        example = tf.io.parse_single_example(serialized, {
            "image": tf.io.FixedLenFeature([], tf.string), "class": tf.io.FixedLenFeature([], tf.int64)})
        pixels = tf.io.decode_jpeg(example["image"], channels=3).numpy()
        out.append((pixels.tobytes(), int(example["class"])))
    return out
