"""Code fingerprints: what a stage runs, and which edits count as a change."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flowerlab import code_fingerprint
from flowerlab.cli import code_version
from flowerlab.models.registry import ARCH_NAMES, get_spec
from flowerlab.training import checkpoints

SOURCE = Path(code_fingerprint.__file__).resolve().parent


def test_comments_docstrings_and_layout_do_not_count_but_code_does() -> None:
    original = '"""Module."""\n\ndef f(x):\n    """Twice."""\n    return 2 * x  # doubled\n'
    cosmetic = '"""Reworded."""\n# a comment\n\ndef f( x ):\n    return 2*x\n'
    changed = '"""Module."""\n\ndef f(x):\n    """Twice."""\n    return 3 * x\n'
    digest = code_fingerprint.source_digest
    assert digest(original) == digest(cosmetic)
    assert digest(original) != digest(changed)


def test_a_training_runs_its_own_architecture_module_and_no_other() -> None:
    for arch in ARCH_NAMES:
        modules = code_version("train", arch).modules
        own = get_spec(arch).module
        assert own in modules and "flowerlab.training.stage" in modules
        others = {get_spec(name).module for name in ARCH_NAMES} - {own}
        # MobileNetV2 fine-tuned and frozen share one module; xception imports backbone helpers only.
        assert not (others & set(modules)), arch


def test_stages_fingerprint_their_own_code() -> None:
    evaluate = code_version("evaluate").modules
    assert "flowerlab.evaluation.stage" in evaluate and "flowerlab.training.stage" not in evaluate
    inventory = code_version("inventory").modules
    assert "flowerlab.data.inventory" in inventory and "flowerlab.data.pipeline" not in inventory
    publish = code_version("publish")
    assert "flowerlab/reporting/templates/landing.html.j2" in publish.files
    assert not any(name.startswith("flowerlab.training") for name in publish.modules)


def test_the_report_notebooks_imports_count(tmp_path: Path) -> None:
    notebook = tmp_path / "report.ipynb"
    cells = [{"cell_type": "code", "source": ["%matplotlib inline\n", "from flowerlab.reporting import figures\n"]},
             {"cell_type": "markdown", "source": ["import flowerlab.training.stage"]}]
    notebook.write_text(json.dumps({"cells": cells}))
    assert code_fingerprint.notebook_imports(notebook) == ["flowerlab.reporting", "flowerlab.reporting.figures"]
    version = code_version("render", files=[notebook])
    assert "flowerlab.reporting.figures" in version.modules and "report.ipynb" in version.files
    assert "flowerlab.training.stage" not in version.modules


def test_the_training_job_and_the_workflow_agree_on_its_fingerprint() -> None:
    from flowerlab.training.stage import training_code

    for arch in ARCH_NAMES:
        assert training_code(get_spec(arch)) == code_version("train", arch)


def _fingerprints_of_copy(package_parent: Path) -> dict[str, str]:
    script = ("import json; from flowerlab.cli import code_version; "
              "print(json.dumps({a: code_version('train', a).sha256 for a in ('dense', 'convnet', 'squeezenet')}))")
    result = subprocess.run([sys.executable, "-c", script], env={"PYTHONPATH": str(package_parent), "PATH": ""},
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def test_editing_one_model_changes_that_models_fingerprint_only(tmp_path: Path) -> None:
    shutil.copytree(SOURCE, tmp_path / "flowerlab", ignore=shutil.ignore_patterns("__pycache__"))
    before = _fingerprints_of_copy(tmp_path)
    convnet = tmp_path / "flowerlab" / "models" / "convnet.py"
    convnet.write_text(convnet.read_text() + "\nEXTRA_FILTERS = 8\n")
    after = _fingerprints_of_copy(tmp_path)
    assert after["convnet"] != before["convnet"]
    assert after["dense"] == before["dense"] and after["squeezenet"] == before["squeezenet"]


def test_a_checkpoint_made_by_other_code_is_not_resumed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    manifest = {"inventory_sha256": "i", "settings": {}, "shards": []}
    settings = {"arch": "convnet", "hparams": {"epochs": 3}, "seed": 1, "deterministic": False,
                "accelerator_kind": "cpu", "replicas": 1, "precision": "float32", "backend": "tensorflow"}
    old = checkpoints.fingerprint_inputs(manifest, **settings, code="a" * 64)
    folder = tmp_path / "epoch-0001"
    folder.mkdir()
    (folder / "model.keras").write_bytes(b"weights")
    (folder / "state.json").write_text(json.dumps(
        {"format": 1, "epoch": 1, "fingerprint": checkpoints.fingerprint(old), "fingerprint_inputs": old}))
    assert checkpoints.find_checkpoint(tmp_path, checkpoints.fingerprint(old), old) is not None
    new = checkpoints.fingerprint_inputs(manifest, **settings, code="b" * 64)
    with caplog.at_level(logging.WARNING, logger="flowerlab.training.checkpoints"):
        assert checkpoints.find_checkpoint(tmp_path, checkpoints.fingerprint(new), new) is None
    assert "made by other code (training code aaaaaaaaaaaa, now bbbbbbbbbbbb)" in caplog.text


def test_by_part_names_the_subpackage_or_file_that_changed() -> None:
    """The workflow's code parameter: one short hash per subpackage and file, so that a rerun's
    reason says which part changed."""
    version = code_fingerprint.fingerprint(["flowerlab.training.stage", "flowerlab.models.convnet"])
    parts = dict(part.split("=") for part in version.by_part().split())
    assert {"flowerlab.training", "flowerlab.models", "flowerlab.data"} <= set(parts)
    edited = dict(version.modules, **{"flowerlab.models.convnet": "0" * 64})
    other = code_fingerprint.CodeVersion("x", edited, version.files)
    changed = set(version.by_part().split()) ^ set(other.by_part().split())
    assert {part.split("=")[0] for part in changed} == {"flowerlab.models"}
