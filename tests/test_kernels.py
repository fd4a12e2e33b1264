"""TensorFlow's kernel settings in every process, the machine's peak, and the study-time estimate."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from synthetic_records import write_dataset

from flowerlab import console, kernels
from flowerlab.training import estimate, peak

REPO = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------------------
# The settings themselves
# ------------------------------------------------------------------------------------------


def test_defaults_fill_only_what_the_user_left_unset() -> None:
    env = {"TF_CPU_ALLOCATOR_USE_BFC": "true"}
    assert kernels.apply_defaults(env) == {"TF_ENABLE_ONEDNN_OPTS": "1"}
    assert kernels.settings(env) == {
        "TF_ENABLE_ONEDNN_OPTS": {"value": "1", "set_by": "flowerlab"},
        "TF_CPU_ALLOCATOR_USE_BFC": {"value": "true", "set_by": "user"},  # not flowerlab's: recorded as theirs
        "ONEDNN_MAX_CPU_ISA": {"value": None, "set_by": None},
        "FLOWERLAB_WEIGHT_GRADIENTS": {"value": None, "set_by": None},
    }
    # A child process inherits the environment: it still knows who set what.
    child = dict(env)
    assert kernels.apply_defaults(child) == {} and kernels.settings(child) == kernels.settings(env)
    users = {"TF_ENABLE_ONEDNN_OPTS": "0"}
    assert kernels.apply_defaults(users) == {} and users == {"TF_ENABLE_ONEDNN_OPTS": "0"}
    assert kernels.settings(users)["TF_CPU_ALLOCATOR_USE_BFC"] == {"value": None, "set_by": None}
    capped = {"ONEDNN_MAX_CPU_ISA": "AVX2"}  # a cap on oneDNN's instructions changes its kernels: recorded
    assert kernels.apply_defaults(capped) == {"TF_ENABLE_ONEDNN_OPTS": "1"}
    assert kernels.settings(capped)["ONEDNN_MAX_CPU_ISA"] == {"value": "AVX2", "set_by": "user"}
    # The weight-gradient kernel's choice is recorded too (flowerlab.training.weight_gradients.policy).
    chosen = {"FLOWERLAB_WEIGHT_GRADIENTS": "tensorflow"}
    assert kernels.settings(chosen)["FLOWERLAB_WEIGHT_GRADIENTS"] == {"value": "tensorflow", "set_by": "user"}


@pytest.mark.parametrize(("cap", "isa", "allowed"), [
    (None, "AVX512_CORE", True),  # no cap
    ("AVX2", "AVX512_CORE", False),
    ("avx2", "AVX2", True),  # oneDNN reads the value without regard to case
    ("AVX512_CORE_VNNI", "AVX512_CORE_BF16", False),
    ("AVX512_CORE_AMX", "AVX512_CORE_BF16", True),  # an alias of AVX10_1_512_AMX
    ("AVX512_CORE_BF16", "AVX512_CORE_AMX", False),
    ("ALL", "AVX10_1_512_AMX", True),
])
def test_onednns_instruction_cap(cap: str | None, isa: str, allowed: bool) -> None:
    environ = {} if cap is None else {"ONEDNN_MAX_CPU_ISA": cap}
    assert kernels.onednn_isa_allows(isa, environ) is allowed


def test_tensorflows_own_defaults_on_request() -> None:
    env = {"FLOWERLAB_KERNELS": "tensorflow"}
    assert kernels.apply_defaults(env) == {} and env == {"FLOWERLAB_KERNELS": "tensorflow"}
    ours = {}
    kernels.apply_defaults(ours)
    ours["TF_CPU_ALLOCATOR_USE_BFC"] = "false"  # the user's own: kept in TensorFlow's-defaults processes too
    plain = kernels.tensorflow_defaults_environment(ours)
    assert "TF_ENABLE_ONEDNN_OPTS" not in plain and plain["FLOWERLAB_KERNELS"] == "tensorflow"
    assert plain["TF_CPU_ALLOCATOR_USE_BFC"] == "false"
    assert kernels.settings(ours)["TF_CPU_ALLOCATOR_USE_BFC"]["set_by"] == "user"


# Every process of the study that may run TensorFlow, as each starts: a command's module (the
# Snakemake jobs run `flowerlab <command>`), the report notebook's first code cell, a bench script.
ENTRY_POINTS = {
    "flowerlab command": "from flowerlab.cli import main",
    "train": "import flowerlab.training.stage",
    "evaluate": "import flowerlab.evaluation.stage",
    "predict": "import flowerlab.evaluation.predict",
    "estimate": "import flowerlab.training.estimate",
    "render": "import flowerlab.reporting.render",
    "bench": f"import sys; sys.path.insert(0, {str(REPO / 'bench')!r}); import bench_training, bench_models",
}


def notebook_imports() -> str:
    """The report notebook's import statements, in its order (its cells also read a study's files)."""
    notebook = json.loads((REPO / "workflow" / "notebooks" / "report.ipynb").read_text())
    source = "\n".join("".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code")
    imports = [node for node in ast.parse(source).body if isinstance(node, ast.Import | ast.ImportFrom)]
    assert imports, "the report notebook imports nothing?"
    return "\n".join(ast.unparse(node) for node in imports)


def kernels_after(entry: str, env: dict[str, str]) -> dict:
    """In a fresh interpreter: `entry`, then TensorFlow; the kernels TensorFlow runs."""
    probe = (f"{entry}\nimport json, tensorflow\nfrom flowerlab import kernels\n"
             "print('KERNELS=' + json.dumps(kernels.record()))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=300,
                            cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("KERNELS="))
    return json.loads(line.removeprefix("KERNELS="))


def clean_environment() -> dict[str, str]:
    """The environment of a user who set none of the kernel variables."""
    env = {k: v for k, v in os.environ.items() if k not in kernels.RECORDED and k not in (kernels.MARKER, "FLOWERLAB_KERNELS")}
    return env


@pytest.mark.slow
def test_every_entry_point_sets_the_kernels_before_tensorflow_loads() -> None:
    entries = {**ENTRY_POINTS, "report notebook": notebook_imports()}
    with ThreadPoolExecutor(max_workers=2) as pool:
        found = dict(zip(entries, pool.map(lambda code: kernels_after(code, clean_environment()), entries.values()),
                         strict=True))
    for name, record in found.items():
        assert record["library"] == "oneDNN", name
        assert record["environment"] == {
            "TF_ENABLE_ONEDNN_OPTS": {"value": "1", "set_by": "flowerlab"},
            "TF_CPU_ALLOCATOR_USE_BFC": {"value": None, "set_by": None},  # measured, not kept (kernels.py)
            "ONEDNN_MAX_CPU_ISA": {"value": None, "set_by": None},
            "FLOWERLAB_WEIGHT_GRADIENTS": {"value": None, "set_by": None},
        }, name


@pytest.mark.slow
def test_a_users_own_setting_wins_and_is_recorded_as_theirs() -> None:
    record = kernels_after(ENTRY_POINTS["train"], {**clean_environment(), "TF_ENABLE_ONEDNN_OPTS": "0"})
    assert record["library"] == "Eigen"  # 0 turns oneDNN off on every CPU
    assert record["environment"]["TF_ENABLE_ONEDNN_OPTS"] == {"value": "0", "set_by": "user"}
    assert record["environment"]["TF_CPU_ALLOCATOR_USE_BFC"] == {"value": None, "set_by": None}


# squeezenet's convolutions larger than 1x1, of 16: those flowerlab's weight-gradient kernel takes.
SQUEEZENET_ROUTED = {"flowerlab": 6, "tensorflow": 0}


@pytest.mark.slow
@pytest.mark.parametrize("weight_gradients", ["tensorflow", "flowerlab"])
def test_deterministic_trainings_with_the_fast_kernels_are_bit_identical(
        weight_gradients: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Two `flowerlab train --deterministic` processes, each as a Snakemake job starts it, with the
    kernel settings flowerlab sets: the same weights to the bit. squeezenet, for its batch norms
    and concatenations, which oneDNN runs with kernels of its own; once with each weight-gradient
    kernel, chosen here rather than by what this CPU has."""
    import keras

    if weight_gradients == "flowerlab":
        request.getfixturevalue("cxx_compiler")

    manifest = write_dataset(tmp_path / "data", image_size=32, num_classes=3, train_per_class=12,
                             validation_per_class=4)
    hparams = json.dumps({"epochs": 2, "batch_size": 8, "precision": "float32", "augment": True})
    records, weights = [], []
    for run in ("first", "second"):
        out = tmp_path / run
        result = subprocess.run(
            [sys.executable, "-m", "flowerlab", "train", "--arch", "squeezenet", "--manifest", str(manifest),
             "--out-dir", str(out), "--checkpoint-dir", str(tmp_path / f"{run}-checkpoints"), "--hparams", hparams,
             "--accelerator", "cpu", "--seed", "5", "--deterministic", "--threads", "2"],
            capture_output=True, text=True, env={**clean_environment(), "FLOWERLAB_WEIGHT_GRADIENTS": weight_gradients},
            timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "TensorFlow CPU kernels: oneDNN" in result.stderr
        records.append(json.loads((out / "training.json").read_text()))
        weights.append(keras.models.load_model(out / "model.keras").get_weights())
    assert records[0]["kernels"] == records[1]["kernels"]
    assert records[0]["kernels"]["library"] == "oneDNN"
    assert records[0]["kernels"]["weight_gradients"] == {
        "kernel": weight_gradients, "reason": f"FLOWERLAB_WEIGHT_GRADIENTS={weight_gradients}",
        "convolutions": SQUEEZENET_ROUTED[weight_gradients], "of": 16}
    assert all(np.array_equal(a, b) for a, b in zip(*weights, strict=True))
    assert records[0]["final_val_accuracy"] == records[1]["final_val_accuracy"]


# ------------------------------------------------------------------------------------------
# The machine's peak
# ------------------------------------------------------------------------------------------


class FakeProbes:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def matmul(self, dtype: str, size: int, seconds: float) -> float:
        self.calls.append(dtype)
        return {"float32": 100.0, "bfloat16": 400.0}[dtype]

    def bandwidth(self, seconds: float) -> float:
        self.calls.append("bandwidth")
        return 20.0


def test_the_peak_is_measured_once_and_cached_per_device_and_threads(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(peak, "_MEASURED", {})
    probes = FakeProbes()
    measure = {"matmul": probes.matmul, "bandwidth": probes.bandwidth}
    first = peak.machine_peak("cpu", "Some CPU", ["float32"], threads=2, cache_dir=tmp_path, **measure)
    assert first.gflops_per_s == {"float32": 100.0} and first.bandwidth_gb_per_s == 20.0
    assert probes.calls == ["float32", "bandwidth"]
    monkeypatch.setattr(peak, "_MEASURED", {})  # a later process: only the file remains
    again = peak.machine_peak("cpu", "Some CPU", ["float32"], threads=2, cache_dir=tmp_path, **measure)
    assert probes.calls == ["float32", "bandwidth"] and again.gflops_per_s == first.gflops_per_s
    assert again.cache == first.cache and Path(again.cache).parent == tmp_path
    # A dtype not measured yet is measured alone and added to the same file.
    both = peak.machine_peak("cpu", "Some CPU", ["float32", "bfloat16"], threads=2, cache_dir=tmp_path, **measure)
    assert probes.calls[2:] == ["bfloat16"] and both.gflops_per_s == {"float32": 100.0, "bfloat16": 400.0}
    # Other threads, or another CPU: another key, measured anew.
    peak.machine_peak("cpu", "Some CPU", ["float32"], threads=1, cache_dir=tmp_path, **measure)
    peak.machine_peak("cpu", "Other CPU", ["float32"], threads=2, cache_dir=tmp_path, **measure)
    assert probes.calls[3:] == ["float32", "bandwidth", "float32", "bandwidth"]
    assert len(list(tmp_path.glob("*.json"))) == 3


def test_a_corrupt_peak_cache_is_measured_again(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(peak, "_MEASURED", {})
    probes = FakeProbes()
    first = peak.machine_peak("cpu", "Some CPU", ["float32"], threads=2, cache_dir=tmp_path,
                              matmul=probes.matmul, bandwidth=probes.bandwidth)
    Path(first.cache).write_text("{not json")
    monkeypatch.setattr(peak, "_MEASURED", {})
    peak.machine_peak("cpu", "Some CPU", ["float32"], threads=2, cache_dir=tmp_path, matmul=probes.matmul,
                      bandwidth=probes.bandwidth)
    assert probes.calls == ["float32", "bandwidth"] * 2


def test_share_of_the_peak() -> None:
    measured = peak.Peak("Some CPU", "cpu", {"float32": 100.0}, 20.0, 2, "oneDNN")
    share = peak.share_of_peak(train_images_per_second=10.0, training_flops_per_image=3e9, compute_dtype="float32",
                               peak=measured, replicas=1)
    assert share["achieved_gflops_per_s"] == pytest.approx(30.0)
    assert share["fraction_of_peak"] == pytest.approx(0.3)
    two = peak.share_of_peak(train_images_per_second=10.0, training_flops_per_image=3e9, compute_dtype="float32",
                             peak=measured, replicas=2)
    assert two["peak_gflops_per_s"] == 200.0 and two["fraction_of_peak"] == pytest.approx(0.15)
    missing = peak.share_of_peak(train_images_per_second=None, training_flops_per_image=3e9,
                                 compute_dtype="bfloat16", peak=measured, replicas=1)
    assert missing["achieved_gflops_per_s"] is None and missing["fraction_of_peak"] is None


def test_the_matmul_probe_counts_two_flops_per_multiply_add(monkeypatch) -> None:
    clock = iter(np.arange(0.0, 1000.0, 0.5))  # every perf_counter call advances half a second
    monkeypatch.setattr(peak.time, "perf_counter", lambda: float(next(clock)))
    rate = peak._best_rate(lambda: np.zeros((1, 1)), work=2.0 * 64**3, seconds=0.1)
    assert rate == pytest.approx(2.0 * 64**3 / 0.5)


# ------------------------------------------------------------------------------------------
# The study-time estimate
# ------------------------------------------------------------------------------------------


def planned(**overrides) -> estimate.PlannedTraining:
    values = {"arch": "convnet", "runs": 1, "epochs": 20, "train_images": 3000, "validation_images": 660,
              "feature_cache": False, "speed": estimate.Speed(images_per_second=30.0, setup_seconds=10.0,
                                                               gflops_per_image=3.0)}
    return estimate.PlannedTraining(**{**values, **overrides})


def test_the_estimate_of_a_training_on_images() -> None:
    # 20 epochs x (3000 + 660 / 3) images / 30 images/s + 10 s of setup
    assert estimate.training_seconds(planned()) == pytest.approx(20 * 3220 / 30 + 10)


def test_the_estimate_of_a_training_on_cached_features() -> None:
    # the backbone sees each image once, whatever the epochs; the head's epochs are negligible
    cached = planned(feature_cache=True, epochs=10, speed=estimate.Speed(150.0, 5.0, 0.45))
    assert estimate.training_seconds(cached) == pytest.approx(3660 / 150 + 5)


def test_the_study_estimate_adds_every_run_one_after_another() -> None:
    plans = [planned(runs=3), planned(arch="dense", runs=2, epochs=10, speed=estimate.Speed(300.0, 0.0, 0.3))]
    expected = 3 * (20 * 3220 / 30 + 10) + 2 * (10 * 3220 / 300)
    assert estimate.total_seconds(plans) == pytest.approx(expected)
    table = estimate.report(plans, "Some CPU, 2 threads, oneDNN kernels")
    assert "Some CPU" in table and "convnet" in table and console.duration(expected) in table


@pytest.mark.parametrize("seconds, text", [(42.4, "42 s"), (450, "7 min 30 s"), (3900, "1 h 05 min"),
                                           (8 * 3600 + 59, "8 h 00 min")])
def test_durations_read_as_a_person_would_say_them(seconds: float, text: str) -> None:
    assert console.duration(seconds) == text


def test_the_data_an_estimate_counts_before_the_data_stage_ran(tmp_path: Path, monkeypatch) -> None:
    config = {"data_source": "synthetic", "synthetic": {"classes": 3, "images_per_class": 30},
              "data": {"validation_fraction": 0.25}}
    assert estimate.split_sizes(config, tmp_path / "none.json") == (68, 22, 3)
    photos = tmp_path / "photos"
    for name, count in (("a", 4), ("b", 6), (".hidden", 5)):
        (photos / name).mkdir(parents=True)
        for index in range(count):
            (photos / name / f"{index}.jpg").write_bytes(b"x")
    (photos / "a" / ".DS_Store").write_bytes(b"x")
    local = {**config, "data_source": str(photos), "data": {"validation_fraction": 0.2}}
    assert estimate.split_sizes(local, tmp_path / "none.json") == (8, 2, 2)
    official = {**config, "data_source": "official", "data": {"validation_fraction": 0.19}}
    monkeypatch.chdir(tmp_path)  # no resources/flower_photos here: the archive's own count
    assert estimate.split_sizes(official, tmp_path / "none.json") == (3670 - 697, 697, 5)


def test_the_estimate_uses_the_manifests_counts_once_the_records_exist(tmp_path: Path) -> None:
    manifest = write_dataset(tmp_path, image_size=16, num_classes=2, train_per_class=5, validation_per_class=3)
    assert estimate.split_sizes({"data_source": "synthetic"}, manifest) == (10, 6, 2)
