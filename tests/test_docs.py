"""docs/architecture.md's package table follows the code: every module of the package is named in
the row of its layer, and the rows are the import-linter layers of pyproject.toml, in order."""

from __future__ import annotations

import pkgutil
import re
import tomllib
from pathlib import Path

import flowerlab

REPO = Path(__file__).resolve().parents[1]


def layer_contract() -> list[list[str]]:
    """The layers contract's layers, top first, each a list of its modules or packages."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    (contract,) = [c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers"]
    return [[name.strip().removeprefix("flowerlab.") for name in layer.split("|")] for layer in contract["layers"]]


def package_table() -> list[tuple[str, str]]:
    """(layer cell, modules cell) of each row of the table under '## The package'."""
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    lines = text.split("## The package", 1)[1].splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith("| layer |"))
    end = next(index for index in range(start, len(lines)) if not lines[index].startswith("|"))
    rows = lines[start + 2:end]  # after the header and its rule
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]
    return [(row[0], row[1]) for row in cells if len(row) >= 2]


def named(cell: str) -> set[str]:
    return set(re.findall(r"`([\w.]+)`", cell))


def submodules(package: str) -> list[str]:
    """The package's modules, less the architectures' own (the table says "one module per
    architecture": the registry lists them, so adding one touches no document)."""
    from flowerlab.models.registry import ARCHITECTURES

    architectures = {spec.module for spec in ARCHITECTURES.values()}
    path = Path(flowerlab.__file__).parent / package
    return [info.name for info in pkgutil.iter_modules([str(path)])
            if f"flowerlab.{package}.{info.name}" not in architectures]


def test_the_package_table_names_every_module_in_its_layer() -> None:
    layers = layer_contract()
    layers = [layers[0] + layers[1], *layers[2:]]  # one row for the commands: __main__ and cli
    table = package_table()
    assert len(table) == len(layers), [row[0] for row in table]
    for (layer_cell, modules_cell), members in zip(table, layers, strict=True):
        listed = named(layer_cell) | named(modules_cell)
        for member in members:
            if (Path(flowerlab.__file__).parent / member).is_dir():
                missing = [name for name in submodules(member) if name not in listed]
                assert member in listed and not missing, (member, missing)
            else:
                assert member in listed, (member, layer_cell)
    every = {info.name for info in pkgutil.iter_modules(flowerlab.__path__)}
    in_contract = {member for layer in layers for member in layer}
    assert every == in_contract, every ^ in_contract  # the contract covers the whole package
