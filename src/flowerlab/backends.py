"""Which Keras backend a training runs on, chosen before Keras loads.

    backend: auto | tensorflow | jax        (config key, beside `accelerator`)

- tensorflow: Keras on TensorFlow, with the project's measured TensorFlow speedups (oneDNN kernels
  on every x86-64 CPU, the fused batch norm, the fused Adam update, the frozen backbone's feature
  cache). TensorFlow 2.21 has no TPU support (its TPU builds stop at 2.20), so it never trains on
  a TPU.
- jax: Keras on JAX, on the devices `jax.devices()` lists (TPU cores, GPUs or the CPU), data-parallel
  over all of them with `keras.distribution.DataParallel`. The models are built from stock Keras
  layers; the TFRecords still feed it through tf.data on the host CPU.
- auto: jax where a TPU is attached, tensorflow everywhere else. On a CPU Keras on JAX trained
  squeezenet at about half the speed of Keras on TensorFlow with oneDNN (XLA's CPU convolutions);
  on NVIDIA GPUs both backends work and neither was measured here (no GPU), so auto keeps the
  TensorFlow path whose kernels this project measured, and `backend: jax` is one key away.

Keras reads its backend from `KERAS_BACKEND` once, when it is imported, so `activate` runs before
anything imports Keras (`flowerlab train` calls it after parsing its arguments). No Keras or
TensorFlow import at module level.
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Callable
from typing import Any

from flowerlab.errors import ConfigError, FlowerlabError

BACKENDS = ("auto", "tensorflow", "jax")
# Where a TPU VM exposes its chips: /dev/accel0.. (TPU v2-v4) or VFIO groups (v5e, v5p, v6e). The
# same device files libtpu opens; looking for them costs nothing and needs neither JAX nor libtpu.
TPU_DEVICE_PATTERNS = ("/dev/accel[0-9]*", "/dev/vfio/[0-9]*")


def tpu_attached(patterns: tuple[str, ...] = TPU_DEVICE_PATTERNS) -> bool:
    """Whether this machine exposes TPU chips (the detection hook `resolve` uses by default)."""
    return any(glob.glob(pattern) for pattern in patterns)


def resolve(requested: str, accelerator: str, *, tpu_detected: Callable[[], bool] | None = None) -> str:
    """The backend ("tensorflow" or "jax") for config `backend` and `accelerator` on this machine.

    `tpu_detected` replaces the TPU detection (tests simulate a TPU VM with it)."""
    if requested not in BACKENDS:
        raise ConfigError(f"config key 'backend': {requested!r} is not one of {', '.join(BACKENDS)}")
    if requested == "tensorflow" and accelerator == "tpu":
        raise ConfigError(
            "config key 'accelerator' is 'tpu' with backend 'tensorflow': TensorFlow 2.21 cannot train on "
            "TPUs (its TPU builds stop at 2.20); set backend to auto or jax")
    if requested != "auto":
        return requested
    if accelerator == "tpu":
        return "jax"
    detected = tpu_detected or tpu_attached
    return "jax" if accelerator == "auto" and detected() else "tensorflow"


def check_accelerator(accelerator: str, backend: str, *, tpu_detected: Callable[[], bool] | None = None) -> None:
    """A TPU asked for where this machine has none, or of a backend that cannot use one, is a
    ConfigError before any job runs (the workflow checks it for local runs)."""
    detected = tpu_detected or tpu_attached
    resolve(backend, accelerator, tpu_detected=detected)  # tensorflow + tpu
    if accelerator == "tpu" and not detected():
        raise ConfigError(
            "config key 'accelerator' is 'tpu' but this machine has no TPU (no "
            f"{' or '.join(TPU_DEVICE_PATTERNS)}); on a Cloud TPU VM install the TPU extra (README), "
            "elsewhere set accelerator to auto")


def activate(backend: str) -> str:
    """Make Keras, when it loads, run on `backend`; an error when Keras already runs on another."""
    if backend not in BACKENDS[1:]:
        raise ConfigError(f"backend must be tensorflow or jax (resolve auto first), got {backend!r}")
    if "keras" in sys.modules:
        import keras

        running = keras.backend.backend()
        if running != backend:
            raise FlowerlabError(
                f"Keras was imported on the {running} backend before flowerlab could select {backend}; "
                "select the backend before anything imports Keras")
        return backend
    os.environ["KERAS_BACKEND"] = backend
    return backend


def current() -> str:
    """The backend Keras runs on in this process (imports Keras)."""
    import keras

    return str(keras.backend.backend())


def record() -> dict[str, Any]:
    """training.json's `backend`: Keras' backend and the version of its library."""
    name = current()
    if name == "jax":
        import jax

        version = jax.__version__
    else:
        import tensorflow as tf

        version = tf.__version__
    return {"name": name, "version": version}
