"""Device strategy, precision policy and thread limits: the selection logic with fake hardware,
the CPU path for real, and thread limits in a fresh interpreter (they are process-global)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import keras
import pytest
import tensorflow as tf

from flowerlab import devices
from flowerlab.devices import (
    DeviceInfo,
    apply_precision,
    configure_threads,
    cpu_bfloat16_kind,
    cpu_flags,
    cpu_model_name,
    resolve_precision,
    select_strategy,
)
from flowerlab.errors import ConfigError

# --- fakes --------------------------------------------------------------------------------


@dataclass
class FakeStrategy:
    num_replicas_in_sync: int


@dataclass
class FakeResolver:
    address: str = "grpc://10.0.0.2:8470"

    def master(self) -> str:
        return self.address


@dataclass
class Hardware:
    """Fake probes that record how select_strategy used them."""

    tpu: FakeResolver | None = None
    tpu_error: BaseException = field(
        default_factory=lambda: ValueError("Please provide a TPU Name")
    )
    gpus: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)

    def connect(self) -> FakeResolver:
        self.calls.append("tpu_connect")
        if self.tpu is None:
            raise self.tpu_error
        return self.tpu

    def list_gpus(self) -> list[str]:
        self.calls.append("list_gpus")
        return list(self.gpus)

    def tpu_strategy(self, resolver: FakeResolver) -> FakeStrategy:
        self.calls.append("make_tpu_strategy")
        return FakeStrategy(8)

    def mirrored_strategy(self, gpus: list[str]) -> FakeStrategy:
        self.calls.append(f"make_mirrored_strategy({len(gpus)})")
        return FakeStrategy(len(gpus))

    def memory_growth(self, gpu: str) -> None:
        self.calls.append(f"memory_growth({gpu})")

    def hide_gpus(self) -> None:
        self.calls.append("hide_gpus")

    def select(self, accelerator: str) -> DeviceInfo:
        return select_strategy(
            accelerator,
            tpu_connect=self.connect,
            list_gpus=self.list_gpus,
            make_tpu_strategy=self.tpu_strategy,
            make_mirrored_strategy=self.mirrored_strategy,
            set_memory_growth=self.memory_growth,
            hide_gpu_devices=self.hide_gpus,
        )


# --- strategy selection -------------------------------------------------------------------


def test_auto_without_tpu_or_gpu_runs_on_the_cpu_for_real() -> None:
    hardware = Hardware()
    device = hardware.select("auto")
    assert device.kind == "cpu" and device.replicas == 1
    assert device.strategy is tf.distribute.get_strategy()
    assert device.name == cpu_model_name() and device.name
    assert set(hardware.calls) == {"tpu_connect", "list_gpus"}  # probed both, made no strategy
    assert device.to_json() == {"kind": "cpu", "name": device.name, "replicas": 1}
    json.dumps(device.to_json())


def test_auto_default_probes_on_this_machine_fall_back_cleanly() -> None:
    # The real probes: no TPU here (ValueError caught), and the CPU build of TensorFlow sees
    # no GPU. The course's notebooks crashed on this path (`tpu` undefined).
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    device = select_strategy("auto")
    assert (device.kind, device.replicas) == ("cpu", 1)


def test_auto_prefers_a_tpu() -> None:
    hardware = Hardware(tpu=FakeResolver(), gpus=["gpu0"])
    device = hardware.select("auto")
    assert (device.kind, device.replicas) == ("tpu", 8)
    assert "8 cores" in device.name and "10.0.0.2" in device.name
    assert "list_gpus" not in hardware.calls


@pytest.mark.parametrize(
    "error", [ValueError("no TPU"), tf.errors.NotFoundError(None, None, "no TPU worker")]
)
def test_auto_with_several_gpus_mirrors_them_with_memory_growth(error: BaseException) -> None:
    hardware = Hardware(tpu_error=error, gpus=["gpu0", "gpu1"])
    device = hardware.select("auto")
    assert (device.kind, device.replicas) == ("gpu", 2)
    assert device.name == "2 x gpu0 + gpu1"  # fakes have no driver name: their own
    assert {"memory_growth(gpu0)", "memory_growth(gpu1)", "make_mirrored_strategy(2)"} <= set(hardware.calls)


def test_no_tpu_off_a_tpu_vm_is_not_news_but_a_silent_tpu_is(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="flowerlab.devices"):
        Hardware(tpu_error=ValueError("Please provide a TPU Name to connect to.")).select("auto")
    assert "no TPU" not in caplog.text  # TensorFlow's answer on every machine without a TPU
    with caplog.at_level("INFO", logger="flowerlab.devices"):
        Hardware(tpu_error=tf.errors.NotFoundError(None, None, "no TPU worker")).select("auto")
    assert "no TPU: NotFoundError: no TPU worker" in caplog.text


def test_one_gpu_uses_the_default_strategy() -> None:
    hardware = Hardware(gpus=["gpu0"])
    device = hardware.select("auto")
    assert (device.kind, device.replicas, device.name) == ("gpu", 1, "gpu0")
    assert device.strategy is tf.distribute.get_strategy()
    assert "memory_growth(gpu0)" in hardware.calls
    assert not any(call.startswith("make_mirrored") for call in hardware.calls)


def test_gpu_request_does_not_probe_for_a_tpu() -> None:
    hardware = Hardware(tpu=FakeResolver(), gpus=["gpu0", "gpu1"])
    assert hardware.select("gpu").kind == "gpu"
    assert "tpu_connect" not in hardware.calls


def test_cpu_request_hides_the_gpus() -> None:
    hardware = Hardware(tpu=FakeResolver(), gpus=["gpu0"])
    device = hardware.select("cpu")
    assert (device.kind, device.replicas) == ("cpu", 1)
    assert device.strategy is tf.distribute.get_strategy()
    assert "hide_gpus" in hardware.calls and "tpu_connect" not in hardware.calls


@pytest.mark.parametrize(
    ("accelerator", "hardware", "message"),
    [
        ("tpu", Hardware(gpus=["gpu0"]), "'tpu' but no TPU was found"),
        ("gpu", Hardware(), "'gpu' but TensorFlow sees no GPU"),
        ("cuda", Hardware(), "not one of auto, tpu, gpu, cpu"),
    ],
)
def test_unavailable_or_unknown_accelerator_is_a_config_error(
    accelerator: str, hardware: Hardware, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        hardware.select(accelerator)


def test_unexpected_tpu_errors_are_not_swallowed() -> None:
    hardware = Hardware(tpu_error=RuntimeError("a bug in the TPU probe"))
    with pytest.raises(RuntimeError, match="a bug"):
        hardware.select("auto")


# --- CPU description ----------------------------------------------------------------------

CPUINFO_ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9454 48-Core Processor
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni

processor\t: 1
model name\t: AMD EPYC 9454 48-Core Processor
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni
"""
CPUINFO_SAPPHIRE_RAPIDS = "model name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t: avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
CPUINFO_OLD = "model name\t: Intel(R) Xeon(R) CPU E5-2690 v4\nflags\t: sse4_2 avx2 fma\n"


def test_cpu_model_and_flags_are_read_from_cpuinfo() -> None:
    assert cpu_model_name(CPUINFO_ZEN4) == "AMD EPYC 9454 48-Core Processor"
    assert "avx512_bf16" in cpu_flags(CPUINFO_ZEN4)
    assert cpu_flags("") == frozenset()
    assert cpu_model_name("")  # falls back on the platform, never empty


@pytest.mark.parametrize(
    ("cpuinfo", "kind"),
    [(CPUINFO_ZEN4, "avx512_bf16"), (CPUINFO_SAPPHIRE_RAPIDS, "amx"), (CPUINFO_OLD, None)],
)
def test_bfloat16_support_is_detected_from_flags(cpuinfo: str, kind: str | None) -> None:
    assert cpu_bfloat16_kind(cpu_flags(cpuinfo), environ={}) == kind


def test_onednn_capped_below_bfloat16_has_none() -> None:
    """ONEDNN_MAX_CPU_ISA below a CPU's bfloat16 instructions: oneDNN cannot use them (and builds
    no bfloat16 convolution at all), so `auto` must not pick or probe bfloat16."""
    amx = cpu_flags(CPUINFO_SAPPHIRE_RAPIDS)
    assert cpu_bfloat16_kind(amx, environ={"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}) == "avx512_bf16"
    assert cpu_bfloat16_kind(amx, environ={"ONEDNN_MAX_CPU_ISA": "AVX2"}) is None
    assert cpu_bfloat16_kind(cpu_flags(CPUINFO_ZEN4), environ={"ONEDNN_MAX_CPU_ISA": "avx512_core_vnni"}) is None
    assert cpu_bfloat16_kind(cpu_flags(CPUINFO_ZEN4), environ={"ONEDNN_MAX_CPU_ISA": "ALL"}) == "avx512_bf16"


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="no /proc/cpuinfo")
def test_this_machine_is_detected_not_assumed() -> None:
    flags = set(Path("/proc/cpuinfo").read_text().split())
    expected = "amx" if "amx_bf16" in flags else "avx512_bf16" if "avx512_bf16" in flags else None
    assert cpu_bfloat16_kind(environ={}) == expected


# --- precision ----------------------------------------------------------------------------

ZEN4 = cpu_flags(CPUINFO_ZEN4)
AMX = cpu_flags(CPUINFO_SAPPHIRE_RAPIDS)
OLD = cpu_flags(CPUINFO_OLD)


@pytest.mark.parametrize(
    ("requested", "kind", "flags", "expected"),
    [
        ("auto", "tpu", OLD, "mixed_bfloat16"),
        ("auto", "gpu", OLD, "mixed_float16"),
        ("auto", "cpu", OLD, "float32"),  # no native bf16: emulated, never
        ("auto", "cpu", ZEN4, None),  # AVX512_BF16: only a measurement can tell
        ("auto", "cpu", AMX, None),  # AMX: MobileNetV2 was slower in bfloat16 on one: measure
        ("float32", "tpu", AMX, "float32"),  # explicit wins
        ("mixed_bfloat16", "cpu", OLD, "mixed_bfloat16"),
        ("mixed_float16", "gpu", OLD, "mixed_float16"),
        ("mixed_float16", "cpu", OLD, "mixed_float16"),
    ],
)
@pytest.mark.usefixtures("uncapped_onednn")
def test_resolve_precision(requested: str, kind: str, flags: frozenset, expected: str | None) -> None:
    assert resolve_precision(requested, kind, cpu_flags=flags) == expected


@pytest.mark.parametrize(
    ("requested", "kind", "error", "message"),
    [
        ("float64", "cpu", ConfigError, "not one of auto, float32"),
        ("mixed_float16", "tpu", ConfigError, "not supported on TPU"),
        ("auto", "npu", ValueError, "tpu, gpu or cpu"),
    ],
)
def test_resolve_precision_refuses(requested: str, kind: str, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        resolve_precision(requested, kind)


def test_apply_precision_sets_the_global_policy() -> None:
    try:
        assert apply_precision("mixed_bfloat16") == "mixed_bfloat16"
        assert keras.mixed_precision.global_policy().compute_dtype == "bfloat16"
        assert keras.layers.Dense(2).dtype_policy.name == "mixed_bfloat16"
        with pytest.raises(ConfigError, match="resolve 'auto'"):
            apply_precision("auto")
    finally:
        keras.mixed_precision.set_global_policy("float32")


# --- threads ------------------------------------------------------------------------------


def run_fresh_python(code: str) -> subprocess.CompletedProcess[str]:
    """Thread limits are fixed once TensorFlow initialises: test them in a new interpreter,
    without the suite's TF_NUM_*_THREADS settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_NUM_")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_configure_threads_before_tensorflow_starts_and_refuses_after() -> None:
    result = run_fresh_python(
        "import json, tensorflow as tf\n"
        "from flowerlab.devices import configure_threads\n"
        "from flowerlab.errors import FlowerlabError\n"
        "first = configure_threads(3)\n"
        "tf.constant(1.0) + 1.0  # initialises the runtime\n"
        "same = configure_threads(3)  # unchanged: fine\n"
        "try:\n"
        "    configure_threads(1)\n"
        "    refused = None\n"
        "except FlowerlabError as error:\n"
        "    refused = str(error)\n"
        "print(json.dumps({'first': first, 'same': same, 'refused': refused,\n"
        "    'intra': tf.config.threading.get_intra_op_parallelism_threads(),\n"
        "    'inter': tf.config.threading.get_inter_op_parallelism_threads()}))\n"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["first"] == report["same"] == {"intra_op": 3, "inter_op": 2}
    assert (report["intra"], report["inter"]) == (3, 2)
    assert "already initialised" in report["refused"]


@pytest.mark.parametrize(("threads", "inter"), [(1, 1), (2, 1), (3, 2), (64, 2)])
def test_inter_op_threads_stay_small(threads: int, inter: int) -> None:
    assert devices.inter_op_threads(threads) == inter


@pytest.mark.parametrize("threads", [0, -1, 2.5, True])
def test_configure_threads_refuses_nonsense(threads: object) -> None:
    with pytest.raises(ConfigError, match="positive integer"):
        configure_threads(threads)  # type: ignore[arg-type]


def test_a_jobs_threads_are_capped_where_it_runs_not_where_the_workflow_was_parsed(monkeypatch) -> None:
    from flowerlab import console

    monkeypatch.setattr(console.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert console.usable_cpus() == 4 and console.thread_count("8") == 4 and console.thread_count("3") == 3
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")  # a SLURM allocation smaller than the affinity
    assert console.usable_cpus() == 2 and console.thread_count("8") == 2
    with pytest.raises(Exception, match="must be at least 1"):
        console.thread_count("0")
