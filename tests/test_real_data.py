"""The real flower_photos: the inventory finds the known quirks, the TFRecords hold every kept photo."""

from __future__ import annotations

import csv
import time
from collections import Counter
from pathlib import Path

import pytest
from record_fields import decode_example, read_records

from flowerlab.data.inventory import make_inventory
from flowerlab.data.manifest import shard_paths
from flowerlab.data.tfrecords import build_tfrecords

pytestmark = pytest.mark.real_data

FOUND_PER_CLASS = {"daisy": 633, "dandelion": 898, "roses": 641, "sunflowers": 699, "tulips": 799}
ACROSS_CLASSES = {"roses/15922772266_1167a06620.jpg", "tulips/15922772266_1167a06620.jpg"}


@pytest.fixture(scope="module")
def real_inventory(real_data_dir: Path, tmp_path_factory) -> tuple[Path, dict, dict[str, dict[str, str]]]:
    folder = tmp_path_factory.mktemp("real_inventory")
    summary = make_inventory(real_data_dir, folder / "inventory.csv", folder / "inventory.json", threads=2)
    with open(folder / "inventory.csv", newline="", encoding="utf-8") as handle:
        rows = {row["path"]: row for row in csv.DictReader(handle)}
    return folder, summary, rows


@pytest.mark.slow
def test_inventory_counts_and_known_duplicates(real_inventory):
    _, summary, rows = real_inventory
    assert summary["classes"] == list(FOUND_PER_CLASS)
    assert summary["found_by_class"] == FOUND_PER_CLASS
    assert summary["files_found"] == len(rows) == 3670 + 1  # the photos and LICENSE.txt
    assert rows["LICENSE.txt"]["reason"] == "not_in_class_folder"
    across = {path for path, row in rows.items() if row["reason"] == "duplicate_across_classes"}
    assert across == ACROSS_CLASSES
    assert rows["roses/15922772266_1167a06620.jpg"]["duplicate_of"] == "tulips/15922772266_1167a06620.jpg"
    same = [row for row in rows.values() if row["reason"] == "duplicate_same_class"]
    assert len(same) == 2
    for row in same:
        original = rows[row["duplicate_of"]]
        assert original["status"] == "kept" and original["sha256"] == row["sha256"] and original["class"] == row["class"]
    assert summary["kept"] == 3666 and summary["skipped"] == 5
    assert {reason: count for reason, count in summary["skipped_by_reason"].items() if count} == {
        "not_in_class_folder": 1, "duplicate_same_class": 2, "duplicate_across_classes": 2}
    assert summary["formats_kept"] == {"JPEG": 3666}


@pytest.mark.slow
def test_inventory_hashes_match_the_published_checksums(real_inventory, real_data_dir):
    sums = real_data_dir.parent / "flower_photos.SHA256SUMS"
    if not sums.exists():
        pytest.skip(f"{sums} not found")
    _, _, rows = real_inventory
    listed = {}
    for line in sums.read_text().splitlines():
        digest, path = line.split(maxsplit=1)
        listed[path.removeprefix("./")] = digest
    assert {path: row["sha256"] for path, row in rows.items() if path != "LICENSE.txt"} == listed


@pytest.mark.slow
def test_tfrecords_hold_every_kept_photo_in_16_shards(real_inventory, real_data_dir):
    folder, summary, rows = real_inventory
    out = folder / "data"
    started = time.perf_counter()
    manifest = build_tfrecords(real_data_dir, folder / "inventory.csv", out / "tfrecords", out / "manifest.json",
                               image_size=192, jpeg_quality=95, validation_fraction=0.19, shards=16, seed=35155,
                               threads=2)
    seconds = time.perf_counter() - started
    print(f"\nreal data: {summary['kept']} photos -> TFRecords in {seconds:.1f} s ({summary['kept'] / seconds:.0f} images/s, 2 workers)")
    assert [s["split"] for s in manifest["shards"]] == ["train"] * 13 + ["validation"] * 3
    kept = {row["sha256"]: path for path, row in rows.items() if row["status"] == "kept"}
    seen: dict[str, str] = {}
    splits: Counter[tuple[str, str]] = Counter()
    for split in ("train", "validation"):
        for path in shard_paths(out / "manifest.json", split):
            for record in read_records(path):
                fields = decode_example(record)
                assert fields["id"] not in seen
                seen[fields["id"]] = fields["source"]
                splits[split, fields["label"]] += 1
                assert fields["size"] == [192, 192]
    assert seen == kept
    for name in FOUND_PER_CLASS:
        validation = splits["validation", name] / (splits["validation", name] + splits["train", name])
        assert abs(validation - 0.19) < 0.04, (name, validation)
        assert manifest["splits"]["validation"]["per_class"][name] == splits["validation", name]
