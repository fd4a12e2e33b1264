"""Training commands stopped from outside, as a crash, Ctrl-C or a scheduler stops them."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path


def train_command(manifest: Path, folder: Path, checkpoint_dir: Path, hparams: dict, *options: str) -> list[str]:
    """`flowerlab train` of the dense model on the CPU, seed 5, with `options`; --threads 2 comes last
    (a test drops it to call the command in process, where TensorFlow already runs)."""
    return [sys.executable, "-m", "flowerlab", "train", "--arch", "dense", "--manifest", str(manifest),
            "--out-dir", str(folder / "model"), "--checkpoint-dir", str(checkpoint_dir),
            "--hparams", json.dumps(hparams), "--accelerator", "cpu", "--seed", "5", *options, "--threads", "2"]


def history(out_dir: Path) -> list[dict[str, str]]:
    with open(out_dir / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def kill_after_first_checkpoint(command: list[str], checkpoint_dir: Path, log: Path,
                                how: signal.Signals = signal.SIGKILL, *, env: dict[str, str] | None = None,
                                wait_seconds: float = 120) -> int:
    """Send `how` to the training once its first checkpoint is there; its exit status."""
    with open(log, "w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
    deadline = time.monotonic() + wait_seconds
    try:
        while not any(checkpoint_dir.glob("epoch-*")):
            assert process.poll() is None, f"training exited ({process.returncode}) before a checkpoint:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no checkpoint after {wait_seconds} s:\n{log.read_text()}"
            time.sleep(0.01)
        process.send_signal(how)
        process.wait(timeout=60)
    finally:
        process.kill()
        process.wait()
    assert process.returncode != 0, "training finished before it could be stopped"
    return process.returncode
