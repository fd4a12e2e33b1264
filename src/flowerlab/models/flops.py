"""How many FLOPs a model's forward pass and one training step on one image take.

Counted from the model itself (TensorFlow's profiler on its inference graph), so that the records
can say how near the hardware's peak a training ran (flowerlab.training.peak) and the study's
time can be planned from it (flowerlab.training.estimate).
"""

from __future__ import annotations

import logging
from typing import Any

# A training step's FLOPs per image as a multiple of the forward pass's.
FORWARD_AND_BACKWARD = 3.0  # the backward pass costs about twice the forward (input + weight gradients)
FORWARD_ONLY = 1.0  # a frozen backbone: nothing before the head needs a gradient
# The dtype a Keras precision policy computes in, whose peak the achieved rate is set against.
COMPUTE_DTYPES = {"float32": "float32", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}


def forward_flops(model: Any, image_size: int) -> tuple[int, dict[str, int]]:
    """FLOPs of one image's forward pass and their split by TensorFlow op type.

    TensorFlow's profiler on the model's inference graph, variables frozen to constants, batch 1.
    Conv2D, DepthwiseConv2dNative and MatMul count 2 FLOPs per multiply-add. A model on Keras' JAX
    backend is counted by XLA's cost analysis of its compiled forward pass (no split by op).
    """
    import keras

    if keras.backend.backend() == "jax":
        return xla_forward_flops(model, image_size), {}
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2_as_graph,
    )

    forward = tf.function(lambda images: model(images, training=False))
    concrete = forward.get_concrete_function(tf.TensorSpec([1, image_size, image_size, 3], tf.float32))
    _, graph_def = convert_variables_to_constants_v2_as_graph(concrete)
    tf_logger = logging.getLogger("tensorflow")
    level = tf_logger.level
    # The v1 profiler logs a deprecation warning about its own internals on every call.
    tf_logger.setLevel(logging.ERROR)
    try:
        with tf.Graph().as_default() as graph:
            tf.graph_util.import_graph_def(graph_def, name="")
            builder = tf.compat.v1.profiler.ProfileOptionBuilder
            options = builder(builder.float_operation()).with_empty_output().build()
            profile = tf.compat.v1.profiler.profile(
                graph=graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op", options=options
            )
    finally:
        tf_logger.setLevel(level)
    by_op: dict[str, int] = {}
    pending = list(profile.children)  # the op view nests each op type under the previous one
    while pending:
        node = pending.pop()
        if node.float_ops:
            by_op[node.name] = by_op.get(node.name, 0) + int(node.float_ops)
        pending.extend(node.children)
    return int(profile.total_float_ops), dict(sorted(by_op.items(), key=lambda item: -item[1]))


def xla_forward_flops(model: Any, image_size: int) -> int:
    """XLA's count of one image's forward pass (2 FLOPs per multiply-add, as TensorFlow's
    profiler; XLA also counts the element-wise ops, a few percent more on these models).

    Counted on the HLO before any device's optimisation, by the CPU backend's analysis, whatever
    device trains: XLA's GPU compiler hands convolutions to cuDNN as custom calls, which the
    analysis of a compiled GPU program counts as no FLOPs (on an H200 it put the convnet's forward
    pass at 0.0015 GFLOP instead of 1.0). The count is the model's, not the device's."""
    import jax

    def forward(trainable: Any, non_trainable: Any, images: Any) -> Any:
        outputs, _ = model.stateless_call(trainable, non_trainable, images, training=False)
        return outputs

    def shapes(variables: Any) -> list[Any]:
        return [jax.ShapeDtypeStruct(tuple(variable.shape), variable.dtype) for variable in variables]

    images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), "float32")
    with jax.default_device(jax.devices("cpu")[0]):
        analysis = jax.jit(forward).lower(shapes(model.trainable_variables), shapes(model.non_trainable_variables),
                                          images).cost_analysis()
    if isinstance(analysis, list):  # one entry per device in older JAX releases
        analysis = analysis[0]
    return int((analysis or {}).get("flops", 0))


def training_flops_factor(model: Any) -> float:
    """Training FLOPs per image as a multiple of the forward FLOPs: 3 (forward + backward), or 1
    when the model holds a frozen backbone (a nested model that is not trainable): then only
    the head needs gradients, and its backward pass is negligible."""
    import keras

    frozen = any(isinstance(layer, keras.Model) and not layer.trainable for layer in model.layers)
    return FORWARD_ONLY if frozen else FORWARD_AND_BACKWARD


def training_flops_per_image(model: Any, image_size: int, *, cached_feature_epochs: int | None = None) -> float:
    """FLOPs of one training image-epoch: the forward FLOPs times `training_flops_factor`, or,
    for a frozen backbone trained on its cached features over `cached_feature_epochs` epochs,
    one forward pass per image for all of them (the head's share is negligible)."""
    forward, _ = forward_flops(model, image_size)
    if cached_feature_epochs:
        return forward * FORWARD_ONLY / cached_feature_epochs
    return forward * training_flops_factor(model)
