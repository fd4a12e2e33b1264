"""Load published models with plain Keras in a process that cannot import flowerlab."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

# Runs in the subprocess: flowerlab is made unimportable before Keras loads anything, and the
# script checks that it really is.
LOADER = r"""
import importlib.abc, json, sys
class NoFlowerlab(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "flowerlab" or name.startswith("flowerlab."):
            raise ImportError("flowerlab is not importable in this process")
sys.meta_path.insert(0, NoFlowerlab())
try:
    import flowerlab
except ImportError:
    pass
else:
    raise SystemExit("flowerlab was importable")
import keras, numpy as np
jobs = json.loads(sys.argv[1])
for model_path, images_path, out_path in jobs:
    model = keras.models.load_model(model_path)  # safe mode, no custom objects
    np.save(out_path, model.predict(np.load(images_path), verbose=0).astype("float32"))
    print("loaded", model_path, "on", keras.backend.backend(), [type(layer).__module__ for layer in model.layers][:3])
"""


def predict_without_flowerlab(models: dict[str, Path], images: dict[str, np.ndarray], work: Path, *,
                              backend: str = "tensorflow") -> dict[str, np.ndarray]:
    """{name: probabilities} from each model.keras loaded by plain Keras on `backend` in a fresh process."""
    jobs = []
    for name, model_path in models.items():
        np.save(work / f"{name}-images.npy", images[name])
        jobs.append([str(model_path), str(work / f"{name}-images.npy"), str(work / f"{name}-out.npy")])
    result = subprocess.run([sys.executable, "-c", LOADER, json.dumps(jobs)], capture_output=True, text=True,
                            timeout=600, check=False, env={**os.environ, "KERAS_BACKEND": backend})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return {name: np.load(work / f"{name}-out.npy") for name in models}
