"""What produced a result: library versions and the code's git commit, for the training record.

No TensorFlow import here: versions are read from the installed packages' metadata, so asking
costs nothing and works in any process.
"""

from __future__ import annotations

import logging
import platform
import subprocess
from importlib import metadata
from pathlib import Path

logger = logging.getLogger(__name__)

# The libraries whose versions decide the numbers a training run produces.
RECORDED_PACKAGES = ("tensorflow", "keras", "jax", "jaxlib", "numpy", "flowerlab")  # jax: None where not installed
# Where this package's code lives: its git checkout (if any) is the code version.
PACKAGE_DIR = Path(__file__).resolve().parent
GIT_TIMEOUT_S = 10


def package_version(name: str) -> str | None:
    """The installed version of distribution `name`, or None when it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def library_versions(packages: tuple[str, ...] = RECORDED_PACKAGES) -> dict[str, str | None]:
    """{"python": "3.11.7", "tensorflow": ..., "keras": ..., "numpy": ..., "flowerlab": ...}."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    versions.update({name: package_version(name) for name in packages})
    # The CUDA build of TensorFlow is a separate distribution; say which one ran.
    for variant in ("tensorflow-cpu", "tensorflow-gpu", "tf-nightly"):
        if versions.get("tensorflow") is None and package_version(variant) is not None:
            versions["tensorflow"] = f"{package_version(variant)} ({variant})"
    return versions


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        completed = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:  # git not installed, or hung
        logger.debug("git %s failed: %s", " ".join(args), error)
        return None
    return completed.stdout if completed.returncode == 0 else None


def code_version(path: Path = PACKAGE_DIR) -> dict[str, str | bool | None]:
    """{"commit": HEAD's sha, "dirty": uncommitted changes?} of the git checkout holding `path`.

    Both are None outside a git checkout (an installed wheel, an exported tarball): the record
    then says honestly that the code version is unknown instead of guessing it.
    """
    commit = _git(["rev-parse", "HEAD"], path)
    if commit is None:
        return {"commit": None, "dirty": None}
    status = _git(["status", "--porcelain"], path)
    return {"commit": commit.strip(), "dirty": None if status is None else bool(status.strip())}
