"""bench/bench_convolutions.py --quick: each convolution's passes timed under both kernel settings."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flowerlab.models.build import build_model


@pytest.mark.slow
def test_every_pass_a_training_step_runs_is_timed_under_each_setting(repo_root: Path, tmp_path: Path,
                                                                     cxx_compiler: str) -> None:
    out = tmp_path / "convolutions.csv"
    # A user's own setting must not leak into the settings the benchmark compares.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "1"}
    # As an AVX2-only CPU, whose TensorFlow defaults (Eigen) are known on any x86-64 CPU.
    done = subprocess.run([sys.executable, str(repo_root / "bench" / "bench_convolutions.py"), "--quick",
                           "--archs", "convnet", "--threads", "2", "--cpu-kind", "avx2", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    # Every convolution of the model, in order (the bench builds it in a fresh process, so its layer
    # names are not this process's), with its input shape, filters, kernel size and stride.
    model = build_model("convnet", num_classes=5, image_size=16, weights="none")
    convolutions = [layer for layer in model.layers if type(layer).__name__ == "Conv2D"]
    layers = list(dict.fromkeys(row["layer"] for row in rows))
    shapes = {row["layer"]: row["shape"] for row in rows}
    assert [shapes[layer] for layer in layers] == [
        f"{'x'.join(str(size) for size in conv.input.shape[1:])}->{conv.filters} "
        f"{conv.kernel_size[0]}x{conv.kernel_size[1]}/{conv.strides[0]}" for conv in convolutions]
    # Every pass of every convolution under each setting, but the first one's input gradient,
    # which a training step never computes (the images need no gradient).
    settings = ("tensorflow", "onednn", "flowerlab")
    expected = {(layer, name, setting) for layer in layers for setting in settings
                for name in ("forward", "input_gradient", "weight_gradient")}
    expected -= {(layers[0], "input_gradient", setting) for setting in settings}
    assert {(row["layer"], row["pass"], row["setting"]) for row in rows} == expected
    assert {row["kernels"] for row in rows if row["setting"] == "tensorflow"} == {"Eigen"}
    assert {row["kernels"] for row in rows if row["setting"] == "onednn"} == {"oneDNN"}
    # On an AVX2-only CPU flowerlab computes its 3x3 convolutions' weight gradients itself.
    ours = {(row["shape"], row["pass"]) for row in rows if row["setting"] == "flowerlab" and row["kernels"] == "flowerlab"}
    assert ours == {(conv_shape, "weight_gradient") for conv_shape in shapes.values() if " 3x3/" in conv_shape}
    assert {row["kernels"] for row in rows if row["setting"] == "flowerlab"} == {"oneDNN", "flowerlab"}
    assert {row["cpu_kind"] for row in rows} == {"avx2 (emulated)"}
    by_key = {(row["layer"], row["pass"], row["setting"]): row for row in rows}
    for row in rows:
        ms, peak = float(row["ms_per_step"]), float(row["peak_float32_gflops_per_s"])
        assert ms > 0 and peak > 0
        assert float(row["share_of_peak"]) == pytest.approx(float(row["gflops_per_s"]) / peak, abs=0.002)
        baseline = float(by_key[row["layer"], row["pass"], "tensorflow"]["ms_per_step"])
        assert float(row["vs_tensorflow_defaults"]) == pytest.approx(baseline / ms, rel=0.01, abs=0.002)
    # The FLOPs behind GFLOP/s: 2 per multiply-add of the layer's kernel over its output.
    conv = by_key[layers[1], "forward", "flowerlab"]
    assert conv["shape"] == "16x16x16->30 3x3/1"
    flops = 2 * 4 * 16 * 16 * 3 * 3 * 16 * 30  # batch 4 of --quick
    assert float(conv["gflops_per_s"]) == pytest.approx(flops / (float(conv["ms_per_step"]) / 1e3) / 1e9, rel=0.01)
    assert "of flowerlab's convolution time" in done.stdout
