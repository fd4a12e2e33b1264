"""`precision: auto` on a CPU: measured on the machine that trains, not read from a table.

Whether bfloat16 pays on a CPU depends on the CPU and on the model: on an AMD EPYC with
AVX512_BF16 convnet trained 3.2x faster in bfloat16 and dense 0.86x; on an Intel Xeon with AMX
convnet gained 2.9x but MobileNetV2 lost (0.70x). So the first time an architecture trains on
a machine, a short probe times a few training steps in each precision at the run's batch and
image size (for a frozen backbone trained on cached features: the feature extraction, which is
where that training spends its time), picks the faster, and caches the measurements under
`cache_dir`, keyed by CPU model, TensorFlow version, architecture, batch, image size and
threads. Later trainings with the same key read the cache.

Without native bfloat16 (no AVX512_BF16, no AMX) the CPU would emulate it: float32, no probe.
TPUs (bfloat16) and GPUs (float16) follow flowerlab.devices.resolve_precision; an explicit
policy in the config is always honoured.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flowerlab import filesystem

logger = logging.getLogger(__name__)

CANDIDATES = ("float32", "mixed_bfloat16")
WARMUP_STEPS = 2  # the first steps trace and compile
MIN_STEPS = 3
MIN_SECONDS = 2.0
CACHE_FORMAT = 1


@dataclass(frozen=True)
class ProbeSetup:
    """What the probe must run as the training will: the model, its input and batch."""

    arch: str
    hparams: Mapping[str, Any]
    image_size: int
    num_classes: int
    batch_size: int
    cached_features: bool  # a frozen backbone trained on its cached features
    threads: int | None
    # The convolutions' weight-gradient kernel the training runs (weight_gradients.kernel_name).
    weight_gradients: str = "tensorflow"


@dataclass
class PrecisionChoice:
    """training.json's `precision_choice`: what was chosen and why."""

    policy: str
    reason: str
    images_per_second: dict[str, float] = field(default_factory=dict)  # measured, per policy
    cache: str | None = None  # the cache file the measurements are in

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def cache_key(setup: ProbeSetup, cpu_model: str, tensorflow: str) -> str:
    """A file name: CPU model, TensorFlow version, architecture, batch, size, threads, and the
    weight-gradient kernel where it is flowerlab's."""
    slug = re.sub(r"[^a-z0-9]+", "-", cpu_model.lower()).strip("-") or "unknown-cpu"
    threads = setup.threads or "all"
    return (f"{slug}__tf{tensorflow}__{setup.arch}__b{setup.batch_size}__{setup.image_size}px"
            f"__{setup.num_classes}c__t{threads}{'__features' if setup.cached_features else ''}"
            f"{'__own-wgrad' if setup.weight_gradients == 'flowerlab' else ''}.json")


def faster(measured: Mapping[str, float]) -> str:
    return max(CANDIDATES, key=lambda policy: measured[policy])


def _describe(measured: Mapping[str, float]) -> str:
    return ", ".join(f"{policy} {measured[policy]:.1f} images/s" for policy in CANDIDATES)


def read_cache(path: Path | None) -> dict[str, float] | None:
    """The cached measurements, or None when absent, unreadable or of another format."""
    cached = filesystem.read_cache(path, CACHE_FORMAT)
    try:
        measured = {policy: float(cached["images_per_second"][policy]) for policy in CANDIDATES}
    except (TypeError, KeyError, ValueError):  # no cache, or the fields of another version
        return None
    return measured if all(v > 0 for v in measured.values()) else None


def choose_cpu_precision(setup: ProbeSetup, *, cache_dir: Path | None, cpu_model: str, tensorflow: str,
                         measure: Callable[[str, ProbeSetup], float]) -> PrecisionChoice:
    """The faster of float32 and mixed_bfloat16 for `setup` on this CPU, from the cache or a probe."""
    path = cache_dir / cache_key(setup, cpu_model, tensorflow) if cache_dir is not None else None
    measured = read_cache(path)
    if measured is not None:
        policy = faster(measured)
        return PrecisionChoice(policy, f"faster on this machine, measured before ({_describe(measured)}; "
                                       f"cached in {path})", measured, str(path))
    logger.info("%s: measuring float32 against bfloat16 training steps on this CPU (once per machine)", setup.arch)
    measured = {policy: measure(policy, setup) for policy in CANDIDATES}
    policy = faster(measured)
    filesystem.write_cache(path, CACHE_FORMAT, {"cpu": cpu_model, "tensorflow": tensorflow, "setup": asdict(setup),
                                                "images_per_second": measured, "chosen": policy,
                                                "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return PrecisionChoice(policy, f"faster on this machine ({_describe(measured)}; measured now)", measured,
                           None if path is None else str(path))


def choose_precision(requested: str, device_kind: str, setup: ProbeSetup, *, cache_dir: Path | None = None,
                     measure: Callable[[str, ProbeSetup], float] | None = None,
                     backend: str = "tensorflow") -> PrecisionChoice:
    """The Keras dtype policy for a training, and why (see the module's docstring)."""
    from flowerlab import devices

    policy = devices.resolve_precision(requested, device_kind)
    if policy is not None:
        why = "set in the configuration" if requested != "auto" else devices.auto_precision_reason(device_kind)
        return PrecisionChoice(policy, why)
    if backend != "tensorflow":
        # The probe times TensorFlow's kernels (oneDNN's bfloat16 paths), not XLA's.
        return PrecisionChoice("float32", "auto on JAX's CPU devices: float32 (the bfloat16 probe measures "
                                          "TensorFlow's kernels, not XLA's)")
    import tensorflow as tf

    return choose_cpu_precision(setup, cache_dir=cache_dir, cpu_model=devices.cpu_model_name(),
                                tensorflow=tf.__version__, measure=measure or measure_training_speed)


def measure_training_speed(policy: str, setup: ProbeSetup) -> float:
    """Images/s of `setup`'s training steps under `policy`: warm-up, then at least MIN_STEPS
    steps and MIN_SECONDS. The probe's model is discarded (and Keras' session cleared) after."""
    import keras

    step = _training_step if not setup.cached_features else _extraction_step
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(policy)
    try:
        run = step(setup)
        for _ in range(WARMUP_STEPS):
            run()
        steps, start = 0, time.perf_counter()
        while steps < MIN_STEPS or time.perf_counter() - start < MIN_SECONDS:
            run()
            steps += 1
        seconds = time.perf_counter() - start
    finally:
        keras.mixed_precision.set_global_policy(previous)
        keras.backend.clear_session()  # the real model's layer names must not depend on the probe
    images_per_second = setup.batch_size * steps / seconds
    logger.info("%s: %s %.1f images/s (%d steps, %.1f s)", setup.arch, policy, images_per_second, steps, seconds)
    return images_per_second


def _random_batch(setup: ProbeSetup) -> tuple[Any, Any]:
    import tensorflow as tf

    images = tf.random.stateless_uniform((setup.batch_size, setup.image_size, setup.image_size, 3), seed=(1, 2))
    labels = tf.one_hot(tf.range(setup.batch_size) % setup.num_classes, setup.num_classes)
    return images, labels


def _new_model(setup: ProbeSetup) -> Any:
    from flowerlab.models.registry import NO_WEIGHTS, get_spec

    # Random weights (built without build_model's warning about them): how fast a step runs
    # does not depend on what the weights are.
    return get_spec(setup.arch).build_function()(num_classes=setup.num_classes, image_size=setup.image_size,
                                                 weights=NO_WEIGHTS)


def _training_step(setup: ProbeSetup) -> Callable[[], Any]:
    from flowerlab.training.setup import compile_model
    from flowerlab.training.weight_gradients import layers

    model = _new_model(setup)
    compile_model(model, float(setup.hparams.get("learning_rate", 1e-3)))
    if setup.weight_gradients == "flowerlab":  # the kernels the training will run
        layers.install(model)
    images, labels = _random_batch(setup)
    return lambda: model.train_on_batch(images, labels)


def _extraction_step(setup: ProbeSetup) -> Callable[[], Any]:
    from flowerlab.training.frozen_backbone import extraction_function, split_frozen_backbone

    model = _new_model(setup)
    extract = extraction_function(split_frozen_backbone(model).extractor)
    images, _ = _random_batch(setup)
    return lambda: extract(images).numpy()
