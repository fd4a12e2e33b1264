"""flowerlab.evaluation.stage: metric math on hand-made predictions, FLOP counts, and a whole evaluation
of a tiny model on a few synthetic TFRecords."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import fake_study
import numpy as np
import pytest

from flowerlab.errors import ConfigError, DataError
from flowerlab.evaluation import cost, inputs, quality, stage
from flowerlab.models import flops

# ------------------------------------------------------------------------------------------
# Metric math
# ------------------------------------------------------------------------------------------

CLASSES = ["a", "b", "c"]
# Class "c" is never predicted: its precision is 0/0.
TRUE = [0, 0, 1, 1, 2, 2, 2]
PREDICTED = [0, 1, 1, 1, 0, 1, 1]
EXPECTED_MATRIX = [[1, 1, 0], [0, 2, 0], [1, 2, 0]]


def test_confusion_matrix_rows_are_true_classes_columns_predictions() -> None:
    matrix = quality.confusion_matrix(TRUE, PREDICTED, 3)
    assert matrix.tolist() == EXPECTED_MATRIX
    assert matrix.dtype == np.int64


def test_accuracy_from_confusion() -> None:
    assert quality.accuracy_from_confusion(np.array(EXPECTED_MATRIX)) == pytest.approx(3 / 7)
    assert quality.accuracy_from_confusion(np.zeros((3, 3), dtype=int)) == 0.0


def test_per_class_metrics_on_known_matrix_with_a_class_never_predicted() -> None:
    metrics, notes = quality.per_class_metrics(np.array(EXPECTED_MATRIX), CLASSES)
    assert metrics["a"] == pytest.approx({"precision": 1 / 2, "recall": 1 / 2, "f1": 1 / 2, "support": 2})
    assert metrics["b"] == pytest.approx(
        {"precision": 2 / 5, "recall": 1.0, "f1": 2 * 0.4 / 1.4, "support": 2}
    )
    assert metrics["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 3}
    assert notes == ["precision of 'c' set to 0: the model never predicted this class"]
    assert not any(np.isnan(value) for values in metrics.values() for value in values.values())


def test_per_class_metrics_note_a_class_absent_from_validation() -> None:
    matrix = quality.confusion_matrix([0, 1], [0, 2], 3)
    metrics, notes = quality.per_class_metrics(matrix, CLASSES)
    assert metrics["c"]["recall"] == 0.0 and metrics["c"]["support"] == 0
    assert any("recall of 'c'" in note for note in notes)


def test_confusion_matrix_refuses_out_of_range_indices() -> None:
    with pytest.raises(ValueError, match="predicted class indices"):
        quality.confusion_matrix([0, 1], [0, 3], 3)
    with pytest.raises(ValueError, match="same length"):
        quality.confusion_matrix([0, 1], [0], 3)


def test_macro_average() -> None:
    metrics, _ = quality.per_class_metrics(np.array(EXPECTED_MATRIX), CLASSES)
    assert quality.macro_average(metrics)["recall"] == pytest.approx((0.5 + 1 + 0) / 3)


def test_cross_entropy_matches_keras_including_zero_probabilities() -> None:
    import keras

    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(3), size=20).astype(np.float32)
    probabilities[0] = [0.0, 1.0, 0.0]  # true class 0 gets probability 0: clipped, not infinite
    true = rng.integers(0, 3, size=20)
    true[0] = 0
    expected = float(np.mean(keras.losses.categorical_crossentropy(np.eye(3)[true], probabilities)))
    assert quality.categorical_cross_entropy(true, probabilities) == pytest.approx(expected, rel=1e-5)
    assert np.isfinite(quality.categorical_cross_entropy(true, probabilities))


def test_quality_metrics_from_probabilities() -> None:
    probabilities = np.eye(3)[PREDICTED] * 0.8 + 0.2 / 3
    metrics = quality.quality_metrics(np.array(TRUE), probabilities, CLASSES)
    assert metrics["confusion_matrix"] == EXPECTED_MATRIX
    assert metrics["accuracy"] == pytest.approx(3 / 7)
    assert metrics["images"] == 7
    assert len(metrics["notes"]) == 1
    json.dumps(metrics, allow_nan=False)  # plain JSON, no numpy types or NaN


def test_latency_summary_median_and_p95() -> None:
    seconds = [ms / 1000 for ms in range(1, 101)]
    median, p95 = cost.latency_summary(seconds)
    assert median == pytest.approx(50.5)
    assert p95 == pytest.approx(95.05)


# ------------------------------------------------------------------------------------------
# FLOPs: 2 per multiply-add, the convention of TensorFlow's profiler
# ------------------------------------------------------------------------------------------


def test_forward_flops_of_a_hand_counted_model() -> None:
    import keras

    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, padding="same", use_bias=False),
            keras.layers.Flatten(),
            keras.layers.Dense(5, use_bias=False),
        ]
    )
    total, by_op = flops.forward_flops(model, 8)
    conv = 8 * 8 * 4 * (3 * 3 * 3) * 2  # outputs x multiply-adds per output x 2
    dense = 8 * 8 * 4 * 5 * 2
    assert by_op == {"Conv2D": conv, "MatMul": dense}
    assert total == conv + dense


@pytest.mark.parametrize("arch, expected_gflops", [("convnet", 1.02), ("mobilenet_v2", 0.45)])
def test_forward_flops_match_the_reference_figures(arch: str, expected_gflops: float) -> None:
    from flowerlab.models.build import build_model

    model = build_model(arch, num_classes=5, image_size=192, weights="none")
    total, _ = flops.forward_flops(model, 192)
    assert total / 1e9 == pytest.approx(expected_gflops, rel=0.02)


# ------------------------------------------------------------------------------------------
# A whole evaluation on a fake study
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fake_study.make_fake_study(tmp_path_factory.mktemp("study") / "results", ["convnet"])


def run_evaluation(results: Path, out_dir: Path, **overrides) -> dict:
    arguments = {
        "arch": "convnet",
        "model_path": results / "models/convnet/seed-1/model.keras",
        "training_json": results / "models/convnet/seed-1/training.json",
        "manifest_path": results / "data/manifest.json",
        "out_dir": out_dir,
        "batch_size": 4,
        "latency_runs": 5,
    }
    arguments.update(overrides)
    return stage.evaluate(**arguments)


@pytest.fixture(scope="module")
def evaluated(study: Path) -> Path:
    run_evaluation(study, study / "evaluation/convnet")
    return study / "evaluation/convnet"


@pytest.mark.slow
def test_metrics_json_has_the_contract_keys(evaluated: Path) -> None:
    metrics = json.loads((evaluated / "metrics.json").read_text())
    for key in (
        "accuracy",
        "loss",
        "per_class",
        "confusion_matrix",
        "classes",
        "parameters_total",
        "parameters_trainable",
        "flops_per_image",
        "model_bytes",
        "inference_images_per_second",
        "latency_ms_median",
        "latency_ms_p95",
        "eval_batch_size",
        "device",
        "training",
    ):
        assert key in metrics, key
    assert metrics["classes"] == fake_study.CLASSES
    assert metrics["images"] == len(fake_study.CLASSES) * fake_study.VALIDATION_PER_CLASS
    assert np.sum(metrics["confusion_matrix"]) == metrics["images"]
    assert metrics["model_bytes"] == (evaluated.parent.parent / "models/convnet/seed-1/model.keras").stat().st_size
    assert metrics["inference_images_per_second"] > 0
    assert 0 < metrics["latency_ms_median"] <= metrics["latency_ms_p95"]
    assert metrics["eval_batch_size"] == 4
    assert metrics["device"]["kind"] == "cpu"
    # the training figures come from training.json
    record = json.loads((evaluated.parent.parent / "models/convnet/seed-1/training.json").read_text())
    assert metrics["training"]["wall_seconds"] == record["wall_seconds"]
    assert metrics["training"]["train_images_per_second"] == record["train_images_per_second"]
    assert metrics["training"]["epochs"] == record["epochs"]


@pytest.mark.slow
def test_parameters_and_flops_are_those_of_the_model(evaluated: Path) -> None:
    import keras

    metrics = json.loads((evaluated / "metrics.json").read_text())
    model = keras.saving.load_model(evaluated.parent.parent / "models/convnet/seed-1/model.keras")
    assert metrics["parameters_total"] == model.count_params()
    size = fake_study.IMAGE_SIZE
    convolutions = size * size * 4 * 27 * 2 + (size // 2) ** 2 * 6 * 36 * 2
    assert metrics["flops_by_op"]["Conv2D"] == convolutions


@pytest.mark.slow
def test_predictions_csv_agrees_with_the_model_and_the_metrics(evaluated: Path) -> None:
    import keras
    import tensorflow as tf

    with open(evaluated / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    metrics = json.loads((evaluated / "metrics.json").read_text())
    assert list(rows[0]) == [
        "id",
        "source",
        "true_class",
        "predicted_class",
        *(f"prob_{name}" for name in fake_study.CLASSES),
    ]
    assert len(rows) == metrics["images"]
    assert len({row["id"] for row in rows}) == len(rows)
    assert all(row["source"].split("/")[0] == row["true_class"] for row in rows)
    correct = sum(row["true_class"] == row["predicted_class"] for row in rows)
    assert metrics["accuracy"] == pytest.approx(correct / len(rows))

    # The loss equals what Keras computes on the same images (decoded independently here).
    model = keras.saving.load_model(evaluated.parent.parent / "models/convnet/seed-1/model.keras")
    shard = next((evaluated.parent.parent / "data/tfrecords").glob("validation-*.tfrec"))
    images, labels = [], []
    for record in tf.data.TFRecordDataset(str(shard)):
        example = tf.train.Example.FromString(record.numpy())
        jpeg = example.features.feature["image"].bytes_list.value[0]
        images.append(tf.io.decode_jpeg(jpeg).numpy() / 255.0)
        labels.append(example.features.feature["class"].int64_list.value[0])
    model.compile(loss="categorical_crossentropy", metrics=["accuracy"])
    loss, accuracy = model.evaluate(np.array(images, np.float32), np.eye(3)[labels], verbose=0)
    assert metrics["loss"] == pytest.approx(loss, rel=1e-4)
    assert metrics["accuracy"] == pytest.approx(accuracy)
    probabilities = np.array([[float(row[f"prob_{c}"]) for c in fake_study.CLASSES] for row in rows])
    np.testing.assert_allclose(
        probabilities, model.predict(np.array(images, np.float32), verbose=0), atol=2e-6
    )


@pytest.mark.slow
def test_evaluation_refuses_a_model_trained_on_another_manifest(study: Path, tmp_path: Path) -> None:
    record = json.loads((study / "models/convnet/seed-1/training.json").read_text())
    record["manifest_sha256"] = "0" * 64
    other = tmp_path / "training.json"
    other.write_text(json.dumps(record))
    with pytest.raises(DataError, match="trained on another manifest"):
        run_evaluation(study, tmp_path / "out", training_json=other)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_evaluation_refuses_a_model_with_the_wrong_number_of_classes(study: Path, tmp_path: Path) -> None:
    model = fake_study.tiny_model("convnet", 5, fake_study.IMAGE_SIZE, seed=0)
    model.save(tmp_path / "model.keras")
    with pytest.raises(DataError, match="manifest has 3 classes"):
        run_evaluation(study, tmp_path / "out", model_path=tmp_path / "model.keras")


@pytest.mark.slow
def test_evaluation_refuses_a_corrupt_or_missing_model(study: Path, tmp_path: Path) -> None:
    (tmp_path / "model.keras").write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="cannot load model"):
        run_evaluation(study, tmp_path / "out", model_path=tmp_path / "model.keras")
    with pytest.raises(DataError, match="model not found"):
        run_evaluation(study, tmp_path / "out", model_path=tmp_path / "absent.keras")


def copy_data_without_shards(study: Path, target: Path) -> tuple[Path, Path]:
    """The study's manifest in `target`/data with an empty tfrecords folder, and a training
    record that does not pin the manifest's checksum."""
    (target / "data/tfrecords").mkdir(parents=True)
    (target / "data/manifest.json").write_text((study / "data/manifest.json").read_text())
    record = json.loads((study / "models/convnet/seed-1/training.json").read_text())
    record.pop("manifest_sha256")
    (target / "training.json").write_text(json.dumps(record))
    return target / "data/manifest.json", target / "training.json"


@pytest.mark.slow
def test_evaluation_refuses_missing_validation_shards(study: Path, tmp_path: Path) -> None:
    manifest, record = copy_data_without_shards(study, tmp_path)
    with pytest.raises(DataError, match=r"shard .*validation-00-9.tfrec.* is missing"):
        run_evaluation(study, tmp_path / "out", manifest_path=manifest, training_json=record)


@pytest.mark.slow
def test_evaluation_refuses_a_changed_validation_shard(study: Path, tmp_path: Path) -> None:
    manifest, record = copy_data_without_shards(study, tmp_path)
    shard = next((study / "data/tfrecords").glob("validation-*.tfrec"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "data/tfrecords" / shard.name).write_bytes(bytes(data))
    with pytest.raises(DataError, match="corrupt or was changed"):
        run_evaluation(study, tmp_path / "out", manifest_path=manifest, training_json=record)
    assert not (tmp_path / "out").exists()


def test_a_tpu_study_is_evaluated_on_the_host_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="flowerlab.evaluation.stage"):
        device = inputs.select_device("tpu")
    assert device["kind"] in {"cpu", "gpu"} and device["replicas"] == 1
    assert "does not run on a TPU" in caplog.text
    with pytest.raises(ConfigError, match="unknown --accelerator"):
        inputs.select_device("npu")


def test_timing_batch_repeats_a_small_split_to_the_batch_size() -> None:
    images = np.arange(3 * 2 * 2 * 3, dtype=np.float32).reshape(3, 2, 2, 3)
    batch = cost.timing_batch(images, 7)
    assert batch.shape[0] == 7
    np.testing.assert_array_equal(np.asarray(batch)[3:6], images)
    assert cost.timing_batch(images, 2).shape[0] == 2


@pytest.mark.slow
def test_cli_writes_outputs_and_reports_bad_input_in_one_line(study: Path, tmp_path: Path) -> None:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    base = [
        sys.executable,
        "-m",
        "flowerlab",
        "evaluate",
        "--arch",
        "convnet",
        "--training-json",
        str(study / "models/convnet/seed-1/training.json"),
        "--manifest",
        str(study / "data/manifest.json"),
        "--out-dir",
        str(tmp_path / "out"),
        "--batch-size",
        "8",
        "--latency-runs",
        "3",
        "--accelerator",
        "cpu",
        "--threads",
        "1",
    ]
    done = subprocess.run(
        [*base, "--model", str(study / "models/convnet/seed-1/model.keras")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "out/metrics.json").read_text())
    assert metrics["threads"]["intra_op"] == 1
    assert metrics["eval_batch_size"] == 8
    assert (tmp_path / "out/predictions.csv").is_file()

    failed = subprocess.run(
        [*base, "--model", str(tmp_path / "absent.keras")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert failed.returncode == 1
    assert "model not found" in failed.stderr and "Traceback" not in failed.stderr


# ------------------------------------------------------------------------------------------
# The study's own architectures load back safely and measure as the reference says
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["dense", "convnet", "squeezenet", "mobilenet_v2", "mobilenet_v2_finetune"])
def test_every_architecture_round_trips_through_safe_loading(arch: str, tmp_path: Path) -> None:
    """model.keras of each architecture loads with safe_mode=True (custom layers registered by
    flowerlab.models, no Lambda) and predicts exactly as the saved model did."""
    from flowerlab.models.build import build_model

    model = build_model(arch, num_classes=3, image_size=32, weights="none")
    model.save(tmp_path / "model.keras")
    loaded = inputs.load_model(tmp_path / "model.keras")
    images = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)
    assert inputs.model_image_size(loaded, 3, tmp_path / "model.keras") == 32


@pytest.mark.real_data
def test_cost_figures_of_the_course_transfer_model(mobilenet_weights: Path, tmp_path: Path) -> None:
    """Frozen ImageNet MobileNetV2 + softmax at 192 px: the course's parameter counts (docs/course.md)."""
    from flowerlab.models.build import build_model, count_parameters

    model = build_model("mobilenet_v2", num_classes=5, image_size=192, weights=str(mobilenet_weights))
    model.save(tmp_path / "model.keras")
    loaded = inputs.load_model(tmp_path / "model.keras")
    assert count_parameters(loaded) == (2_488_389, 230_405)
    forward, _ = flops.forward_flops(loaded, 192)
    assert forward / 1e9 == pytest.approx(0.45, rel=0.02)
