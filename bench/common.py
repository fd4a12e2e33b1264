"""What the bench/ scripts share: where the data is, inputs made on the spot, CSV output, the run.

bench/ is not a package: each script runs as `python bench/NAME.py`, which puts this folder on
sys.path, so `import common` finds this module (tests load the scripts the same way).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from flowerlab.console import configure_logging, run_command

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
DEFAULT_PHOTOS = SHARED_DATA / "flower_photos"
DEFAULT_WEIGHTS = SHARED_DATA / "weights" / "mobilenet_v2_1.0_224_no_top.h5"
PRECISION_CACHE = REPO_ROOT / "resources" / "precision"  # where the workflow's trainings cache precision probes
VALIDATION_SPLIT = 0.19  # the course's VALIDATION_SPLIT


def study_config() -> dict[str, Any]:
    """config/config.yaml with the schema's defaults filled in: the study's architectures, epochs
    and batch sizes, as the workflow reads them (the one place they are written)."""
    import yaml

    from flowerlab.config import prepare_config

    config = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text(encoding="utf-8"))
    return prepare_config(config)


def default_photos() -> Path:
    """$FLOWERLAB_REAL_DATA, else ../shared/data/flower_photos beside the repository (as tests/conftest.py)."""
    return Path(os.environ.get("FLOWERLAB_REAL_DATA") or DEFAULT_PHOTOS)


def default_weights() -> Path | None:
    """$FLOWERLAB_MOBILENET_WEIGHTS, else ../shared/data/weights/...no_top.h5, when it exists."""
    path = Path(os.environ.get("FLOWERLAB_MOBILENET_WEIGHTS") or DEFAULT_WEIGHTS)
    return path if path.is_file() else None


def write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> None:
    """`rows` as CSV, atomically (a killed benchmark never leaves half a table)."""
    from flowerlab.filesystem import atomic_output

    with atomic_output(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns or rows[0]), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def run_script(name: str, produce: Callable[[], list[dict[str, Any]]], out: Path,
               print_table: Callable[[list[dict[str, Any]]], None], columns: Sequence[str] | None = None) -> int:
    """A script's main: its rows written to `out` and printed; flowerlab's errors are one line, exit 1."""
    configure_logging()

    def work() -> None:
        rows = produce()
        write_csv(out, rows, columns)
        print_table(rows)
        print(f"wrote {out}")

    return run_command(name, work)


def make_quick_data(folder: Path, *, image_size: int, classes: int = 3, per_class: int = 24) -> tuple[Path, Path]:
    """Synthetic photos and their TFRecords made by the project's own stages: (photos, manifest)."""
    from flowerlab.data.inventory import make_inventory
    from flowerlab.data.synthetic import synthesize
    from flowerlab.data.tfrecords import build_tfrecords

    photos, data = folder / "photos", folder / "data"
    synthesize(photos, classes=classes, per_class=per_class, seed=0)
    inventory_csv, inventory_json = data / "inventory.csv", data / "inventory.json"
    make_inventory(photos, inventory_csv, inventory_json)
    manifest = data / "manifest.json"
    build_tfrecords(photos, inventory_csv, data / "tfrecords", manifest, image_size=image_size, shards=4,
                    validation_fraction=VALIDATION_SPLIT, inventory_json=inventory_json)
    return photos, manifest

