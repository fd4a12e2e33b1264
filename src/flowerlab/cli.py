"""`flowerlab <command> ...` (or `python -m flowerlab ...`): each pipeline stage, runnable by hand.

The Snakemake rules call these commands. Each command lives in the module that does the work,
as that module's `cli(argv)` function; only the chosen module is imported, so a command that
does not need TensorFlow never loads it.
"""

from __future__ import annotations

import faulthandler
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from flowerlab.code_fingerprint import CodeVersion, fingerprint

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "config": ("flowerlab.config", "print the resolved configuration, every default included"),
    "fetch": ("flowerlab.data.acquire", "download the official archive, verify its checksum"),
    "extract": ("flowerlab.data.acquire", "extract a verified archive safely"),
    "fetch-weights": ("flowerlab.models.backbone", "fetch a backbone's ImageNet weights and check they fit"),
    "synth": ("flowerlab.data.synthetic", "generate the small synthetic photo set"),
    "inventory": ("flowerlab.data.inventory", "account for every input file: kept or skipped, why"),
    "tfrecords": ("flowerlab.data.tfrecords", "split, resize and write sharded TFRecords"),
    "estimate": ("flowerlab.training.estimate", "say how long the study's trainings will take on this machine"),
    "train": ("flowerlab.training.stage", "train one architecture (resumable)"),
    "status": ("flowerlab.training.progress", "how far each training is: epoch, images/s, time left"),
    "evaluate": ("flowerlab.evaluation.stage", "evaluate one trained model on the validation split"),
    "predict": ("flowerlab.evaluation.predict", "classify photos with a trained model (top-k classes, CSV or JSON)"),
    "collect": ("flowerlab.evaluation.collect", "gather every evaluation into one metrics table"),
    "render": ("flowerlab.reporting.render", "execute the report notebook (papermill) and export its HTML"),
    "publish": ("flowerlab.reporting.landing", "write the report's landing page"),
}


def code_version(command: str, arch: str | None = None, files: Sequence[str | Path] = ()) -> CodeVersion:
    """The fingerprint of the code `flowerlab <command>` runs: its module and all it imports,
    with the architecture's module for a training of `arch`, and the extra `files` it reads."""
    modules = [COMMANDS[command][0]]
    if arch is not None:
        from flowerlab.models.registry import get_spec

        modules.append(get_spec(arch).module)
    return fingerprint(modules, files)


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: flowerlab <command> [options]   (flowerlab <command> --help)", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in {"-h", "--help"}:
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    # A crash in TensorFlow's or XLA's C++ code (a segmentation fault, an abort) then leaves every
    # thread's Python stack in the job's log, not just an exit status.
    faulthandler.enable()
    if command not in COMMANDS:
        print(f"flowerlab: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    return int(module.cli([command, *rest]) or 0)
