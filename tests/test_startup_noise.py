"""TensorFlow's start-up notices (no CUDA driver, cuInit, CPU instructions) stay out of the logs,
while real warnings pass (flowerlab.startup_noise)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from flowerlab import startup_noise

NOTICE_LINES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796312639.670323    6732 cudart_stub.cc:31] Could not find cuda drivers on your machine, "
    "GPU will not be used.",
    "E0000 00:00:1796312644.228985    6732 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
    "Failed call to cuInit: UNKNOWN ERROR (303)",
    "I0000 00:00:1796312639.729303    6732 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use "
    "available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the appropriate "
    "compiler flags.",
]
REAL = "W0000 00:00:1796312644.3 6732 op_kernel.cc:1857] OP_REQUIRES failed: a real warning"


def run_python(code: str, **env: str | None) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter, with `env` set in its environment (None: removed)."""
    environment = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env={name: value for name, value in environment.items() if value is not None},
                          timeout=300, check=False)


def test_the_filter_drops_the_notices_and_keeps_everything_else_in_order() -> None:
    """Native writes to fd 2 inside the window, as TensorFlow's C++ makes them, interleaved with a
    Python warning; also when the body raises."""
    done = run_python(f"""
        import os, sys, warnings
        from flowerlab.startup_noise import notices_filtered
        os.write(2, b"before\\n")
        lines = {NOTICE_LINES!r}
        try:
            with notices_filtered():
                os.write(2, (lines[0] + "\\n").encode())
                os.write(2, b"{REAL}\\n")
                for line in lines[1:]:
                    os.write(2, (line + "\\n").encode())
                print("python says so", file=sys.stderr)
                raise RuntimeError("boom")
        except RuntimeError:
            pass
        os.write(2, (lines[2] + " after the window\\n").encode())
    """)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == ["before", REAL, "python says so", NOTICE_LINES[2] + " after the window"]


@pytest.mark.parametrize("line", NOTICE_LINES)
def test_each_known_notice_is_recognised(line: str) -> None:
    assert startup_noise.kept_lines(f"{line}\n{REAL}\n".encode()) == f"{REAL}\n".encode()


@pytest.mark.slow
def test_importing_tensorflow_after_flowerlab_prints_no_notice() -> None:
    """The whole start-up as every flowerlab process has it: TensorFlow imported after flowerlab,
    its devices listed and an op run; and the switch that shows them again."""
    code = """
        import flowerlab, tensorflow as tf
        print(tf.config.list_physical_devices("CPU")[0].device_type)
        print(float(tf.reduce_sum(tf.ones(3))))
    """
    quiet = run_python(code)
    assert quiet.returncode == 0 and quiet.stdout.split() == ["CPU", "3.0"], quiet.stderr
    assert not [line for line in quiet.stderr.splitlines() if startup_noise.NOTICES.search(line)], quiet.stderr
    shown = run_python(code, **{startup_noise.SWITCH[0]: startup_noise.SWITCH[1]})
    assert shown.returncode == 0
    if not any(startup_noise.NOTICES.search(line) for line in shown.stderr.splitlines()):
        pytest.skip("this TensorFlow build prints no start-up notice: nothing to filter here")


def test_tensorflow_info_logs_are_off_unless_the_user_set_the_level() -> None:
    code = "import os, flowerlab; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    assert run_python(code, TF_CPP_MIN_LOG_LEVEL=None).stdout.strip() == "1"
    assert run_python(code, TF_CPP_MIN_LOG_LEVEL="0").stdout.strip() == "0"


def test_without_a_stderr_to_redirect_tensorflow_still_imports() -> None:
    """A process whose fd 2 is closed (a daemon, say): nothing is filtered, nothing fails."""
    done = run_python("""
        import os
        os.close(2)
        import flowerlab, tensorflow as tf
        print(float(tf.reduce_sum(tf.ones(2))))
    """)
    assert done.returncode == 0 and done.stdout.strip() == "2.0"
