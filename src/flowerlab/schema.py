"""The configuration schema (workflow/schemas/config.schema.yaml): the one place of every default.

The command-line options of `flowerlab <command>` and the defaults of the functions behind them
take their defaults from here (`default("data", "image_size")`), so a default changes in the
schema alone. Reading it needs only PyYAML: any stage may import this module.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml

# Hyperparameters every studied architecture must set: the schema has no default for them.
REQUIRED_HPARAMS = ("epochs", "batch_size")
# Package data: in a checkout a link to workflow/schemas/config.schema.yaml (where Snakemake
# workflows keep it), in an installed wheel a copy of it, so `flowerlab` finds its defaults
# with or without the source tree.
SCHEMA_PATH = Path(__file__).resolve().parent / "config.schema.yaml"


@functools.cache
def _schema(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def read_schema(path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    """The schema as written (a fresh copy: callers may fill it in)."""
    return copy.deepcopy(_schema(Path(path)))


def resolve(node: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Follow a local ``$ref`` (``#/$defs/name``), merging sibling keywords over it."""
    while isinstance(node, dict) and "$ref" in node:
        target: Any = schema
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def default(*keys: str) -> Any:
    """The schema's default of a configuration key, e.g. `default("evaluation", "batch_size")`;
    `default("hparams", name)` reads a model hyperparameter's. KeyError when it has none."""
    schema = _schema(SCHEMA_PATH)
    node: dict[str, Any] = schema["$defs"]["hparams"] if keys[0] == "hparams" else schema
    for key in keys[1:] if keys[0] == "hparams" else keys:
        node = resolve(node["properties"][key], schema)
    if "default" not in node:
        raise KeyError(f"the schema gives {'.'.join(keys)} no default")
    return node["default"]
