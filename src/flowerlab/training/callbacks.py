"""Keras callbacks of `flowerlab train`: per-epoch records, checkpoints and progress lines.

Keras calls callbacks in list order at the end of an epoch; the training stage passes
[scheduler, EpochRecorder, EpochCheckpointer, EpochLogger, ...] so that the history row exists
before the checkpoint that stores it and before the log line that prints it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import keras

from flowerlab.console import duration
from flowerlab.filesystem import json_safe
from flowerlab.training import checkpoints, progress
from flowerlab.training.stopping import StopRequest

logger = logging.getLogger(__name__)


def finite_or_none(value: Any) -> float | None:
    """A float for the records; NaN/inf (a diverged run) become None, which JSON can hold."""
    return None if value is None else json_safe(float(value))


def current_learning_rate(model: keras.Model) -> float:
    """The optimizer's learning rate now (LossScaleOptimizer forwards to the inner one)."""
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


class EpochRecorder(keras.callbacks.Callback):
    """One history row per epoch (docs/architecture.md's history.csv columns).

    `epoch_seconds` is the whole epoch (training + validation); `images_per_second` counts the
    training part only (up to the start of validation), so it measures training throughput.
    """

    def __init__(self, *, images_per_epoch: int, rows: list[dict[str, Any]] | None = None) -> None:
        super().__init__()
        self.images_per_epoch = images_per_epoch
        self.rows: list[dict[str, Any]] = list(rows or [])
        self._epoch_start = 0.0
        self._train_end: float | None = None
        self._charged_training = 0.0
        self._charged_other = 0.0
        self.fit_train_seconds: list[float] = []  # the training part of each epoch Keras ran here

    def charge(self, *, training: float = 0.0, other: float = 0.0) -> None:
        """Work for the next epoch done outside Keras' epoch (the frozen-backbone path's feature
        extraction): `training` seconds count as training time (in images/s too), `other` seconds
        (validation features, checks) only in the epoch's seconds."""
        self._charged_training += training
        self._charged_other += other

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._epoch_start = time.perf_counter()
        self._train_end = None

    def on_test_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        if self._train_end is None:
            self._train_end = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        logs = dict(logs or {})
        end = time.perf_counter()
        train_seconds = (self._train_end or end) - self._epoch_start
        row = {
            "epoch": epoch + 1,
            "loss": finite_or_none(logs.get("loss")),
            "accuracy": finite_or_none(logs.get("accuracy")),
            "val_loss": finite_or_none(logs.get("val_loss")),
            "val_accuracy": finite_or_none(logs.get("val_accuracy")),
            "learning_rate": current_learning_rate(self.model),
            "epoch_seconds": end - self._epoch_start + self._charged_training + self._charged_other,
            "images_per_second": self.images_per_epoch / (train_seconds + self._charged_training)
            if train_seconds > 0
            else None,
        }
        self.fit_train_seconds.append(train_seconds)
        self._charged_training = self._charged_other = 0.0
        if row["loss"] is None:
            logger.warning("epoch %d: the loss is not finite (%s): training diverged", epoch + 1, logs.get("loss"))
        self.rows.append(row)


class EpochCheckpointer(keras.callbacks.Callback):
    """After every epoch, the model (with optimizer state) and `state_for(epochs_done, rows)`."""

    def __init__(
        self,
        directory: Path,
        recorder: EpochRecorder,
        state_for: Callable[[int, list[dict[str, Any]]], dict[str, Any]],
    ) -> None:
        super().__init__()
        self.directory = directory
        self.recorder = recorder
        self.state_for = state_for

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        started = time.perf_counter()
        path = checkpoints.save_checkpoint(self.directory, self.model, self.state_for(epoch + 1, self.recorder.rows))
        logger.debug("checkpoint %s written in %.2f s", path, time.perf_counter() - started)


class StopAtBatchBoundary(keras.callbacks.Callback):
    """Raises a pending stop request (flowerlab.training.stopping) before a batch or an epoch begins.

    Batch-begin hooks, not batch-end ones: a batch-end hook turns off Keras' asynchronous
    dispatch of those hooks for every callback.
    """

    def __init__(self, request: StopRequest) -> None:
        super().__init__()
        self.request = request

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self.request.raise_if_requested()

    def on_train_batch_begin(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        self.request.raise_if_requested()

    def on_test_batch_begin(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        self.request.raise_if_requested()


def format_epoch(row: Mapping[str, Any], epochs: int, left_seconds: float | None = None) -> str:
    """'epoch 3/20 loss 0.8123 acc 0.6512 val_loss 0.9012 val_acc 0.6100 lr 1.00e-03 12.3 s 243 img/s',
    then ', about 3 min 30 s left' when `left_seconds` is given."""

    def number(value: Any, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    return (
        f"epoch {row['epoch']}/{epochs} loss {number(row['loss'], '.4f')} acc {number(row['accuracy'], '.4f')} "
        f"val_loss {number(row['val_loss'], '.4f')} val_acc {number(row['val_accuracy'], '.4f')} "
        f"lr {number(row['learning_rate'], '.2e')} {row['epoch_seconds']:.1f} s "
        f"{number(row['images_per_second'], '.0f')} img/s"
        + (f", about {duration(left_seconds)} left" if left_seconds is not None and row["epoch"] < epochs else "")
    )


class EpochLogger(keras.callbacks.Callback):
    """One progress line per epoch: into the log (what a Snakemake log, not a terminal, shows of the
    progress) unless `log_lines` is off (a terminal has Keras' bar), and into `progress_dir`'s
    progress file for `flowerlab status` (flowerlab.training.progress)."""

    def __init__(self, recorder: EpochRecorder, epochs: int, *, progress_dir: Path | None = None,
                 log_lines: bool = True) -> None:
        super().__init__()
        self.recorder = recorder
        self.epochs = epochs
        self.progress_dir = progress_dir
        self.log_lines = log_lines
        self.seen = 0  # epochs this process trained

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self.seen += 1
        row = self.recorder.rows[-1]
        # This process's epochs after its first (which traces the graph and fills the input
        # cache) say best what the rest will take; the first alone when there is no other.
        own = [r["epoch_seconds"] for r in self.recorder.rows[-self.seen:]]
        typical = sum(own[1:]) / len(own[1:]) if len(own) > 1 else own[0]
        left = typical * (self.epochs - int(row["epoch"]))
        line = format_epoch(row, self.epochs, left)
        if self.log_lines:
            logger.info(line)
        if self.progress_dir is not None:
            progress.write_progress(self.progress_dir, epoch=int(row["epoch"]), epochs=self.epochs, line=line,
                                    images_per_second=row.get("images_per_second"), seconds_left=left)
