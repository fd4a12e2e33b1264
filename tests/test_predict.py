"""flowerlab predict: photos and folders -> top-k classes, a reason for each file it cannot read."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from flowerlab.errors import DataError
from flowerlab.evaluation import predict
from flowerlab.training.records import save_model_atomically

CLASSES = ["daisy", "roses", "tulips"]


def write_photo(path: Path, *, color: tuple[int, int, int], size: tuple[int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


@pytest.fixture
def published(tmp_path: Path) -> Path:
    """A published model of 3 classes at 24 px trained on 16 px records (resized in the pipeline)."""
    inputs = keras.Input((24, 24, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Dense(3)(x))
    model = keras.Model(inputs, outputs)
    model.set_weights([np.eye(3, dtype="float32") * 5, np.zeros(3, "float32"),
                       np.eye(3, dtype="float32"), np.zeros(3, "float32")])
    folder = tmp_path / "models" / "tiny"
    folder.mkdir(parents=True)
    save_model_atomically(model, folder / "model.keras")
    (folder / "training.json").write_text(json.dumps(
        {"classes": CLASSES, "data_settings": {"image_size": 16, "jpeg_quality": 95}}))
    return folder / "model.keras"


def test_photos_and_folders_are_predicted_and_unreadable_files_get_their_reason(published, tmp_path, capsys):
    photos = tmp_path / "photos"
    write_photo(photos / "red.jpg", color=(250, 10, 10), size=(40, 30))
    write_photo(photos / "nested" / "green.png", color=(10, 250, 10), size=(30, 40))
    (photos / "notes.txt").write_text("not a photo")
    (photos / ".hidden.jpg").write_bytes(b"")
    out = tmp_path / "predictions.csv"
    results = predict.predict(published, [photos], top_k=2, out=out)
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert [Path(row["path"]).name for row in rows] == ["green.png", "notes.txt", "red.jpg"]  # sorted paths
    by_name = {Path(row["path"]).name: row for row in rows}
    assert by_name["red.jpg"]["class_1"] == "daisy" and by_name["green.png"]["class_1"] == "roses"
    assert float(by_name["red.jpg"]["probability_1"]) > float(by_name["red.jpg"]["probability_2"]) > 0
    assert by_name["notes.txt"]["class_1"] == "" and by_name["notes.txt"]["error"] == "not_an_image: not an image file"
    assert sum(1 for r in results if r.error) == 1


def test_files_are_judged_by_content_as_the_inventory_judges_them(published, tmp_path, caplog):
    """An empty .jpg is `zero_bytes`, a photo named .txt is a photo; the summary counts files by reason."""
    write_photo(tmp_path / "photo.png", color=(250, 10, 10), size=(20, 20))
    (tmp_path / "photo.png").rename(tmp_path / "photo.txt")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("not a photo")
    with caplog.at_level("INFO", logger="flowerlab.evaluation.predict"):
        results = predict.predict(published, [tmp_path / "photo.txt", tmp_path / "empty.jpg", tmp_path / "notes.jpg"])
    assert [result.error for result in results] == [None, "zero_bytes: the file is empty",
                                                    "not_an_image: not an image file"]
    assert "1 photo(s) predicted; 2 file(s) not: not_an_image 1, zero_bytes 1" in caplog.text


def test_a_model_of_synthetic_photos_says_so(published, tmp_path, caplog):
    record = published.with_name("training.json")
    record.write_text(json.dumps({**json.loads(record.read_text()), "data_source": "synthetic"}))
    write_photo(tmp_path / "daisy.jpg", color=(250, 250, 250), size=(20, 20))
    with caplog.at_level("WARNING", logger="flowerlab.evaluation.predict"):
        predict.predict(published, [tmp_path / "daisy.jpg"])
    assert "this model learnt synthetic photos (generated shapes, a smoke run), not flowers" in caplog.text


def test_a_wrong_model_path_is_named_as_such(published, tmp_path):
    with pytest.raises(DataError, match=r"model .*nothing\.keras not found: give a model\.keras the workflow wrote"):
        predict.predict(tmp_path / "nothing.keras", [tmp_path])


def test_json_output_and_top_k_capped_at_the_classes(published, tmp_path, capsys):
    write_photo(tmp_path / "blue.jpg", color=(10, 10, 250), size=(20, 20))
    predict.predict(published, [tmp_path / "blue.jpg"], top_k=10, output_format="json")
    [entry] = json.loads(capsys.readouterr().out)
    assert next(item["class"] for item in entry["top"]) == "tulips" and len(entry["top"]) == 3
    assert sum(item["probability"] for item in entry["top"]) == pytest.approx(1.0, abs=1e-5)


def test_nothing_predictable_is_an_error_and_a_nonzero_exit(published, tmp_path, capsys):
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(DataError, match="none of the 1 files"):
        predict.predict(published, [tmp_path / "a.jpg"])
    assert predict.cli(["predict", "--model", str(published), str(tmp_path / "a.jpg")]) == 1
    write_photo(tmp_path / "b.jpg", color=(200, 200, 10), size=(20, 20))
    assert predict.cli(["predict", "--model", str(published), str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")]) == 0


def test_photos_are_prepared_as_the_tfrecords_hold_them(published, tmp_path):
    """The same bytes as the TFRecord stage writes, decoded and resized by the input pipeline's own ops."""
    from flowerlab.data.images import prepare_photo
    from flowerlab.data.pipeline import decode_photos

    write_photo(tmp_path / "wide.jpg", color=(120, 40, 200), size=(64, 20))
    card = predict.ModelCard.read(published.with_name("training.json"))
    [(_path, jpeg, error)] = list(predict.prepared([tmp_path / "wide.jpg"], card))
    assert error is None and jpeg == prepare_photo(tmp_path / "wide.jpg", 16, 95)
    batch = decode_photos([jpeg], image_size=16, target_size=24)
    assert batch.shape == (1, 24, 24, 3) and float(batch.numpy().max()) <= 1.0
