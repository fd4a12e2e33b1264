"""flowerlab.evaluation.collect: one tidy row per architecture, units in the column names."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from flowerlab.cli import main
from flowerlab.errors import DataError
from flowerlab.evaluation import collect

EXPECTED_COLUMNS = [
    "arch",
    "val_accuracy",
    "course_val_accuracy",
    "val_loss",
    "val_macro_f1",
    "best_val_accuracy",
    "validation_images",
    "parameters",
    "trainable_parameters",
    "gflops_per_image",
    "image_size",
    "model_mb",
    "train_images_per_s",
    "inference_images_per_s",
    "eval_batch_size",
    "latency_ms_median",
    "latency_ms_p95",
    "training_seconds",
    "epochs",
    "device",
    "training_device",
    "precision",
    "training_code",
]


def evaluation(arch: str, accuracy: float, **overrides) -> dict:
    """A metrics.json as flowerlab evaluate writes it (only the keys collect reads)."""
    record = {
        "arch": arch,
        "accuracy": accuracy,
        "loss": 0.5,
        "images": 680,
        "macro_average": {"precision": 0.8, "recall": 0.8, "f1": 0.79},
        "parameters_total": 2_488_389,
        "parameters_trainable": 230_405,
        "flops_per_image": 450_608_094,
        "image_size": 192,
        "model_bytes": 10_500_000,
        "inference_images_per_second": 210.5,
        "eval_batch_size": 64,
        "latency_ms_median": 12.25,
        "latency_ms_p95": 14.0,
        "device": {"kind": "cpu", "name": "AMD EPYC (2 cores)", "replicas": 1},
        "training": {
            "wall_seconds": 3600.5,
            "train_images_per_second": 128.0,
            "epochs": 10,
            "best_val_accuracy": accuracy + 0.01,
            "precision": "float32",
            "device": {"kind": "gpu", "name": "NVIDIA H100", "replicas": 2},
            "code_version": {"commit": "0" * 40, "dirty": False, "fingerprint": "ab12" * 16},
        },
    }
    record.update(overrides)
    return record


def write(folder: Path, record: dict) -> Path:
    path = folder / record["arch"] / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record))
    return path


def test_row_has_every_column_with_units_and_converted_figures() -> None:
    row = collect.metrics_row(evaluation("mobilenet_v2", 0.88))
    assert list(row) == EXPECTED_COLUMNS == list(collect.COLUMNS)
    assert row["val_accuracy"] == 0.88
    assert row["course_val_accuracy"] == 0.8641
    assert row["parameters"] == 2_488_389 and row["trainable_parameters"] == 230_405
    assert row["gflops_per_image"] == pytest.approx(0.4506, abs=1e-4)
    assert row["model_mb"] == pytest.approx(10.5)
    assert row["train_images_per_s"] == 128.0 and row["inference_images_per_s"] == 210.5
    assert row["training_seconds"] == 3600.5 and row["epochs"] == 10
    assert row["device"] == "cpu: AMD EPYC (2 cores)"
    assert row["training_device"] == "gpu: NVIDIA H100 x2"
    assert row["precision"] == "float32"
    assert row["best_val_accuracy"] == pytest.approx(0.89)
    assert row["training_code"] == "ab12ab12ab12"


@pytest.mark.parametrize(
    "arch, course",
    [
        ("mobilenet_v2", 0.8641),
        ("convnet", 0.7043),
        ("squeezenet", 0.8101),
        ("xception", 0.9676),
        ("dense", None),
        ("mobilenet_v2_finetune", None),
    ],
)
def test_course_accuracy_beside_ours_only_where_the_course_has_one(arch: str, course: float | None) -> None:
    assert collect.metrics_row(evaluation(arch, 0.5))["course_val_accuracy"] == course


def test_collect_writes_csv_and_json_in_the_given_order(tmp_path: Path) -> None:
    paths = [write(tmp_path, evaluation("dense", 0.41)), write(tmp_path, evaluation("convnet", 0.72))]
    assert (
        main(
            [
                "collect",
                "--evaluations",
                *map(str, paths),
                "--out-csv",
                str(tmp_path / "metrics.csv"),
                "--out-json",
                str(tmp_path / "metrics.json"),
            ]
        )
        == 0
    )
    with open(tmp_path / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["arch"] for row in rows] == ["dense", "convnet"]
    assert list(rows[0]) == EXPECTED_COLUMNS
    assert rows[0]["course_val_accuracy"] == ""  # missing: empty, not "nan" or "None"
    assert rows[1]["course_val_accuracy"] == "0.7043"
    assert rows[0]["parameters"] == "2488389"  # integers stay integers
    document = json.loads((tmp_path / "metrics.json").read_text())
    assert [row["arch"] for row in document["rows"]] == ["dense", "convnet"]
    assert document["rows"][0]["course_val_accuracy"] is None
    assert set(document["columns"]) == set(EXPECTED_COLUMNS)
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_missing_optional_figures_are_empty_cells(tmp_path: Path) -> None:
    record = evaluation("convnet", 0.7)
    del record["training"]
    record["latency_ms_p95"] = float("nan")
    collect.collect([write(tmp_path, record)], tmp_path / "m.csv", tmp_path / "m.json")
    with open(tmp_path / "m.csv", newline="") as handle:
        row = next(csv.DictReader(handle))
    assert row["training_seconds"] == "" and row["latency_ms_p95"] == ""
    assert json.loads((tmp_path / "m.json").read_text())["rows"][0]["latency_ms_p95"] is None


def test_bad_evaluations_are_refused_with_the_file_named(tmp_path: Path) -> None:
    first = write(tmp_path / "one", evaluation("convnet", 0.7))
    second = write(tmp_path / "two", evaluation("convnet", 0.7))
    with pytest.raises(DataError, match="appears twice"):
        collect.collect_rows([first, second])
    with pytest.raises(DataError, match="evaluation not found"):
        collect.collect_rows([tmp_path / "absent.json"])
    broken = write(tmp_path / "three", {"arch": "dense"})
    with pytest.raises(DataError, match=r"has no 'accuracy'"):
        collect.collect_rows([broken])
    assert (
        main(
            [
                "collect",
                "--evaluations",
                str(broken),
                "--out-csv",
                str(tmp_path / "m.csv"),
                "--out-json",
                str(tmp_path / "m.json"),
            ]
        )
        == 1
    )
    assert not (tmp_path / "m.csv").exists()
