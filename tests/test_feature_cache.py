"""`flowerlab train` of a frozen-backbone model on cached backbone features (flowerlab.training.frozen_backbone):
the same training as on images, a saved model that is the trained one, honest records, and the
image path where the cache does not apply.

The backbone is MobileNetV2 with random weights whose batch-norm statistics are calibrated on
random images (one pass in training mode with momentum 0), so that its features carry signal:
with Keras' initial statistics a frozen random MobileNetV2 outputs ~1e-12 everywhere, and any
head would do on such features.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import keras
import numpy as np
import pytest
from synthetic_records import write_dataset

from flowerlab.data import pipeline
from flowerlab.data.manifest import shard_paths
from flowerlab.models.build import build_model, count_parameters
from flowerlab.training import records, setup, stage

SIZE = 32  # MobileNetV2's smallest input
CLASSES = 3
EPOCHS = 3

pytestmark = pytest.mark.usefixtures("restore_tensorflow_globals")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data"), image_size=SIZE, num_classes=CLASSES,
                         train_per_class=14, validation_per_class=5)


@pytest.fixture(scope="module")
def backbone_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A no-top MobileNetV2 weights file with calibrated batch-norm statistics."""
    backbone = keras.applications.MobileNetV2(input_shape=(SIZE, SIZE, 3), include_top=False, weights=None)
    batch_norms = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in batch_norms:
        layer.momentum = 0.0  # the moving statistics become this batch's
    images = np.random.default_rng(0).uniform(-1.0, 1.0, (32, SIZE, SIZE, 3)).astype("float32")
    backbone(images, training=True)
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v2_calibrated.weights.h5"
    backbone.save_weights(path)
    return path


def settings(manifest: Path, folder: Path, weights: Path, *, arch: str = "mobilenet_v2",
             **hparams) -> setup.TrainSettings:
    raw = {"epochs": EPOCHS, "batch_size": 8, "precision": "float32", "weights": str(weights), **hparams}
    if arch != "mobilenet_v2":
        raw.pop("weights")
    return setup.TrainSettings(
        arch=arch, manifest=manifest, out_dir=folder / "model", checkpoint_dir=folder / "checkpoints",
        hparams=setup.resolve_hparams(raw), accelerator="cpu", seed=7, deterministic=True,
    )


def read_history(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as handle:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(handle)]


def classifier_weights(run: setup.TrainSettings) -> list[np.ndarray]:
    model = keras.saving.load_model(run.out_dir / "model.keras")
    return model.get_layer("classifier").get_weights()


@pytest.fixture(scope="module")
def cached_run(manifest: Path, backbone_weights: Path, tmp_path_factory: pytest.TempPathFactory):
    run = settings(manifest, tmp_path_factory.mktemp("cached"), backbone_weights)
    return run, stage.train(run)


@pytest.fixture(scope="module")
def image_run(manifest: Path, backbone_weights: Path, tmp_path_factory: pytest.TempPathFactory):
    run = settings(manifest, tmp_path_factory.mktemp("images"), backbone_weights, cache_features=False)
    return run, stage.train(run)


def test_epoch_order_is_the_image_pipelines_order(manifest: Path) -> None:
    """The head sees the cached features in the order the image path sees the images."""
    files = shard_paths(manifest, "train")
    common = {"image_size": SIZE, "num_classes": CLASSES, "batch_size": 5, "deterministic": True,
              "shuffle_buffer": 20}  # smaller than the 42 records: a partial shuffle, as on the real data
    keras.utils.set_random_seed(3)
    in_record_order = np.concatenate([images for images, _ in pipeline.make_dataset(files, training=False, **common)])
    for epoch in range(3):
        shuffled = np.concatenate([images for images, _ in pipeline.make_dataset(
            files, training=True, seed=3, first_epoch=epoch, **common)])
        order = pipeline.epoch_order(len(in_record_order), epoch, seed=3, shuffle_buffer=20)
        assert sorted(order) == list(range(len(in_record_order)))
        assert np.array_equal(in_record_order[order], shuffled)


@pytest.mark.slow
def test_cached_run_records_the_cache_and_honest_rates(cached_run) -> None:
    run, record = cached_run
    assert json.loads((run.out_dir / "training.json").read_text()) == json.loads(json.dumps(record))
    cache = record["feature_cache"]
    assert cache["used"] is True and cache["augmentation"] == "none"
    assert cache["feature_shape"] == [1, 1, 1280]
    assert cache["train_images_extracted"] == 42 and cache["validation_images"] == 15
    assert cache["head_trainable_parameters"] == 1280 * CLASSES + CLASSES
    history = read_history(run.out_dir / "history.csv")
    assert [int(row["epoch"]) for row in history] == [1, 2, 3]
    assert list(history[0]) == list(records.HISTORY_COLUMNS)
    # Epoch 1 carries the extraction: of its training images in images/s, of everything in its seconds.
    extraction = cache["train_extraction_seconds"] + cache["validation_extraction_seconds"]
    assert history[0]["epoch_seconds"] > extraction
    train_seconds = [42 / row["images_per_second"] for row in history]
    assert sum(train_seconds) == pytest.approx(cache["train_extraction_seconds"] + cache["head_train_seconds"],
                                               rel=1e-6)
    assert train_seconds[0] > cache["train_extraction_seconds"]
    # training.json's rate is the amortised one: every epoch's images over extraction + head time.
    assert record["train_images_per_second"] == pytest.approx(3 * 42 / sum(train_seconds), rel=1e-6)
    assert record["train_images_per_second"] == cache["amortised_images_per_second"]
    assert record["train_images_per_second_epochs"] == [1, 2, 3]
    assert cache["head_images_per_second"] > record["train_images_per_second"]
    assert record["wall_seconds"] >= sum(row["epoch_seconds"] for row in history)
    assert not run.checkpoint_dir.exists()


@pytest.mark.slow
def test_saved_model_is_the_trained_one(cached_run) -> None:
    """The full image -> probabilities model on the validation images scores what the head scored
    on the cached validation features in its last epoch."""
    run, record = cached_run
    model = keras.saving.load_model(run.out_dir / "model.keras")
    assert count_parameters(model) == (record["parameters"]["total"], record["parameters"]["trainable"])
    setup.compile_model(model, 1e-3)
    validation = pipeline.make_dataset(shard_paths(run.manifest, "validation"), image_size=SIZE,
                                       num_classes=CLASSES, batch_size=8, training=False, deterministic=True)
    loss, accuracy = model.evaluate(validation, verbose=0)
    last = read_history(run.out_dir / "history.csv")[-1]
    assert loss == pytest.approx(last["val_loss"], rel=1e-4, abs=1e-5)
    assert accuracy == pytest.approx(last["val_accuracy"], abs=1e-6)
    assert last["val_loss"] < read_history(run.out_dir / "history.csv")[0]["loss"]  # it learnt something


@pytest.mark.slow
def test_cached_run_trains_the_head_as_the_image_path_does(cached_run, image_run) -> None:
    """Same initial head, same batches in the same order, same schedule: the same head, up to
    float32 rounding (the extraction runs the backbone in a graph of its own)."""
    (cached, cached_record), (images, image_record) = cached_run, image_run
    assert image_record["feature_cache"] == {"used": False, "reason": "cache_features is false"}
    assert cached_record["fingerprint"] != image_record["fingerprint"]  # cache_features is a hyperparameter
    for with_cache, with_images in zip(classifier_weights(cached), classifier_weights(images), strict=True):
        assert np.abs(with_cache - with_images).max() <= 1e-3 * np.abs(with_images).max()
    cached_rows, image_rows = read_history(cached.out_dir / "history.csv"), read_history(images.out_dir / "history.csv")
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
        assert [row[key] for row in cached_rows] == pytest.approx([row[key] for row in image_rows], rel=1e-3, abs=1e-4)


@pytest.mark.slow
def test_augmented_run_extracts_each_epochs_images(manifest: Path, backbone_weights: Path, tmp_path: Path) -> None:
    """With augment, each epoch's features come from that epoch's augmented images, in the image
    path's order: the head ends as the image path's."""
    cached = settings(manifest, tmp_path / "cached", backbone_weights, epochs=2, augment=True)
    images = settings(manifest, tmp_path / "images", backbone_weights, epochs=2, augment=True, cache_features=False)
    cache = stage.train(cached)["feature_cache"]
    stage.train(images)
    assert cache["used"] is True and cache["augmentation"] == "features of each epoch's augmented images"
    assert cache["train_images_extracted"] == 2 * 42
    history = read_history(cached.out_dir / "history.csv")
    # Both epochs pay for their extraction.
    assert sum(42 / row["images_per_second"] for row in history) == pytest.approx(
        cache["train_extraction_seconds"] + cache["head_train_seconds"], rel=1e-6)
    for with_cache, with_images in zip(classifier_weights(cached), classifier_weights(images), strict=True):
        assert np.abs(with_cache - with_images).max() <= 1e-3 * np.abs(with_images).max()


@pytest.mark.slow
def test_a_stale_image_path_checkpoint_is_never_resumed(manifest: Path, backbone_weights: Path,
                                                         tmp_path: Path) -> None:
    """An image-path run interrupted after epoch 1 leaves a checkpoint; the cached run in the same
    folder trains from scratch, all epochs, and removes it."""

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt

    images = settings(manifest, tmp_path, backbone_weights, cache_features=False)
    with pytest.raises(KeyboardInterrupt):
        stage.train(images, extra_callbacks=[Interrupt()])
    assert list(images.checkpoint_dir.glob("epoch-*"))
    record = stage.train(settings(manifest, tmp_path, backbone_weights))
    assert record["feature_cache"]["used"] is True and record["resumed_from_epoch"] == 0
    assert [int(row["epoch"]) for row in read_history(tmp_path / "model" / "history.csv")] == [1, 2, 3]
    assert not images.checkpoint_dir.exists()


@pytest.mark.slow
def test_models_without_a_frozen_backbone_train_on_images(manifest: Path, backbone_weights: Path,
                                                          tmp_path: Path) -> None:
    record = stage.train(settings(manifest, tmp_path, backbone_weights, arch="dense", epochs=1))
    assert record["feature_cache"] == {"used": False, "reason": "dense has no frozen backbone"}


@pytest.mark.slow
def test_saved_model_keeps_the_courses_parameter_counts(backbone_weights: Path, tmp_path: Path) -> None:
    """At 192 px with 5 classes: 2,488,389 parameters, 230,405 trainable (the head), as built."""
    manifest = write_dataset(tmp_path / "data", image_size=192, num_classes=5, train_per_class=2,
                             validation_per_class=1)
    record = stage.train(settings(manifest, tmp_path, backbone_weights, epochs=1))
    assert record["feature_cache"]["used"] is True
    assert record["feature_cache"]["feature_shape"] == [6, 6, 1280]
    assert record["parameters"] == {"total": 2_488_389, "trainable": 230_405}
    saved = keras.saving.load_model(tmp_path / "model" / "model.keras")
    assert count_parameters(saved) == (2_488_389, 230_405)
    assert count_parameters(build_model("mobilenet_v2", num_classes=5, image_size=192)) == (2_488_389, 230_405)


@pytest.mark.slow
def test_a_model_input_larger_than_the_records_is_resized_as_on_the_image_path(
        manifest: Path, backbone_weights: Path, tmp_path: Path) -> None:
    run = settings(manifest, tmp_path, backbone_weights, epochs=1, image_size=40)
    record = stage.train(run)
    assert record["image_size"] == 40 and record["feature_cache"]["used"] is True
    assert record["feature_cache"]["feature_shape"] == [2, 2, 1280]
    model = keras.saving.load_model(run.out_dir / "model.keras")
    setup.compile_model(model, 1e-3)
    validation = pipeline.make_dataset(shard_paths(manifest, "validation"), image_size=SIZE, target_size=40,
                                       num_classes=CLASSES, batch_size=8, training=False, deterministic=True)
    loss, _ = model.evaluate(validation, verbose=0)
    assert loss == pytest.approx(read_history(run.out_dir / "history.csv")[-1]["val_loss"], rel=1e-4, abs=1e-5)


@pytest.mark.slow
def test_mixed_precision_saved_model_scores_what_the_head_scored(manifest: Path, backbone_weights: Path,
                                                                 tmp_path: Path) -> None:
    """bfloat16 compute: the extractor runs the backbone as the saved model runs it, so the saved
    model scores what the head scored."""
    run = settings(manifest, tmp_path, backbone_weights, epochs=1, precision="mixed_bfloat16")
    record = stage.train(run)
    cache = record["feature_cache"]
    assert record["precision"] == "mixed_bfloat16" and cache["used"] is True
    model = keras.saving.load_model(run.out_dir / "model.keras")
    setup.compile_model(model, 1e-3)
    validation = pipeline.make_dataset(shard_paths(manifest, "validation"), image_size=SIZE, num_classes=CLASSES,
                                       batch_size=8, training=False, deterministic=True)
    loss, _ = model.evaluate(validation, verbose=0)
    assert loss == pytest.approx(read_history(run.out_dir / "history.csv")[-1]["val_loss"], rel=1e-4, abs=1e-5)
