"""Route a Keras model's eligible Conv2D layers' weight gradients to flowerlab's kernel.

Each eligible layer's `convolution_op` (the method Keras' Conv2D.call runs) is replaced on the
instance by the same convolution with a custom gradient: the input gradient is TensorFlow's own
op (Conv2DBackpropInput, oneDNN's brgemm kernel where oneDNN runs), the weight gradient
flowerlab's kernel. The forward pass is the same Conv2D op, so TensorFlow still fuses it with the
bias and the activation. Nothing of it is saved: the layer's config and weights are Keras' own,
and a saved model opens with plain Keras.

Eligible: a trainable plain Conv2D computing in float32, channels last, stride 1, no dilation,
one group, 'same' padding, with a kernel larger than 1x1: the course's convnet's and squeezenet's
3x3 convolutions. A 1x1 convolution's weight gradient is one matrix product, which oneDNN runs
well: run on every convolution of squeezenet and MobileNetV2, flowerlab's kernel took the 1x1 ones
at 0.47-2.2x oneDNN's speed, slower in sum on squeezenet's; it runs the 3x3 ones 1.2-1.8x as fast
from 24 px up and about as fast at 12 px (bench/bench_convolutions.py --cpu-kind avx2).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from flowerlab.training.weight_gradients import native

MARKER = "_flowerlab_weight_gradient"  # on the replacement function


def all_layers(model: Any) -> Iterator[Any]:
    """Every layer of `model`, nested models' included."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from all_layers(layer)


def is_convolution(layer: Any) -> bool:
    import keras

    return isinstance(layer, keras.layers.Conv2D)


def eligible(layer: Any) -> bool:
    return (is_convolution(layer) and layer.trainable and tuple(layer.kernel_size) != (1, 1)
            and tuple(layer.strides) == (1, 1) and tuple(layer.dilation_rate) == (1, 1) and layer.groups == 1
            and layer.padding == "same" and layer.data_format == "channels_last"
            and layer.compute_dtype == "float32" and layer.kernel.dtype == "float32")


def intra_op_threads() -> int:
    """The threads TensorFlow's own kernels use (flowerlab train --threads), else the CPUs this
    process may run on, which is TensorFlow's default."""
    import tensorflow as tf

    if tf.config.threading.get_intra_op_parallelism_threads():
        return tf.config.threading.get_intra_op_parallelism_threads()
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def convolution_with_flowerlab_weight_gradient(kernel_size: tuple[int, int], threads: int) -> Any:
    """A `convolution_op(inputs, kernel)` for one layer."""
    import tensorflow as tf

    def weight_gradient(inputs: Any, output_gradient: Any) -> Any:
        return native.conv2d_weight_gradient(inputs, output_gradient, kernel_size, threads)

    @tf.custom_gradient
    def convolution(inputs: Any, kernel: Any) -> Any:
        outputs = tf.nn.conv2d(inputs, kernel, strides=1, padding="SAME")

        def gradient(output_gradient: Any) -> tuple[Any, Any]:
            input_gradient = tf.raw_ops.Conv2DBackpropInput(
                input_sizes=tf.shape(inputs), filter=kernel, out_backprop=output_gradient,
                strides=[1, 1, 1, 1], padding="SAME")
            kernel_gradient = tf.numpy_function(weight_gradient, [inputs, output_gradient], tf.float32,
                                                stateful=False, name="flowerlab_conv2d_weight_gradient")
            return input_gradient, tf.ensure_shape(kernel_gradient, kernel.shape)

        return outputs, gradient

    def convolution_op(inputs: Any, kernel: Any) -> Any:
        return convolution(inputs, tf.convert_to_tensor(kernel))

    setattr(convolution_op, MARKER, True)
    return convolution_op


def convolution_count(model: Any) -> int:
    return sum(1 for layer in all_layers(model) if is_convolution(layer))


def routed_count(model: Any) -> int:
    """How many of `model`'s convolutions run flowerlab's weight-gradient kernel."""
    return sum(1 for layer in all_layers(model)
               if is_convolution(layer) and getattr(layer.convolution_op, MARKER, False))


def install(model: Any) -> int:
    """Route each eligible convolution of `model`; returns how many are routed."""
    threads = intra_op_threads()
    routed = 0
    for layer in all_layers(model):
        if eligible(layer):
            if not getattr(layer.convolution_op, MARKER, False):
                layer.convolution_op = convolution_with_flowerlab_weight_gradient(tuple(layer.kernel_size), threads)
            routed += 1
    return routed
