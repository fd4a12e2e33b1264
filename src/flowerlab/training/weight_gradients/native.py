"""Build, cache and call the hand-written weight-gradient kernel (conv2d_weight_gradient.cc).

The kernel is compiled on first use with the machine's C++ compiler (`$CXX`, else g++, c++ or
clang++) into a per-user cache, `$FLOWERLAB_NATIVE_CACHE` or `~/.cache/flowerlab/native`, under
a name that hashes the source, the flags and the compiler's version: a later process, or another
Snakemake job, loads it in a millisecond, and a changed source is compiled anew. Compiling takes
about a second; it writes beside the final name and renames, so a concurrent job never loads a
half-written library.

Why a compiler call and a ctypes library rather than a TensorFlow custom op: a custom op must be
compiled against the installed TensorFlow's headers and C++ ABI, one build per TensorFlow
version, and a wheel cannot ship one for every version. This kernel needs only a C++17 compiler
and takes plain arrays; flowerlab.training.weight_gradients.layers calls it from the training
graph through tf.numpy_function, whose cost (~0.1 ms a call) is small beside a weight gradient's
tens of milliseconds.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from flowerlab import filesystem
from flowerlab.errors import FlowerlabError

SOURCE = Path(__file__).with_name("conv2d_weight_gradient.cc")
SYMBOL = "flowerlab_conv2d_weight_gradient"
FLAGS = ("-O3", "-mavx2", "-mfma", "-std=c++17", "-shared", "-fPIC", "-pthread")
COMPILERS = ("g++", "c++", "clang++")
CACHE_VARIABLE = "FLOWERLAB_NATIVE_CACHE"
COMPILE_SECONDS = 300


class NativeKernelUnavailable(FlowerlabError):
    """The kernel cannot be built or loaded here; training runs TensorFlow's kernel instead."""


def find_compiler(environ: dict[str, str] | None = None) -> str | None:
    """The C++ compiler to use: `$CXX` when set, else the first of COMPILERS on the PATH."""
    env = os.environ if environ is None else environ
    path = env.get("PATH")
    if env.get("CXX"):
        return shutil.which(env["CXX"], path=path) or env["CXX"]
    return next((found for name in COMPILERS if (found := shutil.which(name, path=path))), None)


def cache_dir(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get(CACHE_VARIABLE):
        return Path(env[CACHE_VARIABLE])
    base = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "flowerlab" / "native"


def compiler_version(compiler: str) -> str:
    try:
        done = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except OSError as error:
        raise NativeKernelUnavailable(f"cannot run the C++ compiler {compiler}: {error}") from error
    return done.stdout.strip()


def library_name(source: bytes, compiler: str, version: str) -> str:
    """The cached library's file name: it changes with the source, the flags and the compiler."""
    key = hashlib.sha256(b"\0".join([source, " ".join(FLAGS).encode(), compiler.encode(), version.encode()]))
    return f"conv2d_weight_gradient-{key.hexdigest()[:16]}.so"


def compile_library(compiler: str, destination: Path) -> None:
    """Compile SOURCE into `destination`, atomically; NativeKernelUnavailable with the compiler's
    message when it fails."""
    workdir = filesystem.temporary_dir_beside(destination)
    try:
        built = workdir / destination.name
        try:
            done = subprocess.run([compiler, *FLAGS, "-o", str(built), str(SOURCE)], capture_output=True,
                                  text=True, timeout=COMPILE_SECONDS, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise NativeKernelUnavailable(f"compiling {SOURCE.name} with {compiler} failed: {error}") from error
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
            raise NativeKernelUnavailable(f"compiling {SOURCE.name} with {compiler} failed:\n{tail}")
        os.replace(built, destination)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def library_path(environ: dict[str, str] | None = None) -> Path:
    """The compiled library, built now unless the cache has it."""
    compiler = find_compiler(environ)
    if compiler is None:
        raise NativeKernelUnavailable(f"no C++ compiler found (set CXX, or install one of {', '.join(COMPILERS)})")
    path = cache_dir(environ) / library_name(SOURCE.read_bytes(), compiler, compiler_version(compiler))
    if not path.is_file():
        try:
            compile_library(compiler, path)
        except OSError as error:  # an unwritable cache folder
            raise NativeKernelUnavailable(f"cannot write the compiled kernel to {path.parent}: {error}") from error
    return path


@functools.cache
def load() -> Any:
    """The kernel's function, from a library built once per machine and source."""
    path = library_path()
    try:
        function = getattr(ctypes.CDLL(str(path)), SYMBOL)
    except (OSError, AttributeError) as error:
        raise NativeKernelUnavailable(f"cannot load {path}: {error}") from error
    function.restype = ctypes.c_int
    pointer = ctypes.POINTER(ctypes.c_float)
    function.argtypes = [pointer, pointer] + [ctypes.c_int] * 7 + [pointer, ctypes.c_int]
    return function


def conv2d_weight_gradient(x: Any, dy: Any, kernel_size: tuple[int, int], threads: int) -> Any:
    """dW (kernel_h, kernel_w, in_channels, out_channels) of a stride-1 'same' convolution
    from its float32 NHWC input `x` and output gradient `dy`, on `threads` threads.
    ctypes releases the GIL for the call: other Python threads run meanwhile."""
    import numpy as np

    x = np.ascontiguousarray(x, dtype=np.float32)
    dy = np.ascontiguousarray(dy, dtype=np.float32)
    images, height, width, in_channels = x.shape
    if dy.shape[:3] != x.shape[:3]:
        raise ValueError(f"output gradient {dy.shape} does not match input {x.shape} (stride 1, 'same')")
    kernel_h, kernel_w = kernel_size
    dw = np.empty((kernel_h, kernel_w, in_channels, dy.shape[3]), np.float32)
    pointer = ctypes.POINTER(ctypes.c_float)
    status = load()(x.ctypes.data_as(pointer), dy.ctypes.data_as(pointer), images, height, width, in_channels,
                    dy.shape[3], kernel_h, kernel_w, dw.ctypes.data_as(pointer), threads)
    if status != 0:
        raise MemoryError("the weight-gradient kernel could not allocate its buffers")
    return dw
