"""The fastest a training step could run on this machine: a roofline summed layer by layer.

Each layer of a training step is bound either by arithmetic (its FLOPs over the matmul peak) or
by memory traffic (its bytes over the measured bandwidth), whichever takes longer; the model's
roof is the sum over its layers. A plain roofline of the whole model (total FLOPs against total
bytes) would let a convolution's arithmetic hide a batch norm's traffic, which it cannot, since
the layers run one after another.

Counted per training image, from the model's layers and their shapes (no profiler needed):
* FLOPs: convolutions and dense layers, 2 per multiply-add, times 3 for forward + backward (the
  input and weight gradients each cost a forward pass); element-wise layers count none.
* bytes: every layer reads its inputs and writes its outputs in the forward pass, and reads the
  output gradient and its input and writes the input gradient in the backward pass: 3 x 4 bytes x
  (input + output elements) in float32; plus each weight read forward and backward and updated by
  Adam (weight, gradient and two moments read, three written: 9 x 4 bytes per parameter per step,
  shared by the batch).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

FORWARD_AND_BACKWARD = 3
BYTES = 4  # float32
WEIGHT_TRAFFIC = 9  # per parameter and step: forward and backward reads, Adam's 4 reads and 3 writes


@dataclass(frozen=True)
class LayerCost:
    name: str
    flops: float  # per training image
    bytes: float  # per training image


def _elements(shape: Any) -> int:
    return math.prod(int(size) for size in shape[1:])  # without the batch axis


def _shapes(tensors: Any) -> list[Any]:
    items = tensors if isinstance(tensors, list | tuple) else [tensors]
    return [tensor.shape for tensor in items]


def _forward_flops(layer: Any, outputs: int) -> float:
    import keras

    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        return 2.0 * outputs * kh * kw
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw = layer.kernel_size
        return 2.0 * outputs * kh * kw * int(layer.input.shape[-1]) / layer.groups
    if isinstance(layer, keras.layers.Dense):
        return 2.0 * int(layer.input.shape[-1]) * int(layer.units)
    return 0.0


def _leaves(model: Any) -> Iterator[Any]:
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaves(layer)
        elif not isinstance(layer, keras.layers.InputLayer):
            yield layer


def layer_costs(model: Any, batch_size: int) -> list[LayerCost]:
    """Each layer's training FLOPs and bytes per image (see the module's docstring)."""
    costs = []
    for layer in _leaves(model):
        inputs = sum(_elements(shape) for shape in _shapes(layer.input))
        outputs = sum(_elements(shape) for shape in _shapes(layer.output))
        weights = sum(math.prod(int(size) for size in weight.shape) for weight in layer.trainable_weights)
        flops = FORWARD_AND_BACKWARD * _forward_flops(layer, outputs)
        traffic = FORWARD_AND_BACKWARD * BYTES * (inputs + outputs) + WEIGHT_TRAFFIC * BYTES * weights / batch_size
        costs.append(LayerCost(layer.name, flops, traffic))
    return costs


def roof_images_per_second(costs: list[LayerCost], *, peak_gflops: float, bandwidth_gb_per_s: float) -> float:
    """The most images/s a training step of layers `costs` can reach at this peak and bandwidth."""
    return 1.0 / sum(max(cost.flops / (peak_gflops * 1e9), cost.bytes / (bandwidth_gb_per_s * 1e9))
                     for cost in costs)
