"""Convolution weight gradients by flowerlab's AVX2 kernel where TensorFlow's are slow.

On a CPU without AVX-512, TensorFlow's CPU kernels compute a convolution's weight gradient at
about half the machine's float32 peak, and that caps the convnet's training speed
(docs/results.md). flowerlab carries one hand-written kernel for it (conv2d_weight_gradient.cc,
built by `native`), uses it where `policy` says it is faster, and routes the model's eligible
convolutions to it (`layers`). training.json's `kernels.weight_gradients` records what ran and why.
"""

from __future__ import annotations

import os
from typing import Any

from flowerlab.training.weight_gradients import layers, native, policy


def choose(device_kind: str) -> policy.Choice:
    """Whether this process's trainings on `device_kind` use flowerlab's kernel: the policy, and
    the kernel built and loaded (compiled now on first use)."""
    import keras

    from flowerlab import devices, kernels

    choice = policy.choose(device_kind=device_kind, flags=devices.cpu_flags(), onednn=kernels.onednn_enabled(),
                           environ=os.environ)
    if choice.use_flowerlab and keras.backend.backend() != "tensorflow":
        return policy.Choice(False, "Keras runs on JAX: XLA computes the gradients")
    if choice.use_flowerlab:
        try:
            native.load()
        except native.NativeKernelUnavailable as error:
            return policy.Choice(False, f"flowerlab's kernel is unavailable: {error}")
    return choice


def use_for(model: Any, device_kind: str) -> dict[str, Any]:
    """Route `model`'s eligible convolutions (after it is compiled) where `choose` allows; returns
    the record of what its training runs (training.json's `kernels.weight_gradients`)."""
    choice = choose(device_kind)
    if choice.use_flowerlab and getattr(model, "jit_compile", False):
        choice = policy.Choice(False, "the model's steps are XLA-compiled")
    routed = layers.install(model) if choice.use_flowerlab else 0
    if choice.use_flowerlab and not routed:
        choice = policy.Choice(False, "no convolution of this model qualifies (layers.eligible)")
    return {"kernel": "flowerlab" if routed else "tensorflow", "reason": choice.reason, "convolutions": routed,
            "of": layers.convolution_count(model)}


def kernel_name(device_kind: str) -> str:
    """"flowerlab" or "tensorflow": the weight-gradient kernel a training on `device_kind` runs
    where its model has eligible convolutions (the precision and speed probes run it too)."""
    return "flowerlab" if choose(device_kind).use_flowerlab else "tensorflow"


def describe(record: dict[str, Any]) -> str:
    """One log line for use_for's record."""
    if record["kernel"] == "flowerlab":
        return (f"convolution weight gradients: flowerlab's AVX2 kernel for {record['convolutions']} of "
                f"{record['of']} convolutions ({record['reason']})")
    return f"convolution weight gradients: TensorFlow's ({record['reason']})"
