"""How near its hardware's limit a training ran: the machine's measured peak, and the share reached.

The peak is measured, not looked up (no table of CPUs could cover every machine, and a VM's
share of a chip is what counts): the best rate of a square matrix product in each dtype the
training computes in (float32 always; bfloat16 where the precision uses it) and of a large
element-wise op (memory bandwidth), on the device that trains, with its threads. A probe takes
about two seconds per dtype and is cached under `cache_dir`, keyed like the precision probe's by
device model, TensorFlow version, kernel library and threads; later trainings read the cache.

A training's share of the peak = its training FLOPs per image (flowerlab.models.flops) x its
steady-state training images/s, over the peak of its compute dtype times its replicas. A low
share on a fast machine is the software's fault; a high one on a slow machine is the machine's.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flowerlab import filesystem

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
PROBE_SECONDS = 1.5  # per dtype; the best of several chunks within it
MATMUL_SIZES = {"cpu": 2048, "gpu": 8192, "tpu": 8192}  # big enough to reach the peak, small enough to be quick
BANDWIDTH_ELEMENTS = 1 << 26  # 256 MB of float32, far beyond any cache
BANDWIDTH_REPEATS = 8
# Peaks measured in this process, by cache key: a process that trains several models (bench, the
# tests) measures once even without a cache folder.
_MEASURED: dict[str, Peak] = {}


@dataclass
class Peak:
    """One device's measured peak (the whole training's is this times its replicas)."""

    device: str  # the model name: "AMD EPYC", "NVIDIA H100 80GB HBM3"
    kind: str  # cpu | gpu | tpu
    gflops_per_s: dict[str, float]  # compute dtype -> best matmul GFLOP/s
    bandwidth_gb_per_s: float | None  # best element-wise GB/s (read + write)
    threads: int | None
    kernels: str  # oneDNN | Eigen | unknown
    cache: str | None = None
    measured_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def cache_key(device: str, library: str, kernels: str, threads: int | None) -> str:
    """`library`: what probes, with its version ("tf2.21.0", or "jax0.10.2" for a JAX device)."""
    slug = re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-") or "unknown-device"
    return f"{slug}__{library}__{kernels}__t{threads or 'all'}.json"


def read_cache(path: Path | None) -> Peak | None:
    """The cached peak, or None when absent, unreadable or of another format."""
    cached = filesystem.read_cache(path, CACHE_FORMAT)
    try:
        return Peak(**{key: value for key, value in cached.items() if key != "format"}) if cached else None
    except TypeError:  # the fields of another version
        return None


def machine_peak(device_kind: str, device_name: str, dtypes: Iterable[str], *, threads: int | None,
                 cache_dir: Path | None, matmul: Callable[[str, int, float], float] | None = None,
                 bandwidth: Callable[[float], float] | None = None, on_jax: bool = False) -> Peak:
    """The peak of this device in each of `dtypes`, from the cache or measured now (and cached).

    on_jax: the device is a JAX accelerator (TPU, GPU) that TensorFlow does not see: probed with
    JAX. A CPU is always probed with TensorFlow's kernels, whatever backend trains on it: its peak
    is the machine's, and oneDNN's matrix product reaches more of it than XLA's CPU one.
    `matmul(dtype, size, seconds)` and `bandwidth(seconds)` replace the probes (tests)."""
    import tensorflow as tf

    from flowerlab import kernels

    if on_jax and device_kind != "cpu":
        import jax

        matmul = matmul or jax_matmul_gflops
        bandwidth = bandwidth or jax_bandwidth_gb_per_s
        library, version = "XLA", f"jax{jax.__version__}"
    else:
        matmul = matmul or matmul_gflops
        bandwidth = bandwidth or bandwidth_gb_per_s
        library, version = kernels.kernel_library(), f"tf{tf.__version__}"
    key = cache_key(device_name, version, library, threads)
    path = cache_dir / key if cache_dir else None
    peak = read_cache(path) or _MEASURED.get(key)
    if peak is None:
        peak = Peak(device_name, device_kind, {}, None, threads, library)
    missing = [dtype for dtype in dict.fromkeys(dtypes) if dtype not in peak.gflops_per_s]
    if not missing and peak.bandwidth_gb_per_s is not None:
        return peak
    logger.info("measuring this %s's peak (%s, memory bandwidth; cached for later trainings)", device_kind,
                ", ".join(missing) or "no new dtype")
    for dtype in missing:
        peak.gflops_per_s[dtype] = round(matmul(dtype, MATMUL_SIZES.get(device_kind, 2048), PROBE_SECONDS), 1)
    if peak.bandwidth_gb_per_s is None:
        peak.bandwidth_gb_per_s = round(bandwidth(PROBE_SECONDS), 1)
    logger.info("peak: %s; memory %.1f GB/s", ", ".join(f"{d} {g:.0f} GFLOP/s" for d, g in peak.gflops_per_s.items()),
                peak.bandwidth_gb_per_s)
    _MEASURED[key] = peak
    if path is not None:
        peak.cache = str(path)
        filesystem.write_cache(path, CACHE_FORMAT, peak.to_json())
    return peak


def share_of_peak(*, train_images_per_second: float | None, training_flops_per_image: float, compute_dtype: str,
                  peak: Peak, replicas: int) -> dict[str, Any]:
    """training.json's `hardware_share`: achieved GFLOP/s and its fraction of the peak."""
    peak_gflops = peak.gflops_per_s.get(compute_dtype)
    achieved = None if not train_images_per_second else training_flops_per_image * train_images_per_second / 1e9
    whole = None if peak_gflops is None else peak_gflops * replicas
    return {
        "training_gflops_per_image": training_flops_per_image / 1e9,
        "achieved_gflops_per_s": achieved,
        "peak_dtype": compute_dtype,
        "peak_gflops_per_s": whole,
        "fraction_of_peak": None if achieved is None or not whole else achieved / whole,
        "replicas": replicas,
        "peak": peak.to_json(),
    }


# ---------------------------------------------------------------------------------------------
# The probes


def _synchronise(tensor: Any) -> None:
    """Wait for `tensor` (accelerator ops return before they finish; reading one element waits)."""
    import tensorflow as tf

    tf.reshape(tensor, [-1])[0].numpy()


def _best_rate(run: Callable[[], Any], work: float, seconds: float,
               synchronise: Callable[[Any], Any] = _synchronise) -> float:
    """The best `work` per second of `run` over chunks of about 1/8 of `seconds`, after two
    warm-up calls (they pick and initialise the kernels). The best chunk, not the mean: on a
    shared machine the peak is what the chip does when nothing else runs."""
    for _ in range(2):
        synchronise(run())
    started = time.perf_counter()
    synchronise(run())
    calls = max(1, int(seconds / 8 / max(time.perf_counter() - started, 1e-6)))
    best, deadline = 0.0, time.perf_counter() + seconds
    while True:
        started = time.perf_counter()
        for _ in range(calls):
            result = run()
        synchronise(result)
        best = max(best, calls * work / (time.perf_counter() - started))
        if time.perf_counter() >= deadline:
            return best


def matmul_gflops(dtype: str, size: int, seconds: float) -> float:
    """Best GFLOP/s of `size` x `size` matrix products in `dtype` (2 size^3 FLOPs each)."""
    import tensorflow as tf

    a = tf.cast(tf.random.stateless_uniform((size, size), seed=(1, 2)), dtype)
    b = tf.cast(tf.random.stateless_uniform((size, size), seed=(3, 4)), dtype)
    return _best_rate(lambda: tf.linalg.matmul(a, b), 2.0 * size**3, seconds) / 1e9


def bandwidth_gb_per_s(seconds: float) -> float:
    """Best GB/s of a float32 element-wise op over BANDWIDTH_ELEMENTS (each element read and
    written once): the memory traffic TensorFlow's own kernels reach, the roof of a layer that
    computes little per byte (batch norm, ReLU, pooling)."""
    import tensorflow as tf

    x = tf.ones([BANDWIDTH_ELEMENTS], tf.float32)

    def scale() -> Any:
        y = x
        for _ in range(BANDWIDTH_REPEATS):
            y = y * 1.0001
        return y

    return _best_rate(scale, 2.0 * 4 * BANDWIDTH_ELEMENTS * BANDWIDTH_REPEATS, seconds) / 1e9


def _jax_best_rate(run: Callable[[], Any], work: float, seconds: float) -> float:
    """_best_rate for a JAX computation (its results are waited for with block_until_ready)."""
    import jax

    return _best_rate(run, work, seconds, synchronise=jax.block_until_ready)


def jax_matmul_gflops(dtype: str, size: int, seconds: float) -> float:
    """Best GFLOP/s of `size` x `size` matrix products in `dtype` on JAX's default device."""
    import jax
    import jax.numpy as jnp

    a = jax.random.uniform(jax.random.key(1), (size, size)).astype(dtype)
    b = jax.random.uniform(jax.random.key(2), (size, size)).astype(dtype)
    product = jax.jit(jnp.matmul)
    return _jax_best_rate(lambda: product(a, b), 2.0 * size**3, seconds) / 1e9


def jax_bandwidth_gb_per_s(seconds: float) -> float:
    """bandwidth_gb_per_s on JAX's default device: one fused scale, each element read and written."""
    import jax
    import jax.numpy as jnp

    x = jnp.ones([BANDWIDTH_ELEMENTS], jnp.float32)
    scale = jax.jit(lambda values: values * 1.0001)
    return _jax_best_rate(lambda: scale(x), 2.0 * 4 * BANDWIDTH_ELEMENTS, seconds) / 1e9
