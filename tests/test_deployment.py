"""The workflow as others deploy it: as a Snakemake module from an empty folder, the way
`snakedeploy deploy-workflow` sets it up, and the conda environment file that installs it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from workflow_runs import REPO, copy_workflow, planned_jobs

# What `snakedeploy deploy-workflow` writes into workflow/Snakefile (its use_module template),
# for a Python where snakedeploy does not install (it supports 3.11-3.12).
MODULE_SNAKEFILE = """\
configfile: "config/config.yaml"


module flowerlab:
    snakefile:
        "{snakefile}"
    config:
        config


use rule * from flowerlab
"""


def tracked_source(dest: Path) -> Path:
    """The repository as a clone has it: its tracked files only (no results/ or resources/)."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


def files_in(folder: Path) -> set[Path]:
    return {path.relative_to(folder) for path in folder.rglob("*") if "__pycache__" not in path.parts}


def deploy(source: Path, dest: Path) -> None:
    """Deploy `source` into `dest` with snakedeploy where it installs, else as it would."""
    try:
        from snakedeploy.deploy import deploy as snakedeploy_deploy
    except ImportError:
        shutil.copytree(source / "config", dest / "config")
        shutil.copytree(source / "profiles", dest / "profiles")
        (dest / "workflow").mkdir(parents=True)
        (dest / "workflow" / "Snakefile").write_text(MODULE_SNAKEFILE.format(snakefile="workflow/Snakefile"))
    else:
        snakedeploy_deploy(str(source), name="flowerlab", tag=None, branch=None, dest_path=dest)
    # snakedeploy names a local source's Snakefile by its path inside the source ("workflow/
    # Snakefile"), which Snakemake reads relative to the deployed Snakefile; a GitHub source gets
    # github("owner/flowerlab", path="workflow/Snakefile", tag=...). Point it at the source itself.
    deployed = dest / "workflow" / "Snakefile"
    text, count = re.subn(
        r'snakefile:\s*"workflow/Snakefile"', f'snakefile:\n        "{source}/workflow/Snakefile"', deployed.read_text()
    )
    assert count == 1, text
    deployed.write_text(text)


@pytest.mark.slow
def test_the_workflow_runs_as_a_module_from_an_empty_folder(tmp_path: Path) -> None:
    source = tracked_source(tmp_path / "source")
    before = files_in(source)
    dest = tmp_path / "deployed"
    deploy(source, dest)
    snakefile = (dest / "workflow" / "Snakefile").read_text()
    assert "use rule * from flowerlab" in snakefile and (dest / "config" / "config.yaml").is_file()
    assert sorted(path.name for path in dest.iterdir()) == ["config", "profiles", "workflow"]

    # The module plans the very jobs a checkout of the repository plans.
    jobs = planned_jobs(dest, "--configfile", "config/smoke.yaml")
    assert jobs == planned_jobs(copy_workflow(tmp_path / "checkout"), "--configfile", "config/smoke.yaml")
    assert jobs["train_model"] == jobs["evaluate_model"] >= 2 and jobs["publish_report"] == 1, jobs

    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", "--dry-run", "--configfile", "config/smoke.yaml"],
        cwd=dest, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # Every path the module reads is its own (workflow/ of the source), every path it writes the
    # deployment's: nothing is planned inside the source.
    assert str(source / "results") not in done.stdout + done.stderr
    assert files_in(source) == before


def test_the_conda_environment_installs_the_package_and_lists_nothing_twice() -> None:
    """environment.yml leaves the dependency list to pyproject.toml, so the two cannot disagree;
    its Python is one that pyproject allows."""
    environment = yaml.safe_load((REPO / "environment.yml").read_text())
    conda, pip = environment["dependencies"][:-1], environment["dependencies"][-1]["pip"]
    assert pip == ["-e .[test]"]
    python = next(item for item in conda if str(item).startswith("python="))
    assert sorted(str(item) for item in conda) == sorted(["pip", python])
    minor = int(python.split("=")[1].split(".")[1])
    pyproject = (REPO / "pyproject.toml").read_text()
    low, high = map(int, re.search(r'requires-python = ">=3\.(\d+),<3\.(\d+)"', pyproject).groups())
    assert low <= minor < high
