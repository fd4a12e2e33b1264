"""Every published model.keras opens with plain Keras, without flowerlab, and predicts the same."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from portable import predict_without_flowerlab

from flowerlab.models.build import build_model
from flowerlab.models.layers import FusedBatchNormalization, stock_config
from flowerlab.models.registry import ARCH_NAMES, get_spec
from flowerlab.training.records import inference_copy, save_model_atomically


def trained_looking(arch: str, rng: np.random.Generator) -> keras.Model:
    """A model with weights and batch-norm statistics away from their initial values, as after training."""
    spec = get_spec(arch)
    model = build_model(arch, num_classes=4, image_size=max(spec.min_image_size, 32), weights="none")
    for weight in model.weights:
        values = rng.normal(0.0, 0.05, weight.shape)
        if "moving_variance" in weight.path or "gamma" in weight.path:
            values = 1.0 + np.abs(values)
        weight.assign(values.astype(weight.dtype))
    return model


@pytest.mark.slow  # every architecture, then a plain-Keras process
def test_published_models_load_without_flowerlab_on_either_backend_and_predict_the_same(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    models, images, expected = {}, {}, {}
    for arch in ARCH_NAMES:
        model = trained_looking(arch, rng)
        size = model.input_shape[1]
        images[arch] = rng.uniform(0, 1, (3, size, size, 3)).astype("float32")
        expected[arch] = model.predict(images[arch], verbose=0)
        models[arch] = tmp_path / f"{arch}.keras"
        save_model_atomically(inference_copy(model), models[arch])
    loaded = predict_without_flowerlab(models, images, tmp_path)
    for arch in ARCH_NAMES:
        np.testing.assert_allclose(loaded[arch], expected[arch], atol=1e-5, err_msg=arch)
    # And on Keras' JAX backend, which computes in XLA's kernels: the same float32 products summed in
    # another order, about 1e-6 apart per layer; 1e-4 on a probability leaves a wide margin and is far
    # from anything that changes a prediction.
    on_jax = predict_without_flowerlab(models, images, tmp_path, backend="jax")
    for arch in ARCH_NAMES:
        np.testing.assert_allclose(on_jax[arch], expected[arch], atol=1e-4, err_msg=f"{arch} on JAX")


def test_the_fast_batch_norm_becomes_keras_own_with_the_same_settings() -> None:
    inputs = keras.Input((8, 8, 16))
    outputs = FusedBatchNormalization(momentum=0.9, epsilon=1e-5, name="bn")(inputs)
    config = stock_config(keras.Model(inputs, outputs).get_config())
    layer = next(layer for layer in config["layers"] if layer["config"]["name"] == "bn")
    assert layer["class_name"] == "BatchNormalization" and layer["module"] == "keras.layers"
    assert layer["config"]["momentum"] == 0.9 and layer["config"]["epsilon"] == 1e-5
    assert layer["config"]["axis"] == -1


@pytest.mark.parametrize("policy", ["mixed_bfloat16"])
def test_a_mixed_precision_model_loads_without_flowerlab(policy: str, tmp_path: Path) -> None:
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = trained_looking("squeezenet", np.random.default_rng(1))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    images = np.random.default_rng(2).uniform(0, 1, (2, 32, 32, 3)).astype("float32")
    save_model_atomically(inference_copy(model), tmp_path / "squeezenet.keras")
    loaded = predict_without_flowerlab({"squeezenet": tmp_path / "squeezenet.keras"}, {"squeezenet": images}, tmp_path)
    np.testing.assert_allclose(loaded["squeezenet"], model.predict(images, verbose=0), atol=2e-2)
