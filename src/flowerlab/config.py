"""Load, coerce, default and check the study configuration — before any work starts.

The Snakefile calls :func:`prepare_config` on Snakemake's ``config`` dict. Three steps:

1. **coerce**: ``snakemake --config 'models={convnet: {epochs: 2}}'`` hands nested values over as
   strings (Snakemake parses them with YAML's BaseLoader); they are converted to the types the
   schema asks for, so an override takes effect exactly as if written in config/config.yaml.
2. **validate** against ``workflow/schemas/config.schema.yaml``, filling the schema's defaults;
   every violation is reported with its key and the allowed values, all at once.
3. **check** what a schema cannot express: that a local ``data_source`` and local weights exist
   and are what they claim to be, and that every studied architecture has hyperparameters.

This module never imports TensorFlow: parsing the workflow must stay cheap.
"""

from __future__ import annotations

import copy
import difflib
import math
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from flowerlab.data.manifest import SYNTHETIC
from flowerlab.errors import ConfigError
from flowerlab.models.registry import ARCH_NAMES, BACKBONE_ARCHS, HDF5_SIGNATURE, get_spec
from flowerlab.replicates import Replicate, replicates
from flowerlab.schema import REQUIRED_HPARAMS, SCHEMA_PATH, read_schema, resolve

SPECIAL_SOURCES = ("official", SYNTHETIC)
SPECIAL_WEIGHTS = ("imagenet", "none")


def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    """The config schema, with the architectures' names filled in from the registry (the one list)."""
    schema = read_schema(path)
    properties = schema["properties"]
    properties["study"]["items"]["enum"] = list(ARCH_NAMES)
    properties["models"]["propertyNames"]["enum"] = list(ARCH_NAMES)
    return schema


def _parse_scalar(text: str, wanted: str) -> Any:
    if wanted == "boolean":
        lowered = text.strip().lower()
        if lowered in {"true", "yes", "on", "1"}:
            return True
        if lowered in {"false", "no", "off", "0"}:
            return False
        return text
    if wanted == "integer":
        try:
            number = float(text)
        except ValueError:
            return text
        return int(number) if number.is_integer() else text
    if wanted == "number":
        try:
            return float(text)
        except ValueError:
            return text
    if wanted in {"array", "object"}:
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return text
    return text


def coerce(value: Any, node: dict, schema: dict) -> Any:
    """Convert strings (from ``--config``) to the types the schema node asks for, recursively."""
    node = resolve(node, schema)
    wanted = node.get("type")
    if isinstance(value, str) and wanted not in (None, "string"):
        value = _parse_scalar(value, wanted)
    if isinstance(value, dict):
        properties = node.get("properties", {})
        extra = node.get("additionalProperties")
        return {
            key: coerce(item, properties.get(key, extra if isinstance(extra, dict) else {}), schema)
            for key, item in value.items()
        }
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        return [coerce(item, node["items"], schema) for item in value]
    return value


def fill_defaults(value: Any, node: dict, schema: dict) -> Any:
    """Fill the schema's ``default`` values into missing keys of objects, recursively."""
    node = resolve(node, schema)
    if not isinstance(value, dict):
        return value
    properties = node.get("properties", {})
    for key, child in properties.items():
        resolved = resolve(child, schema)
        if key not in value and "default" in resolved:
            value[key] = copy.deepcopy(resolved["default"])
    extra = node.get("additionalProperties")
    for key in list(value):
        sub = properties.get(key, extra if isinstance(extra, dict) else None)
        if sub is not None:
            value[key] = fill_defaults(value[key], sub, schema)
    return value


def _nested(settings: Mapping[str, Any]) -> dict[str, Any]:
    """{"models.a.weights": P} -> {"models": {"a": {"weights": P}}}."""
    tree: dict[str, Any] = {}
    for key, value in settings.items():
        *parents, last = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return tree


def _flow(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()


def as_override(key: str, value: Any) -> str:
    """A setting in the form a user types it: `--config 'models={convnet: {epochs: 2}}'` for the
    dotted key `models.convnet.epochs` (Snakemake's --config takes only a top-level key)."""
    return as_overrides({key: value})


def as_overrides(settings: Mapping[str, Any]) -> str:
    """Several dotted settings as one --config argument list, keys under one top-level key merged."""
    return "--config " + " ".join(f"'{top}={_flow(value)}'" for top, value in _nested(settings).items())


def as_yaml(settings: Mapping[str, Any]) -> str:
    """The same settings as lines of a config file (block style, indented by two)."""
    return "\n".join("  " + line for line in yaml.safe_dump(_nested(settings), sort_keys=False).splitlines())


def _did_you_mean(name: Any, choices: Collection[str]) -> str:
    close = difflib.get_close_matches(str(name), [str(choice) for choice in choices], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def describe_error(error, what: str = "config key") -> str:
    """One jsonschema error as one line: the key, what is wrong, what is allowed, and the
    closest allowed name for a misspelt key or value. The one formatter for the study's
    configuration and a training's hyperparameters."""
    key = ".".join(str(part) for part in error.absolute_path) or "(top level)"
    message, hint = error.message, ""
    if error.validator == "enum":
        allowed = list(error.validator_value)
        message = f"{error.instance!r} is not allowed"
        hint = f" (allowed: {', '.join(map(str, allowed))}){_did_you_mean(error.instance, allowed)}"
    elif error.validator in ("additionalProperties", "propertyNames"):
        allowed = sorted(error.schema.get("properties", {})) or list(
            error.schema.get("propertyNames", {}).get("enum", []))
        unknown = [name for name in error.instance if name not in allowed] if isinstance(error.instance, Mapping) else []
        if error.validator == "propertyNames":
            unknown, message = [error.instance], f"{error.instance!r} is not allowed"
        elif unknown:
            key = ".".join(str(part) for part in [*error.absolute_path, unknown[0]])
            message = "unknown key" + (f" (also {', '.join(map(repr, unknown[1:]))})" if unknown[1:] else "")
        hint = f" (allowed: {', '.join(map(str, allowed))})" if allowed else ""
        hint += "".join(_did_you_mean(name, allowed) for name in unknown[:1])
    elif error.validator == "type" and error.validator_value == "array" and not isinstance(error.instance, list):
        hint = f": write a list, {as_override(key, [error.instance])}"
    return f"{what} '{key}': {message}{hint}"


def validate(config: dict, schema: dict) -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    problems = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(map(describe_error, problems)))


def _check_weights(arch: str, weights: str) -> str | None:
    key = f"models.{arch}.weights"
    if weights == "none":
        # A random frozen backbone learns nothing, and the course fine-tunes from ImageNet.
        return (
            f"config key '{key}': none, but '{arch}' starts from pretrained ImageNet weights "
            "(allowed: imagenet, or the path of a local .h5 weights file for offline use)"
        )
    if weights in SPECIAL_WEIGHTS:
        return None
    path = Path(weights).expanduser()
    if not path.is_file():
        return f"config key '{key}': {weights!r} does not exist (allowed: imagenet, none, or the path of a .h5 weights file)"
    with open(path, "rb") as handle:
        if handle.read(8) != HDF5_SIGNATURE:
            return f"config key '{key}': {weights!r} is not an HDF5 weights file (.h5 / .weights.h5)"
    return None


def _braces_in_photo_paths(root: Path) -> list[str]:
    """The photo folder and its class folders become Snakemake inputs, where `{name}` is a
    wildcard (there is no escape for it): refuse braces with a message instead of letting
    Snakemake fail with a WildcardError about a wildcard the user never wrote."""

    def has_braces(text: str) -> bool:
        return "{" in text or "}" in text

    root = root.resolve()
    named = [f"the folder {str(root)!r}"] if has_braces(str(root)) else []
    try:
        entries = sorted(root.iterdir())
    except OSError:  # unreadable: the inventory stage reports it with its own message
        entries = []
    named += [f"its class folder {entry.name!r}" for entry in entries if entry.is_dir() and has_braces(entry.name)]
    return [
        f"config key 'data_source': {what} contains '{{' or '}}', which Snakemake reads as a "
        "wildcard in a file path; rename it (or copy the photos to a path without braces)"
        for what in named
    ]


def check(config: dict) -> None:
    """Checks that a schema cannot express; all problems are reported together."""
    problems = []
    source = config["data_source"]
    if source not in SPECIAL_SOURCES:
        path = Path(source).expanduser()
        if not path.is_dir():
            problems.append(
                f"config key 'data_source': {source!r} is not a folder (allowed: official, synthetic, "
                "or the path of a folder with one subfolder per class)"
            )
        else:
            problems += _braces_in_photo_paths(path)
    for arch in config["study"]:
        hparams = config["models"].get(arch)
        if hparams is None:
            problems.append(f"config key 'models.{arch}': missing, but '{arch}' is in 'study'")
            continue
        for required in REQUIRED_HPARAMS:
            if required not in hparams:
                problems.append(f"config key 'models.{arch}.{required}': missing")
        if arch in BACKBONE_ARCHS:
            problem = _check_weights(arch, model_weights(hparams, True))
            if problem:
                problems.append(problem)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))


def prepare_config(config: dict, schema_path: str | Path = SCHEMA_PATH) -> dict:
    """Coerce, validate (with defaults) and check ``config`` in place; return it."""
    schema = load_schema(schema_path)
    coerced = coerce(config, schema, schema)
    fill_defaults(coerced, schema, schema)
    validate(coerced, schema)
    check(coerced)
    config.clear()
    config.update(coerced)
    return config


def hparams_for(config: dict, arch: str) -> dict:
    """One architecture's hyperparameters, defaults included, as a plain sorted dict. Its seeds
    are not among them: they name its replicates, and adding one must not retrain the others."""
    return dict(sorted((key, value) for key, value in config["models"][arch].items() if key != "seeds"))


def study_replicates(config: dict, arch: str) -> list[Replicate]:
    """An architecture's replicates: its own `seeds` or the study's, crossed with `data.split_seeds`."""
    seeds = config["models"][arch].get("seeds") or config["seeds"]
    return replicates(seeds, config["data"]["split_seeds"])


def study_runs(config: dict) -> list[tuple[str, Replicate]]:
    """Every (architecture, replicate) the study trains and evaluates, in study order."""
    return [(arch, replicate) for arch in config["study"] for replicate in study_replicates(config, arch)]


def photos_dir(config: dict) -> str:
    """Where the stage after acquisition finds the class folders."""
    source = config["data_source"]
    if source == "official":
        return "resources/flower_photos"
    if source == SYNTHETIC:
        return "resources/synthetic_photos"
    return str(Path(source).expanduser().resolve())


def resolved_config(configfiles: list[Path], overrides: Sequence[str] = ()) -> dict:
    """The configuration a run with these config files and `--config KEY=VALUE` overrides uses:
    merged in order and parsed by Snakemake's own functions (`update_config`, `parse_config`), as
    `snakemake --configfile ... --config ...` merges them; defaults filled, checked."""
    from snakemake.cli import parse_config
    from snakemake.utils import update_config

    config: dict = {}
    for path in configfiles:
        with open(path, encoding="utf-8") as handle:
            update_config(config, yaml.safe_load(handle) or {})
    try:
        update_config(config, parse_config(list(overrides)))
    except ValueError as error:  # Snakemake's words for an entry without KEY=
        raise ConfigError(f"--config: {error}") from None
    return prepare_config(config)


def cli(argv: list[str]) -> int:
    """`flowerlab config [--configfile FILE ...]`: print the resolved configuration, every default included."""
    import argparse

    from flowerlab.console import run_command

    parser = argparse.ArgumentParser(
        prog=f"flowerlab {argv[0]}", allow_abbrev=False,
        description="Print the configuration a run uses: config/config.yaml, then each --configfile over it, "
        "then the --config overrides, with the schema's defaults filled in and every key checked.",
    )
    parser.add_argument("--configfile", type=Path, action="append", default=[],
                        help="a config file over config/config.yaml (repeatable, as snakemake's)")
    parser.add_argument("--config", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="overrides, exactly as snakemake --config takes them, "
                             "e.g. --config 'models={convnet: {epochs: 2}}' 'seeds=[1]'")
    parser.add_argument("--base", type=Path, default=Path("config/config.yaml"), help="the study's config file")
    args = parser.parse_args(argv[1:])

    def show() -> None:
        config = resolved_config([args.base, *args.configfile], args.config)
        print(yaml.safe_dump(config, sort_keys=False), end="")

    return run_command(argv[0], show)


# --------------------------------------------------------------------------------------------
# An architecture's input size and weights, and the downloads a run needs


WEIGHTS_DIR = "resources/weights"
PHOTOS_ARCHIVE = "resources/flower_photos.tgz"
REACHABLE_TIMEOUT_S = 10.0


def model_image_size(hparams: Mapping[str, Any], default_image_size: int | None) -> int | None:
    """hparams.image_size, else the architecture's own default (xception: 331), else None
    (= the TFRecords' size)."""
    return hparams.get("image_size") or default_image_size


def model_weights(hparams: Mapping[str, Any], uses_backbone_weights: bool) -> str:
    """hparams.weights, else ImageNet for backbone models, else none."""
    return str(hparams.get("weights") or ("imagenet" if uses_backbone_weights else "none"))


def study_image_size(config: dict, arch: str) -> int:
    """The input size of `arch` in this study (the TFRecords' size unless it has its own)."""
    return int(model_image_size(config["models"][arch], get_spec(arch).default_image_size)
               or config["data"]["image_size"])


@dataclass(frozen=True)
class WeightsDownload:
    """An ImageNet weights file the study fetches, and the architectures that start from it."""

    url: str
    image_size: int
    archs: tuple[str, ...]


def imagenet_weights_path(config: dict, arch: str) -> str:
    """resources/weights/FILE: the file Keras would pick for `arch`'s input size."""
    return f"{WEIGHTS_DIR}/{get_spec(arch).imagenet.file_for(study_image_size(config, arch))}"


def imagenet_weights_files(config: dict) -> dict[str, WeightsDownload]:
    """{resources/weights/FILE: its download} for the studied architectures with weights
    `imagenet` (two architectures of one backbone at one size share one file)."""
    files: dict[str, WeightsDownload] = {}
    for arch in config["study"]:
        spec = get_spec(arch)
        if spec.imagenet is None or model_weights(config["models"][arch], True) != "imagenet":
            continue
        path, size = imagenet_weights_path(config, arch), study_image_size(config, arch)
        known = files.get(path)
        files[path] = WeightsDownload(spec.imagenet.url_for(size, config["weights_url"]), size,
                                      (*known.archs, arch) if known else (arch,))
    return files


def weights_file(config: dict, arch: str) -> str | None:
    """The weights file `arch` trains from: the fetched ImageNet file, a local file, or None."""
    if arch not in BACKBONE_ARCHS:
        return None
    weights = model_weights(config["models"][arch], True)
    if weights == "none":
        return None
    if weights == "imagenet":
        return imagenet_weights_path(config, arch)
    return str(Path(weights).expanduser().resolve())


def missing_downloads(config: dict, planned: Collection[str] | None = None) -> list[tuple[str, str]]:
    """[(url, {dotted key: placeholder} to set instead)] for each file this run would download
    and has not yet; with `planned` (the outputs of the jobs the run will execute), only those
    among them. PHOTOS: a folder with one subfolder per class; WEIGHTS.h5: the backbone's ImageNet
    weights without its top."""
    def needed(path: str) -> bool:
        return not Path(path).is_file() and (planned is None or path in planned)

    missing = []
    if config["data_source"] == "official" and not Path(photos_dir(config)).is_dir() and needed(PHOTOS_ARCHIVE):
        missing.append((config["download"]["url"], {"data_source": "PHOTOS"}))
    for path, download in imagenet_weights_files(config).items():
        if needed(path):
            missing.append((download.url, {f"models.{arch}.weights": "WEIGHTS.h5" for arch in download.archs}))
    return missing


def unreachable(url: str, timeout: float = REACHABLE_TIMEOUT_S) -> str | None:
    """Why `url` cannot be fetched now (no network, no such host, refused), or None."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None  # the server answered: the download job reports what it says
    except (urllib.error.URLError, OSError) as error:
        return str(getattr(error, "reason", error))


def check_downloads(config: dict, planned: Collection[str] | None = None) -> None:
    """Stop a run at its start, before any job, when it needs a download it cannot make (among
    the `planned` outputs, when given): one message naming, for each, the setting that makes
    the run work without it."""
    problems = [(url, settings, why) for url, settings in missing_downloads(config, planned)
                if (why := unreachable(url))]
    if problems:
        settings = {key: value for _, wanted, _ in problems for key, value in wanted.items()}
        cannot = "\n".join(f"  - {url} ({why})" for url, _, why in problems)
        raise ConfigError(
            f"this run must download files it cannot reach (offline?); nothing was run:\n{cannot}\n"
            "Point it at local copies instead (PHOTOS: a folder with one subfolder per class; WEIGHTS.h5: "
            "the backbone's ImageNet weights without its top), on the command line:\n"
            f"  snakemake --cores 8 {as_overrides(settings)}\n"
            f"or in a config file given with --configfile:\n{as_yaml(settings)}\n"
            "or run the offline smoke study: snakemake --cores 2 --configfile config/smoke.yaml"
        )


# --------------------------------------------------------------------------------------------
# What a job asks a cluster for (Snakemake resources; the SLURM executor plugin turns them into
# sbatch's --mem, --time, --gpus, --partition and --account)

MEMORY_HEADROOM = 1.5  # peak memory varies with the machine's libraries and thread count
TIME_HEADROOM = 2.0  # a cluster's CPUs may be slower than the ones measured
MIN_RUNTIME_MINUTES = 10
MEMORY_STEP_MB = 500


def job_resources(measured: Mapping[str, Any], rule: str, arch: str, epochs: int = 1, attempt: int = 1
                  ) -> dict[str, int]:
    """`mem_mb` and `runtime` (minutes) of one training or evaluation job, from what its
    architecture measured (workflow/resources.yaml: peak memory, fixed and per-epoch seconds) with
    headroom; an architecture not measured there takes the table's `default`. A retried job
    (`attempt` > 1, e.g. after running out of memory or time) asks for that many times more."""
    table = measured[rule]
    entry = table.get(arch, table["default"])
    seconds = entry["fixed_seconds"] + entry.get("epoch_seconds", 0) * epochs
    memory = math.ceil(entry["max_rss_mb"] * MEMORY_HEADROOM * attempt / MEMORY_STEP_MB) * MEMORY_STEP_MB
    runtime = max(MIN_RUNTIME_MINUTES, math.ceil(seconds * TIME_HEADROOM * attempt / 60))
    return {"mem_mb": memory, "runtime": runtime}


def cluster_resources(config: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The partition and account every cluster job asks for: config's `cluster.partition` and
    `cluster.account`, else sbatch's own SBATCH_PARTITION and SBATCH_ACCOUNT from the environment;
    left out when neither is set (the cluster's defaults)."""
    cluster = config["cluster"]
    chosen = {
        "slurm_partition": cluster["partition"] or environ.get("SBATCH_PARTITION", ""),
        "slurm_account": cluster["account"] or environ.get("SBATCH_ACCOUNT", ""),
    }
    return {key: value for key, value in chosen.items() if value}


def gpu_resources(config: Mapping[str, Any]) -> dict[str, int]:
    """The standard `gpu` resource of the training and evaluation jobs when `cluster.gpus` asks
    for GPUs (the SLURM plugin's --gpus); none otherwise."""
    gpus = config["cluster"]["gpus"]
    return {"gpu": gpus} if gpus else {}
