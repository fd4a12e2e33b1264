"""Whether a training computes its convolutions' weight gradients with flowerlab's kernel.

Measured (docs/results.md): TensorFlow's fastest CPU kernels, oneDNN's, compute the weight
gradients on a CPU without AVX-512 with an older direct kernel at about half the float32 peak;
flowerlab's AVX2 kernel reaches 75-94% on the study's 3x3 convolutions of 24 px and more. With AVX-512, oneDNN's own
weight-gradient kernels reach about 83% and are kept. Eigen's (TensorFlow's default on a CPU
without AVX-512 when oneDNN is off) are slower still, so the kernel runs there too.

`FLOWERLAB_WEIGHT_GRADIENTS`: `auto` (the default: the rule above), `flowerlab` (wherever the CPU
has AVX2 and FMA, e.g. to test it on an AVX-512 CPU) or `tensorflow` (never). Where it is unset,
`FLOWERLAB_KERNELS=tensorflow` (TensorFlow's own defaults, bench/'s baseline) means `tensorflow`.

No TensorFlow import here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from flowerlab import kernels

VARIABLE = "FLOWERLAB_WEIGHT_GRADIENTS"
CHOICES = ("auto", "flowerlab", "tensorflow")
NEEDED_FLAGS = frozenset({"avx2", "fma"})


@dataclass(frozen=True)
class Choice:
    use_flowerlab: bool
    reason: str


def onednn_uses_avx512(flags: Iterable[str], environ: Mapping[str, str]) -> bool:
    """Whether oneDNN's kernels may use AVX-512 here: the CPU has it and ONEDNN_MAX_CPU_ISA does not
    cap oneDNN below it."""
    return "avx512f" in set(flags) and kernels.onednn_isa_allows("AVX512_CORE", environ)


def choose(*, device_kind: str, flags: Iterable[str], onednn: bool | None, environ: Mapping[str, str]) -> Choice:
    """Where the training runs (`device_kind`), what the CPU has (/proc/cpuinfo `flags`), whether
    TensorFlow runs oneDNN kernels, and the environment's settings decide."""
    if VARIABLE not in environ and environ.get("FLOWERLAB_KERNELS") == "tensorflow":
        return Choice(False, "FLOWERLAB_KERNELS=tensorflow: TensorFlow's own kernels")
    setting = environ.get(VARIABLE, "auto").strip().lower() or "auto"
    if setting not in CHOICES:
        return Choice(False, f"{VARIABLE}={setting!r} is not one of {', '.join(CHOICES)}: TensorFlow's kernel")
    if setting == "tensorflow":
        return Choice(False, f"{VARIABLE}=tensorflow")
    if device_kind != "cpu":
        return Choice(False, f"training on the {device_kind}: its own kernels")
    missing = NEEDED_FLAGS - set(flags)
    if missing:
        return Choice(False, f"this CPU lacks {', '.join(sorted(missing))}")
    if setting == "flowerlab":
        return Choice(True, f"{VARIABLE}=flowerlab")
    if onednn and onednn_uses_avx512(flags, environ):
        return Choice(False, "oneDNN's AVX-512 weight-gradient kernels, as fast as flowerlab's or faster")
    library = "oneDNN's" if onednn else "Eigen's"
    return Choice(True, f"no AVX-512 for oneDNN here: flowerlab's AVX2 kernel is faster than {library}")
