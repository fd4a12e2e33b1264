"""Timing training steps fairly: warm-up excluded, sides alternated, outliers named, the machine's peaks."""

from __future__ import annotations

import itertools
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from flowerlab.errors import ConfigError
from flowerlab.training.peak import bandwidth_gb_per_s, matmul_gflops

logger = logging.getLogger("bench")


@dataclass(frozen=True)
class BenchSettings:
    batch_size: int
    warmup: int  # steps run before timing in every fit call
    steps: int  # steps timed in every fit call
    rounds: int  # fit calls per side, alternating plain / flowerlab
    seed: int
    precision: str  # what the flowerlab side asks for ("auto" as the study)
    threads: int | None
    cache_epochs: int = 10  # head epochs per feature-cache round (the course's mobilenet_v2 recipe)
    accelerator: str = "auto"  # what the flowerlab side asks `flowerlab train` for


@dataclass
class Side:
    """One side of the comparison for one architecture: its model, its data and its timings."""

    name: str
    model: Any
    dataset: Any
    batch: int  # images per step (flowerlab: per replica x replicas, as flowerlab train)
    images: int = 0
    seconds: float = 0.0
    round_rates: list[float] = field(default_factory=list)
    # A side timed by whole trainings (the feature cache) rather than by fit steps: one call is
    # one round, adding its images and seconds to the side and returning the round's images/s.
    time_round: Callable[[], float] | None = None

    def images_per_second(self) -> float:
        return self.images / self.seconds


def synchronise(tensor: Any) -> None:
    """Wait for `tensor` (GPU ops return before they finish; reading one element waits)."""
    tensor[0, 0].numpy()


def best_peaks(*measurements: dict[str, float]) -> dict[str, float]:
    return {dtype: max(peaks[dtype] for peaks in measurements) for dtype in measurements[0]}


def measure_peaks(dtypes: Sequence[str], *, size: int, seconds: float) -> dict[str, float]:
    peaks = {}
    for dtype in dtypes:
        peaks[dtype] = matmul_gflops(dtype, size, seconds)
        logger.info("matmul peak %s (%d x %d): %.0f GFLOP/s", dtype, size, size, peaks[dtype])
    return peaks


def measure_bandwidth(seconds: float) -> float:
    bandwidth = bandwidth_gb_per_s(seconds)
    logger.info("memory bandwidth (element-wise float32): %.1f GB/s", bandwidth)
    return bandwidth


def fill_cache(dataset: Any) -> float:
    """Pull the dataset's one epoch through the pipeline so its uint8 cache is complete (later
    iterators, such as fit's, read it); returns the seconds it took."""
    started = time.perf_counter()
    for _ in dataset:
        pass
    return time.perf_counter() - started


def make_step_timer() -> Any:
    import keras

    class StepTimer(keras.callbacks.Callback):
        """perf_counter at the end of every training step. Overriding on_train_batch_end makes
        Keras call it synchronously, with the logs already read back (so a GPU step is done)."""

        def __init__(self) -> None:
            super().__init__()
            self.ends: list[float] = []

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            self.ends.append(time.perf_counter())

    return StepTimer()


def time_steps(side: Side, *, warmup: int, steps: int) -> float:
    """One `fit` call of warmup + steps steps; adds the timed steps to `side`; returns their images/s."""
    timer = make_step_timer()
    side.model.fit(side.dataset, epochs=1, steps_per_epoch=warmup + steps, callbacks=[timer], verbose=0,
                   shuffle=False)  # both datasets shuffle themselves
    if len(timer.ends) != warmup + steps:
        raise RuntimeError(f"{side.name}: fit ran {len(timer.ends)} steps, expected {warmup + steps}")
    seconds = timer.ends[-1] - timer.ends[warmup - 1]  # the end of the last warm-up step starts the clock
    warn_about_outliers(side.name, timer.ends[warmup - 1:])
    side.images += steps * side.batch
    side.seconds += seconds
    side.round_rates.append(steps * side.batch / seconds)
    return side.round_rates[-1]


def warn_about_outliers(name: str, ends: Sequence[float], factor: float = 4.0) -> None:
    """Log a timed step much slower than the others (a retrace, a stall, another process): the
    figure still counts it, as training would, but the reader should know."""
    durations = [later - earlier for earlier, later in itertools.pairwise(ends)]
    median = statistics.median(durations)
    slowest = max(durations)
    if len(durations) > 2 and slowest > factor * median:
        logger.warning("%s: one timed step took %.3f s, %.1fx the median %.3f s (retrace or load from other "
                       "processes?); consider more --warmup or --steps", name, slowest, slowest / median, median)


def measure_sides(sides: Sequence[Side], settings: BenchSettings) -> None:
    """`rounds` fit calls per side, alternating which side goes first, so drifting load from other
    processes is shared between them."""
    for round_index in range(settings.rounds):
        order = sides if round_index % 2 == 0 else list(reversed(sides))
        for side in order:
            rate = side.time_round() if side.time_round else time_steps(side, warmup=settings.warmup,
                                                                          steps=settings.steps)
            logger.info("  round %d %s: %.1f images/s", round_index + 1, side.name, rate)


def check_timed_steps(settings: BenchSettings, full_batches: int, batch: int, what: str) -> None:
    if settings.warmup + settings.steps > full_batches:
        raise ConfigError(
            f"--warmup {settings.warmup} + --steps {settings.steps} exceed the {full_batches} full batches of "
            f"{batch} in one epoch of {what}: lower them or --batch-size (only full batches of the first epoch "
            "are timed)"
        )

