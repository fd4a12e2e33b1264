"""bench/child_side.py's --cpu-kind: the environment an emulated CPU kind hands each benchmark process."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from flowerlab import kernels

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def child_side(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """bench/child_side.py, freshly loaded (its emulation state is per process), in a scratch environment."""
    monkeypatch.syspath_prepend(str(BENCH))
    for name in ("child_side", "steps"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    for name in (*kernels.RECORDED, kernels.MARKER, kernels.OPT_OUT[0]):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)  # the emulation must precede its import
    import child_side

    yield child_side
    monkeypatch.delitem(sys.modules, "child_side", raising=False)


def test_native_changes_nothing(child_side: ModuleType) -> None:
    child_side.emulate_cpu_kind("native")
    assert child_side.tensorflow_defaults("native") == {}
    env = child_side.kernel_environment({"TF_ENABLE_ONEDNN_OPTS": "1"})
    assert env["TF_ENABLE_ONEDNN_OPTS"] == "1" and "ONEDNN_MAX_CPU_ISA" not in env
    assert child_side.cpu_kind_label("native") == "native"


def test_avx2_caps_onednn_in_every_process_and_defaults_to_eigen(
        child_side: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    # The user's own cap gives way to the kind's (and monkeypatch restores it after the test).
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")
    child_side.emulate_cpu_kind("avx2")
    assert child_side.tensorflow_defaults("avx2") == {"TF_ENABLE_ONEDNN_OPTS": "0"}
    # This process (the flowerlab side of bench_training) and every child, whatever its setting.
    assert os.environ["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    plain = child_side.kernel_environment(child_side.tensorflow_defaults("avx2"))
    ours = child_side.kernel_environment(dict(kernels.DEFAULTS))
    assert plain["ONEDNN_MAX_CPU_ISA"] == ours["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert plain["TF_ENABLE_ONEDNN_OPTS"] == "0" and ours["TF_ENABLE_ONEDNN_OPTS"] == "1"
    assert plain[kernels.OPT_OUT[0]] == kernels.OPT_OUT[1]  # the child's `import flowerlab` sets nothing
    assert child_side.cpu_kind_label("avx2") == "avx2 (emulated)"


def test_emulation_after_tensorflow_loaded_is_refused(child_side: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow", ModuleType("tensorflow"))
    with pytest.raises(RuntimeError, match="before TensorFlow loads"):
        child_side.emulate_cpu_kind("avx2")


def test_the_option_names_the_kinds(child_side: ModuleType) -> None:
    parser = argparse.ArgumentParser()
    child_side.add_cpu_kind_argument(parser)
    assert parser.parse_args([]).cpu_kind == "native"
    assert parser.parse_args(["--cpu-kind", "avx2"]).cpu_kind == "avx2"
    with pytest.raises(SystemExit):
        parser.parse_args(["--cpu-kind", "avx512"])
