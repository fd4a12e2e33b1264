"""Run by tests/test_jax_backend.py in a fresh process on Keras' JAX backend (Keras picks its backend
once, at import): every architecture of the registry built, trained a few steps data-parallel over
the CPU's JAX devices, and saved as the training stage saves it.

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python tests/jax_training.py WORK_DIR

Writes WORK_DIR/ARCH.keras, WORK_DIR/ARCH-images.npy and WORK_DIR/ARCH-probabilities.npy (the
trained model's outputs on those images, computed on JAX) and WORK_DIR/summary.json (each model's
parameters and forward FLOPs as JAX counts them).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from flowerlab import backends

backends.activate("jax")  # before anything imports Keras

import keras  # noqa: E402
import numpy as np  # noqa: E402

from flowerlab.jax_devices import select_devices  # noqa: E402
from flowerlab.models.build import build_model, count_parameters  # noqa: E402
from flowerlab.models.flops import forward_flops  # noqa: E402
from flowerlab.models.registry import ARCH_NAMES, get_spec  # noqa: E402
from flowerlab.training.records import inference_copy, save_model_atomically  # noqa: E402
from flowerlab.training.setup import compile_model  # noqa: E402

CLASSES = 4
PER_DEVICE_BATCH = 2
STEPS = 2


def main(work: Path) -> None:
    device = select_devices("cpu")
    rng = np.random.default_rng(0)
    summary = {"backend": keras.backend.backend(), "device": device.to_json(), "models": {}}
    for arch in ARCH_NAMES:
        started = time.perf_counter()
        size = max(get_spec(arch).min_image_size, 32)
        with device.strategy.scope():
            model = build_model(arch, num_classes=CLASSES, image_size=size, weights="none")
            compile_model(model, 1e-3)
        batch = PER_DEVICE_BATCH * device.replicas
        images = rng.uniform(0, 1, (batch * STEPS, size, size, 3)).astype("float32")
        labels = keras.utils.to_categorical(rng.integers(0, CLASSES, batch * STEPS), CLASSES)
        history = model.fit(images, labels, batch_size=batch, epochs=1, verbose=0, shuffle=False)
        probe = images[:batch]
        np.save(work / f"{arch}-images.npy", probe)
        np.save(work / f"{arch}-probabilities.npy", model.predict(probe, batch_size=batch, verbose=0))
        save_model_atomically(inference_copy(model), work / f"{arch}.keras")
        total, trainable = count_parameters(model)
        summary["models"][arch] = {"image_size": size, "parameters": [total, trainable],
                                   "forward_flops": forward_flops(model, size)[0],
                                   "loss": history.history["loss"][-1],
                                   "seconds": round(time.perf_counter() - started, 1),
                                   "layers": sorted({type(layer).__module__.split(".")[0] for layer in model.layers})}
        keras.backend.clear_session()
    (work / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
