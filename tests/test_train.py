"""`flowerlab train` on tiny synthetic records: outputs, records, determinism, bad input."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from pathlib import Path

import h5py
import pytest
from synthetic_records import write_dataset

from flowerlab.cli import code_version
from flowerlab.errors import ConfigError
from flowerlab.training import records, setup, stage
from flowerlab.training.schedules import learning_rate_at

SIZE = 16
CLASSES = 3
DOCUMENTED_RECORD_KEYS = {
    "arch", "hparams", "device", "precision", "seed", "deterministic", "versions", "wall_seconds",
    "train_images_per_second", "epochs", "best_val_accuracy", "final_val_accuracy", "parameters",
    "resumed_from_epoch", "manifest_sha256", "code_version", "kernels", "hardware_share",
    "wall_seconds_before_resume", "learning_rate_schedule",
}

# train() sets process-wide TensorFlow state; conftest puts it back after this module.
pytestmark = pytest.mark.usefixtures("restore_tensorflow_globals")



@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data"), image_size=SIZE, num_classes=CLASSES,
                         train_per_class=16, validation_per_class=6)


def settings(manifest: Path, folder: Path, **hparams) -> setup.TrainSettings:
    raw = {"epochs": 2, "batch_size": 8, "precision": "float32", **hparams}
    return setup.TrainSettings(
        arch="dense", manifest=manifest, out_dir=folder / "model", checkpoint_dir=folder / "checkpoints",
        hparams=setup.resolve_hparams(raw), accelerator="cpu", seed=3, deterministic=True,
    )


def read_history(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def two_epoch_run(manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[setup.TrainSettings, dict]:
    run = settings(manifest, tmp_path_factory.mktemp("run"))
    return run, stage.train(run)


@pytest.mark.slow
def test_two_epochs_write_the_documented_outputs(two_epoch_run, manifest: Path) -> None:
    run, returned = two_epoch_run
    record = json.loads((run.out_dir / "training.json").read_text())
    assert record == json.loads(json.dumps(returned))
    assert record.keys() >= DOCUMENTED_RECORD_KEYS
    assert record["arch"] == "dense" and record["epochs"] == 2 and record["seed"] == 3
    assert record["device"]["kind"] == "cpu" and record["device"]["replicas"] == 1 and record["device"]["name"]
    assert record["precision"] == "float32" and record["deterministic"] is True
    share = record["hardware_share"]
    assert share["peak_dtype"] == "float32" and share["peak_gflops_per_s"] > 0 and share["replicas"] == 1
    assert share["achieved_gflops_per_s"] == pytest.approx(
        share["training_gflops_per_image"] * record["train_images_per_second"])
    assert share["fraction_of_peak"] == pytest.approx(share["achieved_gflops_per_s"] / share["peak_gflops_per_s"])
    assert record["kernels"]["library"] in ("oneDNN", "Eigen")
    assert {"python", "tensorflow", "keras", "numpy"} <= record["versions"].keys()
    assert record["versions"]["tensorflow"].startswith("2.")
    assert set(record["code_version"]) == {"commit", "dirty", "fingerprint", "modules"}
    assert record["code_version"]["fingerprint"] == code_version("train", "dense").sha256
    assert "flowerlab.models.dense" in record["code_version"]["modules"]
    assert record["parameters"] == {"total": 16 * 16 * 3 * 500 + 500 + 500 * 50 + 50 + 50 * 3 + 3,
                                    "trainable": 16 * 16 * 3 * 500 + 500 + 500 * 50 + 50 + 50 * 3 + 3}
    assert record["resumed_from_epoch"] == 0
    assert record["manifest_sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert record["hparams"]["learning_rate"] == 0.001 and record["hparams"]["schedule"] == "constant"
    assert record["train_images_per_second"] > 0 and record["train_images_per_second_epochs"] == [2]
    assert record["wall_seconds"] > 0

    history = read_history(run.out_dir / "history.csv")
    assert list(history[0]) == list(records.HISTORY_COLUMNS)
    assert [int(row["epoch"]) for row in history] == [1, 2]
    assert float(history[1]["loss"]) < float(history[0]["loss"])  # it learns
    assert record["best_val_accuracy"] == max(float(row["val_accuracy"]) for row in history)
    assert record["final_val_accuracy"] == float(history[-1]["val_accuracy"])
    assert all(float(row["learning_rate"]) == pytest.approx(0.001) for row in history)
    assert all(float(row["images_per_second"]) > 0 and float(row["epoch_seconds"]) > 0 for row in history)
    # The steady-state figure is epoch 2's rate (epoch 1 traces the graphs and fills the cache).
    assert record["train_images_per_second"] == pytest.approx(float(history[1]["images_per_second"]))

    assert not run.checkpoint_dir.exists()  # removed once the outputs are in place
    assert not [p for p in run.out_dir.iterdir() if p.name.startswith(".")]  # no temporaries


@pytest.mark.slow
def test_model_file_is_the_inference_model(two_epoch_run) -> None:
    import keras
    import numpy as np

    run, _ = two_epoch_run
    with zipfile.ZipFile(run.out_dir / "model.keras") as archive:
        assert not [name for name in archive.namelist() if "optimizer" in name]
        weights = archive.read("model.weights.h5")
    # Keras keeps the optimizer's variables inside model.weights.h5, under "optimizer".
    with h5py.File(io.BytesIO(weights), "r") as h5:
        assert "optimizer" not in h5
    model = keras.saving.load_model(run.out_dir / "model.keras")
    assert getattr(model, "optimizer", None) is None
    probabilities = model.predict(np.random.default_rng(0).random((4, SIZE, SIZE, 3), dtype=np.float32), verbose=0)
    assert probabilities.shape == (4, CLASSES) and probabilities.dtype == np.float32
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_deterministic_cpu_runs_give_identical_histories(two_epoch_run, manifest: Path, tmp_path: Path) -> None:
    run, first = two_epoch_run
    again = stage.train(settings(manifest, tmp_path))
    metrics = ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")
    first_rows = read_history(run.out_dir / "history.csv")
    again_rows = read_history(tmp_path / "model" / "history.csv")
    assert [[row[m] for m in metrics] for row in first_rows] == [[row[m] for m in metrics] for row in again_rows]
    assert first["fingerprint"] == again["fingerprint"]


@pytest.mark.slow
def test_schedule_drives_the_recorded_learning_rates(manifest: Path, tmp_path: Path) -> None:
    hparams = {"epochs": 3, "schedule": "ramp_decay", "learning_rate": 4e-3, "lr_start": 1e-3,
               "lr_min": 5e-4, "rampup_epochs": 2, "decay": 0.5, "augment": True}
    run = settings(manifest, tmp_path, **hparams)
    stage.train(run)
    rates = [float(row["learning_rate"]) for row in read_history(run.out_dir / "history.csv")]
    expected = [learning_rate_at(epoch, run.hparams) for epoch in range(3)]
    assert expected == pytest.approx([1e-3, 2.5e-3, 4e-3])
    assert rates == pytest.approx(expected, rel=1e-6)


@pytest.mark.slow
def test_mixed_precision_and_a_model_input_larger_than_the_records(manifest: Path, tmp_path: Path) -> None:
    """bfloat16 compute with a float32 softmax, and the pipeline resizing 16 px records to 24 px."""
    import keras
    import numpy as np

    run = settings(manifest, tmp_path, epochs=1, precision="mixed_bfloat16", image_size=24)
    record = stage.train(run)
    assert record["precision"] == "mixed_bfloat16" and record["image_size"] == 24
    assert record["train_images_per_second_epochs"] == [1]  # a 1-epoch run: its only epoch, said so
    model = keras.saving.load_model(run.out_dir / "model.keras")
    assert model.input_shape == (None, 24, 24, 3)
    probabilities = model.predict(np.zeros((2, 24, 24, 3), np.float32), verbose=0)
    assert probabilities.dtype == np.float32 and np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize(("faster", "flags"), [("mixed_bfloat16", "amx_bf16"), ("float32", "avx512_bf16"),
                                               ("float32", None)])
@pytest.mark.usefixtures("uncapped_onednn")
def test_auto_precision_trains_in_what_the_probe_measured_faster(faster: str, flags: str | None, manifest: Path,
                                                                  tmp_path: Path, monkeypatch) -> None:
    """A CPU with or without AMX / AVX512_BF16, simulated through the detection hook; the probe's
    measurement is simulated too, and cached for the next training."""
    from flowerlab import devices
    from flowerlab.training import precision

    monkeypatch.setattr(devices, "cpu_flags", lambda cpuinfo=None: frozenset({flags} if flags else set()))
    measured: list[str] = []

    def probe(policy: str, probe_setup: precision.ProbeSetup) -> float:
        measured.append(policy)
        return 100.0 if policy == faster else 60.0

    monkeypatch.setattr(precision, "measure_training_speed", probe)
    base = settings(manifest, tmp_path, epochs=1, precision="auto").__dict__
    run = setup.TrainSettings(**{**base, "arch": "convnet", "precision_cache": tmp_path / "precision"})
    record = stage.train(run)
    assert record["precision"] == faster
    choice = record["precision_choice"]
    if flags is None:
        assert measured == [] and "without native bfloat16" in choice["reason"]
    else:
        assert measured == ["float32", "mixed_bfloat16"] and choice["images_per_second"][faster] == 100.0
        assert "measured now" in choice["reason"] and Path(choice["cache"]).is_file()
        measured.clear()
        again = stage.train(setup.TrainSettings(**{**run.__dict__, "out_dir": tmp_path / "again",
                                                   "checkpoint_dir": tmp_path / "again-checkpoints"}))
        assert measured == [] and again["precision"] == faster and "measured before" in again["precision_choice"]["reason"]


# ---------------------------------------------------------------------------------------------
# Hyperparameters and bad input


def test_hparams_take_the_schema_defaults() -> None:
    hparams = setup.resolve_hparams({"epochs": 3, "batch_size": 16})
    assert hparams == {"augment": False, "batch_size": 16, "cache_features": True, "decay": 0.8, "epochs": 3,
                       "learning_rate": 0.001,
                       "lr_min": 1e-05, "lr_start": 1e-05, "precision": "auto", "rampup_epochs": 5,
                       "schedule": "constant"}


@pytest.mark.parametrize(("raw", "message"), [
    ({"epochs": 0, "batch_size": 8}, r"'epochs'.*less than the minimum"),
    ({"epochs": 2, "batch_size": 8, "learning_rat": 0.1}, r"'learning_rat': unknown key \(allowed: augment.*did you mean 'learning_rate'"),
    ({"epochs": 2, "batch_size": 8, "schedule": "linear"}, r"'schedule'.*allowed: constant, ramp_decay, cosine"),
    ({"epochs": 2, "batch_size": 8, "augment": "yes"}, r"'augment'.*boolean"),
    ({"batch_size": 8}, r"'epochs': missing"),
    ([1, 2], r"JSON object"),
])
def test_bad_hparams_are_config_errors(raw, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        setup.resolve_hparams(raw)


def cli_args(manifest: Path, folder: Path, *, arch: str = "dense", hparams: str = '{"epochs": 1, "batch_size": 8}') -> list[str]:
    return ["train", "--arch", arch, "--manifest", str(manifest), "--out-dir", str(folder / "out"),
            "--checkpoint-dir", str(folder / "ckpt"), "--hparams", hparams, "--accelerator", "cpu",
            "--seed", "1"]


@pytest.mark.parametrize(("case", "message"), [
    ("missing_manifest", "manifest .*missing.json not found"),
    ("unknown_arch", "unknown architecture 'resnet'"),
    ("bad_hparams", "'epochs'.*less than the minimum"),
    ("bad_json", "--hparams is not valid JSON"),
])
def test_cli_reports_bad_input_in_one_line_before_any_work(case: str, message: str, manifest: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    args = {
        "missing_manifest": cli_args(tmp_path / "missing.json", tmp_path),
        "unknown_arch": cli_args(manifest, tmp_path, arch="resnet"),
        "bad_hparams": cli_args(manifest, tmp_path, hparams='{"epochs": 0, "batch_size": 8}'),
        "bad_json": cli_args(manifest, tmp_path, hparams="{epochs: 1}"),
    }[case]
    assert stage.cli(args) == 1
    error = capsys.readouterr().err
    assert error.startswith("flowerlab train: error: ")
    assert __import__("re").search(message, error)
    assert "Traceback" not in error
    assert not (tmp_path / "out").exists() and not (tmp_path / "ckpt").exists()


# ---------------------------------------------------------------------------------------------
# Small pure helpers


def test_steady_state_rate_excludes_each_sessions_first_epoch() -> None:
    rows = [{"epoch": 1, "images_per_second": 10.0}, {"epoch": 2, "images_per_second": 100.0},
            {"epoch": 3, "images_per_second": 20.0}, {"epoch": 4, "images_per_second": 100.0}]
    rate, used = records.steady_state_images_per_second(rows, [1, 3])  # resumed at epoch 3
    assert used == [2, 4] and rate == pytest.approx(100.0)
    rate, used = records.steady_state_images_per_second(rows[:1], [1])
    assert used == [1] and rate == pytest.approx(10.0)
    # Equal images per epoch: the overall rate is the harmonic mean of the epochs' rates.
    rate, _ = records.steady_state_images_per_second([*rows[:2], {"epoch": 3, "images_per_second": 50.0}], [1])
    assert rate == pytest.approx(2 / (1 / 100 + 1 / 50))


def test_history_csv_has_every_column_and_blank_for_missing() -> None:
    text = records.history_csv([{"epoch": 1, "loss": 0.5, "accuracy": None}])
    assert text.splitlines() == [",".join(records.HISTORY_COLUMNS), "1,0.5,,,,,,"]


def test_each_epoch_line_says_how_long_the_rest_will_take(caplog: pytest.LogCaptureFixture) -> None:
    """From this process's epochs after its first (which traces and fills the cache)."""
    from flowerlab.training.callbacks import EpochLogger, EpochRecorder

    recorder = EpochRecorder(images_per_epoch=100, rows=[])
    epoch_logger = EpochLogger(recorder, epochs=10)
    with caplog.at_level("INFO", logger="flowerlab.training.callbacks"):
        for epoch, seconds in enumerate([50.0, 30.0, 32.0], start=1):
            recorder.rows.append({"epoch": epoch, "loss": 1.0, "accuracy": 0.5, "val_loss": 1.0,
                                  "val_accuracy": 0.5, "learning_rate": 1e-3, "epoch_seconds": seconds,
                                  "images_per_second": 100 / seconds})
            epoch_logger.on_epoch_end(epoch - 1)
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0].endswith("2 img/s, about 7 min 30 s left")  # 9 epochs x the first's 50 s
    assert lines[1].endswith(", about 4 min 00 s left")  # 8 x 30 s
    assert lines[2].endswith(", about 3 min 37 s left")  # 7 x 31 s
