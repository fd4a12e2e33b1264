"""bench/bench_training.py --quick works and its figures hang together (CI runs only pytest, so
this is what keeps the benchmark working)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

COLUMNS = [
    "arch", "status", "batch_size", "image_size", "warmup_steps", "timed_steps", "rounds",
    "plain_images_per_s", "flowerlab_images_per_s", "ratio", "plain_precision", "precision",
    "plain_parameters", "flowerlab_parameters", "gflops_per_image", "flops_factor",
    "plain_train_gflops_per_s", "train_gflops_per_s", "plain_mfu", "mfu", "peak_dtype",
    "peak_gflops_per_s", "peak_float32_gflops_per_s", "peak_bfloat16_gflops_per_s",
    "plain_kernels", "kernels", "activation_mb_per_image", "bandwidth_gb_per_s", "roofline_images_per_s",
    "share_of_roofline",
    "device", "cpu_kind", "threads", "cpus", "load_average", "tensorflow", "keras", "source",
    "cache_epochs", "extraction_images_per_s", "head_images_per_s",
]
FIGURES = [
    "plain_images_per_s", "flowerlab_images_per_s", "ratio", "plain_parameters", "flowerlab_parameters",
    "gflops_per_image", "flops_factor", "plain_train_gflops_per_s", "train_gflops_per_s", "plain_mfu", "mfu",
    "peak_gflops_per_s", "peak_float32_gflops_per_s", "peak_bfloat16_gflops_per_s",
]


def run_quick(repo_root: Path, tmp_path: Path, *arguments: str, env: dict[str, str] | None = None,
              ) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path / "bench" / "training.csv"
    done = subprocess.run(
        [sys.executable, str(repo_root / "bench" / "bench_training.py"), "--quick", "--threads", "2",
         "--out", str(out), *arguments],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})},
    )
    return done, out


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def close(actual: str, expected: float) -> bool:
    """The CSV rounds each figure on its own; 1 % covers that at the quick mode's magnitudes."""
    return abs(float(actual) - expected) <= 0.01 * abs(expected) + 1e-4


@pytest.mark.slow
def test_quick_benchmark_measures_both_sides_with_consistent_figures(repo_root: Path, tmp_path: Path) -> None:
    """`bench_training.py --quick` on the architectures trained on images, and a backbone model
    whose weights are missing, which is a recorded skip rather than a figure."""
    missing = tmp_path / "no-such-weights.h5"
    done, out = run_quick(repo_root, tmp_path, "--archs", "dense", "squeezenet", "mobilenet_v2",
                          env={"FLOWERLAB_MOBILENET_WEIGHTS": str(missing), "FLOWERLAB_WEIGHT_GRADIENTS": "tensorflow"})
    assert done.returncode == 0, done.stderr[-3000:]
    columns, rows = read_rows(out)
    assert columns == COLUMNS
    assert [row["arch"] for row in rows] == ["dense", "squeezenet", "mobilenet_v2"]
    skipped = rows.pop()
    assert skipped["status"].startswith("skipped") and "--weights" in skipped["status"]
    assert skipped["flowerlab_images_per_s"] == ""  # no figure pretends to be measured
    for row in rows:
        assert row["status"] == "measured"
        for figure in FIGURES:
            assert float(row[figure]) > 0, (row["arch"], figure, row[figure])
        # The plain code is the same architecture as flowerlab's, layer for layer.
        assert row["plain_parameters"] == row["flowerlab_parameters"]
        plain, flowerlab = float(row["plain_images_per_s"]), float(row["flowerlab_images_per_s"])
        assert close(row["ratio"], flowerlab / plain)
        train = float(row["flops_factor"]) * float(row["gflops_per_image"]) * flowerlab
        assert close(row["train_gflops_per_s"], train)
        assert close(row["mfu"], train / float(row["peak_gflops_per_s"]))
        assert 0 < float(row["mfu"]) < 1 and 0 < float(row["plain_mfu"]) < 1  # above the peak would be a bug
        assert row["flops_factor"] == "3.0"  # trained end to end
        assert row["plain_precision"] == "float32"
        expected_peak = {"float32": "float32", "mixed_bfloat16": "bfloat16"}[row["precision"]]
        assert row["peak_dtype"] == expected_peak
        assert row["peak_gflops_per_s"] == row[f"peak_{expected_peak}_gflops_per_s"]
        assert (row["batch_size"], row["image_size"], row["warmup_steps"], row["timed_steps"]) == ("8", "32", "1", "2")
        # Trained on images: no feature-cache figures, and a roofline of its layers.
        assert row["cache_epochs"] == row["extraction_images_per_s"] == row["head_images_per_s"] == ""
        assert float(row["activation_mb_per_image"]) > 0 and float(row["bandwidth_gb_per_s"]) > 0
        assert close(row["share_of_roofline"], flowerlab / float(row["roofline_images_per_s"]))
        assert 0 < float(row["share_of_roofline"]) < 1  # above the roof would be a bug
        # The plain side ran with TensorFlow's own kernel defaults (which depend on the CPU), in a
        # process of its own; flowerlab's side with oneDNN, which flowerlab turns on everywhere, and
        # here TensorFlow's weight gradients (FLOWERLAB_WEIGHT_GRADIENTS, set by run_quick's caller).
        assert row["plain_kernels"] in ("oneDNN", "Eigen") and row["kernels"] == "oneDNN"
    assert "flowerlab img/s" in done.stdout and f"wrote {out}" in done.stdout


@pytest.mark.slow
def test_flowerlabs_side_runs_its_own_weight_gradients_on_an_avx2_only_cpu(
        repo_root: Path, tmp_path: Path, cxx_compiler: str) -> None:
    """As an AVX2-only CPU (any x86-64 CPU can be run as one): flowerlab's side computes its 3x3
    convolutions' weight gradients with flowerlab's kernel, and says so."""
    done, out = run_quick(repo_root, tmp_path, "--archs", "convnet", "--cpu-kind", "avx2")
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = read_rows(out)[1]
    assert (row["plain_kernels"], row["kernels"]) == ("Eigen", "oneDNN + own wgrad 6/7")
    assert float(row["ratio"]) > 0 and float(row["mfu"]) < 1


@pytest.mark.slow
@pytest.mark.real_data  # the house's mark for tests that need ../shared/data (here the weights)
def test_frozen_backbone_times_the_feature_cache(repo_root: Path, tmp_path: Path, mobilenet_weights: Path) -> None:
    """flowerlab's side of the frozen MobileNetV2 is what flowerlab train runs: one extraction of
    the training images, then --cache-epochs head epochs on the features. Run as an AVX2-only CPU,
    whose TensorFlow defaults (Eigen) are known on any x86-64 CPU."""
    done, out = run_quick(repo_root, tmp_path, "--archs", "mobilenet_v2", "--weights", str(mobilenet_weights),
                          "--cache-epochs", "4", "--cpu-kind", "avx2")
    assert done.returncode == 0, done.stderr[-3000:]
    _, rows = read_rows(out)
    (row,) = rows
    assert row["status"] == "measured" and float(row["flowerlab_images_per_s"]) > 0
    assert row["plain_parameters"] == row["flowerlab_parameters"]
    assert row["cache_epochs"] == "4"
    # The backbone's forward pass runs once per image for the 4 epochs; backpropagation stops at the head.
    assert row["flops_factor"] == "0.25"
    extraction, head = float(row["extraction_images_per_s"]), float(row["head_images_per_s"])
    assert extraction > 0 and head > extraction  # the head alone is what the cache makes cheap
    # Amortised: 4 epochs of n images over one extraction (n / extraction s) + 4 head epochs (4 n / head s).
    assert close(row["flowerlab_images_per_s"], 4 / (1 / extraction + 4 / head))
    assert "feature cache: extraction + 4 head epochs" in done.stdout
    # As an AVX2-only CPU: the plain side with such a CPU's TensorFlow defaults, flowerlab's with
    # oneDNN (capped at AVX2), both in float32, which is all such a CPU has.
    assert (row["plain_kernels"], row["kernels"], row["cpu_kind"]) == ("Eigen", "oneDNN", "avx2 (emulated)")
    assert row["precision"] == row["peak_dtype"] == "float32" and row["peak_bfloat16_gflops_per_s"] == ""
    # The plain side trains on images: its backbone runs forward for every image of every step.
    plain = float(row["gflops_per_image"]) * float(row["plain_images_per_s"])
    assert close(row["plain_train_gflops_per_s"], plain)
    assert close(row["plain_mfu"], plain / float(row["peak_float32_gflops_per_s"]))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--manifest", "no/manifest.json", "--photos", "."], "manifest no/manifest.json not found"),
        (["--quick", "--archs", "resnet"], "unknown architecture 'resnet'"),
    ],
)
def test_bad_input_is_one_clear_error(repo_root: Path, tmp_path: Path, arguments: list[str], message: str) -> None:
    done = subprocess.run([sys.executable, str(repo_root / "bench" / "bench_training.py"), *arguments],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 1
    assert message in done.stderr and "Traceback" not in done.stderr
