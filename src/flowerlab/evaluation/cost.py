"""What a trained model costs to run: parameters, FLOPs, inference throughput and latency.

Timings are of finished work: every call copies its result to the host (`make_forward`), and
the first calls, which trace and pick kernels, are not timed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from flowerlab.errors import ConfigError
from flowerlab.models.flops import forward_flops

# Untimed calls before throughput and latency are measured: the first calls trace the
# tf.function, allocate buffers and let oneDNN/cuDNN pick their kernels.
WARMUP_CALLS = 3


# Throughput is timed over at least this many batches and this many seconds, whichever is longer.
THROUGHPUT_MIN_CALLS = 5


THROUGHPUT_MIN_SECONDS = 2.0



def latency_summary(seconds: Sequence[float]) -> tuple[float, float]:
    """Median and 95th percentile (linear interpolation) of call durations, in milliseconds."""
    if len(seconds) == 0:
        raise ValueError("no latency measurement")
    milliseconds = np.asarray(seconds, dtype=np.float64) * 1000.0
    return float(np.median(milliseconds)), float(np.percentile(milliseconds, 95))


def make_forward(model: Any) -> Callable[[Any], np.ndarray]:
    """Inference as one traced function returning float32 numpy probabilities.

    `.numpy()` copies the result to the host, which waits for the device: the timings below
    measure finished work, not queued kernels.
    """
    import tensorflow as tf

    traced = tf.function(
        lambda images: tf.cast(model(images, training=False), tf.float32), reduce_retracing=True
    )
    return lambda images: traced(images).numpy()


def timing_batch(images: Any, batch_size: int) -> Any:
    """A batch of exactly `batch_size` images, repeating `images` when the split is smaller,
    so that throughput is always measured at the evaluation batch size."""
    import tensorflow as tf

    available = int(images.shape[0])
    if available >= batch_size:
        return images[:batch_size]
    repeats = -(-batch_size // available)
    return tf.concat([images] * repeats, axis=0)[:batch_size]


def measure_throughput(
    forward: Callable[[Any], np.ndarray],
    images: Any,
    *,
    min_calls: int = THROUGHPUT_MIN_CALLS,
    min_seconds: float = THROUGHPUT_MIN_SECONDS,
) -> dict[str, float]:
    """Steady-state images/s of the forward pass on one in-memory batch (warm-up excluded)."""
    for _ in range(WARMUP_CALLS):
        forward(images)
    calls = 0
    start = time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < min_seconds:
        forward(images)
        calls += 1
    elapsed = time.perf_counter() - start
    batch = int(images.shape[0])
    return {
        "images_per_second": batch * calls / elapsed,
        "batch_size": batch,
        "timed_calls": calls,
        "seconds": elapsed,
    }


def measure_latency(forward: Callable[[Any], np.ndarray], image: Any, runs: int) -> dict[str, float]:
    """Median and p95 milliseconds of `runs` single-image forward passes (warm-up excluded)."""
    if runs < 1:
        raise ConfigError(f"--latency-runs must be >= 1, not {runs}")
    for _ in range(WARMUP_CALLS):
        forward(image)
    durations = []
    for _ in range(runs):
        start = time.perf_counter()
        forward(image)
        durations.append(time.perf_counter() - start)
    median, p95 = latency_summary(durations)
    return {"latency_ms_median": median, "latency_ms_p95": p95, "latency_runs": runs}


def measure_costs(
    model: Any,
    forward: Callable[[Any], np.ndarray],
    images: Any,
    *,
    image_size: int,
    batch_size: int,
    latency_runs: int,
) -> dict[str, Any]:
    """Parameters, FLOPs, inference throughput and latency of `model`, timed on `images`."""
    from flowerlab.models.build import count_parameters

    total, trainable = count_parameters(model)
    flops, flops_by_op = forward_flops(model, image_size)
    throughput = measure_throughput(forward, timing_batch(images, batch_size))
    latency = measure_latency(forward, images[:1], latency_runs)
    return {
        "parameters_total": total,
        "parameters_trainable": trainable,
        "flops_per_image": flops,
        "flops_by_op": flops_by_op,
        "flops_convention": "TensorFlow profiler on the frozen inference graph of one image: "
        "2 FLOPs per multiply-add, plus element-wise ops",
        "inference_images_per_second": throughput["images_per_second"],
        "inference_timed_calls": throughput["timed_calls"],
        **latency,
    }

