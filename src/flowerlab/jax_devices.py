"""Where a training on Keras' JAX backend runs: the devices `jax.devices()` lists, data-parallel.

    device = select_devices(accelerator)   # after flowerlab.backends.activate("jax")
    with device.strategy.scope():          # the same calls as on TensorFlow
        model = build_model(...)

With several devices (the cores of a TPU, several GPUs, or a CPU split with
`XLA_FLAGS=--xla_force_host_platform_device_count=N`) Keras' `DataParallel` distribution places
a copy of the weights on each and splits every batch across them; `batch_size` stays per device,
as on TensorFlow's strategies. TensorFlow still runs in the process, on the CPU only: it reads the
TFRecords (tf.data), and it is kept off the GPUs so that it does not take their memory from JAX.

The device listing is injectable so that the selection (a TPU, GPUs, the CPU, and what fails) is
tested without a TPU or a GPU.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowerlab.devices import DeviceInfo, cpu_model_name, hide_gpus
from flowerlab.errors import ConfigError

logger = logging.getLogger(__name__)

KINDS = ("tpu", "gpu", "cpu")


@dataclass(frozen=True)
class DistributionScope:
    """What the training code asks of a tf.distribute strategy, on JAX: a scope to build the model
    in and the replica count. Keras' distribution API (set once, globally) places the weights and
    shards the batches, so the scope has nothing to do."""

    num_replicas_in_sync: int

    def scope(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


def use_compilation_cache(folder: Path | None) -> None:
    """Keep JAX's compiled programs in `folder` (JAX's persistent compilation cache), so that the
    next training of the same model, batch and image size (another seed, a resumed run, a rerun)
    loads its training and validation steps instead of compiling them again. JAX keys each entry
    by the program, the devices, the compiler flags and its own version, so a stale entry is never
    used. JAX keeps only compilations that took over a second (its default), which leaves out the
    small programs that are quicker to compile than to load."""
    if folder is None:
        return
    import jax

    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    logger.info("JAX compilation cache: %s", folder)


def jax_devices(platform: str | None = None) -> list[Any]:
    """`jax.devices(platform)`; an empty list when JAX has no device of that platform."""
    import jax

    try:
        return list(jax.devices(platform))
    except RuntimeError:  # "Unknown backend tpu" / "... failed to initialize"
        return []


def device_kind(device: Any) -> str:
    platform = str(getattr(device, "platform", "cpu")).lower()
    return "gpu" if platform in ("gpu", "cuda", "rocm") else platform


def devices_name(devices: Sequence[Any], kind: str) -> str:
    """"AMD EPYC 7B13 (4 host devices)", "TPU v5 lite", "8 x TPU v4"."""
    if kind == "cpu":
        name = cpu_model_name()
        return name if len(devices) == 1 else f"{name} ({len(devices)} host devices)"
    names = sorted({str(getattr(device, "device_kind", kind)) for device in devices})
    joined = " + ".join(names)
    return joined if len(devices) == 1 else f"{len(devices)} x {joined}"


def select_devices(accelerator: str, *, list_devices: Callable[[str | None], Sequence[Any]] | None = None,
                   distribute: Callable[[Sequence[Any]], None] | None = None,
                   hide_tensorflow_gpus: Callable[[], None] | None = None) -> DeviceInfo:
    """The JAX devices for `accelerator` ("auto", "tpu", "gpu" or "cpu") as a DeviceInfo.

    auto: JAX's default platform (a TPU, else GPUs, else the CPU); tpu/gpu: that platform or a
    ConfigError saying what to install; cpu: the host's devices. The keyword arguments replace
    `jax.devices`, the DataParallel setup and TensorFlow's GPU hiding (tests pass fakes)."""
    list_devices = list_devices or jax_devices
    distribute = distribute or data_parallel
    (hide_tensorflow_gpus or hide_gpus)()
    devices = list(list_devices(None if accelerator == "auto" else accelerator))
    if not devices:
        raise ConfigError(missing_devices_message(accelerator))
    kind = device_kind(devices[0])
    if kind not in KINDS:
        raise ConfigError(f"JAX lists devices of platform {kind!r}; flowerlab trains on tpu, gpu or cpu")
    if len(devices) > 1:
        distribute(devices)
    info = DeviceInfo(DistributionScope(len(devices)), kind, devices_name(devices, kind), len(devices),
                      distribution="DataParallel" if len(devices) > 1 else None)
    logger.info("device: %s (%s), %d replica(s) on JAX%s", info.kind, info.name, info.replicas,
                ", data-parallel" if info.distribution else "")
    return info


def missing_devices_message(accelerator: str) -> str:
    if accelerator == "tpu":
        return ("config key 'accelerator' is 'tpu' but JAX finds no TPU (on a Cloud TPU VM: "
                "pip install -e '.[tpu]'); use 'auto' to train on what this machine has")
    if accelerator == "gpu":
        return ("config key 'accelerator' is 'gpu' but JAX finds no GPU (pip install -e '.[jax-cuda]' brings "
                "JAX's CUDA build); use 'auto' or 'cpu' to run on the CPU")
    return f"JAX lists no device for accelerator {accelerator!r}"


def data_parallel(devices: Sequence[Any]) -> None:
    """Keras' DataParallel over `devices`: every weight replicated, every batch split."""
    import keras

    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=list(devices)))
