"""Split, shards, records, manifest, atomicity and the TensorFlow-free record format."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from photo_factory import photo_tree, write_jpeg
from record_fields import decode_example, read_records

from flowerlab.data.inventory import make_inventory
from flowerlab.data.manifest import load_manifest, shard_paths
from flowerlab.data.splits import Photo, assign_splits, plan_shards, shard_sizes, shard_split_counts, split_value
from flowerlab.data.tfrecords import build_tfrecords, cli, serialize_example, write_shard
from flowerlab.errors import ConfigError, DataError


def fake_photos(count: int, classes: tuple[str, ...] = ("a", "b"), start: int = 0) -> list[Photo]:
    photos = []
    for i in range(start, start + count):
        name = classes[i % len(classes)]
        digest = hashlib.sha256(f"photo {i}".encode()).hexdigest()
        photos.append(Photo(f"{name}/{i:05d}.jpg", name, classes.index(name), digest))
    return photos


def sides(photos: list[Photo]) -> dict[str, str]:
    return {p.sha256: p.split for p in photos}


# ----------------------------------------------------------------------------- split


def test_split_depends_only_on_the_photo_and_the_seed():
    photos = fake_photos(2000)
    before = sides(assign_splits(photos, 0.19, seed=35155))
    grown = sides(assign_splits(photos + fake_photos(500, start=2000), 0.19, seed=35155))
    shrunk = sides(assign_splits(photos[::3], 0.19, seed=35155))
    assert all(grown[sha] == side for sha, side in before.items())
    assert all(before[sha] == side for sha, side in shrunk.items())
    # The rule itself, for one photo:
    photo = photos[0]
    expected = "validation" if split_value(35155, photo.sha256) < 0.19 else "train"
    assert before[photo.sha256] == expected
    assert sides(assign_splits(photos, 0.19, seed=1)) != before  # the seed matters


def test_split_is_stratified_in_expectation():
    photos = fake_photos(4000, classes=("a", "b", "c", "d"))
    placed = assign_splits(photos, 0.19, seed=35155)
    for name in "abcd":
        members = [p for p in placed if p.class_name == name]
        share = sum(p.split == "validation" for p in members) / len(members)
        assert abs(share - 0.19) < 0.04, (name, share)


def test_tiny_classes_get_one_photo_in_each_split():
    # Fraction 0.01 and 2-3 photos per class: most classes would have no validation photo.
    photos = fake_photos(30, classes=tuple("abcdefghij"))
    placed = assign_splits(photos, 0.01, seed=3)
    for name in "abcdefghij":
        members = sorted((p for p in placed if p.class_name == name), key=lambda p: split_value(3, p.sha256))
        assert {p.split for p in members} == {"train", "validation"}
        assert members[0].split == "validation"  # the guard moves the lowest-u photo
    placed = assign_splits(photos, 0.99, seed=3)
    for name in "abcdefghij":
        members = sorted((p for p in placed if p.class_name == name), key=lambda p: split_value(3, p.sha256))
        assert members[-1].split == "train" and members[0].split == "validation"


def test_a_class_with_one_photo_cannot_be_split():
    with pytest.raises(DataError, match="'b'"):
        assign_splits(fake_photos(3, classes=("a", "a", "b")), 0.19, seed=0)


# ----------------------------------------------------------------------------- shards


def test_shard_counts_follow_the_course():
    assert shard_split_counts(16, 0.19) == {"train": 13, "validation": 3}
    assert shard_split_counts(2, 0.19) == {"train": 1, "validation": 1}
    assert shard_split_counts(4, 0.9) == {"train": 1, "validation": 3}


def test_shard_sizes_are_as_even_as_possible():
    assert shard_sizes(3670, 16) == [230] * 6 + [229] * 10
    assert shard_sizes(10, 3) == [4, 3, 3]
    assert shard_sizes(2, 5) == [1, 1]  # never an empty shard
    assert sum(shard_sizes(2990, 13)) == 2990


def test_plan_names_and_covers_every_photo_once():
    placed = assign_splits(fake_photos(500), 0.19, seed=7)
    plan = plan_shards(placed, 16, 0.19, seed=7)
    assert [s.split for s in plan] == ["train"] * 13 + ["validation"] * 3
    assert plan[0].file == f"train-00-{len(plan[0].photos)}.tfrec"
    assert plan[-1].file.startswith("validation-02-")
    listed = [p.path for s in plan for p in s.photos]
    assert sorted(listed) == sorted(p.path for p in placed) and len(set(listed)) == len(listed)
    for shard in plan:
        assert {p.split for p in shard.photos} == {shard.split}
    # The order within a split is a seeded shuffle, not the path order.
    train = [p.path for s in plan if s.split == "train" for p in s.photos]
    assert train != sorted(train)


# ----------------------------------------------------------------------------- record format


def test_a_record_reads_back_with_every_field(tmp_path):
    fields = {"image": os.urandom(3000), "class_index": 2, "label": "rosés", "height": 16, "width": 16,
              "num_classes": 5, "photo_id": "ab" * 32, "source": "rosés/a b.jpg"}
    record = serialize_example(**fields)
    assert serialize_example(**fields) == record  # deterministic bytes
    assert write_shard(tmp_path / "one.tfrec", [record, record]) == 2
    read = list(read_records(tmp_path / "one.tfrec"))
    assert read == [record, record]
    assert decode_example(read[0]) == {
        "image": fields["image"], "class": 2, "label": "rosés", "size": [16, 16],
        "one_hot_class": [0.0, 0.0, 1.0, 0.0, 0.0], "id": "ab" * 32, "source": "rosés/a b.jpg"}
    with pytest.raises(ValueError, match="class index 5"):
        serialize_example(**{**fields, "class_index": 5})


# ----------------------------------------------------------------------------- the stage


def build(tmp_path: Path, root: Path, out: str = "out", **settings) -> tuple[dict, Path]:
    inventory = tmp_path / "inventory.csv"
    if not inventory.exists():
        make_inventory(root, inventory, tmp_path / "inventory.json")
    data = tmp_path / out
    settings = {"image_size": 32, "shards": 4, "validation_fraction": 0.25, **settings}
    manifest = build_tfrecords(root, inventory, data / "tfrecords", data / "manifest.json", **settings)
    return manifest, data / "manifest.json"


@pytest.fixture
def photos(tmp_path):
    root = tmp_path / "photos"
    photo_tree(root, {"cats": 12, "dogs": 9, "eels": 5})
    return root


def test_round_trip_of_every_field(tmp_path, photos):
    manifest, manifest_path = build(tmp_path, photos)
    assert manifest["classes"] == ["cats", "dogs", "eels"] and manifest["num_classes"] == 3
    seen = {}
    for split in ("train", "validation"):
        for path in shard_paths(manifest_path, split):
            for record in read_records(path):
                fields = decode_example(record)
                seen[fields["source"]] = (split, fields)
    assert len(seen) == 26
    split, fields = seen["dogs/dogs_003.jpg"]
    assert fields["class"] == 1 and fields["label"] == "dogs"
    assert fields["one_hot_class"] == [0.0, 1.0, 0.0]
    assert fields["size"] == [32, 32]
    assert fields["id"] == hashlib.sha256((photos / "dogs/dogs_003.jpg").read_bytes()).hexdigest()
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(fields["image"]))
    assert image.format == "JPEG" and image.size == (32, 32) and image.mode == "RGB"
    for split in ("train", "validation"):
        per_class = manifest["splits"][split]["per_class"]
        assert sum(per_class.values()) == manifest["splits"][split]["records"]
        assert all(count >= 1 for count in per_class.values())
        assert per_class == {name: sum(1 for s, f in seen.values() if s == split and f["label"] == name)
                             for name in manifest["classes"]}


def test_manifest_describes_the_shards(tmp_path, photos):
    manifest, manifest_path = build(tmp_path, photos, seed=11)
    assert load_manifest(manifest_path) == manifest
    assert manifest["format_version"] == 1
    assert manifest["settings"] == {"image_size": 32, "jpeg_quality": 95, "validation_fraction": 0.25,
                                    "shards": 4, "seed": 11}
    assert manifest["inventory_sha256"] == hashlib.sha256((tmp_path / "inventory.csv").read_bytes()).hexdigest()
    folder = manifest_path.parent / "tfrecords"
    assert sorted(p.name for p in folder.iterdir()) == sorted(s["file"] for s in manifest["shards"])
    for shard in manifest["shards"]:
        path = folder / shard["file"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == shard["sha256"]
        assert len(list(read_records(path))) == shard["records"]
        assert shard["file"] == f"{shard['split']}-{shard['file'].split('-')[1]}-{shard['records']}.tfrec"
    assert [s["split"] for s in manifest["shards"]] == ["train"] * 3 + ["validation"]
    assert not [p for p in manifest_path.parent.iterdir() if p.name.startswith(".")]  # no temporaries


def test_output_is_byte_identical_across_runs_and_worker_counts(tmp_path, photos):
    first, _ = build(tmp_path, photos, out="one", threads=1)
    second, _ = build(tmp_path, photos, out="two", threads=2, chunksize=2)
    assert first == second
    for shard in first["shards"]:
        assert (tmp_path / "one/tfrecords" / shard["file"]).read_bytes() == (tmp_path / "two/tfrecords" / shard["file"]).read_bytes()


def test_tensorflow_reads_the_shards(tmp_path, photos):
    tf = pytest.importorskip("tensorflow")
    from flowerlab.data.tfrecords import feature_spec

    manifest, manifest_path = build(tmp_path, photos)
    dataset = tf.data.TFRecordDataset(shard_paths(manifest_path, "train") + shard_paths(manifest_path, "validation"))
    spec = feature_spec(manifest["num_classes"])
    ids = []
    for serialized in dataset:
        example = tf.io.parse_single_example(serialized, spec)
        image = tf.io.decode_jpeg(example["image"])
        assert tuple(image.shape) == (32, 32, 3)
        assert int(tf.argmax(example["one_hot_class"])) == int(example["class"])
        ids.append(example["id"].numpy().decode())
    assert len(ids) == len(set(ids)) == 26


def test_rerun_replaces_the_previous_output(tmp_path, photos):
    build(tmp_path, photos, shards=4)
    manifest, manifest_path = build(tmp_path, photos, shards=6)
    names = sorted(p.name for p in (manifest_path.parent / "tfrecords").iterdir())
    assert names == sorted(s["file"] for s in manifest["shards"]) and len(names) == 6


def test_a_class_without_enough_photos_stops_with_its_name(tmp_path):
    root = tmp_path / "photos"
    photo_tree(root, {"cats": 5, "dogs": 1})
    (root / "empty").mkdir()
    with pytest.raises(DataError, match=r"'dogs' \(1 usable\), 'empty' \(0 usable\)"):
        build(tmp_path, root)
    assert not (tmp_path / "out").exists()


def test_a_class_of_unusable_files_stops_with_the_reasons(tmp_path):
    root = tmp_path / "photos"
    photo_tree(root, {"cats": 5})
    (root / "notes").mkdir()
    for name in ("a.txt", "b.jpg"):
        (root / "notes" / name).write_text("not a photo")
    (root / "notes" / "empty.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"'notes' \(0 usable; skipped: not_an_image 2, zero_bytes 1\)"):
        build(tmp_path, root)


def test_one_class_folder_cannot_make_a_classifier(tmp_path):
    root = tmp_path / "photos"
    photo_tree(root, {"cats": 5})
    with pytest.raises(DataError, match=r"only one class folder, 'cats' \(5 usable\): a classifier needs at least two"):
        build(tmp_path, root)
    assert not (tmp_path / "out").exists()


def test_inventory_root_mismatch_is_an_error(tmp_path, photos):
    make_inventory(photos, tmp_path / "inventory.csv", tmp_path / "inventory.json")
    (photos / "cats/cats_004.jpg").unlink()
    with pytest.raises(DataError, match=r"cats/cats_004\.jpg.*missing.*rerun `flowerlab inventory`"):
        build(tmp_path, photos)
    write_jpeg(photos / "cats/cats_004.jpg", seed=999)  # back, with other content
    with pytest.raises(DataError, match=r"cats/cats_004\.jpg changed since the inventory"):
        build(tmp_path, photos, threads=2)
    assert not (tmp_path / "out" / "manifest.json").exists()
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def test_stale_or_foreign_inventory_is_refused(tmp_path, photos):
    make_inventory(photos, tmp_path / "inventory.csv", tmp_path / "inventory.json")
    summary = json.loads((tmp_path / "inventory.json").read_text())
    summary["files_found"] += 1
    (tmp_path / "inventory.json").write_text(json.dumps(summary))
    with pytest.raises(DataError, match="different runs"):
        build(tmp_path, photos)
    (tmp_path / "inventory.csv").write_text("not,an,inventory\n")
    with pytest.raises(DataError, match="not an inventory CSV"):
        build(tmp_path, photos)


def test_settings_are_checked(tmp_path, photos):
    for bad in ({"validation_fraction": 1.0}, {"shards": 1}, {"jpeg_quality": 0}, {"image_size": 0}):
        with pytest.raises(ConfigError):
            build(tmp_path, photos, **bad)


def test_load_manifest_and_shard_paths_errors(tmp_path, photos):
    with pytest.raises(DataError, match="not found"):
        load_manifest(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DataError, match="not JSON"):
        load_manifest(tmp_path / "bad.json")
    (tmp_path / "old.json").write_text('{"format_version": 0}')
    with pytest.raises(DataError, match="format_version"):
        load_manifest(tmp_path / "old.json")
    manifest, manifest_path = build(tmp_path, photos)
    paths = shard_paths(manifest_path, "validation")
    assert [Path(p).name for p in paths] == [s["file"] for s in manifest["shards"] if s["split"] == "validation"]
    with pytest.raises(ValueError):
        shard_paths(manifest_path, "test")
    Path(paths[0]).unlink()
    with pytest.raises(DataError, match="missing"):
        shard_paths(manifest_path, "validation")


def test_cli_reports_errors_in_one_line(tmp_path, photos, capsys):
    status = cli(["tfrecords", "--root", str(photos), "--inventory", str(tmp_path / "none.csv"),
                  "--out-dir", str(tmp_path / "t"), "--manifest", str(tmp_path / "m.json")])
    assert status == 1
    assert "flowerlab tfrecords: error: inventory" in capsys.readouterr().err


def live_processes_in_session(session_id: int) -> list[int]:
    """Processes of a session (from /proc) that are not zombies."""
    alive = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended while we looked
        state, session = fields[0], int(fields[3])
        if session == session_id and state != "Z":
            alive.append(int(stat_file.parent.name))
    return alive


@pytest.mark.slow  # the stage's processes, killed and run again
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc to find the workers")
def test_killed_run_leaves_nothing_complete_and_a_rerun_succeeds(tmp_path):
    root = tmp_path / "photos"
    photo_tree(root, {"a": 150, "b": 150}, width=400, height=300)
    make_inventory(root, tmp_path / "inventory.csv", tmp_path / "inventory.json")
    out = tmp_path / "data"
    command = [sys.executable, "-m", "flowerlab", "tfrecords", "--root", str(root),
               "--inventory", str(tmp_path / "inventory.csv"), "--out-dir", str(out / "tfrecords"),
               "--manifest", str(out / "manifest.json"), "--image-size", "192", "--shards", "8",
               "--threads", "2", "--chunksize", "1"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True)
    # Wait until it is writing shards (its staging folder holds a file), then kill -9.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        staging = [p for p in out.glob(".tfrecords.tmp-*") if any(p.iterdir())] if out.exists() else []
        if staging or process.poll() is not None:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the run finished before it could be killed; make it bigger"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "manifest.json").exists()
    assert not (out / "tfrecords").exists()
    # The workers notice that their parent died and exit (zombies waiting for init to reap
    # them do not count: they hold no CPU or memory).
    deadline = time.monotonic() + 10
    while (alive := live_processes_in_session(process.pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert alive == []
    # A rerun cleans the dead run's temporary folder and completes.
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    manifest = load_manifest(out / "manifest.json")
    assert sum(s["records"] for s in manifest["shards"]) == 300
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "tfrecords"]


def test_split_sides_are_checked():
    from flowerlab.data.tfrecords import check_split_sides

    a_train, a_val, b_train = (Photo("a/1", "a", 0, "1" * 64, "train"), Photo("a/2", "a", 0, "2" * 64, "validation"),
                               Photo("b/1", "b", 1, "3" * 64, "train"))
    with pytest.raises(DataError, match="'b' has no validation photo"):
        check_split_sides(["a", "b"], [a_train, a_val, b_train])
    twice = Photo("b/2", "b", 1, "1" * 64, "validation")
    with pytest.raises(DataError, match="both splits"):
        check_split_sides(["a", "b"], [a_train, a_val, b_train, twice])
    check_split_sides(["a"], [a_train, a_val])


def _die(_: object) -> None:
    os._exit(3)  # a worker killed mid-task (e.g. by the out-of-memory killer)


def test_a_dying_worker_is_a_clear_error_not_a_hang():
    from flowerlab.data.workers import running_pool
    from flowerlab.errors import FlowerlabError

    with pytest.raises(FlowerlabError, match=r"worker process died.*--threads 1"), running_pool(2) as pool:
        list(pool.map(_die, range(4)))
