"""TensorFlow's CPU kernel library, chosen before TensorFlow loads.

TensorFlow's Linux wheels run their oneDNN kernels by default only on CPUs with AVX512_VNNI,
AVX512_BF16, AVX_VNNI or AMX (TensorFlow RFC 400); on every other x86-64 CPU (AVX2 only: most
laptops, desktops and many cloud VMs) they run Eigen kernels. On a 2-core AVX2-only AMD EPYC,
`TF_ENABLE_ONEDNN_OPTS=1` trained squeezenet 2.7x and the convnet 1.7x faster on the study's path
(bench/bench_kernels.py). On a CPU where oneDNN is already TensorFlow's default, flowerlab changes
nothing (bench_kernels on an AVX-512 EPYC: 1.01x the convnet's and 1.03x squeezenet's images/s). The BFC allocator (`TF_CPU_ALLOCATOR_USE_BFC=true`), which pays with Eigen kernels, was
measured on top of oneDNN and not kept: whole squeezenet training jobs took the same time with and
without it, and bench_kernels timed it 3-5% slower. It is recorded when a user sets it.

TensorFlow reads the setting from the environment once, when it is imported, so it must be set
before: `import flowerlab` does it (flowerlab/__init__.py), and every process of the study
(each `flowerlab` command and so each Snakemake job, the report notebook's kernel, bench/)
imports flowerlab before TensorFlow. A value the user set is kept, and the records say who set
each one (`FLOWERLAB_KERNEL_DEFAULTS` carries that across the processes a run starts).
`FLOWERLAB_KERNELS=tensorflow` leaves TensorFlow's own defaults (bench/ times them against ours).
One pass no setting here makes fast, the convolutions' weight gradients on a CPU without AVX-512,
flowerlab computes with a kernel of its own: flowerlab.training.weight_gradients.

No TensorFlow import at module level: this runs before TensorFlow may load.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

# Environment variable -> the value flowerlab sets where the user has not set one.
DEFAULTS: dict[str, str] = {
    "TF_ENABLE_ONEDNN_OPTS": "1",  # oneDNN kernels on every x86-64 CPU, not only AVX-512/AMX ones
}
# The kernel and allocator variables a training records, whoever set them.
# ONEDNN_MAX_CPU_ISA caps the instructions oneDNN's kernels may use (bench/ --cpu-kind avx2).
# FLOWERLAB_WEIGHT_GRADIENTS chooses the convolutions' weight-gradient kernel
# (flowerlab.training.weight_gradients.policy).
RECORDED: tuple[str, ...] = ("TF_ENABLE_ONEDNN_OPTS", "TF_CPU_ALLOCATOR_USE_BFC", "ONEDNN_MAX_CPU_ISA",
                             "FLOWERLAB_WEIGHT_GRADIENTS")
# oneDNN's instruction-set levels (ONEDNN_MAX_CPU_ISA's values, oneDNN's CPU dispatcher control),
# lowest first, and the aliases its documentation gives for some of them.
ONEDNN_ISAS: tuple[str, ...] = (
    "SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI", "AVX512_CORE_BF16",
    "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2")
ONEDNN_ISA_ALIASES = {"AVX512_CORE_FP16": "AVX10_1_512", "AVX512_CORE_AMX": "AVX10_1_512_AMX",
                      "AVX512_CORE_AMX_FP16": "AVX10_1_512_AMX_FP16"}
# Which of DEFAULTS flowerlab set (comma-separated), inherited by the processes a run starts.
MARKER = "FLOWERLAB_KERNEL_DEFAULTS"
# FLOWERLAB_KERNELS=tensorflow: set nothing, run with TensorFlow's own defaults.
OPT_OUT = ("FLOWERLAB_KERNELS", "tensorflow")


def apply_defaults(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set each of DEFAULTS that `environ` (os.environ) lacks; returns those set now."""
    env = os.environ if environ is None else environ
    if env.get(OPT_OUT[0]) == OPT_OUT[1]:
        return {}
    set_now = {name: value for name, value in DEFAULTS.items() if name not in env}
    env.update(set_now)
    if set_now:
        ours = set(filter(None, env.get(MARKER, "").split(","))) | set(set_now)
        env[MARKER] = ",".join(sorted(ours))
    return set_now


def tensorflow_defaults_environment(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """A copy of `environ` (os.environ) in which a process gets TensorFlow's own kernel defaults:
    the opt-out set, and every setting flowerlab made removed (the user's own are kept)."""
    env = dict(os.environ if environ is None else environ)
    for name in set(env.pop(MARKER, "").split(",")) & set(DEFAULTS):
        env.pop(name, None)
    env[OPT_OUT[0]] = OPT_OUT[1]
    return env


def settings(environ: MutableMapping[str, str] | None = None) -> dict[str, dict[str, str | None]]:
    """{variable: {"value": ..., "set_by": "flowerlab" | "user" | None (unset)}} for each of RECORDED."""
    env = os.environ if environ is None else environ
    ours = set(env.get(MARKER, "").split(","))
    result: dict[str, dict[str, str | None]] = {}
    for name in RECORDED:
        value = env.get(name)
        set_by = None if value is None else (
            "flowerlab" if name in ours and value == DEFAULTS.get(name) else "user")
        result[name] = {"value": value, "set_by": set_by}
    return result


def onednn_isa_allows(isa: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ONEDNN_MAX_CPU_ISA in `environ` (os.environ) lets oneDNN use the instructions of `isa`
    (one of ONEDNN_ISAS) where the CPU has them; unset, ALL, DEFAULT or a name oneDNN does not know
    caps nothing."""
    env = os.environ if environ is None else environ
    cap = env.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    cap = ONEDNN_ISA_ALIASES.get(cap, cap)
    if cap not in ONEDNN_ISAS:
        return True
    return ONEDNN_ISAS.index(cap) >= ONEDNN_ISAS.index(ONEDNN_ISA_ALIASES.get(isa, isa))


def onednn_enabled() -> bool | None:
    """Whether TensorFlow in this process runs its oneDNN kernels (None: it cannot say)."""
    try:
        from tensorflow.python.util import _pywrap_util_port  # TensorFlow's own check, not public API
    except ImportError:
        return None
    return bool(_pywrap_util_port.IsMklEnabled())


def kernel_library() -> str:
    """"oneDNN" or "Eigen": the CPU kernels TensorFlow runs in this process."""
    enabled = onednn_enabled()
    return "unknown" if enabled is None else ("oneDNN" if enabled else "Eigen")


def record() -> dict[str, Any]:
    """training.json's `kernels`: the settings, who set them, and the library that runs."""
    return {"library": kernel_library(), "environment": settings()}


def describe() -> str:
    """One log line: which kernels run, and why."""
    parts = [f"{name}={entry['value']} ({entry['set_by'] or 'unset'})" for name, entry in settings().items()]
    return f"TensorFlow CPU kernels: {kernel_library()}; {', '.join(parts)}"


def tensorflow_loaded_first() -> bool:
    """True when TensorFlow was imported before flowerlab could set its environment."""
    return "tensorflow" in sys.modules
