"""Where training runs: the tf.distribute strategy, the precision policy and the thread limits.

Call order matters, because TensorFlow fixes these when its runtime initialises (the first op):

    configure_threads(threads)            # before anything else touches TensorFlow
    device = select_strategy(accelerator) # hides GPUs for "cpu", memory growth for GPUs
    policy = choose_precision(...).policy # flowerlab.training.precision: resolve_precision, or
                                          # a measurement on a CPU with native bfloat16
    apply_precision(policy)               # before the model's layers are created
    with device.strategy.scope():
        model = build_model(...)

The course detected hardware with `TPUClusterResolver.connect()` and fell back on ValueError,
but later tested an undefined `tpu` variable off-TPU (docs/course.md, hardware); here every branch
returns a complete `DeviceInfo`, and the hardware probes are injectable so that the selection
logic is unit-tested without a TPU or a GPU.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from flowerlab import kernels, schema
from flowerlab.errors import ConfigError, FlowerlabError

logger = logging.getLogger(__name__)

ACCELERATORS = ("auto", "tpu", "gpu", "cpu")
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
CPUINFO = Path("/proc/cpuinfo")
# CPU flags (Linux /proc/cpuinfo names) for native bfloat16 arithmetic: AMX matrix tiles
# (Sapphire Rapids and later) or AVX512_BF16 dot products (Cooper Lake, Zen 4 and later).
# Without either, oneDNN emulates bfloat16 and mixed precision is slower than float32.
AMX_BF16_FLAG = "amx_bf16"
AVX512_BF16_FLAG = "avx512_bf16"
# TensorFlow's errors when there is no TPU to connect to: ValueError off Cloud TPU ("Please
# provide a TPU Name"), NotFoundError/UnavailableError/InvalidArgumentError from a TPU
# worker that cannot be reached or initialised.
TPU_NOT_FOUND_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    tf.errors.NotFoundError,
    tf.errors.UnavailableError,
    tf.errors.InvalidArgumentError,
)


@dataclass(frozen=True)
class DeviceInfo:
    strategy: Any  # a tf.distribute.Strategy; on JAX a flowerlab.jax_devices.DistributionScope
    kind: str  # "tpu" | "gpu" | "cpu"
    name: str  # e.g. "NVIDIA H100 80GB HBM3", "2 x NVIDIA A100-SXM4-40GB", "AMD EPYC"
    replicas: int  # strategy.num_replicas_in_sync: the global batch is per-replica x this
    distribution: str | None = None  # on JAX: Keras' distribution over the replicas ("DataParallel")

    def to_json(self) -> dict[str, Any]:
        """The `device` object of training.json / metrics.json."""
        record = {"kind": self.kind, "name": self.name, "replicas": self.replicas}
        return record | ({"distribution": self.distribution} if self.distribution else {})


# ---------------------------------------------------------------------------------------------
# Hardware probes (the defaults of select_strategy's injectable arguments)


def connect_tpu() -> Any:
    """The connected TPUClusterResolver; raises one of TPU_NOT_FOUND_ERRORS when there is none."""
    return tf.distribute.cluster_resolver.TPUClusterResolver.connect()


def physical_gpus() -> list[Any]:
    return tf.config.list_physical_devices("GPU")


def tpu_strategy(resolver: Any) -> tf.distribute.Strategy:
    return tf.distribute.TPUStrategy(resolver)


def mirrored_strategy(gpus: Sequence[Any]) -> tf.distribute.Strategy:
    return tf.distribute.MirroredStrategy(devices=[gpu_device_name(i) for i in range(len(gpus))])


def enable_memory_growth(gpu: Any) -> None:
    # Allocate GPU memory as needed rather than all of it at start-up, so that the input
    # pipeline, evaluation or a second process can share the card.
    tf.config.experimental.set_memory_growth(gpu, True)


def hide_gpus() -> None:
    """Make TensorFlow see no GPU; must run before the runtime initialises."""
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError as error:
        raise FlowerlabError(
            "accelerator 'cpu' was requested after TensorFlow had already initialised its "
            "GPUs; select the strategy before running any TensorFlow op"
        ) from error


# ---------------------------------------------------------------------------------------------
# Names of the hardware, for the records


def gpu_device_name(index: int) -> str:
    return f"/gpu:{index}"


def gpu_model_name(gpu: Any) -> str:
    """The GPU model from the driver (e.g. "NVIDIA H100 80GB HBM3"), else its device name."""
    try:
        details = tf.config.experimental.get_device_details(gpu)
    except (ValueError, TypeError):  # not a device TensorFlow listed (e.g. a test fake)
        details = {}
    return str(details.get("device_name") or getattr(gpu, "name", gpu))


def gpus_name(gpus: Sequence[Any]) -> str:
    names = sorted({gpu_model_name(gpu) for gpu in gpus})
    joined = " + ".join(names)
    return joined if len(gpus) == 1 else f"{len(gpus)} x {joined}"


def read_cpuinfo(path: Path = CPUINFO) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:  # not Linux, or /proc not mounted
        return ""


def cpu_model_name(cpuinfo: str | None = None) -> str:
    """The CPU model from /proc/cpuinfo ("model name"), else what the platform reports."""
    text = read_cpuinfo() if cpuinfo is None else cpuinfo
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            return value.strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The feature flags of the first CPU in /proc/cpuinfo (empty when unknown)."""
    text = read_cpuinfo() if cpuinfo is None else cpuinfo
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def tpu_name(resolver: Any, replicas: int) -> str:
    try:
        master = str(resolver.master())
    except (AttributeError, ValueError, tf.errors.OpError):
        master = ""
    cores = f"TPU, {replicas} cores"
    return f"{cores} ({master})" if master else cores


# ---------------------------------------------------------------------------------------------
# Strategy selection


def _try_tpu(tpu_connect: Callable[[], Any]) -> Any | None:
    try:
        return tpu_connect()
    except TPU_NOT_FOUND_ERRORS as error:
        # Off a Cloud TPU VM the resolver has no TPU name to look for: the ordinary case, not
        # news. A named TPU that does not answer is worth a line in the log.
        ordinary = isinstance(error, ValueError) and "TPU Name" in str(error)
        logger.log(logging.DEBUG if ordinary else logging.INFO, "no TPU: %s: %s", type(error).__name__, error)
        return None


def select_strategy(
    accelerator: str = schema.default("accelerator"),
    *,
    tpu_connect: Callable[[], Any] | None = None,
    list_gpus: Callable[[], Sequence[Any]] | None = None,
    make_tpu_strategy: Callable[[Any], tf.distribute.Strategy] | None = None,
    make_mirrored_strategy: Callable[[Sequence[Any]], tf.distribute.Strategy] | None = None,
    set_memory_growth: Callable[[Any], None] | None = None,
    hide_gpu_devices: Callable[[], None] | None = None,
) -> DeviceInfo:
    """The distribution strategy for `accelerator` ("auto", "tpu", "gpu" or "cpu").

    auto: a TPU if `TPUClusterResolver.connect()` finds one (TPUStrategy); else the GPUs, with
    memory growth on (MirroredStrategy over several; the default strategy on one, which
    already places every op on /gpu:0 and so avoids MirroredStrategy's per-step
    cross-replica bookkeeping for no gain); else the CPU (the default strategy).
    tpu/gpu: that kind or a ConfigError. cpu: the default strategy with the GPUs hidden.
    The keyword arguments replace the hardware probes (tests pass fakes).
    """
    if accelerator not in ACCELERATORS:
        raise ConfigError(
            f"config key 'accelerator': {accelerator!r} is not one of {', '.join(ACCELERATORS)}"
        )
    tpu_connect = tpu_connect or connect_tpu
    list_gpus = list_gpus or physical_gpus
    make_tpu_strategy = make_tpu_strategy or tpu_strategy
    make_mirrored_strategy = make_mirrored_strategy or mirrored_strategy
    set_memory_growth = set_memory_growth or enable_memory_growth
    hide_gpu_devices = hide_gpu_devices or hide_gpus

    if accelerator == "cpu":
        if list_gpus():
            hide_gpu_devices()
        return _cpu_device()

    if accelerator in ("auto", "tpu"):
        resolver = _try_tpu(tpu_connect)
        if resolver is not None:
            strategy = make_tpu_strategy(resolver)
            replicas = int(strategy.num_replicas_in_sync)
            return _log(DeviceInfo(strategy, "tpu", tpu_name(resolver, replicas), replicas))
        if accelerator == "tpu":
            raise ConfigError(
                "config key 'accelerator' is 'tpu' but no TPU was found "
                "(TPUClusterResolver.connect() failed; see the log); use 'auto' to fall back "
                "to GPUs or the CPU"
            )

    gpus = list(list_gpus())
    if gpus:
        for gpu in gpus:
            set_memory_growth(gpu)
        if len(gpus) == 1:
            strategy = tf.distribute.get_strategy()
        else:
            strategy = make_mirrored_strategy(gpus)
        replicas = int(strategy.num_replicas_in_sync)
        return _log(DeviceInfo(strategy, "gpu", gpus_name(gpus), replicas))
    if accelerator == "gpu":
        raise ConfigError(
            "config key 'accelerator' is 'gpu' but TensorFlow sees no GPU (is the CUDA build "
            "installed: pip install 'tensorflow[and-cuda]==2.21.*'? is CUDA_VISIBLE_DEVICES "
            "empty?); use 'auto' or 'cpu' to run on the CPU"
        )
    return _cpu_device()


def _cpu_device() -> DeviceInfo:
    strategy = tf.distribute.get_strategy()
    return _log(DeviceInfo(strategy, "cpu", cpu_model_name(), int(strategy.num_replicas_in_sync)))


def _log(device: DeviceInfo) -> DeviceInfo:
    logger.info(
        "device: %s (%s), %d replica(s), strategy %s",
        device.kind,
        device.name,
        device.replicas,
        type(device.strategy).__name__,
    )
    return device


# ---------------------------------------------------------------------------------------------
# Precision


def cpu_bfloat16_kind(flags: Iterable[str] | None = None, environ: Mapping[str, str] | None = None) -> str | None:
    """How the CPU computes bfloat16: "amx" (matrix tiles), "avx512_bf16" (dot-product
    instructions) or None (emulated). Read from /proc/cpuinfo's flags, not assumed, and from
    ONEDNN_MAX_CPU_ISA in `environ` (os.environ): oneDNN capped below an instruction set does
    not use it (and capped below AVX512_BF16 it fails to build bfloat16 convolutions at all)."""
    present = cpu_flags() if flags is None else frozenset(flags)
    if AMX_BF16_FLAG in present and kernels.onednn_isa_allows("AVX10_1_512_AMX", environ):
        return "amx"
    if AVX512_BF16_FLAG in present and kernels.onednn_isa_allows("AVX512_CORE_BF16", environ):
        return "avx512_bf16"
    return None


def cpu_has_native_bfloat16(flags: Iterable[str] | None = None) -> bool:
    return cpu_bfloat16_kind(flags) is not None


def resolve_precision(requested: str, kind: str, *, cpu_flags: Iterable[str] | None = None) -> str | None:
    """The Keras dtype policy for `requested` ("auto" or a policy name) on a `kind` device, or
    None where only a measurement can tell: "auto" on a CPU with native bfloat16.

    auto: mixed_bfloat16 on TPU (native), mixed_float16 on GPU (tensor cores); on a CPU
    without native bfloat16 (no AVX512_BF16, no AMX in `cpu_flags`, read from /proc/cpuinfo
    when None) float32, as bfloat16 would be emulated. On a CPU with it, whether bfloat16 pays
    depends on the CPU and the model: flowerlab.training.precision measures it. An explicit
    policy is honoured; mixed_float16 on a TPU is refused (TPUs have no float16).
    """
    if requested not in PRECISIONS:
        raise ConfigError(
            f"precision {requested!r} is not one of {', '.join(PRECISIONS)} "
            "(config key models.<arch>.precision)"
        )
    if kind not in ("tpu", "gpu", "cpu"):
        raise ValueError(f"device kind must be tpu, gpu or cpu, got {kind!r}")
    if requested == "mixed_float16" and kind == "tpu":
        raise ConfigError(
            "precision mixed_float16 is not supported on TPU; use auto or mixed_bfloat16"
        )
    if requested != "auto":
        if requested == "mixed_float16" and kind == "cpu":
            logger.warning("mixed_float16 on a CPU is emulated and usually slower than float32")
        return requested
    if kind == "tpu":
        return "mixed_bfloat16"
    if kind == "gpu":
        return "mixed_float16"
    return None if cpu_has_native_bfloat16(cpu_flags) else "float32"


def auto_precision_reason(kind: str) -> str:
    """Why `resolve_precision("auto", kind)` chose without measuring (training.json)."""
    if kind == "tpu":
        return "auto on a TPU: bfloat16 is its native format"
    if kind == "gpu":
        return "auto on a GPU: float16 runs on its tensor cores"
    return ("auto on a CPU without native bfloat16 (no AVX512_BF16, no AMX, or oneDNN capped below them): "
            "bfloat16 would be emulated")


def apply_precision(policy: str) -> str:
    """Set Keras' global dtype policy (before building the model); returns its name."""
    if policy not in PRECISIONS or policy == "auto":
        raise ConfigError(
            f"precision policy must be float32, mixed_bfloat16 or mixed_float16, got {policy!r}"
            " (resolve 'auto' with resolve_precision first)"
        )
    keras.mixed_precision.set_global_policy(policy)
    logger.info("precision policy: %s", policy)
    return keras.mixed_precision.global_policy().name


# ---------------------------------------------------------------------------------------------
# Threads


def inter_op_threads(threads: int) -> int:
    """Independent ops to run at once: the models here are chains of big ops, each of which
    already uses every intra-op thread, so more than 1-2 only oversubscribes the cores."""
    return 1 if threads <= 2 else 2


def configure_threads(threads: int) -> dict[str, int]:
    """Limit TensorFlow to `threads` cores: intra-op = threads, inter-op = 1 or 2.

    Must run before TensorFlow initialises its runtime (the first op); afterwards TensorFlow
    refuses the change and this raises FlowerlabError unless the limits are already these.
    Returns {"intra_op": ..., "inter_op": ...} as set.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads must be a positive integer, got {threads!r}")
    wanted = {"intra_op": threads, "inter_op": inter_op_threads(threads)}
    current = {
        "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
    }
    if current == wanted:
        return wanted
    try:
        tf.config.threading.set_intra_op_parallelism_threads(wanted["intra_op"])
        tf.config.threading.set_inter_op_parallelism_threads(wanted["inter_op"])
    except RuntimeError as error:
        raise FlowerlabError(
            f"cannot limit TensorFlow to {threads} threads: its runtime is already initialised "
            f"(current limits {current}); call configure_threads before any TensorFlow op"
        ) from error
    logger.info(
        "TensorFlow threads: %d intra-op, %d inter-op", wanted["intra_op"], wanted["inter_op"]
    )
    return wanted
