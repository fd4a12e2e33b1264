"""precision auto on a CPU: decided by a cached measurement on the machine, whatever the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flowerlab import devices
from flowerlab.training import precision
from flowerlab.training.precision import ProbeSetup, choose_cpu_precision, choose_precision

SETUP = ProbeSetup("convnet", {"learning_rate": 1e-3}, 64, 3, 16, cached_features=False, threads=2)
XEON = "Intel(R) Xeon(R) Platinum 8480+"


def speeds(table: dict[str, float], calls: list[str]):
    def measure(policy: str, setup: ProbeSetup) -> float:
        calls.append(policy)
        return table[policy]
    return measure


@pytest.mark.parametrize(("table", "expected"), [
    ({"float32": 73.4, "mixed_bfloat16": 212.0}, "mixed_bfloat16"),  # convnet on a Xeon with AMX
    ({"float32": 157.2, "mixed_bfloat16": 109.5}, "float32"),  # MobileNetV2 on the same Xeon
])
def test_the_faster_measured_precision_wins_and_is_cached(table, expected, tmp_path: Path) -> None:
    calls: list[str] = []
    choice = choose_cpu_precision(SETUP, cache_dir=tmp_path, cpu_model=XEON, tensorflow="2.21.0",
                                  measure=speeds(table, calls))
    assert choice.policy == expected and calls == ["float32", "mixed_bfloat16"]
    cached = json.loads(Path(choice.cache).read_text())
    assert cached["images_per_second"] == table and cached["cpu"] == XEON and cached["chosen"] == expected
    calls.clear()
    again = choose_cpu_precision(SETUP, cache_dir=tmp_path, cpu_model=XEON, tensorflow="2.21.0",
                                 measure=speeds(table, calls))
    assert calls == [] and again.policy == expected and "measured before" in again.reason


def test_the_cache_is_per_cpu_tensorflow_architecture_shape_and_gradient_kernel(tmp_path: Path) -> None:
    key = precision.cache_key(SETUP, XEON, "2.21.0")
    assert key.startswith("intel-r-xeon-r-platinum-8480") and "tf2.21.0" in key and "__convnet__b16__64px" in key
    others = [precision.cache_key(SETUP, "AMD EPYC 9B14", "2.21.0"), precision.cache_key(SETUP, XEON, "2.22.0"),
              precision.cache_key(ProbeSetup("dense", {}, 64, 3, 16, False, 2), XEON, "2.21.0"),
              precision.cache_key(ProbeSetup("convnet", {}, 64, 3, 32, False, 2), XEON, "2.21.0"),
              precision.cache_key(ProbeSetup("convnet", {}, 64, 3, 16, False, 1), XEON, "2.21.0"),
              # the weight gradients by flowerlab's kernel: a faster float32 step, measured apart
              precision.cache_key(ProbeSetup("convnet", {}, 64, 3, 16, False, 2, "flowerlab"), XEON, "2.21.0")]
    assert key not in others and len(set(others)) == len(others)


def test_a_corrupt_cache_is_measured_again(tmp_path: Path) -> None:
    (tmp_path / precision.cache_key(SETUP, XEON, "2.21.0")).write_text("{not json")
    calls: list[str] = []
    choice = choose_cpu_precision(SETUP, cache_dir=tmp_path, cpu_model=XEON, tensorflow="2.21.0",
                                  measure=speeds({"float32": 2.0, "mixed_bfloat16": 1.0}, calls))
    assert choice.policy == "float32" and len(calls) == 2


@pytest.mark.parametrize(("flags", "probed"), [({"amx_bf16", "avx512_bf16"}, True), ({"avx512_bf16"}, True),
                                               ({"avx2"}, False)])
@pytest.mark.usefixtures("uncapped_onednn")
def test_cpus_with_and_without_native_bfloat16(flags, probed, tmp_path: Path, monkeypatch) -> None:
    """Simulated through the CPU detection hook, so the test asserts the same on any machine."""
    monkeypatch.setattr(devices, "cpu_flags", lambda cpuinfo=None: frozenset(flags))
    calls: list[str] = []
    choice = choose_precision("auto", "cpu", SETUP, cache_dir=tmp_path,
                              measure=speeds({"float32": 1.0, "mixed_bfloat16": 3.0}, calls))
    assert (calls != []) == probed
    assert choice.policy == ("mixed_bfloat16" if probed else "float32")


def test_explicit_policies_and_accelerators_need_no_probe(tmp_path: Path) -> None:
    def never(policy, setup):
        raise AssertionError("no probe expected")

    assert choose_precision("float32", "cpu", SETUP, measure=never).reason == "set in the configuration"
    assert choose_precision("auto", "gpu", SETUP, measure=never).policy == "mixed_float16"
    assert choose_precision("auto", "tpu", SETUP, measure=never).policy == "mixed_bfloat16"


def test_the_probe_measures_real_training_steps_and_leaves_no_trace() -> None:
    import keras

    before = keras.mixed_precision.global_policy().name
    tiny = ProbeSetup("dense", {"learning_rate": 1e-3}, 16, 3, 8, cached_features=False, threads=None)
    assert precision.measure_training_speed("mixed_bfloat16", tiny) > 0
    assert keras.mixed_precision.global_policy().name == before
    frozen = ProbeSetup("mobilenet_v2", {}, 32, 3, 4, cached_features=True, threads=None)
    assert precision.measure_training_speed("float32", frozen) > 0
