"""Custom Keras layers shared by the architectures.

`FusedBatchNormalization` exists for speed only: Keras 3's `BatchNormalization` computes the
moments and the normalisation with separate element-wise ops, while TensorFlow's
`FusedBatchNormV3` kernel does it in one pass over the activations. On the 2-core development
machine that halves SqueezeNet's training time (bench/bench_models.py --compare batchnorm),
because memory traffic over the large early activations, not arithmetic, is what costs there.
The math, the weights and their names are those of `keras.layers.BatchNormalization`, so a
model can switch between the two without changing its parameter count or its results.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="flowerlab")
class FusedBatchNormalization(keras.layers.Layer):
    """Batch normalisation over the last axis of 4-D (NHWC) inputs with TF's fused kernel.

    Same weights as `keras.layers.BatchNormalization(axis=-1, momentum, epsilon)` — `gamma`,
    `beta` (trainable), `moving_mean`, `moving_variance` (not trainable) — and the same
    behaviour: in training (and only while the layer is trainable) it normalises with the
    batch's mean and biased variance and moves the moving statistics towards them by
    `1 - momentum`; otherwise it normalises with the moving statistics.
    """

    def __init__(self, momentum: float = 0.99, epsilon: float = 1e-3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if epsilon <= 0.0:
            raise ValueError(f"epsilon must be positive, got {epsilon}")
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.supports_masking = True

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(
                "FusedBatchNormalization needs 4-D channels-last inputs with a known channel "
                f"count, got shape {input_shape}"
            )
        shape = (int(input_shape[-1]),)
        # autocast=False as in keras.layers.BatchNormalization: under a mixed policy the
        # statistics and the affine parameters stay float32 (the fused kernel requires it).
        self.gamma = self.add_weight(
            shape=shape, name="gamma", initializer="ones", trainable=True, autocast=False
        )
        self.beta = self.add_weight(
            shape=shape, name="beta", initializer="zeros", trainable=True, autocast=False
        )
        self.moving_mean = self.add_weight(
            shape=shape, name="moving_mean", initializer="zeros", trainable=False, autocast=False
        )
        self.moving_variance = self.add_weight(
            shape=shape,
            name="moving_variance",
            initializer="ones",
            trainable=False,
            autocast=False,
        )
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: shape[0]})

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        # The kernel accepts float16/bfloat16/float32 activations with float32 statistics
        # and accumulates in float32, as Keras' layer does by upcasting.
        inputs = tf.cast(inputs, self.compute_dtype)
        # oneDNN's bfloat16 batch-norm kernel is fast only when the channels fill whole vector
        # registers (multiples of 16). SqueezeNet's 24-channel batch norms at 192x192 took 383 ms
        # per batch of 64 (forward + backward) in bfloat16 against 91 ms upcast to float32 and
        # back; its 32-channel one took 66 ms in bfloat16 against 119 ms upcast (2-core AMD EPYC,
        # /tmp microbenchmark recorded in bench/README.md). So upcast exactly when it pays.
        if inputs.dtype == tf.bfloat16 and inputs.shape[-1] % 16:
            return tf.cast(self._normalize(tf.cast(inputs, tf.float32), training), tf.bfloat16)
        return self._normalize(inputs, training)

    def _normalize(self, inputs: tf.Tensor, training: bool | None) -> tf.Tensor:
        gamma = tf.convert_to_tensor(self.gamma.value)
        beta = tf.convert_to_tensor(self.beta.value)
        if training and self.trainable:
            outputs, batch_mean, batch_variance = tf.compat.v1.nn.fused_batch_norm(
                inputs, gamma, beta, epsilon=self.epsilon, data_format="NHWC", is_training=True
            )
            self._update_moving_statistics(inputs, batch_mean, batch_variance)
            return outputs
        outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
            inputs,
            gamma,
            beta,
            mean=tf.convert_to_tensor(self.moving_mean.value),
            variance=tf.convert_to_tensor(self.moving_variance.value),
            epsilon=self.epsilon,
            data_format="NHWC",
            is_training=False,
        )
        return outputs

    def _update_moving_statistics(
        self, inputs: tf.Tensor, batch_mean: tf.Tensor, batch_variance: tf.Tensor
    ) -> None:
        # The kernel returns the *unbiased* (Bessel-corrected) batch variance for the running
        # estimate; Keras' BatchNormalization tracks the biased one. Undo the correction so the
        # moving variance, and so inference, matches Keras exactly.
        shape = tf.shape(inputs)
        count = tf.cast(shape[0] * shape[1] * shape[2], tf.float32)
        biased_variance = batch_variance * (count - 1.0) / tf.maximum(count, 1.0)
        self.moving_mean.assign(
            self.moving_mean.value * self.momentum + batch_mean * (1.0 - self.momentum)
        )
        self.moving_variance.assign(
            self.moving_variance.value * self.momentum + biased_variance * (1.0 - self.momentum)
        )

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "momentum": self.momentum, "epsilon": self.epsilon}


def stock_config(config: Any) -> Any:
    """A model config with every FusedBatchNormalization replaced by the stock
    `keras.layers.BatchNormalization` (channels last) with the same momentum and epsilon.

    The weights are the same four in the same order, so `from_config` on the result plus
    `set_weights` gives the same model, which any Keras opens without flowerlab installed.
    """
    if isinstance(config, list):
        return [stock_config(item) for item in config]
    if not isinstance(config, dict):
        return config
    if config.get("class_name") == FusedBatchNormalization.__name__:
        layer = config["config"]
        return {
            **config,
            "module": "keras.layers",
            "class_name": "BatchNormalization",
            "registered_name": None,
            "config": {key: layer[key] for key in ("name", "trainable", "dtype", "momentum", "epsilon") if key in layer}
            | {"axis": -1},
        }
    return {key: stock_config(value) for key, value in config.items()}
