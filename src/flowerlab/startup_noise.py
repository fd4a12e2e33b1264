"""TensorFlow's start-up notices, kept out of job logs, terminals and the report notebook.

Importing TensorFlow and listing its devices on a machine without a GPU writes, from C++, lines
such as

    I0000 ... cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
    E0000 ... cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: ... UNKNOWN ERROR (303)
    I0000 ... cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available CPU ...

straight to file descriptor 2, most of them before absl's logging starts, so neither
TF_CPP_MIN_LOG_LEVEL nor Python's logging reaches them; and the cuInit line is an error, so a log
level high enough to hide it would hide real errors too. No maintained library filters a native
library's stderr, so this module does it, narrowly: only while `import tensorflow` runs and
TensorFlow first lists its physical devices, fd 2 goes to a temporary file; then every line that
is not one of the known start-up notices (NOTICES) is written to the real stderr, in order.
Whatever TensorFlow or anything else writes later, warnings and errors included, passes
untouched, and a line from the window that matches no notice (a real warning) is kept.

Once its logging has started, TensorFlow also logs at INFO level from C++ (grappler's "Starting
new session" when the FLOPs are counted, say); `TF_CPP_MIN_LOG_LEVEL=1` is set for those, unless
the user set it, which keeps its warnings and errors.

`import flowerlab` installs the hook (flowerlab/__init__.py), so every process of the study gets
it: each `flowerlab` command, the report notebook's kernel, bench/.
`FLOWERLAB_TF_STARTUP_NOISE=show` leaves TensorFlow's output as it is.

No TensorFlow import at module level: this runs before TensorFlow may load.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from types import ModuleType
from typing import Any

# The start-up notices dropped: none says anything a user of this study can act on. The GPU ones
# come from TensorFlow's CUDA wheels on machines with or without a GPU; the devices a run uses
# are in its log and its records (flowerlab.devices), the kernel library in the training log.
NOTICES = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|Could not find cuda drivers on your machine"
    r"|failed call to cuInit"
    r"|cpu_feature_guard\.cc"
    r"|rebuild TensorFlow with the appropriate compiler flags"
    r"|oneDNN custom operations are on"
    r"|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|computation placer already registered"
    r"|TF-TRT Warning: Could not find TensorRT"
)
SWITCH = ("FLOWERLAB_TF_STARTUP_NOISE", "show")
# TensorFlow's C++ log level once absl logging runs: 1 drops INFO, keeps WARNING and ERROR.
LOG_LEVEL = ("TF_CPP_MIN_LOG_LEVEL", "1")


def kept_lines(text: bytes) -> bytes:
    """`text` without the lines that are start-up notices."""
    return b"".join(line for line in text.splitlines(keepends=True)
                    if not NOTICES.search(line.decode("utf-8", "replace")))


@contextlib.contextmanager
def notices_filtered() -> Iterator[None]:
    """While inside, fd 2 (native and Python writes alike) goes to a temporary file; on the way out
    its lines, less the start-up notices, go to the real stderr in order, also when the body raised.
    Where fd 2 cannot be redirected (closed, or no temporary file can be made), nothing is filtered:
    the notices are noise, and TensorFlow must import anyway."""
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    with contextlib.ExitStack() as stack:
        try:
            saved = os.dup(2)
            stack.callback(os.close, saved)
            capture = stack.enter_context(tempfile.TemporaryFile())
        except OSError:
            saved = None
        if saved is None:
            yield
            return
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            capture.seek(0)
            kept = kept_lines(capture.read())
            if kept:
                os.write(2, kept)


class _QuietLoader(importlib.abc.Loader):
    """TensorFlow's own loader, run with the notices filtered; its device listing too, since that
    is where the CUDA notices come from. Anything else is the wrapped loader's."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        with notices_filtered():
            self._loader.exec_module(module)
            # Lists the physical devices only: logical devices, threads and memory growth can
            # still be configured afterwards.
            module.config.list_physical_devices()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` with the other finders and hands back its spec with _QuietLoader."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "tensorflow":
            return None
        uninstall()  # once: TensorFlow is imported once per process
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def install() -> bool:
    """Filter the notices of TensorFlow's import to come, unless switched off or already loaded."""
    if os.environ.get(SWITCH[0]) == SWITCH[1] or "tensorflow" in sys.modules:
        return False
    os.environ.setdefault(*LOG_LEVEL)
    if not any(isinstance(finder, _QuietTensorFlowImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())
    return True


def uninstall() -> None:
    sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _QuietTensorFlowImport)]
