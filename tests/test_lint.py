"""The code's house rules, checked by the same tools a developer runs: ruff, snakefmt, Snakemake's
linter and import-linter's contracts (pyproject.toml). A failure prints the tool's own report."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run(*command: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


def tool(name: str) -> str:
    """The console script installed beside this Python (the test extra installs all of them)."""
    path = Path(sys.executable).with_name(name)
    found = str(path) if path.is_file() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: python -m pip install -e '.[test]'")
    return found


def test_ruff_finds_nothing() -> None:
    done = run(tool("ruff"), "check")  # the whole project, the report notebook included
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_workflow_is_snakefmt_formatted() -> None:
    done = run(tool("snakefmt"), "--check", "Snakefile", "workflow")
    assert done.returncode == 0, done.stdout + done.stderr


def test_snakemakes_linter_finds_nothing() -> None:
    done = run(sys.executable, "-m", "snakemake", "--lint")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Congratulations" in done.stdout + done.stderr


def test_stages_import_only_earlier_stages_and_nothing_imports_in_a_cycle() -> None:
    done = run(tool("lint-imports"), "--no-cache")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def copy_package(dest: Path) -> Path:
    """A copy of src/flowerlab and pyproject.toml (the contracts) to break on purpose."""
    shutil.copytree(REPO / "src" / "flowerlab", dest / "src" / "flowerlab",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "pyproject.toml", dest / "pyproject.toml")
    return dest


@pytest.mark.parametrize(
    ("module", "added_import", "broken"),
    [
        # a cycle between two training modules
        ("training/setup.py", "from flowerlab.training import stage", "No import cycles"),
        # a stage importing a later stage
        ("data/pipeline.py", "from flowerlab.evaluation import quality", "Stages import only earlier stages"),
    ],
)
def test_the_import_contracts_catch_what_they_forbid(
    tmp_path: Path, module: str, added_import: str, broken: str
) -> None:
    copy = copy_package(tmp_path)
    path = copy / "src" / "flowerlab" / module
    path.write_text(path.read_text(encoding="utf-8") + f"\n{added_import}  # noqa\n", encoding="utf-8")
    done = subprocess.run(
        [tool("lint-imports"), "--no-cache"], cwd=copy, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "PYTHONPATH": str(copy / "src")},
    )
    assert done.returncode != 0, done.stdout
    assert f"{broken}" in done.stdout and "BROKEN" in done.stdout
