"""Keras 3 on JAX: which backend a run picks, JAX's devices, training data-parallel over the CPU's
devices, resuming, and models that open on TensorFlow.

JAX runs here on the CPU split into 4 devices (XLA_FLAGS=--xla_force_host_platform_device_count=4),
the same code path as a TPU's cores; the TPU itself is simulated by the detection hooks."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from jax_study import FOUR_DEVICES
from portable import predict_without_flowerlab
from synthetic_records import write_dataset
from training_runs import history, kill_after_first_checkpoint, train_command
from workflow_runs import copy_workflow, snakemake

from flowerlab import backends
from flowerlab.errors import ConfigError
from flowerlab.models.build import build_model, count_parameters
from flowerlab.models.flops import forward_flops
from flowerlab.models.registry import ARCH_NAMES
from flowerlab.training import checkpoints, stage

TESTS = Path(__file__).resolve().parent

# train() sets process-wide TensorFlow state; conftest puts it back after this module.
pytestmark = pytest.mark.usefixtures("restore_tensorflow_globals")


def jax_environment() -> dict[str, str]:
    return {**os.environ, **FOUR_DEVICES, "KERAS_BACKEND": "jax"}


# ---------------------------------------------------------------------------------------------
# Which backend, which devices (the hardware simulated)


def test_auto_picks_jax_where_a_tpu_is_attached_and_tensorflow_elsewhere(tmp_path: Path) -> None:
    assert backends.resolve("auto", "auto", tpu_detected=lambda: True) == "jax"
    assert backends.resolve("auto", "auto", tpu_detected=lambda: False) == "tensorflow"
    assert backends.resolve("auto", "gpu", tpu_detected=lambda: True) == "tensorflow"
    assert backends.resolve("auto", "tpu", tpu_detected=lambda: False) == "jax"
    assert backends.resolve("jax", "cpu") == "jax"
    with pytest.raises(ConfigError, match="cannot train on TPUs"):
        backends.resolve("tensorflow", "tpu")
    with pytest.raises(ConfigError, match="'backend'"):
        backends.resolve("pytorch", "auto")
    # The detection looks for the device files a TPU VM exposes.
    assert not backends.tpu_attached((str(tmp_path / "accel[0-9]*"),))
    (tmp_path / "accel0").touch()
    assert backends.tpu_attached((str(tmp_path / "accel[0-9]*"),))


@dataclass(frozen=True)
class FakeDevice:
    platform: str
    device_kind: str
    id: int


def test_jax_trains_on_every_tpu_core_data_parallel_and_says_when_there_is_none() -> None:
    from flowerlab.jax_devices import select_devices

    cores = [FakeDevice("tpu", "TPU v5 lite", i) for i in range(4)]
    distributed: list[list[FakeDevice]] = []
    device = select_devices("auto", list_devices=lambda platform: cores if platform in (None, "tpu") else [],
                            distribute=distributed.append, hide_tensorflow_gpus=lambda: None)
    assert (device.kind, device.name, device.replicas) == ("tpu", "4 x TPU v5 lite", 4)
    assert distributed == [cores]
    assert device.to_json() == {"kind": "tpu", "name": "4 x TPU v5 lite", "replicas": 4,
                                "distribution": "DataParallel"}
    one = select_devices("tpu", list_devices=lambda platform: cores[:1], distribute=distributed.append,
                         hide_tensorflow_gpus=lambda: None)
    assert one.replicas == 1 and one.distribution is None and len(distributed) == 1
    for accelerator, missing in (("tpu", "finds no TPU"), ("gpu", "finds no GPU")):
        with pytest.raises(ConfigError, match=missing):
            select_devices(accelerator, list_devices=lambda platform: [], distribute=distributed.append,
                           hide_tensorflow_gpus=lambda: None)


def test_accelerator_tpu_without_a_tpu_stops_the_workflow_before_any_job(tmp_path: Path) -> None:
    workdir = copy_workflow(tmp_path / "study")
    for dry_run in ([], ["-n"]):
        result = snakemake(workdir, "--cores", "1", "--configfile", "config/smoke.yaml", *dry_run,
                           "--config", "accelerator=tpu")
        output = result.stdout + result.stderr
        assert "'accelerator' is 'tpu' but this machine has no TPU" in output, output[-3000:]
        assert "Traceback" not in output
    assert result.returncode == 0  # the dry-run reports it and plans; the real run stopped:
    assert not (workdir / "results").exists()
    result = snakemake(workdir, "--cores", "1", "--configfile", "config/smoke.yaml",
                       "--config", "accelerator=tpu", "backend=tensorflow")
    assert result.returncode != 0 and "cannot train on TPUs" in result.stderr


def test_the_time_estimate_says_it_does_not_measure_jax_trainings(tmp_path: Path) -> None:
    """Its probe times Keras on TensorFlow: for JAX trainings it says so rather than print that rate."""
    (tmp_path / "jax.yaml").write_text("backend: jax\n")
    config = TESTS.parent / "config"
    result = subprocess.run([sys.executable, "-m", "flowerlab", "estimate", "--base", str(config / "config.yaml"),
                             "--configfile", str(config / "smoke.yaml"), "--configfile", str(tmp_path / "jax.yaml"),
                             "--speed-cache", str(tmp_path / "speed")], capture_output=True, text=True, timeout=120,
                            check=False, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "no estimate: the trainings run on Keras' JAX backend" in result.stdout
    assert not (tmp_path / "speed").exists()  # nothing measured


# ---------------------------------------------------------------------------------------------
# Every architecture on JAX: same parameters, the same model on TensorFlow


@pytest.mark.slow  # every architecture compiled by XLA, then a plain TensorFlow-backend process
def test_every_architecture_trains_on_jax_and_opens_in_plain_tensorflow_keras(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(TESTS / "jax_training.py"), str(tmp_path)], capture_output=True,
                            text=True, timeout=900, check=False, env=jax_environment())
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["backend"] == "jax"
    assert summary["device"] == {"kind": "cpu", "name": summary["device"]["name"], "replicas": 4,
                                 "distribution": "DataParallel"}
    assert set(summary["models"]) == set(ARCH_NAMES)
    for arch, trained in summary["models"].items():
        assert np.isfinite(trained["loss"]), arch
        on_tensorflow = build_model(arch, num_classes=4, image_size=trained["image_size"], weights="none")
        assert tuple(trained["parameters"]) == count_parameters(on_tensorflow), arch
        # The same model's FLOPs, counted by XLA on JAX and by TensorFlow's profiler, agree: the
        # hardware share of a JAX training is set against what the model computes. They differ by
        # what each counts beside the products: XLA the element-wise ops, TensorFlow the multiplies
        # by the zero padding of 'same' convolutions (12% of the convnet's at these 32 px, 2% at 192).
        on_jax_flops, tensorflow_flops = trained["forward_flops"], forward_flops(on_tensorflow, trained["image_size"])[0]
        assert on_jax_flops == pytest.approx(tensorflow_flops, rel=0.15), (arch, on_jax_flops, tensorflow_flops)
        assert "flowerlab" not in trained["layers"], arch  # stock Keras layers only
    models = {arch: tmp_path / f"{arch}.keras" for arch in ARCH_NAMES}
    images = {arch: np.load(tmp_path / f"{arch}-images.npy") for arch in ARCH_NAMES}
    loaded = predict_without_flowerlab(models, images, tmp_path, backend="tensorflow")
    for arch in ARCH_NAMES:
        # XLA's and oneDNN's float32 kernels sum the same products in another order (about 1e-6 apart
        # per layer); 1e-4 on a probability leaves a wide margin and changes no prediction.
        on_jax = np.load(tmp_path / f"{arch}-probabilities.npy")
        np.testing.assert_allclose(loaded[arch], on_jax, atol=1e-4, err_msg=arch)


# ---------------------------------------------------------------------------------------------
# The training command on JAX: killed, resumed; its checkpoint is never resumed by TensorFlow


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data"), image_size=16, num_classes=3,
                         train_per_class=16, validation_per_class=5)


def train_on(backend: str, manifest: Path, folder: Path, checkpoint_dir: Path, hparams: dict) -> list[str]:
    return train_command(manifest, folder, checkpoint_dir, hparams, "--backend", backend, "--deterministic",
                         "--peak-cache", str(folder.parent / "peak"),
                         "--compile-cache", str(checkpoint_dir.parent / "jax-compilation"))


# JAX keeps only compilations over a second by default; the test's tiny model compiles faster. Its
# compiler module logs each persistent-cache hit at debug level.
CACHE_EVERYTHING = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_DEBUG_LOG_MODULES": "jax._src.compiler"}
CACHE_HIT = "Persistent compilation cache hit"


@pytest.mark.slow
def test_a_jax_training_killed_after_its_first_checkpoint_resumes_and_tensorflow_never_resumes_it(
        manifest: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    epochs = 10  # a fraction of a second each once compiled: the kill lands long before the end
    hparams = {"epochs": epochs, "batch_size": 4, "precision": "float32"}
    checkpoint_dir = tmp_path / "checkpoints"
    command = train_on("jax", manifest, tmp_path, checkpoint_dir, hparams)
    assert kill_after_first_checkpoint(command, checkpoint_dir, tmp_path / "killed.log",
                                       env={**jax_environment(), **CACHE_EVERYTHING}, wait_seconds=300) == -signal.SIGKILL
    state = json.loads(next(checkpoint_dir.glob("epoch-*/state.json")).read_text())
    saved = checkpoints.find_checkpoint(checkpoint_dir, state["fingerprint"])
    assert saved is not None and 1 <= saved.epoch < epochs
    assert saved.state["fingerprint_inputs"]["backend"] == "jax"
    shutil.copytree(checkpoint_dir, tmp_path / "checkpoints-copy")

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False,
                           env={**jax_environment(), **CACHE_EVERYTHING})
    assert rerun.returncode == 0, rerun.stderr[-5000:]
    assert f"resuming dense from {checkpoint_dir}" in rerun.stderr
    record = json.loads((tmp_path / "model" / "training.json").read_text())
    assert record["resumed_from_epoch"] >= saved.epoch
    assert record["backend"]["name"] == "jax" and record["backend_requested"] == "jax"
    assert record["device"]["replicas"] == 4 and record["device"]["distribution"] == "DataParallel"
    assert record["global_batch_size"] == 16
    assert [int(row["epoch"]) for row in history(tmp_path / "model")] == list(range(1, epochs + 1))

    # Seeded determinism on JAX's CPU devices: the same training straight through gives the same
    # losses and accuracies, epoch by epoch, as the killed and resumed one.
    # It also compiles nothing: every step comes from the compilation cache the first run filled.
    cached = sorted(path.name for path in (tmp_path / "jax-compilation").iterdir())
    assert cached, "the first JAX training left nothing in its compilation cache"
    straight = subprocess.run(train_on("jax", manifest, tmp_path / "straight", tmp_path / "straight-checkpoints",
                                       hparams), capture_output=True, text=True, timeout=600, check=False,
                              env={**jax_environment(), **CACHE_EVERYTHING})
    assert straight.returncode == 0, straight.stderr[-5000:]
    assert CACHE_HIT in straight.stderr, straight.stderr[-5000:]
    assert sorted(path.name for path in (tmp_path / "jax-compilation").iterdir()) == cached
    figures = ("loss", "accuracy", "val_loss", "val_accuracy")
    assert ([[row[figure] for figure in figures] for row in history(tmp_path / "straight" / "model")]
            == [[row[figure] for figure in figures] for row in history(tmp_path / "model")])

    # The same checkpoint, offered to the TensorFlow backend (in process: TensorFlow is loaded here).
    on_tensorflow = train_on("tensorflow", manifest, tmp_path / "tf", tmp_path / "checkpoints-copy", hparams)
    with caplog.at_level(logging.INFO):
        assert stage.cli(on_tensorflow[3:-2]) == 0  # without --threads (TensorFlow is running)
    differs = caplog.text.split("differs in: ", 1)[1].split(")", 1)[0].split(", ")
    assert "backend" in differs, caplog.text
    record = json.loads((tmp_path / "tf" / "model" / "training.json").read_text())
    assert record["resumed_from_epoch"] == 0 and record["backend"]["name"] == "tensorflow"
