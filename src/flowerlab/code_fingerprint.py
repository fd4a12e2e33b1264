"""Which code a stage runs, as one sha256: Snakemake reruns a stage whose code changed.

A stage's code is its command's module plus every flowerlab module that module imports,
directly or not (found by grimp, the import graph library behind import-linter), plus the
files those packages ship beside their modules (the config schema, templates) and any extra
files the stage reads (the report notebook, whose flowerlab imports count too). An
architecture's layers are imported by name from the registry, not by an import statement, so
a training adds its architecture's module itself: editing one model's module changes that
model's fingerprint only.

What counts as a change: each module is hashed by its syntax tree without docstrings, so a
change of comments, docstrings, blank lines or formatting leaves the fingerprint alone, and any
change to what the code does changes it. Files that are not Python are hashed byte for byte.

No TensorFlow here: the workflow computes fingerprints while it parses.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "flowerlab"
# The config schema is package data too, but what it decides (defaults) reaches every job as a
# rule parameter already; hashing it would rerun the whole study for a reworded description.
NOT_CODE = frozenset({"config.schema.yaml"})
SHORT = 12  # hex digits shown in logs and the report (48 bits: no collision among a study's versions)


@dataclass(frozen=True)
class CodeVersion:
    """The fingerprint of a stage's code and what it was computed from."""

    sha256: str
    modules: dict[str, str] = field(default_factory=dict)  # module -> sha256 of its normalised tree
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256 of its bytes

    @property
    def short(self) -> str:
        return self.sha256[:SHORT]

    def to_json(self) -> dict[str, object]:
        return {"sha256": self.sha256, "short": self.short, "modules": self.modules, "files": self.files}

    def by_part(self) -> str:
        """The fingerprint part by part, as a Snakemake parameter whose change reads as what
        changed: 'flowerlab.data=1a2b3c4d flowerlab.training=5e6f7a8b report.ipynb=...', one short
        hash per subpackage (or top-level module) and per extra file, the parts sorted."""
        parts: dict[str, dict[str, str]] = {}
        for module, digest in self.modules.items():
            parts.setdefault(".".join(module.split(".")[:2]), {})[module] = digest
        for name, digest in self.files.items():  # package data by its folder, other files by name
            folder = name.rsplit("/", 1)[0].replace("/", ".") if name.startswith(f"{PACKAGE}/") else name
            parts.setdefault(folder, {})[name] = digest
        hashed = {part: hashlib.sha256(json.dumps(members, sort_keys=True).encode()).hexdigest()[:8]
                  for part, members in parts.items()}
        return " ".join(f"{part}={digest}" for part, digest in sorted(hashed.items()))


@functools.cache
def _import_graph():  # -> grimp.ImportGraph
    import grimp

    # cache_dir=None: grimp would otherwise leave a cache folder in the working directory.
    return grimp.build_graph(PACKAGE, cache_dir=None)


def module_closure(modules: Iterable[str]) -> list[str]:
    """`modules` and every flowerlab module they import, directly or through others, sorted."""
    graph = _import_graph()
    closure: set[str] = set()
    for module in modules:
        closure.add(module)
        closure |= graph.find_upstream_modules(module)
    # Importing a module runs its packages' __init__ first.
    closure |= {".".join(name.split(".")[:i]) for name in closure for i in range(1, name.count(".") + 1)}
    return sorted(name for name in closure if name == PACKAGE or name.startswith(PACKAGE + "."))


def module_path(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"no source for {module}")
    return Path(spec.origin)


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def source_digest(source: str) -> str:
    """sha256 of the syntax tree without docstrings: comments and layout do not count."""
    tree = _without_docstrings(ast.parse(source))
    return hashlib.sha256(ast.dump(tree).encode("utf-8")).hexdigest()


@functools.cache  # one process computes many stages' fingerprints over the same modules
def _module_digest(module: str) -> str:
    return source_digest(module_path(module).read_text(encoding="utf-8"))


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@functools.cache  # one walk of the package per process, however many stages are fingerprinted
def _data_files_by_package() -> dict[Path, tuple[Path, ...]]:
    """Each package folder's files other than Python (templates): those beside its
    `__init__.py` and in its folders that are not packages themselves."""
    found: dict[Path, list[Path]] = {}
    for path in sorted(module_path(PACKAGE).parent.rglob("*")):
        if path.is_file() and path.suffix not in (".py", ".pyc", ".typed") and path.name not in NOT_CODE \
                and "__pycache__" not in path.parts:
            package = next(folder for folder in path.parents if (folder / "__init__.py").is_file())
            found.setdefault(package, []).append(path)
    return {package: tuple(paths) for package, paths in found.items()}


def package_data_files(modules: Iterable[str]) -> list[Path]:
    """The data files of the modules' packages (see _data_files_by_package)."""
    by_package = _data_files_by_package()
    return sorted({path for folder in {module_path(m).parent for m in modules} for path in by_package.get(folder, ())})


def notebook_imports(path: Path) -> list[str]:
    """The flowerlab modules a Jupyter notebook's code cells import (grimp reads only .py files)."""
    cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    source = "\n".join("".join(cell.get("source", "")) for cell in cells if cell.get("cell_type") == "code")
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]  # IPython magics
    known = _import_graph().modules
    modules: set[str] = set()
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
            # `from flowerlab.reporting import figures` imports a module, not a name.
            modules |= {f"{node.module}.{alias.name}" for alias in node.names} & known
    return sorted(m for m in modules if m == PACKAGE or m.startswith(PACKAGE + "."))


def fingerprint(modules: Sequence[str], files: Sequence[str | Path] = ()) -> CodeVersion:
    """The CodeVersion of the code `modules` run, and of the extra `files` (a notebook's
    flowerlab imports are followed too)."""
    extra = [Path(f) for f in files]
    entry = list(modules) + [m for f in extra if f.suffix == ".ipynb" for m in notebook_imports(f)]
    closure = module_closure(entry)
    module_digests = {m: _module_digest(m) for m in closure}
    root = module_path(PACKAGE).parent
    file_digests = {_file_name(p, root): file_digest(p) for p in package_data_files(closure)}
    file_digests |= {p.name: file_digest(p) for p in extra}
    canonical = json.dumps({"modules": module_digests, "files": file_digests}, sort_keys=True)
    return CodeVersion(hashlib.sha256(canonical.encode("utf-8")).hexdigest(), module_digests, file_digests)


def _file_name(path: Path, root: Path) -> str:
    return f"{PACKAGE}/{path.relative_to(root).as_posix()}"
