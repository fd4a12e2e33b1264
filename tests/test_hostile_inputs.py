"""A photo folder full of traps: every file is accounted for, nothing crashes, and the TFRecords
hold exactly the kept photos, converted correctly (orientation, colour modes)."""

from __future__ import annotations

import csv
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from photo_factory import (
    BLUE,
    RED,
    bands_image,
    encode,
    jpeg_bytes,
    jpeg_with_orientation,
    noise_image,
    png_16bit_gray,
    png_header_claiming,
    write,
    write_jpeg,
)
from PIL import Image

from flowerlab.data.inventory import REASONS, make_inventory
from flowerlab.data.manifest import load_manifest, shard_paths
from flowerlab.data.tfrecords import build_tfrecords
from flowerlab.errors import DataError

pytestmark = pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")

def hostile_tree(root: Path, outside: Path) -> dict[str, str]:
    """Build the trap folder; return the expected reason of every file ("" for kept)."""
    expected: dict[str, str] = {}

    def put(relative: str, data: bytes, reason: str = "") -> None:
        write(root / relative, data)
        expected[relative] = reason

    for index in range(6):
        put(f"daisy/good {index}.jpg", jpeg_bytes(90, 60, seed=index))
        put(f"tulips/good_{index}.jpg", jpeg_bytes(60, 90, seed=100 + index))
    good = jpeg_bytes(120, 80, seed=999)
    put("daisy/truncated.jpg", good[: len(good) // 2], "truncated")
    put("daisy/zero.jpg", b"", "zero_bytes")
    put("daisy/random.jpg", np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes(), "not_an_image")
    put("daisy/notes.txt", b"a text file\n", "not_an_image")
    for index, fmt in enumerate(("PNG", "GIF", "WEBP", "BMP")):
        put(f"tulips/{fmt.lower()} named.jpg", encode(noise_image(50, 40, seed=200 + index), fmt))
        put(f"tulips/real.{fmt.lower()}", encode(noise_image(50, 40, seed=300 + index), fmt))
    put("roses/cmyk.jpg", encode(Image.new("CMYK", (60, 40), (0, 255, 255, 0)), "JPEG", quality=95))
    put("roses/grey.jpg", encode(noise_image(60, 40, seed=400, mode="L"), "JPEG"))
    put("roses/sixteen.png", png_16bit_gray(60, 40, value=32896))
    # Stored 300x200, red left / blue right; orientation 6 shows it red on top, blue below.
    put("roses/rotated.jpg", jpeg_with_orientation(bands_image(300, 200, [RED, BLUE]), 6))
    put("roses/bomb.png", png_header_claiming(60_000, 60_000), "too_large")
    put("roses/rosé à l'été 日本.jpg", jpeg_bytes(70, 70, seed=401))
    put(".DS_Store", b"\0\0\0\1Bud1", "hidden_file")
    put("roses/.DS_Store", b"\0\0\0\1Bud1", "hidden_file")
    put("LICENSE.txt", b"CC-BY 2.0", "not_in_class_folder")
    put("tulips/nested/deeper.jpg", jpeg_bytes(50, 50, seed=500), "not_in_class_folder")
    (root / "sunflowers").mkdir()  # an empty class folder

    write_jpeg(outside / "elsewhere.jpg", seed=600)
    os.symlink("nested/deeper.jpg", root / "tulips" / "link inside.jpg")  # followed: inside ROOT
    expected["tulips/link inside.jpg"] = ""
    os.symlink(outside / "elsewhere.jpg", root / "daisy" / "link outside.jpg")
    expected["daisy/link outside.jpg"] = "symlink_outside_root"
    os.symlink("loop_b.jpg", root / "daisy" / "loop_a.jpg")
    os.symlink("loop_a.jpg", root / "daisy" / "loop_b.jpg")
    expected["daisy/loop_a.jpg"] = expected["daisy/loop_b.jpg"] = "symlink_loop"
    os.symlink(".", root / "roses" / "self")  # a folder link to itself
    expected["roses/self"] = "symlink_loop"
    return expected


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["path"]: row for row in csv.DictReader(handle)}


def test_every_trap_is_accounted_for_and_the_records_hold_exactly_the_kept_photos(tmp_path):
    tf = pytest.importorskip("tensorflow")
    root, outside = tmp_path / "photos", tmp_path / "outside"
    expected = hostile_tree(root, outside)

    summary = make_inventory(root, tmp_path / "inventory.csv", tmp_path / "inventory.json", max_pixels=10_000_000, threads=2)
    rows = read_csv(tmp_path / "inventory.csv")
    assert {path: row["reason"] for path, row in rows.items()} == expected
    assert all((row["status"] == "kept") == (row["reason"] == "") for row in rows.values())
    assert summary["files_found"] == len(rows) == summary["kept"] + summary["skipped"]
    assert sum(summary["skipped_by_reason"].values()) == summary["skipped"]
    assert set(summary["skipped_by_reason"]) == set(REASONS)
    assert rows["tulips/png named.jpg"]["format"] == "PNG" and rows["roses/cmyk.jpg"]["format"] == "JPEG"
    assert (rows["roses/rotated.jpg"]["width"], rows["roses/rotated.jpg"]["height"]) == ("200", "300")
    assert any("'sunflowers' is empty" in warning for warning in summary["warnings"])

    # The empty class cannot be trained: the TFRecords stage stops and names it.
    out = tmp_path / "data"
    settings = {"image_size": 48, "shards": 4, "validation_fraction": 0.3, "threads": 2}
    with pytest.raises(DataError, match="'sunflowers' \\(0 usable\\)"):
        build_tfrecords(root, tmp_path / "inventory.csv", out / "tfrecords", out / "manifest.json", **settings)
    assert not (out / "manifest.json").exists()

    # Remove the folder as the message says; inventory again, and convert.
    (root / "sunflowers").rmdir()
    make_inventory(root, tmp_path / "inventory.csv", tmp_path / "inventory.json", max_pixels=10_000_000, threads=2)
    rows = read_csv(tmp_path / "inventory.csv")
    manifest = build_tfrecords(root, tmp_path / "inventory.csv", out / "tfrecords", out / "manifest.json", **settings)
    assert manifest["classes"] == ["daisy", "roses", "tulips"]

    kept = {row["sha256"]: path for path, row in rows.items() if row["status"] == "kept"}
    records = {}
    files = shard_paths(out / "manifest.json", "train") + shard_paths(out / "manifest.json", "validation")
    for serialized in tf.data.TFRecordDataset(files):
        example = tf.train.Example.FromString(serialized.numpy()).features.feature
        photo_id = example["id"].bytes_list.value[0].decode()
        assert photo_id not in records, "a photo was written twice"
        records[photo_id] = (example["source"].bytes_list.value[0].decode(),
                             tf.io.decode_jpeg(example["image"].bytes_list.value[0]).numpy())
    assert {photo_id: source for photo_id, (source, _) in records.items()} == kept
    assert load_manifest(out / "manifest.json")["splits"]["train"]["records"] + manifest["splits"]["validation"]["records"] == len(kept)

    def record_of(path: str) -> np.ndarray:
        return records[hashlib.sha256((root / path).read_bytes()).hexdigest()][1]

    for image in (record_of(path) for path in kept.values()):
        assert image.shape == (48, 48, 3)
    rotated = record_of("roses/rotated.jpg").astype(int)
    assert np.abs(rotated[2, 24] - RED).max() < 40 and np.abs(rotated[45, 24] - BLUE).max() < 40
    assert np.abs(record_of("roses/cmyk.jpg")[24, 24].astype(int) - (255, 0, 0)).max() < 40
    assert np.abs(record_of("roses/sixteen.png")[24, 24].astype(int) - 128).max() <= 2
    assert sorted(p.name for p in outside.iterdir()) == ["elsewhere.jpg"]  # nothing was written outside


@pytest.mark.slow  # the commands as processes
def test_the_commands_survive_the_traps_end_to_end(tmp_path):
    """The same folder through the command line entry points (no traceback, exit codes)."""
    root = tmp_path / "photos"
    hostile_tree(root, tmp_path / "outside")
    (root / "sunflowers").rmdir()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "flowerlab", *args], capture_output=True, text=True,
                              timeout=120, check=False)

    inventory = run("inventory", "--root", str(root), "--out-csv", str(tmp_path / "i.csv"),
                    "--out-json", str(tmp_path / "i.json"), "--max-pixels", "10000000", "--threads", "2")
    assert inventory.returncode == 0, inventory.stderr
    assert "Traceback" not in inventory.stderr
    records = run("tfrecords", "--root", str(root), "--inventory", str(tmp_path / "i.csv"),
                  "--out-dir", str(tmp_path / "t"), "--manifest", str(tmp_path / "m.json"),
                  "--image-size", "32", "--jpeg-quality", "90", "--validation-fraction", "0.3",
                  "--shards", "3", "--seed", "5", "--threads", "2")
    assert records.returncode == 0, records.stderr
    assert "Traceback" not in records.stderr
    assert len(load_manifest(tmp_path / "m.json")["shards"]) == 3
