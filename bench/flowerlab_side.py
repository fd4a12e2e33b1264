"""The flowerlab side of the training benchmark: exactly what `flowerlab train` runs, by its helpers.

For a frozen-backbone model (`mobilenet_v2`, whose training uses the feature cache,
flowerlab.training.frozen_backbone) that is the feature-cache path: the backbone's
features of every training image, then the head's epochs on them, timed as a whole training.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import PRECISION_CACHE
from plain_keras import LEARNING_RATE
from steps import BenchSettings, Side

logger = logging.getLogger("bench_training")


@dataclass(frozen=True)
class FlowerlabPath:
    model: Any
    dataset: Any  # one epoch of training batches
    run: Any  # flowerlab.training.stage.Run: settings, plan, batching, device, precision

    @property
    def full_batches(self) -> int:  # full batches in one epoch: the steps that can be timed
        return self.run.plan.train_records // self.run.batching.global_batch


def flowerlab_path(arch: str, manifest_path: Path, weights: str, settings: BenchSettings, scratch: Path
                   ) -> FlowerlabPath:
    """Model and training dataset as `flowerlab train` makes them, by its own steps
    (flowerlab.training.stage.prepare_run, build_or_restore; setup.make_datasets), for one epoch."""
    import keras

    from flowerlab.training import setup, stage

    hparams = setup.resolve_hparams({"epochs": 1, "batch_size": settings.batch_size, "learning_rate": LEARNING_RATE,
                                     "augment": False, "precision": settings.precision, "weights": weights})
    run = stage.prepare_run(setup.TrainSettings(
        arch=arch, manifest=manifest_path, out_dir=scratch / arch, checkpoint_dir=scratch / f"{arch}-checkpoints",
        hparams=hparams, accelerator=settings.accelerator, seed=settings.seed, threads=settings.threads,
        precision_cache=PRECISION_CACHE))
    try:
        model, _ = stage.build_or_restore(run.settings, run.device, None, run.plan, run.weights, LEARNING_RATE)
    finally:
        keras.mixed_precision.set_global_policy("float32")  # the plain side builds in float32
    dataset, _ = setup.make_datasets(run.settings, run.plan, run.batching, first_epoch=0)
    return FlowerlabPath(model, dataset, run)


@dataclass
class CacheTimes:
    """A feature-cache side's totals over its rounds (the side's own images/seconds hold the sum)."""

    extracted: int = 0
    extraction_seconds: float = 0.0
    head_images: int = 0
    head_seconds: float = 0.0


def feature_cache_side(arch: str, fl: FlowerlabPath, device: Any, settings: BenchSettings) -> tuple[Side, CacheTimes]:
    """The flowerlab side of a frozen-backbone model: what `flowerlab train` runs with the feature
    cache (flowerlab.training.frozen_backbone's split, extraction, batches and per-epoch order), one whole
    training per round, after an untimed warm-up that traces the extraction and the head's
    training step (for a full and a partial batch, as an epoch has)."""
    import numpy as np

    from flowerlab.data import pipeline
    from flowerlab.training import frozen_backbone, setup

    with device.strategy.scope():
        split = frozen_backbone.split_frozen_backbone(fl.model)
        setup.compile_model(split.head, LEARNING_RATE)
    extract = frozen_backbone.extraction_function(split.extractor)
    images, _, _ = frozen_backbone.image_datasets(fl.run.settings, fl.run.plan, fl.run.batching)
    batch, records, epochs = fl.run.batching.global_batch, fl.run.plan.train_records, settings.cache_epochs
    warm = frozen_backbone.extract_features(extract, images.take(1), expected=min(batch, records),
                                          what=f"{arch}: warm-up batch")
    warm_order = np.concatenate([np.arange(warm.count), np.arange(max(1, warm.count // 2))])
    split.head.fit(frozen_backbone.feature_batches(warm, warm_order, batch_size=batch, drop_remainder=False),
                   epochs=1, verbose=0, shuffle=False)
    side, times = Side("flowerlab", fl.model, images, batch), CacheTimes()

    def time_round() -> float:
        cached = frozen_backbone.extract_features(extract, images, expected=records,
                                                what=f"{arch}: training features")
        head_seconds = 0.0
        for epoch in range(epochs):
            batches = frozen_backbone.feature_batches(cached, pipeline.epoch_order(records, epoch, seed=settings.seed),
                                                    batch_size=batch, drop_remainder=False)
            started = time.perf_counter()
            split.head.fit(batches, epochs=1, verbose=0, shuffle=False)
            head_seconds += time.perf_counter() - started
        times.extracted += records
        times.extraction_seconds += cached.seconds
        times.head_images += epochs * records
        times.head_seconds += head_seconds
        side.images += epochs * records
        side.seconds += cached.seconds + head_seconds
        side.round_rates.append(epochs * records / (cached.seconds + head_seconds))
        logger.info("  %s feature cache: extraction %.0f images/s, head %.0f images/s over %d epochs", arch,
                    records / cached.seconds, epochs * records / head_seconds, epochs)
        return side.round_rates[-1]

    side.time_round = time_round
    return side, times

