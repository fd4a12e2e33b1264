"""Batch-norm folding (flowerlab.models.folding): same inference outputs, fewer layers, and the
original model untouched."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from flowerlab.models.build import build_model
from flowerlab.models.folding import count_batch_norms, fold_batch_norms


def randomise_batch_norms(model: keras.Model, seed: int = 0) -> None:
    """Statistics and gamma/beta far from the identity defaults, so that a fold that drops or
    misplaces any of them changes the outputs (with the defaults a batch norm is ~ a no-op)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            randomise_batch_norms(layer, seed + 1)
        elif isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0.0, 0.3, n))
            layer.moving_variance.assign(rng.uniform(0.3, 3.0, n))
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 1.5, n))
            if layer.center:
                layer.beta.assign(rng.normal(0.0, 0.3, n))


def images(size: int, count: int = 4) -> np.ndarray:
    return np.random.default_rng(1).random((count, size, size, 3), dtype=np.float32)


def assert_same_outputs(original: keras.Model, folded: keras.Model, x: np.ndarray) -> None:
    expected = keras.ops.convert_to_numpy(original(x, training=False))
    actual = keras.ops.convert_to_numpy(folded(x, training=False))
    assert np.abs(expected).mean() > 1e-2  # outputs that carry signal, not a collapsed network
    # float32 rounding through ~50 layers; a wrong fold is off by O(1) relative
    assert np.abs(actual - expected).max() <= 1e-4 * np.abs(expected).max()


def test_mobilenet_v2_folds_every_batch_norm_with_the_same_outputs() -> None:
    backbone = keras.applications.MobileNetV2(input_shape=(64, 64, 3), include_top=False, weights=None)
    randomise_batch_norms(backbone)
    before = [weight.copy() for weight in backbone.get_weights()]
    folded = fold_batch_norms(backbone)
    assert count_batch_norms(backbone) == 52 and count_batch_norms(folded) == 0
    assert len(folded.layers) == len(backbone.layers) - 52
    assert not folded.trainable and not folded.trainable_weights
    assert_same_outputs(backbone, folded, images(64))
    after = backbone.get_weights()
    assert len(after) == len(before) and all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))


def test_a_nested_backbone_is_folded_inside_the_whole_model() -> None:
    model = build_model("mobilenet_v2", num_classes=3, image_size=32, weights="none")
    randomise_batch_norms(model)
    folded = fold_batch_norms(model)
    assert count_batch_norms(model) == 52 and count_batch_norms(folded) == 0
    assert [layer.name for layer in folded.layers] == [layer.name for layer in model.layers]
    assert_same_outputs(model, folded, images(32))


def test_only_exact_folds_are_made() -> None:
    """Folded: a bias-less conv, a conv with a bias, a depthwise conv with multiplier 2. Kept: a
    batch norm after a conv with an activation, after a conv whose output is also used elsewhere,
    after a Dense layer, and one normalising another axis than the channels."""
    inputs = keras.Input((12, 12, 4))
    a = keras.layers.BatchNormalization()(keras.layers.Conv2D(6, 3, use_bias=False)(inputs))  # folded
    b = keras.layers.BatchNormalization()(keras.layers.Conv2D(6, 3, use_bias=True)(inputs))  # folded
    c = keras.layers.BatchNormalization()(keras.layers.Conv2D(6, 3, activation="relu")(inputs))  # kept
    shared = keras.layers.Conv2D(6, 3, use_bias=False)(inputs)
    d = keras.layers.Add()([keras.layers.BatchNormalization()(shared), shared])  # kept: shared also feeds Add
    e = keras.layers.BatchNormalization()(
        keras.layers.DepthwiseConv2D(3, depth_multiplier=2, use_bias=False)(inputs))  # folded: 8 channels
    f = keras.layers.BatchNormalization(axis=1)(keras.layers.Conv2D(6, 3, use_bias=False)(inputs))  # kept
    merged = keras.layers.Concatenate()([a, b, c, d, e, f])
    g = keras.layers.BatchNormalization()(keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(merged)))
    model = keras.Model(inputs, g)
    randomise_batch_norms(model, seed=7)
    folded = fold_batch_norms(model)
    assert count_batch_norms(model) == 7 and count_batch_norms(folded) == 4
    assert_same_outputs(model, folded, np.random.default_rng(2).normal(size=(3, 12, 12, 4)).astype("float32"))


def test_a_sequential_model_is_refused() -> None:
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3), keras.layers.BatchNormalization()])
    with pytest.raises(TypeError, match="functional"):
        fold_batch_norms(model)
