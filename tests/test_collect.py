"""flowerlab.evaluation.collect: one tidy row per run, one per architecture, and the comparisons,
units in the column names."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from flowerlab.cli import main
from flowerlab.errors import DataError
from flowerlab.evaluation import collect, summaries

EXPECTED_COLUMNS = [
    "arch",
    "replicate",
    "seed",
    "split_seed",
    "val_accuracy",
    "val_accuracy_ci_low",
    "val_accuracy_ci_high",
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
    "train_gflops_per_s",
    "peak_gflops_per_s",
    "fraction_of_peak",
    "kernels",
    "inference_images_per_s",
    "eval_batch_size",
    "latency_ms_median",
    "latency_ms_p95",
    "training_seconds",
    "epochs",
    "device",
    "training_device",
    "precision",
    "backend",
    "training_code",
    "data_source",
]


def evaluation(arch: str, accuracy: float, *, seed: int = 1, split: int = 35155, **overrides) -> dict:
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
            "hardware_share": {"achieved_gflops_per_s": 57.6, "peak_gflops_per_s": 160.0, "fraction_of_peak": 0.36},
            "kernels": {"library": "oneDNN", "environment": {}},
            "epochs": 10,
            "best_val_accuracy": accuracy + 0.01,
            "precision": "float32",
            "device": {"kind": "gpu", "name": "NVIDIA H100", "replicas": 2},
            "backend": {"name": "jax", "version": "0.10.2"},
            "code_version": {"commit": "0" * 40, "dirty": False, "fingerprint": "ab12" * 16},
            "seed": seed,
        },
        "data_settings": {"seed": split},
    }
    record.update(overrides)
    return record


def write(folder: Path, record: dict, correct: list[bool] | None = None) -> Path:
    """metrics.json in folder/{arch}/seed-{seed}/, with a predictions.csv beside it: by default
    the first round(accuracy x images) of the images right."""
    path = folder / record["arch"] / f"seed-{record['training']['seed']}" / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record))
    images = record.get("images") or 10
    if correct is None:
        correct = [index < round(record.get("accuracy", 0) * images) for index in range(images)]
    with open(path.with_name("predictions.csv"), "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "source", "true_class", "predicted_class"])
        writer.writerows([f"photo-{index}", f"a/{index}.jpg", "a", "a" if right else "b"]
                         for index, right in enumerate(correct))
    return path


def outputs(folder: Path) -> collect.Outputs:
    return collect.Outputs(folder / "metrics.csv", folder / "metrics.json", folder / "architectures.csv",
                           folder / "comparisons.csv", folder / "mcnemar.csv")


def collect_command(paths: list[Path], folder: Path) -> list[str]:
    return ["collect", "--evaluations", *map(str, paths), "--out-csv", str(folder / "metrics.csv"),
            "--out-json", str(folder / "metrics.json"), "--architectures", str(folder / "architectures.csv"),
            "--comparisons", str(folder / "comparisons.csv"), "--mcnemar", str(folder / "mcnemar.csv")]


def test_row_has_every_column_with_units_and_converted_figures() -> None:
    row = collect.metrics_row(evaluation("mobilenet_v2", 0.88, seed=2))
    assert list(row) == EXPECTED_COLUMNS == list(collect.COLUMNS)
    assert row["replicate"] == "seed-2" and row["seed"] == 2 and row["split_seed"] == 35155
    assert row["val_accuracy"] == 0.88
    # the Wilson score interval of 598 right out of 680 photos, from its formula
    assert (row["val_accuracy_ci_low"], row["val_accuracy_ci_high"]) == pytest.approx((0.85278, 0.90178), abs=1e-5)
    assert row["course_val_accuracy"] == 0.8641
    assert row["parameters"] == 2_488_389 and row["trainable_parameters"] == 230_405
    assert row["gflops_per_image"] == pytest.approx(0.4506, abs=1e-4)
    assert row["model_mb"] == pytest.approx(10.5)
    assert row["train_images_per_s"] == 128.0 and row["inference_images_per_s"] == 210.5
    assert (row["train_gflops_per_s"], row["peak_gflops_per_s"], row["fraction_of_peak"]) == (57.6, 160.0, 0.36)
    assert row["kernels"] == "oneDNN"
    assert row["training_seconds"] == 3600.5 and row["epochs"] == 10
    assert row["device"] == "cpu: AMD EPYC (2 cores)"
    assert row["training_device"] == "gpu: NVIDIA H100 x2"
    assert row["precision"] == "float32" and row["backend"] == "jax 0.10.2"
    assert row["best_val_accuracy"] == pytest.approx(0.89)
    assert row["training_code"] == "ab12ab12ab12"


def test_synthetic_photos_are_not_compared_with_the_course() -> None:
    """The course's figures are for flower photos: a run on generated ones has no course figure,
    hence no placement against it in the architectures table."""
    real = evaluation("convnet", 0.8)
    synthetic = {**real, "training": {**real["training"], "data_source": "synthetic"}}
    assert collect.metrics_row(real)["course_val_accuracy"] == 0.7043
    row = collect.metrics_row(synthetic)
    assert row["data_source"] == "synthetic" and row["course_val_accuracy"] is None
    (table,) = summaries.architecture_rows([row])
    assert table["course_val_accuracy"] is None and table["course_placement"] is None


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
    assert main(collect_command(paths, tmp_path)) == 0
    with open(tmp_path / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["arch"] for row in rows] == ["dense", "convnet"]
    assert list(rows[0]) == EXPECTED_COLUMNS
    assert rows[0]["course_val_accuracy"] == ""  # missing: empty, not "nan" or "None"
    assert rows[1]["course_val_accuracy"] == "0.7043"
    assert rows[0]["parameters"] == "2488389"  # integers stay integers
    document = json.loads((tmp_path / "metrics.json").read_text())
    assert document["format_version"] == 2
    assert [row["arch"] for row in document["runs"]["rows"]] == ["dense", "convnet"]
    assert document["runs"]["rows"][0]["course_val_accuracy"] is None
    assert set(document["runs"]["columns"]) == set(EXPECTED_COLUMNS)
    assert {"architectures", "comparisons", "mcnemar"} <= set(document)
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_missing_optional_figures_are_empty_cells(tmp_path: Path) -> None:
    record = evaluation("convnet", 0.7)
    for key in ("wall_seconds", "train_images_per_second", "epochs"):
        del record["training"][key]
    record["latency_ms_p95"] = float("nan")
    collect.collect([write(tmp_path, record)], outputs(tmp_path))
    with open(tmp_path / "metrics.csv", newline="") as handle:
        row = next(csv.DictReader(handle))
    assert row["training_seconds"] == "" and row["latency_ms_p95"] == ""
    assert json.loads((tmp_path / "metrics.json").read_text())["runs"]["rows"][0]["latency_ms_p95"] is None


def test_bad_evaluations_are_refused_with_the_file_named(tmp_path: Path) -> None:
    first = write(tmp_path / "one", evaluation("convnet", 0.7))
    second = write(tmp_path / "two", evaluation("convnet", 0.7))
    with pytest.raises(DataError, match="convnet seed-1 appears twice"):
        collect.collect_rows([first, second])
    with pytest.raises(DataError, match="evaluation not found"):
        collect.collect_rows([tmp_path / "absent.json"])
    broken = write(tmp_path / "three", {"arch": "dense", "training": {"seed": 1}, "data_settings": {"seed": 5}})
    with pytest.raises(DataError, match=r"has no 'accuracy'"):
        collect.collect_rows([broken])
    unseeded = evaluation("dense", 0.5)
    del unseeded["data_settings"]
    with pytest.raises(DataError, match="names no training seed or split seed"):
        collect.collect_rows([write(tmp_path / "four", unseeded)])
    assert main(collect_command([broken], tmp_path)) == 1
    assert not (tmp_path / "metrics.csv").exists()


def test_the_same_seed_on_another_split_is_another_replicate(tmp_path: Path) -> None:
    paths = [write(tmp_path / "a", evaluation("convnet", 0.7, seed=1, split=5)),
             write(tmp_path / "b", evaluation("convnet", 0.72, seed=1, split=6))]
    rows = collect.collect_rows(paths)
    assert [row["replicate"] for row in rows] == ["split-5-seed-1", "split-6-seed-1"]


def test_replicates_are_summarised_per_architecture_and_compared(tmp_path: Path) -> None:
    from flowerlab.evaluation import statistics

    accuracies = {"dense": [0.5, 0.6, 0.55], "convnet": [0.7, 0.75, 0.72]}
    paths = [write(tmp_path, evaluation(arch, accuracy, seed=seed, images=20))
             for arch, values in accuracies.items() for seed, accuracy in enumerate(values, start=1)]
    tables = collect.collect(paths, outputs(tmp_path))
    assert len(tables["runs"]) == 6
    dense, convnet = tables["architectures"]
    assert dense["arch"] == "dense" and dense["runs"] == 3
    spread = statistics.across_runs([0.5, 0.6, 0.55])
    assert dense["val_accuracy_mean"] == pytest.approx(0.55)
    assert (dense["val_accuracy_ci_low"], dense["val_accuracy_ci_high"]) == (spread.ci_low, spread.ci_high)
    # the course printed 0.7043 for its convnet: inside our interval of 0.70, 0.75, 0.72; two runs above it
    assert convnet["course_placement"] == "inside" and convnet["p_beats_course"] == pytest.approx(2 / 3)
    pairs = {(row["arch_a"], row["arch_b"]): row for row in tables["comparisons"]}
    assert pairs["convnet", "dense"]["p_a_beats_b"] == 1.0 and pairs["dense", "convnet"]["p_a_beats_b"] == 0.0
    # seed by seed on the same 20 photos: convnet gets 14-15 right where dense gets 10-12
    assert [row["replicate"] for row in tables["mcnemar"]] == ["seed-1", "seed-2", "seed-3"]
    first = tables["mcnemar"][0]
    assert (first["arch_a"], first["arch_b"], first["a_only"], first["b_only"]) == ("dense", "convnet", 0, 4)
    with open(tmp_path / "architectures.csv", newline="") as handle:
        assert [row["arch"] for row in csv.DictReader(handle)] == ["dense", "convnet"]


def test_one_run_each_gives_per_run_intervals_and_no_spread(tmp_path: Path) -> None:
    paths = [write(tmp_path, evaluation("convnet", 0.9)), write(tmp_path, evaluation("squeezenet", 0.8))]
    tables = collect.collect(paths, outputs(tmp_path))
    convnet = tables["architectures"][0]
    assert convnet["runs"] == 1 and convnet["val_accuracy_sd"] is None and convnet["val_accuracy_ci_low"] is None
    # placed against the run's Wilson interval (0.875-0.920 for 612 of 680): the course's 0.7043 is below
    assert convnet["course_placement"] == "below" and "Wilson" in convnet["course_placement_interval"]
    assert convnet["p_beats_course"] is None
    assert all(row["p_a_beats_b"] is None for row in tables["comparisons"])
    assert len(tables["mcnemar"]) == 1  # one seed still pairs the two runs on the same photos


def test_runs_on_different_photos_are_not_compared(tmp_path: Path) -> None:
    first = write(tmp_path, evaluation("convnet", 0.5, images=4))
    second = write(tmp_path, evaluation("dense", 0.5, images=4))
    predictions = second.with_name("predictions.csv")
    predictions.write_text(predictions.read_text().replace("photo-3", "photo-9"))
    with pytest.raises(DataError, match="cover different photos"):
        collect.collect([first, second], outputs(tmp_path))
