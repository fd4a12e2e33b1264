"""FusedAdam: the same updates as Keras' Adam through TensorFlow's one-pass kernel."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from flowerlab.training.optimizers import FusedAdam


@pytest.fixture(autouse=True)
def float32_policy():
    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")


def small_model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(16, activation="relu")(x)
    outputs = keras.layers.Dense(3, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs)


def data(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((48, 8, 8, 3), dtype=np.float32)
    y = keras.utils.to_categorical(rng.integers(0, 3, 48), 3)
    return x, y


def trained_weights(optimizer: keras.optimizers.Optimizer, epochs: int = 3) -> list[np.ndarray]:
    model = small_model()
    model.compile(optimizer=optimizer, loss="categorical_crossentropy")
    x, y = data()
    model.fit(x, y, batch_size=8, epochs=epochs, shuffle=False, verbose=0)
    return model.get_weights()


def assert_same_weights(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_matches_keras_adam_step_for_step():
    initial = small_model().get_weights()
    want = trained_weights(keras.optimizers.Adam(learning_rate=3e-3))
    got = trained_weights(FusedAdam(learning_rate=3e-3))
    assert_same_weights(got, want)
    # 18 steps at lr 3e-3 really moved the weights: the comparison is not of two no-ops.
    assert max(np.abs(g - i).max() for g, i in zip(got, initial, strict=True)) > 1e-2


def test_matches_keras_adam_with_its_hyperparameters():
    settings = {"learning_rate": 1e-2, "beta_1": 0.8, "beta_2": 0.95, "epsilon": 1e-4}
    assert_same_weights(trained_weights(FusedAdam(**settings)),
                        trained_weights(keras.optimizers.Adam(**settings)))


def test_matches_keras_adam_under_mixed_bfloat16():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    want = trained_weights(keras.optimizers.Adam(learning_rate=3e-3), epochs=1)
    got = trained_weights(FusedAdam(learning_rate=3e-3), epochs=1)
    for g, w in zip(got, want, strict=True):  # bfloat16 activations: looser, still tight
        np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-4)


def test_dense_updates_take_the_fused_kernel(monkeypatch):
    calls = []
    original = keras.optimizers.Adam.update_step

    def spy(self, gradient, variable, learning_rate):
        calls.append(variable.name)
        return original(self, gradient, variable, learning_rate)

    monkeypatch.setattr(keras.optimizers.Adam, "update_step", spy)
    trained_weights(FusedAdam(learning_rate=1e-3), epochs=1)
    assert calls == []  # Keras' element-wise update never ran
    trained_weights(FusedAdam(learning_rate=1e-3, amsgrad=True), epochs=1)
    assert calls  # amsgrad is not what the kernel computes: Keras' update does it


def test_amsgrad_falls_back_to_keras_update():
    assert_same_weights(trained_weights(FusedAdam(learning_rate=3e-3, amsgrad=True)),
                        trained_weights(keras.optimizers.Adam(learning_rate=3e-3, amsgrad=True)))


def test_saved_with_the_model_and_resumes(tmp_path: Path):
    x, y = data()
    model = small_model()
    model.compile(optimizer=FusedAdam(learning_rate=2e-3), loss="categorical_crossentropy")
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored.optimizer, FusedAdam)
    assert int(restored.optimizer.iterations.numpy()) == 6
    assert restored.optimizer.get_config()["learning_rate"] == pytest.approx(2e-3)
    # The restored moments continue the same trajectory as the live optimizer.
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    restored.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert_same_weights(restored.get_weights(), model.get_weights())
