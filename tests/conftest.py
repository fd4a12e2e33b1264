"""Shared fixtures: where the real data and the backbone weights are, and small thread limits.

Real-data tests look for the photos in $FLOWERLAB_REAL_DATA, else ../shared/data/flower_photos
beside the repository (as on the development and CI machines), and skip with the reason when
neither exists, as on a user's fresh machine.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from chromium_page import CHROMIUM

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

# With pytest-xdist (pyproject's addopts) the tests run in parallel worker processes. Each test
# file runs whole in one worker, so that its module fixtures are built once; files that share a
# session fixture run in the same worker for the same reason. The group of the longest fixture,
# the smoke study with the SLURM run that is compared with it, starts first: its waits on
# Snakemake and SLURM overlap the other files' work.
SHARED_FIXTURE_GROUPS = {
    "test_workflow.py": "smoke_study",
    "test_slurm.py": "smoke_study",
    "test_workflow_on_jax.py": "smoke_study",
    "test_report.py": "fake_reports",
    "test_browser.py": "fake_reports",
}
FIRST_GROUP = "smoke_study"


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which turns the marks into groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        item.add_marker(pytest.mark.xdist_group(SHARED_FIXTURE_GROUPS.get(item.path.name, item.path.name)))
    items.sort(key=lambda item: SHARED_FIXTURE_GROUPS.get(item.path.name) != FIRST_GROUP)


# Tests share a small machine: keep TensorFlow from starting a thread per core per op pool.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "2")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")


def _existing(env_var: str, default: Path) -> Path | None:
    path = Path(os.environ.get(env_var) or default)
    return path if path.exists() else None


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real flower_photos folder, or skip."""
    path = _existing("FLOWERLAB_REAL_DATA", SHARED_DATA / "flower_photos")
    if path is None:
        pytest.skip(
            "real flower_photos not found: set FLOWERLAB_REAL_DATA or place it at "
            f"{SHARED_DATA / 'flower_photos'}"
        )
    return path


@pytest.fixture(scope="session")
def mobilenet_weights() -> Path:
    """Local ImageNet MobileNetV2 no-top weights (.h5), or skip."""
    path = _existing(
        "FLOWERLAB_MOBILENET_WEIGHTS", SHARED_DATA / "weights" / "mobilenet_v2_1.0_224_no_top.h5"
    )
    if path is None:
        pytest.skip(
            "MobileNetV2 weights not found: set FLOWERLAB_MOBILENET_WEIGHTS or place them at "
            f"{SHARED_DATA / 'weights' / 'mobilenet_v2_1.0_224_no_top.h5'}"
        )
    return path


@pytest.fixture(scope="module")
def restore_tensorflow_globals():
    """train() sets process-wide state (dtype policy, op determinism) as a command should; put
    it back so that the tests of other modules run as they would alone."""
    yield
    import keras
    from tensorflow.python.framework import (
        config as tf_config,  # the public API cannot undo it
    )

    keras.mixed_precision.set_global_policy("float32")
    tf_config.disable_op_determinism()


@pytest.fixture
def uncapped_onednn(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that simulates a CPU's flags asserts what that CPU gets, so it takes away a cap on
    oneDNN's instruction set from the environment it runs in: `ONEDNN_MAX_CPU_ISA=AVX2` hides
    AVX-512 and bfloat16 from the choices (as it should on a real run)."""
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not CHROMIUM.is_file():
        message = (
            f"{CHROMIUM} not found: install it with `apt-get install -y chromium` (or set FLOWERLAB_CHROMIUM)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture(scope="session")
def cxx_compiler() -> str:
    """The C++ compiler that builds flowerlab's weight-gradient kernel, on a CPU that can run it."""
    from flowerlab.devices import cpu_flags
    from flowerlab.training.weight_gradients import native, policy

    missing = policy.NEEDED_FLAGS - cpu_flags()
    if missing:
        pytest.skip(f"this CPU lacks {', '.join(sorted(missing))}: flowerlab's weight-gradient kernel needs them")
    compiler = native.find_compiler()
    if compiler is None:
        message = "no C++ compiler found: flowerlab's weight-gradient kernel cannot be built (install g++)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return compiler


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where tests leave screenshots for a person to look at: $FLOWERLAB_TEST_ARTIFACTS, else a
    folder of pytest's own temporary tree (tests never write into the checkout)."""
    folder = Path(os.environ.get("FLOWERLAB_TEST_ARTIFACTS") or tmp_path_factory.mktemp("artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def two_architecture_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fake study of dense and convnet, three seeds each, its notebook
    executed and its landing page published as the workflow does (tests/fake_study.py); returns
    index.html. Executed once per session: the report and browser tests only read it."""
    import fake_study

    return fake_study.make_fake_report(
        tmp_path_factory.mktemp("two") / "results", ["dense", "convnet"], seeds=(1, 2, 3)
    )


@pytest.fixture(scope="session")
def one_seed_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fake study of dense and squeezenet with one seed each: the
    report without replicates. Returns index.html."""
    import fake_study

    return fake_study.make_fake_report(tmp_path_factory.mktemp("one") / "results", ["dense", "squeezenet"])


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """The smoke study (config/smoke.yaml), run locally with `--cores 2` in a copy of the workflow
    with its own src/ (tests may edit that code); returns the copy. Shared by the workflow tests
    and the SLURM test, which compares its outputs with these.

    When the session also runs the smoke study on JAX (test_workflow_on_jax.py, last of its group),
    that study starts here, in the background, on this one's TFRecords: it computes while the
    SLURM tests wait on the scheduler."""
    from workflow_runs import SMOKE, copy_workflow, snakemake

    workdir = copy_workflow(tmp_path_factory.mktemp("smoke"), with_source=True)
    # With the time estimate config/smoke.yaml leaves out, so that the run shows it (test_workflow).
    result = snakemake(workdir, "--cores", "2", *SMOKE, "--config", "estimate=true")
    (workdir / "snakemake-run.log").write_text(result.stdout + result.stderr, encoding="utf-8")
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    if any(item.path.name == "test_workflow_on_jax.py" for item in request.session.items):
        from jax_study import start_jax_smoke_study

        start_jax_smoke_study(workdir, tmp_path_factory.mktemp("jax-smoke"))
    return workdir
