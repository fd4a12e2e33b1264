"""Nothing from the configuration is executed as code: hostile folder names travel through
Snakemake's shell commands as plain arguments."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from workflow_runs import copy_workflow  # the same user's checkout as the e2e tests

from flowerlab.data.synthetic import synthesize

REPO = Path(__file__).resolve().parents[1]

# Every shell metacharacter a careless `shell:` line would act on: word splitting, both quotes,
# command substitution in both spellings, command separators, background and pipe.
HOSTILE_FOLDER = """photos with spaces 'single' "double" $(touch PWNED) ; touch PWNED2 `touch PWNED3` & touch PWNED4 | cat"""
HOSTILE_CLASS = "tulips 'n' $(touch PWNED5); touch PWNED6"


def hostile_photo_folder(parent: Path) -> Path:
    """2 classes x 6 synthetic photos in a folder whose name, and one class folder's name, are
    shell code."""
    staging = parent / "staging"
    synthesize(staging, classes=2, per_class=6, seed=0)
    _, second = sorted(p.name for p in staging.iterdir())
    (staging / second).rename(staging / HOSTILE_CLASS)
    return staging.rename(parent / HOSTILE_FOLDER)


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=workdir, capture_output=True,
                          text=True, timeout=300, check=False)


@pytest.mark.slow
def test_a_data_source_named_like_shell_code_is_only_ever_a_path(tmp_path: Path) -> None:
    (tmp_path / "checkout").mkdir()
    workdir = copy_workflow(tmp_path / "checkout")
    photos = hostile_photo_folder(tmp_path)
    result = snakemake(workdir, "results/data/manifest.json", "--cores", "1",
                       "--config", f"data_source={photos}", "data={image_size: 32, shards: 2}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    assert not [str(p) for p in tmp_path.rglob("PWNED*")], "a folder name was executed as shell code"
    assert not list(Path.cwd().glob("PWNED*")) and not list(REPO.glob("PWNED*"))
    summary = json.loads((workdir / "results" / "data" / "inventory.json").read_text(encoding="utf-8"))
    assert summary["root"] == str(photos.resolve())
    assert summary["kept"] == summary["files_found"] == 12
    manifest = json.loads((workdir / "results" / "data" / "manifest.json").read_text(encoding="utf-8"))
    assert HOSTILE_CLASS in manifest["classes"] and len(manifest["classes"]) == 2
    assert sum(shard["records"] for shard in manifest["shards"]) == 12


def test_braces_in_the_photo_path_are_a_clear_config_error_not_a_wildcard(tmp_path: Path) -> None:
    """Snakemake reads `{name}` in any input path as a wildcard, with no escape: a folder named
    like that must stop the run with a message about the folder, before any job."""
    (tmp_path / "checkout").mkdir()
    workdir = copy_workflow(tmp_path / "checkout")
    photos = tmp_path / "photos {arch}"
    synthesize(photos, classes=2, per_class=2, seed=0)
    result = snakemake(workdir, "results/data/manifest.json", "-n", "--cores", "1",
                       "--config", f"data_source={photos}")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "config key 'data_source'" in output and f"the folder {str(photos.resolve())!r}" in output
    assert "wildcard in a file path; rename it" in output
    assert "WildcardError" not in output
    assert not (workdir / "results").exists()
