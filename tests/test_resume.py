"""Resumable training: kill -9 and rerun, fingerprints, atomic checkpoints, exact continuation."""

from __future__ import annotations

import json
import logging
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from synthetic_records import write_dataset
from training_runs import history, kill_after_first_checkpoint, train_command

from flowerlab.training import checkpoints, progress, setup, stage, stopping
from flowerlab.training.callbacks import StopAtBatchBoundary

SIZE = 16

# train() sets process-wide TensorFlow state; conftest puts it back after this module.
pytestmark = pytest.mark.usefixtures("restore_tensorflow_globals")



@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data"), image_size=SIZE, num_classes=3,
                         train_per_class=16, validation_per_class=6)


# ---------------------------------------------------------------------------------------------
# The real command, killed with SIGKILL


@pytest.mark.slow
def test_killed_training_resumes_at_the_next_epoch_and_a_changed_hparam_starts_fresh(
        manifest: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    epochs = 30  # ~0.1 s each: the kill lands well before the end
    hparams = {"epochs": epochs, "batch_size": 16, "precision": "float32"}
    checkpoint_dir = tmp_path / "checkpoints"
    command = train_command(manifest, tmp_path, checkpoint_dir, hparams)

    assert kill_after_first_checkpoint(command, checkpoint_dir, tmp_path / "killed.log") == -signal.SIGKILL
    assert not (tmp_path / "model" / "training.json").exists()
    saved = checkpoints.find_checkpoint(checkpoint_dir, _any_fingerprint(checkpoint_dir))
    assert saved is not None and 1 <= saved.epoch < epochs
    shutil.copytree(checkpoint_dir, tmp_path / "checkpoints-copy")

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert rerun.returncode == 0, rerun.stderr
    record = json.loads((tmp_path / "model" / "training.json").read_text())
    assert record["resumed_from_epoch"] >= saved.epoch >= 1
    assert [int(row["epoch"]) for row in history(tmp_path / "model")] == list(range(1, epochs + 1))
    assert f"resuming dense from {checkpoint_dir}" in rerun.stderr
    assert "epoch 30/30" in rerun.stderr  # one progress line per epoch in a log
    assert not checkpoint_dir.exists()

    # Same checkpoint, one hyperparameter changed: ignored, training starts from epoch 1.
    # (In process: the command's code path without paying TensorFlow's start-up a third time.)
    changed = train_command(manifest, tmp_path / "changed", tmp_path / "checkpoints-copy", {**hparams, "epochs": 3})
    with caplog.at_level(logging.INFO):
        assert stage.cli(changed[3:-2]) == 0  # "train", ... without --threads (TF is running)
    assert "made with other inputs or settings (differs in: hparams.epochs)" in caplog.text
    record = json.loads((tmp_path / "changed" / "model" / "training.json").read_text())
    assert record["resumed_from_epoch"] == 0
    assert [int(row["epoch"]) for row in history(tmp_path / "changed" / "model")] == [1, 2, 3]


@pytest.mark.slow
def test_a_stopped_training_says_that_a_rerun_resumes_it(manifest: Path, tmp_path: Path) -> None:
    """SIGTERM, as Snakemake and SLURM stop a job: the training says what it keeps and what a
    rerun does, then ends with Ctrl-C's status."""
    checkpoint_dir = tmp_path / "checkpoints"
    # Epochs of a fraction of a second: enough of them that the signal lands long before the end,
    # even on a machine busy with other tests.
    command = train_command(manifest, tmp_path, checkpoint_dir, {"epochs": 300, "batch_size": 16})
    log = tmp_path / "stopped.log"
    status = kill_after_first_checkpoint(command, checkpoint_dir, log, signal.SIGTERM)
    text = log.read_text()
    assert status == 130, f"exit status {status}; the training's log ends:\n{text[-6000:]}"
    assert re.search(rf"dense interrupted after \d+ of 300 epochs: its checkpoint in {re.escape(str(checkpoint_dir))} "
                     r"is kept; running the workflow \(or this command\) again resumes from it", text), text
    assert "Traceback" not in text and any(checkpoint_dir.glob("epoch-*"))


def test_a_stop_during_fit_waits_for_the_next_batch_and_a_second_signal_stops_at_once() -> None:
    request = stopping.StopRequest()
    with pytest.raises(KeyboardInterrupt):  # outside fit: at once, as Python's own Ctrl-C
        request.on_signal(signal.SIGTERM, None)
    assert not request.requested

    with pytest.raises(KeyboardInterrupt), request.deferred():
        request.on_signal(signal.SIGTERM, None)  # noted, not raised
        assert request.requested
        with pytest.raises(KeyboardInterrupt):
            request.on_signal(signal.SIGINT, None)  # the second one does not wait
        request.raise_if_requested()  # the batch boundary
    assert not request.deferring


def test_a_stop_still_pending_when_fit_ends_is_raised_then() -> None:
    request = stopping.StopRequest()
    with pytest.raises(KeyboardInterrupt), request.deferred():
        request.on_signal(signal.SIGTERM, None)


def test_the_stop_check_ends_fit_before_the_next_batch(tmp_path: Path) -> None:
    request = stopping.StopRequest()
    batches: list[int] = []

    class AskToStopAfterTwoBatches(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            batches.append(batch)
            if len(batches) == 2:
                request.on_signal(signal.SIGTERM, None)

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    data = np.zeros((40, 3), "float32"), np.zeros((40, 2), "float32")
    with pytest.raises(KeyboardInterrupt), request.deferred():
        model.fit(*data, batch_size=4, epochs=3, verbose=0,
                  callbacks=[StopAtBatchBoundary(request), AskToStopAfterTwoBatches()])
    assert batches == [0, 1]


def _any_fingerprint(checkpoint_dir: Path) -> str:
    state = next(checkpoint_dir.glob("epoch-*/state.json"))
    return json.loads(state.read_text())["fingerprint"]


# ---------------------------------------------------------------------------------------------
# In process: a resumed run is the uninterrupted run


class Interrupted(Exception):
    pass


class InterruptAfter(keras.callbacks.Callback):
    """Stands for a crash right after epoch `epoch`'s checkpoint was written."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if epoch + 1 == self.epoch:
            raise Interrupted


@pytest.mark.slow
def test_resumed_run_equals_the_uninterrupted_run(manifest: Path, tmp_path: Path) -> None:
    hparams = setup.resolve_hparams({
        "epochs": 4, "batch_size": 8, "precision": "float32", "augment": True, "schedule": "ramp_decay",
        "learning_rate": 2e-3, "lr_start": 5e-4, "rampup_epochs": 2})

    def settings(name: str) -> setup.TrainSettings:
        return setup.TrainSettings(arch="dense", manifest=manifest, out_dir=tmp_path / name / "model",
                                      checkpoint_dir=tmp_path / name / "ckpt", hparams=hparams,
                                      accelerator="cpu", seed=11, deterministic=True)

    straight = stage.train(settings("straight"))
    with pytest.raises(Interrupted):
        stage.train(settings("resumed"), extra_callbacks=[InterruptAfter(2)])
    assert sorted(p.name for p in (tmp_path / "resumed" / "ckpt").iterdir()) == ["epoch-0002", "progress.json"]
    assert json.loads((tmp_path / "resumed" / "ckpt" / "progress.json").read_text())["epoch"] == 2
    resumed = stage.train(settings("resumed"))
    assert not (tmp_path / "resumed" / "ckpt").exists()  # done: the checkpoints and the progress file go

    assert straight["resumed_from_epoch"] == 0 and resumed["resumed_from_epoch"] == 2
    # The time of the part before the interruption is kept: the report adds it to the last part's job.
    assert straight["wall_seconds_before_resume"] == 0
    assert 0 < resumed["wall_seconds_before_resume"] < resumed["wall_seconds"]
    metrics = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")
    straight_rows = [[row[m] for m in metrics] for row in history(tmp_path / "straight" / "model")]
    resumed_rows = [[row[m] for m in metrics] for row in history(tmp_path / "resumed" / "model")]
    assert resumed_rows == straight_rows  # bit-identical: same weights, optimizer state, data, schedule
    weights = [keras.saving.load_model(tmp_path / name / "model" / "model.keras").get_weights()
               for name in ("straight", "resumed")]
    assert all(np.array_equal(a, b) for a, b in zip(*weights, strict=True))
    # Epoch 3 started the resumed session: it is left out of the steady-state rate.
    assert resumed["train_images_per_second_epochs"] == [2, 4]


# ---------------------------------------------------------------------------------------------
# Checkpoint files


def tiny_model() -> keras.Model:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.fit(np.ones((4, 4), np.float32), np.eye(2, dtype=np.float32)[[0, 1, 0, 1]], verbose=0)
    return model


def state(epoch: int, fingerprint: str = "f" * 64, **inputs) -> dict:
    return {"format": checkpoints.FORMAT_VERSION, "epoch": epoch, "fingerprint": fingerprint,
            "fingerprint_inputs": inputs, "history": [{"epoch": e} for e in range(1, epoch + 1)]}


def test_only_the_newest_checkpoint_is_kept_and_it_restores_the_optimizer(tmp_path: Path) -> None:
    model = tiny_model()
    checkpoints.save_checkpoint(tmp_path, model, state(1))
    checkpoints.save_checkpoint(tmp_path, model, state(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-0002"]
    found = checkpoints.find_checkpoint(tmp_path, "f" * 64)
    assert found is not None and found.epoch == 2 and found.state["history"][-1] == {"epoch": 2}
    restored = keras.models.load_model(found.model_path)
    assert int(restored.optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy()) == 1
    assert all(np.array_equal(a, b) for a, b in zip(restored.optimizer.variables, model.optimizer.variables, strict=True))


def test_a_save_killed_midway_leaves_the_previous_checkpoint_valid(tmp_path: Path, monkeypatch) -> None:
    model = tiny_model()
    checkpoints.save_checkpoint(tmp_path, model, state(1))
    # A kill during a save leaves a temporary folder of a dead process ...
    leftover = tmp_path / ".epoch-0002.tmp-999999999-dead"
    leftover.mkdir()
    (leftover / "model.keras").write_bytes(b"half a zip")
    found = checkpoints.find_checkpoint(tmp_path, "f" * 64)
    assert found is not None and found.epoch == 1
    # ... and a save that fails part-way leaves nothing of its own.
    monkeypatch.setattr(checkpoints.filesystem, "write_json", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        checkpoints.save_checkpoint(tmp_path, model, state(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".epoch-0002.tmp-999999999-dead", "epoch-0001"]
    monkeypatch.undo()
    checkpoints.save_checkpoint(tmp_path, model, state(2))  # the next good save cleans up
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-0002"]


def test_checkpoints_of_other_experiments_or_unreadable_are_ignored(tmp_path: Path, caplog) -> None:
    model = tiny_model()
    old_inputs = {"hparams": {"learning_rate": 0.001, "epochs": 5}, "seed": 1}
    checkpoints.save_checkpoint(tmp_path, model, state(3, "a" * 64, **old_inputs))
    new_inputs = {"hparams": {"learning_rate": 0.01, "epochs": 5}, "seed": 1}
    with caplog.at_level(logging.WARNING, logger="flowerlab.training.checkpoints"):
        assert checkpoints.find_checkpoint(tmp_path, "b" * 64, new_inputs) is None
    assert "differs in: hparams.learning_rate" in caplog.text
    (tmp_path / "epoch-0003" / "state.json").write_text("{not json")
    assert checkpoints.find_checkpoint(tmp_path, "a" * 64) is None
    assert checkpoints.find_checkpoint(tmp_path / "absent", "a" * 64) is None


def test_fingerprint_covers_code_data_settings_and_hparams() -> None:
    manifest = {"inventory_sha256": "i", "settings": {"image_size": 192},
                "shards": [{"file": "train-00-1.tfrec", "split": "train", "records": 1, "sha256": "s"}]}
    base = {"arch": "dense", "hparams": {"epochs": 2}, "seed": 1, "deterministic": False,
            "accelerator_kind": "cpu", "replicas": 1, "precision": "float32", "code": "c" * 64,
            "backend": "tensorflow"}
    reference = checkpoints.fingerprint(checkpoints.fingerprint_inputs(manifest, **base))
    assert reference == checkpoints.fingerprint(checkpoints.fingerprint_inputs(dict(manifest), **base))
    variants = [
        ({**manifest, "shards": [{**manifest["shards"][0], "sha256": "t"}]}, base),
        ({**manifest, "settings": {"image_size": 224}}, base),
        ({**manifest, "inventory_sha256": "j"}, base),
        (manifest, {**base, "hparams": {"epochs": 3}}),
        (manifest, {**base, "seed": 2}),
        (manifest, {**base, "arch": "convnet"}),
        (manifest, {**base, "accelerator_kind": "gpu"}),
        (manifest, {**base, "precision": "mixed_bfloat16"}),
        (manifest, {**base, "replicas": 8}),
        (manifest, {**base, "code": "d" * 64}),
        (manifest, {**base, "backend": "jax"}),
    ]
    for changed_manifest, changed in variants:
        assert checkpoints.fingerprint(checkpoints.fingerprint_inputs(changed_manifest, **changed)) != reference


def test_status_shows_each_training_running_stopped_or_done(tmp_path: Path) -> None:
    """`flowerlab status` from the files a run leaves: a progress file per training under way (its
    process alive: running; gone: stopped), a training.json per finished one."""
    results = tmp_path / "results"
    now = time.time()
    progress.write_progress(results / "checkpoints/convnet/seed-1", epoch=7, epochs=20, line="epoch 7/20 ...",
                            images_per_second=31.2, seconds_left=725.0)
    gone = progress.write_progress(results / "checkpoints/squeezenet/seed-2", epoch=12, epochs=35, line="...",
                                   images_per_second=16.0, seconds_left=3000.0)
    record = json.loads(gone.read_text())
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone.write_text(json.dumps({**record, "pid": int(dead.stdout)}))
    (results / "models/dense/seed-1").mkdir(parents=True)
    (results / "models/dense/seed-1/training.json").write_text(json.dumps({"epochs": 10, "wall_seconds": 150.0}))
    found = progress.trainings(results, now=now + 30)
    assert [(t.state, t.run) for t in found] == [("running", "convnet/seed-1"), ("stopped", "squeezenet/seed-2"),
                                                 ("done", "dense/seed-1")]
    assert "epoch 7/20 done, 31 img/s, about 12 min 05 s left (updated 30 s ago)" in found[0].text
    assert "rerunning the workflow resumes it" in found[1].text
    assert found[2].text.startswith("10 epochs in 2 min 30 s")
    printed = subprocess.run([sys.executable, "-m", "flowerlab", "status", "--results", str(results)],
                             capture_output=True, text=True, check=False)
    assert printed.returncode == 0 and "running  convnet/seed-1" in printed.stdout, printed.stderr
    missing = subprocess.run([sys.executable, "-m", "flowerlab", "status", "--results", str(tmp_path / "nowhere")],
                             capture_output=True, text=True, check=False)
    assert missing.returncode != 0 and "not found" in missing.stderr and "Traceback" not in missing.stderr
