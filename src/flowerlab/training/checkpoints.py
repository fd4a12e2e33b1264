"""Resumable training: one checkpoint folder per finished epoch, written atomically.

Layout of a checkpoint directory (results/checkpoints/{arch}/{replicate}/):

    epoch-0003/model.keras   the compiled model: weights + optimizer state (Adam moments, step)
    epoch-0003/state.json    epochs finished, history rows so far, the fingerprint and what it
                             was computed from, seeds, accumulated wall time

A checkpoint is written into a temporary folder beside it (`.epoch-0003.tmp-<pid>-...`) and
renamed into place in one `os.replace`: a kill at any moment leaves either the new checkpoint or
the previous one complete, never a half-written folder under a valid name. Only then are older
checkpoints deleted, so the newest complete one always survives.

The fingerprint is the sha256 of everything that decides the numbers of a run (the training
code, the data, the hyperparameters, seed, architecture, device kind, replicas, precision,
determinism). A checkpoint
with another fingerprint belongs to another experiment: it is ignored (the log says which
setting differs) and training starts fresh.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowerlab import filesystem
from flowerlab.filesystem import pid_alive

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MODEL_FILE = "model.keras"
STATE_FILE = "state.json"
_EPOCH_DIR = re.compile(r"^epoch-(\d{4,})$")
_TEMPORARY = re.compile(r"^\.epoch-\d{4,}\.tmp-(\d+)-")


@dataclass(frozen=True)
class Checkpoint:
    path: Path  # the epoch folder
    state: dict[str, Any]

    @property
    def epoch(self) -> int:
        """Epochs finished when it was written (= the `initial_epoch` to resume with)."""
        return int(self.state["epoch"])

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE


def epoch_dir_name(epoch: int) -> str:
    return f"epoch-{epoch:04d}"


# --------------------------------------------------------------------------------------------
# Fingerprint
# --------------------------------------------------------------------------------------------


def manifest_identity(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of the manifest that identify the data: inventory, settings, shard checksums."""
    return {
        "inventory_sha256": manifest.get("inventory_sha256"),
        "settings": manifest.get("settings"),
        "shards": sorted(
            [shard.get("file"), shard.get("split"), shard.get("records"), shard.get("sha256")]
            for shard in manifest.get("shards", [])
        ),
    }


def fingerprint_inputs(
    manifest: Mapping[str, Any],
    *,
    arch: str,
    hparams: Mapping[str, Any],
    seed: int,
    deterministic: bool,
    accelerator_kind: str,
    replicas: int,
    precision: str,
    code: str,
    backend: str,
) -> dict[str, Any]:
    """Everything a checkpoint must share with the current run to be resumed by it; `code` is
    the training code's fingerprint (flowerlab.code_fingerprint): other code, other experiment."""
    return {
        "format": FORMAT_VERSION,
        "code": code,
        "arch": arch,
        "hparams": dict(sorted(hparams.items())),
        "seed": seed,
        "deterministic": deterministic,
        "backend": backend,  # a checkpoint is resumed only by the backend that wrote it
        "accelerator_kind": accelerator_kind,
        "replicas": replicas,  # the global batch and ramp_decay's peak scale with them
        "precision": precision,
        "data": manifest_identity(manifest),
    }


def fingerprint(inputs: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of `inputs` (sorted keys, no whitespace)."""
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def differing_keys(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two fingerprint inputs (for the log)."""
    flat_old, flat_new = _flatten(old), _flatten(new)
    return sorted(key for key in flat_old.keys() | flat_new.keys() if flat_old.get(key) != flat_new.get(key))


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:  # some file systems do not allow opening a folder
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def save_checkpoint(directory: str | os.PathLike[str], model: Any, state: Mapping[str, Any]) -> Path:
    """Write `model` (with its optimizer) and `state` as the checkpoint of `state["epoch"]`.

    Atomic: written in a temporary folder, then renamed into place; older checkpoints are
    deleted only after that. Returns the new checkpoint's folder.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = epoch_dir_name(int(state["epoch"]))
    temporary = directory / f".{name}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
    temporary.mkdir()
    try:
        model.save(temporary / MODEL_FILE)
        _fsync_file(temporary / MODEL_FILE)
        filesystem.write_json(temporary / STATE_FILE, dict(state))
        _fsync_dir(temporary)
        final = directory / name
        if final.exists():  # left by an earlier run of the same epoch: superseded
            shutil.rmtree(final)
        os.replace(temporary, final)
        _fsync_dir(directory)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    remove_other_checkpoints(directory, keep=final)
    return final


def remove_other_checkpoints(directory: Path, *, keep: Path | None) -> None:
    """Delete every checkpoint but `keep`, and temporaries left by killed runs."""
    for entry in directory.iterdir():
        if keep is not None and entry == keep:
            continue
        temporary = _TEMPORARY.match(entry.name)
        if temporary:
            pid = int(temporary.group(1))
            if pid != os.getpid() and pid_alive(pid):
                continue  # another live run is writing it
            shutil.rmtree(entry, ignore_errors=True)
        elif _EPOCH_DIR.match(entry.name) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


def remove_checkpoints(directory: str | os.PathLike[str]) -> None:
    """Delete all checkpoints (after the outputs of a finished run are in place)."""
    directory = Path(directory)
    if directory.is_dir():
        remove_other_checkpoints(directory, keep=None)
        with contextlib.suppress(OSError):  # something else lives there: leave it
            directory.rmdir()


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _read_state(folder: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        logger.warning("ignoring checkpoint %s: unreadable %s (%s)", folder, STATE_FILE, error)
        return None
    if not isinstance(state, dict) or not isinstance(state.get("epoch"), int):
        logger.warning("ignoring checkpoint %s: %s has no epoch number", folder, STATE_FILE)
        return None
    return state


def find_checkpoint(
    directory: str | os.PathLike[str], expected_fingerprint: str, inputs: Mapping[str, Any] | None = None
) -> Checkpoint | None:
    """The newest complete checkpoint made with `expected_fingerprint`, or None.

    Checkpoints with another fingerprint are logged (with the settings that differ, when
    `inputs` is given) and skipped.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return None
    candidates = sorted(
        (int(match.group(1)), entry)
        for entry in directory.iterdir()
        if (match := _EPOCH_DIR.match(entry.name)) and entry.is_dir()
    )
    for _, folder in reversed(candidates):
        state = _read_state(folder)
        if state is None:
            continue
        if state.get("fingerprint") != expected_fingerprint:
            old_inputs = state.get("fingerprint_inputs") or {}
            changed = differing_keys(old_inputs, inputs) if inputs else []
            if "code" in changed:
                logger.warning(
                    "ignoring checkpoint %s: made by other code (training code %s, now %s); training starts fresh",
                    folder, str(old_inputs.get("code"))[:12], str(inputs.get("code"))[:12],
                )
                continue
            logger.warning(
                "ignoring checkpoint %s: made with other inputs or settings%s; training starts fresh",
                folder,
                f" (differs in: {', '.join(changed)})" if changed else "",
            )
            continue
        if not (folder / MODEL_FILE).is_file():
            logger.warning("ignoring checkpoint %s: %s is missing", folder, MODEL_FILE)
            continue
        return Checkpoint(folder, state)
    return None
