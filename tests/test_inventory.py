"""The inventory: one row per file, each kept or skipped with its reason; counts reconcile."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
from photo_factory import (
    encode,
    jpeg_bytes,
    noise_image,
    photo_tree,
    png_header_claiming,
    write,
    write_jpeg,
)

from flowerlab.data.inventory import (
    COLUMNS,
    REASONS,
    build_inventory,
    cli,
    make_inventory,
    read_inventory_csv,
    walk_root,
)
from flowerlab.errors import DataError


def inventory_of(root: Path, tmp_path: Path, **options) -> tuple[dict[str, dict[str, str]], dict]:
    """Run the inventory; return the CSV rows by path and the JSON summary."""
    summary = make_inventory(root, tmp_path / "inv.csv", tmp_path / "inv.json", **options)
    with open(tmp_path / "inv.csv", newline="", encoding="utf-8", errors="surrogateescape") as handle:
        rows = list(csv.DictReader(handle))
    assert json.loads((tmp_path / "inv.json").read_text()) == summary
    return {row["path"]: row for row in rows}, summary


def reason(rows: dict[str, dict[str, str]], path: str) -> str:
    row = rows[path]
    assert (row["status"] == "kept") == (row["reason"] == "")
    return row["reason"]


def assert_reconciles(rows: dict, summary: dict) -> None:
    assert summary["files_found"] == len(rows) == summary["kept"] + summary["skipped"]
    assert sum(summary["skipped_by_reason"].values()) == summary["skipped"]
    assert sum(summary["kept_by_class"].values()) == summary["kept"]
    assert set(summary["skipped_by_reason"]) == set(REASONS)


def test_good_photos_are_kept_with_their_facts(tmp_path):
    root = tmp_path / "photos"
    photo_tree(root, {"b": 2, "a": 3}, width=50, height=40)
    rows, summary = inventory_of(root, tmp_path)
    assert summary["classes"] == ["a", "b"]
    assert list(rows) == sorted(rows)
    row = rows["a/a_001.jpg"]
    assert row["class"] == "a" and row["format"] == "JPEG" and (row["width"], row["height"]) == ("50", "40")
    assert int(row["bytes"]) == (root / "a/a_001.jpg").stat().st_size
    assert len(row["sha256"]) == 64 and row["status"] == "kept" and row["duplicate_of"] == ""
    assert summary["kept_by_class"] == {"a": 3, "b": 2} and summary["warnings"] == []
    assert_reconciles(rows, summary)


def test_csv_columns_and_round_trip(tmp_path):
    root = tmp_path / "photos"
    photo_tree(root, {"a": 2, "b": 2})
    write(root / "a" / "notes.txt", b"hello")
    make_inventory(root, tmp_path / "inv.csv", tmp_path / "inv.json")
    header = (tmp_path / "inv.csv").read_text().splitlines()[0]
    assert header == ",".join(COLUMNS)
    rows = read_inventory_csv(tmp_path / "inv.csv")
    assert [r.path for r in rows] == ["a/a_000.jpg", "a/a_001.jpg", "a/notes.txt", "b/b_000.jpg", "b/b_001.jpg"]
    assert rows[2].reason == "not_an_image" and rows[2].width is None and rows[2].bytes == 5


def test_content_problems(tmp_path):
    root = tmp_path / "photos"
    photo_tree(root, {"a": 2, "b": 2})
    good = jpeg_bytes(90, 60, seed=42)
    write(root / "a" / "empty.jpg", b"")
    write(root / "a" / "noise.jpg", os.urandom(2000))
    write(root / "a" / "readme.txt", b"not a photo\n")
    write(root / "a" / "half.jpg", good[: len(good) // 2])
    write(root / "a" / "no_end_marker.jpg", good[:-2])
    write(root / "a" / "whole.jpg", good)
    write(root / "b" / "bomb.png", png_header_claiming(100_000, 100_000))
    write(root / "b" / "big.jpg", jpeg_bytes(200, 100, seed=43))
    rows, summary = inventory_of(root, tmp_path, max_pixels=10_000)
    assert reason(rows, "a/empty.jpg") == "zero_bytes"
    assert reason(rows, "a/noise.jpg") == "not_an_image"
    assert reason(rows, "a/readme.txt") == "not_an_image"
    assert reason(rows, "a/half.jpg") == "truncated"
    assert reason(rows, "a/no_end_marker.jpg") == "truncated"
    assert reason(rows, "b/bomb.png") == "too_large"
    assert (rows["b/bomb.png"]["width"], rows["b/bomb.png"]["format"]) == ("100000", "PNG")
    assert reason(rows, "b/big.jpg") == "too_large"  # 20,000 pixels > max_pixels 10,000
    assert reason(rows, "a/whole.jpg") == ""  # the same JPEG, whole, is not rejected
    assert_reconciles(rows, summary)
    rows, _ = inventory_of(root, tmp_path, max_pixels=20_000)
    assert reason(rows, "b/big.jpg") == ""


def test_any_image_format_under_any_name_is_kept(tmp_path):
    root = tmp_path / "photos"
    picture = noise_image(40, 30, seed=5)
    for index, fmt in enumerate(("PNG", "GIF", "WEBP", "BMP")):
        write(root / "a" / f"{fmt.lower()}_as.jpg", encode(noise_image(40, 30, seed=10 + index), fmt))
        write(root / "a" / f"real.{fmt.lower()}", encode(noise_image(40, 30, seed=20 + index), fmt))
    write(root / "b" / "cmyk.jpg", encode(noise_image(40, 30, seed=6, mode="CMYK"), "JPEG"))
    write(root / "b" / "grey.jpg", encode(noise_image(40, 30, seed=7, mode="L"), "JPEG"))
    write(root / "b" / "photo.jpg", encode(picture, "JPEG"))
    rows, summary = inventory_of(root, tmp_path)
    assert summary["skipped"] == 0
    assert rows["a/png_as.jpg"]["format"] == "PNG" and rows["a/webp_as.jpg"]["format"] == "WEBP"
    assert rows["a/real.gif"]["format"] == "GIF" and rows["a/bmp_as.jpg"]["format"] == "BMP"
    assert summary["formats_kept"] == {"BMP": 2, "GIF": 2, "JPEG": 3, "PNG": 2, "WEBP": 2}


def test_placement_hidden_and_nested_files(tmp_path):
    root = tmp_path / "photos"
    photo_tree(root, {"a": 2, "b": 2})
    write(root / "LICENSE.txt", b"license")
    write_jpeg(root / "stray.jpg", seed=90)
    write(root / ".DS_Store", b"\0\0")
    write(root / "a" / ".DS_Store", b"\0\1")
    write_jpeg(root / "a" / ".hidden.jpg", seed=91)
    write_jpeg(root / ".git" / "x" / "y.jpg", seed=92)
    write_jpeg(root / "a" / "nested" / "deep.jpg", seed=93)
    rows, summary = inventory_of(root, tmp_path)
    assert reason(rows, "LICENSE.txt") == "not_in_class_folder" and rows["LICENSE.txt"]["class"] == ""
    assert reason(rows, "stray.jpg") == "not_in_class_folder"
    assert reason(rows, ".DS_Store") == "hidden_file"
    assert reason(rows, "a/.DS_Store") == "hidden_file"
    assert reason(rows, "a/.hidden.jpg") == "hidden_file"
    assert reason(rows, ".git/x/y.jpg") == "hidden_file"
    assert reason(rows, "a/nested/deep.jpg") == "not_in_class_folder"
    assert rows["a/nested/deep.jpg"]["class"] == "a"  # recorded under its top folder, not used
    assert summary["classes"] == ["a", "b"]  # .git is not a class
    assert summary["kept_by_class"] == {"a": 2, "b": 2}
    assert_reconciles(rows, summary)


def test_snakemakes_own_marker_is_not_a_file_of_the_users(tmp_path):
    """Snakemake leaves .snakemake_timestamp in a folder it made (the synthetic photos): the
    inventory neither lists it nor counts it as a skip; a class's own one is the user's."""
    root = tmp_path / "photos"
    photo_tree(root, {"a": 2, "b": 2})
    write(root / ".snakemake_timestamp", b"")
    write(root / "a" / ".snakemake_timestamp", b"")
    rows, summary = inventory_of(root, tmp_path)
    assert ".snakemake_timestamp" not in rows and reason(rows, "a/.snakemake_timestamp") == "hidden_file"
    assert summary["files_found"] == 5
    assert_reconciles(rows, summary)


def test_duplicates_within_and_across_classes(tmp_path):
    root = tmp_path / "photos"
    photo_tree(root, {"a": 3, "b": 3})
    same = jpeg_bytes(seed=500)
    write(root / "a" / "x1.jpg", same)
    write(root / "a" / "x2.jpg", same)
    write(root / "a" / "x0.jpg", same)
    shared = jpeg_bytes(seed=501)
    write(root / "a" / "both.jpg", shared)
    write(root / "b" / "both.jpg", shared)
    write(root / "b" / "both_again.jpg", shared)
    write(root / "b" / ".hidden_copy.jpg", same)  # skipped for itself: no conflict for a/x0.jpg
    rows, summary = inventory_of(root, tmp_path)
    assert reason(rows, "a/x0.jpg") == ""  # first by path is kept
    for path in ("a/x1.jpg", "a/x2.jpg"):
        assert reason(rows, path) == "duplicate_same_class" and rows[path]["duplicate_of"] == "a/x0.jpg"
    assert reason(rows, "a/both.jpg") == "duplicate_across_classes"
    assert rows["a/both.jpg"]["duplicate_of"] == "b/both.jpg;b/both_again.jpg"
    assert rows["b/both.jpg"]["duplicate_of"] == "a/both.jpg;b/both_again.jpg"
    assert reason(rows, "b/both_again.jpg") == "duplicate_across_classes"
    assert summary["skipped_by_reason"]["duplicate_same_class"] == 2
    assert summary["skipped_by_reason"]["duplicate_across_classes"] == 3
    assert any("a/both.jpg" in w and "several classes" in w for w in summary["warnings"])
    assert reason(rows, "b/.hidden_copy.jpg") == "hidden_file"
    assert_reconciles(rows, summary)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_symlinks_inside_outside_and_loops(tmp_path):
    root = tmp_path / "photos"
    photo_tree(root, {"a": 2, "b": 2})
    outside = write_jpeg(tmp_path / "elsewhere" / "out.jpg", seed=77)
    os.symlink(outside, root / "a" / "to_outside.jpg")
    os.symlink(tmp_path / "elsewhere", root / "c_linked_outside")
    os.symlink("../b/b_000.jpg", root / "a" / "to_b.jpg")  # inside, another class: a conflict
    os.symlink("a_000.jpg", root / "a" / "alias.jpg")  # inside, same class: a duplicate
    os.symlink("loop2.jpg", root / "a" / "loop1.jpg")
    os.symlink("loop1.jpg", root / "a" / "loop2.jpg")
    os.symlink("..", root / "b" / "up")  # folder link to an ancestor
    os.symlink("missing.jpg", root / "b" / "dangling.jpg")
    write_jpeg(root / "real_d" / "d_0.jpg", seed=78)
    write_jpeg(root / "real_d" / "d_1.jpg", seed=79)
    os.symlink("real_d", root / "d_link")  # a class folder reached through a link: its photos are duplicates
    rows, summary = inventory_of(root, tmp_path)
    assert reason(rows, "a/to_outside.jpg") == "symlink_outside_root"
    assert reason(rows, "c_linked_outside") == "symlink_outside_root"
    assert reason(rows, "a/loop1.jpg") == "symlink_loop" and reason(rows, "a/loop2.jpg") == "symlink_loop"
    assert reason(rows, "b/up") == "symlink_loop"
    assert reason(rows, "b/dangling.jpg") == "unreadable"
    assert reason(rows, "a/alias.jpg") == "duplicate_same_class" and rows["a/alias.jpg"]["duplicate_of"] == "a/a_000.jpg"
    assert reason(rows, "a/to_b.jpg") == "duplicate_across_classes"
    assert reason(rows, "b/b_000.jpg") == "duplicate_across_classes"
    assert reason(rows, "d_link/d_0.jpg") == "duplicate_across_classes"
    assert "c_linked_outside" not in summary["classes"] and "d_link" in summary["classes"]
    assert "elsewhere" not in "".join(rows)  # nothing outside ROOT was listed or read
    assert_reconciles(rows, summary)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_never_opened(tmp_path):
    root = tmp_path / "photos"
    photo_tree(root, {"a": 2, "b": 2})
    os.mkfifo(root / "a" / "pipe.jpg")  # opening it for reading would block forever
    rows, summary = inventory_of(root, tmp_path)
    assert reason(rows, "a/pipe.jpg") == "unreadable"
    assert_reconciles(rows, summary)


def test_class_warnings_for_empty_and_tiny_classes(tmp_path, caplog):
    root = tmp_path / "photos"
    photo_tree(root, {"a": 3, "b": 1})
    (root / "empty").mkdir()
    write(root / "c" / "junk.jpg", b"junk")
    _, summary = inventory_of(root, tmp_path)
    assert summary["classes"] == ["a", "b", "c", "empty"]
    warnings = "\n".join(summary["warnings"])
    assert "'empty' is empty" in warnings
    assert "class 'b' has 1 usable photo(s)" in warnings and "class 'c' has 0 usable photo(s) of 1" in warnings
    assert "'a'" not in warnings
    assert "'empty' is empty" in caplog.text  # also in the log
    assert summary["found_by_class"] == {"a": 3, "b": 1, "c": 1, "empty": 0}


def test_worker_processes_give_the_same_inventory(tmp_path):
    root = tmp_path / "photos"
    photo_tree(root, {"a": 40, "b": 40})
    write(root / "a" / "bad.jpg", b"bad")
    make_inventory(root, tmp_path / "one.csv", tmp_path / "one.json", threads=1)
    make_inventory(root, tmp_path / "two.csv", tmp_path / "two.json", threads=2)
    assert (tmp_path / "one.csv").read_bytes() == (tmp_path / "two.csv").read_bytes()
    assert (tmp_path / "one.json").read_bytes() == (tmp_path / "two.json").read_bytes()


def test_non_ascii_and_spaces_in_names(tmp_path):
    root = tmp_path / "photos"
    write_jpeg(root / "rosé" / "été à Paris.jpg", seed=1)
    write_jpeg(root / "rosé" / "日本 2.jpg", seed=2)
    write_jpeg(root / "b" / 'a,"quoted"\nname.jpg', seed=3)
    rows, summary = inventory_of(root, tmp_path)
    assert summary["classes"] == ["b", "rosé"]
    assert reason(rows, "rosé/été à Paris.jpg") == "" and reason(rows, "rosé/日本 2.jpg") == ""
    assert reason(rows, 'b/a,"quoted"\nname.jpg') == ""
    assert [r.path for r in read_inventory_csv(tmp_path / "inv.csv")] == sorted(rows)


def test_bad_roots_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        build_inventory(tmp_path / "nope")
    write(tmp_path / "flat" / "photo.jpg", jpeg_bytes())
    with pytest.raises(DataError, match="no class folders"):
        build_inventory(tmp_path / "flat")
    with pytest.raises(DataError, match="not found"):
        read_inventory_csv(tmp_path / "none.csv")


def test_walk_lists_files_sorted_with_classes(tmp_path):
    root = tmp_path / "photos"
    photo_tree(root, {"b": 1, "a": 1})
    found, classes = walk_root(root)
    assert classes == ["a", "b"] and [f.path for f in found] == ["a/a_000.jpg", "b/b_000.jpg"]


def test_cli_writes_both_files(tmp_path, capsys):
    root = tmp_path / "photos"
    photo_tree(root, {"a": 2, "b": 2})
    status = cli(["inventory", "--root", str(root), "--out-csv", str(tmp_path / "i.csv"),
                  "--out-json", str(tmp_path / "i.json"), "--max-pixels", "1000000", "--threads", "2"])
    assert status == 0
    assert json.loads((tmp_path / "i.json").read_text())["kept"] == 4
    status = cli(["inventory", "--root", str(tmp_path / "missing"), "--out-csv", str(tmp_path / "x.csv"),
                  "--out-json", str(tmp_path / "x.json")])
    assert status == 1 and "flowerlab inventory: error:" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


def test_names_that_are_not_utf8(tmp_path):
    root = tmp_path / "photos"
    photo_tree(root, {"a": 2, "b": 2})
    raw_root = os.fsencode(root)
    odd = jpeg_bytes(seed=77)
    for folder in (b"a", b"b"):  # the same photo in two classes: its odd name reaches the warnings
        with open(os.path.join(raw_root, folder, b"caf\xe9.jpg"), "wb") as handle:
            handle.write(odd)
    rows, summary = inventory_of(root, tmp_path)
    odd_paths = [path for path in rows if path.startswith("a/caf")]
    assert len(odd_paths) == 1 and reason(rows, odd_paths[0]) == "duplicate_across_classes"
    assert any("caf\ufffd.jpg" in warning for warning in summary["warnings"])
    os.mkdir(os.path.join(raw_root, b"\xffclass"))
    with pytest.raises(DataError, match="not valid UTF-8"):
        build_inventory(root)
