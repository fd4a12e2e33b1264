"""What a training leaves behind: history.csv, model.keras and training.json (docs/architecture.md).

Also the session bookkeeping a resumed run needs to write them as an uninterrupted run would:
which epochs started a session (they trace graphs, so throughput leaves them out) and the wall
time of earlier sessions.
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowerlab import filesystem, provenance
from flowerlab.code_fingerprint import CodeVersion
from flowerlab.filesystem import sha256_file
from flowerlab.training import checkpoints, schedules
from flowerlab.training.setup import Batching, DataPlan, TrainSettings

HISTORY_COLUMNS = (
    "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "epoch_seconds",
    "images_per_second",
)
MODEL_FILE = "model.keras"
HISTORY_FILE = "history.csv"
RECORD_FILE = "training.json"


def steady_state_images_per_second(
    rows: Sequence[Mapping[str, Any]], session_first_epochs: Sequence[int]
) -> tuple[float | None, list[int]]:
    """Training images/s over the epochs that did not start a session (a session's first epoch
    traces the graphs and fills the cache). Returns (rate, epochs used). When every epoch
    started a session (a 1-epoch run), all epochs are used and listed, so the figure is never
    silently missing and its basis is always recorded.

    Every epoch trains on the same number of images, so the overall rate (total images / total
    training time) is the harmonic mean of the per-epoch rates.
    """
    first = set(session_first_epochs)
    rated = [row for row in rows if row.get("images_per_second")]
    used = [row for row in rated if row["epoch"] not in first] or rated
    if not used:
        return None, []
    rate = len(used) / sum(1.0 / float(row["images_per_second"]) for row in used)
    return rate, [int(row["epoch"]) for row in used]


def history_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """history.csv text: the documented columns, one row per epoch, empty cells for None."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: ("" if row.get(key) is None else row[key]) for key in HISTORY_COLUMNS})
    return buffer.getvalue()


def check_history(rows: Sequence[Mapping[str, Any]], epochs: int) -> None:
    """Each epoch 1..epochs exactly once, in order (a resume must neither repeat nor skip one)."""
    found = [row["epoch"] for row in rows]
    if found != list(range(1, epochs + 1)):
        raise RuntimeError(f"history rows are for epochs {found}, expected 1..{epochs}")


def best_and_final(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[float | None, float | None]:
    values = [row[key] for row in rows if row.get(key) is not None]
    return (max(values) if values else None), (rows[-1].get(key) if rows else None)


def inference_copy(model: Any) -> Any:
    """The trained model without optimizer state, in stock Keras layers: what model.keras holds
    (image -> probabilities), which plain Keras opens without flowerlab.

    The optimizer's moments would double or triple the file for nothing evaluation needs, and
    make the reported model size meaningless. Rebuilt from its config rather than with
    `keras.models.clone_model`, which in Keras 3.15 carries the compiled optimizer over (the
    dense model's file was 3x its weights).
    """
    from flowerlab.models.layers import stock_config

    copy = model.__class__.from_config(stock_config(model.get_config()))
    copy.set_weights(model.get_weights())
    return copy


def save_model_atomically(model: Any, path: Path) -> None:
    """Keras needs the .keras suffix, so the temporary name ends with it too."""
    temporary = path.with_name(f".{path.stem}.tmp-{os.getpid()}.keras")
    try:
        model.save(temporary)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_outputs(out_dir: Path, model: Any, rows: Sequence[Mapping[str, Any]], record: Mapping[str, Any]) -> None:
    """model.keras, history.csv, then training.json (the last one written marks completion)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    save_model_atomically(inference_copy(model), out_dir / MODEL_FILE)
    filesystem.write_text(out_dir / HISTORY_FILE, history_csv(rows))
    filesystem.write_json(out_dir / RECORD_FILE, dict(record))


@dataclass
class Session:
    """What this process adds to a (possibly resumed) training run."""

    started: float = field(default_factory=time.monotonic)
    initial_epoch: int = 0
    prior_wall_seconds: float = 0.0
    session_first_epochs: list[int] = field(default_factory=list)
    prior_rows: list[dict[str, Any]] = field(default_factory=list)

    def wall_seconds(self) -> float:
        return self.prior_wall_seconds + (time.monotonic() - self.started)


def start_session(resume: checkpoints.Checkpoint | None, epochs: int) -> Session:
    """A fresh session, or one continuing `resume`'s epochs, history and wall time."""
    session = Session()
    if resume is not None:
        session.initial_epoch = resume.epoch
        session.prior_wall_seconds = float(resume.state.get("wall_seconds", 0.0))
        session.session_first_epochs = list(resume.state.get("session_first_epochs", []))
        session.prior_rows = list(resume.state.get("history", []))
        check_history(session.prior_rows, resume.epoch)
    if session.initial_epoch < epochs:
        session.session_first_epochs.append(session.initial_epoch + 1)
    return session

def train_throughput(rows: Sequence[Mapping[str, Any]], session: Session, cache_record: Mapping[str, Any],
                     epochs: int) -> tuple[float | None, list[int]]:
    """The training's images/s and the epochs it is taken from: on cached features, amortised over
    every epoch with the extraction included (what that path costs); else the steady state."""
    if cache_record["used"]:
        return cache_record["amortised_images_per_second"], list(range(1, epochs + 1))
    return steady_state_images_per_second(rows, session.session_first_epochs)


def training_record(settings: TrainSettings, *, model: Any, device: Any, precision: str, plan: DataPlan,
                    batching: Batching, session: Session, rows: Sequence[Mapping[str, Any]],
                    resumed_from_epoch: int, weights: str, fingerprint: str,
                    data_settings: Mapping[str, Any], data_source: str | None, weights_sha256: str | None,
                    code: CodeVersion, throughput: tuple[float | None, list[int]],
                    cache_record: Mapping[str, Any], classes: Sequence[str], precision_choice: Any,
                    kernels: Mapping[str, Any], hardware_share: Mapping[str, Any],
                    backend: Mapping[str, Any]) -> dict[str, Any]:
    """training.json, whole (docs/architecture.md): the figures that explain it (sizes, batches),
    what a rerun needs besides the manifest's checksum (the data stage's settings, the local
    weights' sha256, the accelerator asked for and the thread limit), and how fast it ran."""
    from flowerlab.models.build import count_parameters

    total, trainable = count_parameters(model)
    images_per_second, steady_epochs = throughput
    best_val, final_val = best_and_final(rows, "val_accuracy")
    return {
        "arch": settings.arch,
        "hparams": settings.hparams,
        "learning_rate_schedule": schedules.describe(settings.hparams),  # in words, for the report
        "backend": dict(backend),  # Keras' backend and its library's version
        "backend_requested": settings.backend,
        "device": device.to_json(),
        "precision": precision,
        "seed": settings.seed,
        "deterministic": settings.deterministic,
        "versions": provenance.library_versions(),
        "wall_seconds": session.wall_seconds(),
        # The parts of the training before this process resumed it (0 when it ran straight through):
        # its Snakemake benchmark file times only the last part.
        "wall_seconds_before_resume": session.prior_wall_seconds,
        "train_images_per_second": images_per_second,
        "train_images_per_second_epochs": steady_epochs,
        "epochs": int(settings.hparams["epochs"]),
        "best_val_accuracy": best_val,
        "final_val_accuracy": final_val,
        "parameters": {"total": int(total), "trainable": int(trainable)},
        "resumed_from_epoch": resumed_from_epoch,
        "manifest_sha256": sha256_file(settings.manifest),
        # The fingerprint of the code that trained (flowerlab.code_fingerprint), and its git commit.
        "code_version": {**provenance.code_version(), "fingerprint": code.sha256, "modules": code.modules},
        "image_size": plan.image_size,
        "weights": weights,
        "weights_sha256": weights_sha256,  # None for imagenet (Keras' pinned file) and none
        "data_settings": dict(data_settings),
        "data_source": data_source,  # the manifest's: official, synthetic or a folder
        "accelerator_requested": settings.accelerator,
        "threads": settings.threads,  # None: TensorFlow's default pools (all cores)
        "global_batch_size": batching.global_batch,
        "steps_per_epoch": batching.steps_per_epoch,
        "train_records": plan.train_records,
        "validation_records": plan.validation_records,
        "fingerprint": fingerprint,
        "feature_cache": dict(cache_record),
        "classes": list(classes),  # the model's outputs, in order (flowerlab predict)
        "precision_choice": precision_choice,
        "kernels": dict(kernels),
        "hardware_share": dict(hardware_share),
    }

