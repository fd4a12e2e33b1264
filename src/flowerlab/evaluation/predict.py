"""`flowerlab predict`: classify photos with a published model, as the study's models saw photos.

    flowerlab predict --model results/models/squeezenet/seed-1/model.keras photo.jpg more_photos/ \\
        [--top-k 3] [--format csv|json] [--out predictions.csv]

Each photo goes through exactly the TFRecords' preparation (EXIF orientation, RGB, fill-resize,
centre crop, JPEG at the study's quality: flowerlab.data.images.prepare_photo) and the input
pipeline's decoding, scaling and resizing (flowerlab.data.pipeline.decode_photos), so a photo
of the validation split gets the probabilities the evaluation reported for its record. The
classes, record size and JPEG quality come from the model's training.json beside it.

Every file is judged by its content as the inventory judges it (flowerlab.data.inventory:
an empty file is `zero_bytes`, a file Pillow cannot identify `not_an_image`, whatever its
name). One that is not a usable photo gets a row with its reason and the others are still
predicted; the exit status is non-zero only when no photo at all could be predicted.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowerlab.console import configure_logging, positive_int, progress, run_command
from flowerlab.data.manifest import SYNTHETIC
from flowerlab.errors import DataError
from flowerlab.filesystem import read_json, write_text

logger = logging.getLogger(__name__)

BATCH = 32


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]] = field(default_factory=list)  # (class, probability), most likely first
    error: str | None = None


@dataclass(frozen=True)
class ModelCard:
    """What predicting with a published model needs besides its weights (from training.json)."""

    classes: list[str]
    record_size: int  # the TFRecords' image size: photos are prepared at it
    jpeg_quality: int
    data_source: str | None = None  # what it learnt from: official, synthetic or a folder

    @classmethod
    def read(cls, training_json: Path) -> ModelCard:
        record = read_json(training_json, "training record")
        settings = record.get("data_settings") or {}
        if not record.get("classes") or "image_size" not in settings or "jpeg_quality" not in settings:
            raise DataError(f"{training_json} lacks the classes or data settings a prediction needs; retrain the model")
        return cls(list(record["classes"]), int(settings["image_size"]), int(settings["jpeg_quality"]),
                   record.get("data_source"))


def photo_files(paths: Sequence[Path]) -> list[Path]:
    """The files named, and every file inside the folders named (sorted, hidden ones left out)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*")
                            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))
        else:
            files.append(path)
    return files


# The inventory's reasons (flowerlab.data.inventory), said for a reader of the predictions.
REASONS = {"zero_bytes": "the file is empty", "not_an_image": "not an image file"}


def prepared(files: Sequence[Path], card: ModelCard) -> Iterator[tuple[Path, bytes | None, str | None]]:
    """(file, the photo as its TFRecord holds it, None) or (file, None, why it cannot be read)."""
    from flowerlab.data.images import prepare_photo
    from flowerlab.data.inventory import DEFAULT_MAX_PIXELS, inspect_file

    for path in files:
        facts = inspect_file((str(path), DEFAULT_MAX_PIXELS, True))
        if facts.problem:
            yield path, None, f"{facts.problem}: {REASONS.get(facts.problem) or facts.detail}"
            continue
        try:
            yield path, prepare_photo(path, card.record_size, card.jpeg_quality), None
        except (OSError, ValueError, SyntaxError) as error:  # Pillow's ways of refusing a file
            yield path, None, f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'unreadable'}"


def top_classes(probabilities: Any, classes: Sequence[str], k: int) -> list[tuple[str, float]]:
    order = probabilities.argsort()[::-1][:k]
    return [(classes[i], float(probabilities[i])) for i in order]


def predict_files(model: Any, files: Sequence[Path], card: ModelCard, top_k: int) -> list[Prediction]:
    """Every file's top-k classes (or its error), in the order given."""
    from flowerlab.data.pipeline import decode_photos

    size = int(model.input_shape[1])
    results: list[Prediction] = []
    pending: list[tuple[Prediction, bytes]] = []

    def flush() -> None:
        if pending:
            images = decode_photos([jpeg for _, jpeg in pending], image_size=card.record_size, target_size=size)
            for (prediction, _), row in zip(pending, model.predict_on_batch(images), strict=True):
                prediction.top = top_classes(row, card.classes, top_k)
            pending.clear()

    with progress(len(files), "predict", unit="photo") as bar:
        for path, jpeg, error in prepared(files, card):
            prediction = Prediction(str(path), error=error)
            results.append(prediction)
            if jpeg is not None:
                pending.append((prediction, jpeg))
            if len(pending) == BATCH:
                flush()
            bar.update(1)
        flush()
    return results


def as_csv(predictions: Sequence[Prediction], top_k: int) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["path", *[f"{name}_{i}" for i in range(1, top_k + 1) for name in ("class", "probability")],
                     "error"])
    for prediction in predictions:
        cells = [value for name, p in prediction.top for value in (name, f"{p:.6f}")]
        writer.writerow([prediction.path, *cells, *[""] * (2 * top_k - len(cells)), prediction.error or ""])
    return out.getvalue()


def as_json(predictions: Sequence[Prediction]) -> str:
    return json.dumps([{"path": p.path, "top": [{"class": c, "probability": q} for c, q in p.top], "error": p.error}
                       for p in predictions], indent=2) + "\n"


def predict(model_path: Path, paths: Sequence[Path], *, training_json: Path | None = None, top_k: int = 3,
            output_format: str = "csv", out: Path | None = None) -> list[Prediction]:
    from flowerlab import backends

    backends.activate("tensorflow")  # the photos are decoded by TensorFlow; any backend's model opens on it
    from flowerlab.evaluation.inputs import load_model

    if not model_path.is_file():
        raise DataError(f"model {model_path} not found: give a model.keras the workflow wrote, "
                        "e.g. results/models/squeezenet/seed-1/model.keras")
    card = ModelCard.read(training_json or model_path.with_name("training.json"))
    if card.data_source == SYNTHETIC:
        logger.warning("this model learnt synthetic photos (generated shapes, a smoke run), not flowers: its "
                       "classes (%s) mean nothing for real photos; train on the real photos first",
                       ", ".join(card.classes))
    files = photo_files(paths)
    if not files:
        raise DataError("no photos to predict: the paths name no files")
    model = load_model(model_path)
    top_k = min(top_k, len(card.classes))
    predictions = predict_files(model, files, card, top_k)
    text = as_json(predictions) if output_format == "json" else as_csv(predictions, top_k)
    if out is None:
        sys.stdout.write(text)
    else:
        write_text(out, text)
    failed = [p for p in predictions if p.error]
    for prediction in failed:
        logger.warning("not predicted: %s (%s)", prediction.path, prediction.error)
    reasons = Counter(prediction.error.split(":")[0] for prediction in failed)
    logger.info("%d photo(s) predicted%s", len(predictions) - len(failed),
                f"; {len(failed)} file(s) not: " + ", ".join(f"{reason} {count}" for reason, count in
                                                             sorted(reasons.items())) if failed else "")
    if len(failed) == len(predictions):
        raise DataError(f"none of the {len(predictions)} files could be read as a photo")
    return predictions


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"flowerlab {argv[0]}", description="Classify photos with a trained model.")
    parser.add_argument("paths", nargs="+", type=Path, help="photos and/or folders of photos")
    parser.add_argument("--model", required=True, type=Path, help="a trained model, e.g. results/models/ARCH/seed-1/model.keras")
    parser.add_argument("--training-json", type=Path, default=None, help="its training record (default: beside it)")
    parser.add_argument("--top-k", type=positive_int, default=3, help="classes per photo (default %(default)s)")
    parser.add_argument("--format", dest="output_format", choices=("csv", "json"), default="csv")
    parser.add_argument("--out", type=Path, default=None, help="output file (default: standard output)")
    args = parser.parse_args(argv[1:])
    configure_logging()
    return run_command(argv[0], lambda: predict(args.model, args.paths, training_json=args.training_json,
                                                top_k=args.top_k, output_format=args.output_format, out=args.out))
