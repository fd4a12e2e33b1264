"""The synthetic photo set: layout, determinism, variety, speed, atomicity, learnability."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flowerlab.data.images import fill_resize_crop
from flowerlab.data.synthetic import MAX_CLASSES, class_names, cli, synthesize
from flowerlab.errors import ConfigError


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_counts(tmp_path):
    out = tmp_path / "synthetic_photos"
    counts = synthesize(out, classes=5, per_class=4, seed=0)
    assert sorted(counts) == class_names(5) and set(counts.values()) == {4}
    assert sorted(p.name for p in out.iterdir()) == class_names(5)
    for name in class_names(5):
        photos = sorted((out / name).iterdir())
        assert [p.name for p in photos] == [f"{name}_{i:04d}.jpg" for i in range(4)]
        for photo in photos:
            with Image.open(photo) as img:
                assert img.format == "JPEG" and img.mode == "RGB"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthetic_photos"]  # no temporaries


def test_deterministic_for_a_seed_and_stable_when_growing(tmp_path):
    synthesize(tmp_path / "a", 3, 5, seed=7)
    first = files_of(tmp_path / "a")
    synthesize(tmp_path / "b", 3, 5, seed=7)
    assert files_of(tmp_path / "b") == first
    synthesize(tmp_path / "c", 4, 8, seed=7)  # more classes and images: the old ones are unchanged
    bigger = files_of(tmp_path / "c")
    assert all(bigger[name] == data for name, data in first.items())
    synthesize(tmp_path / "d", 3, 5, seed=8)
    assert files_of(tmp_path / "d") != first


def test_sizes_and_aspect_ratios_vary(tmp_path):
    synthesize(tmp_path / "s", 2, 30, seed=1)
    sizes = [Image.open(p).size for p in (tmp_path / "s").rglob("*.jpg")]
    assert all(120 <= side <= 400 for size in sizes for side in size)
    assert len(set(sizes)) > 50
    ratios = [w / h for w, h in sizes]
    assert min(ratios) < 0.8 and max(ratios) > 1.25


def test_rerun_replaces_the_folder(tmp_path):
    out = tmp_path / "s"
    synthesize(out, 3, 2, seed=0)
    (out / "stray.txt").write_text("old")
    synthesize(out, 2, 2, seed=0)
    assert sorted(p.name for p in out.iterdir()) == class_names(2)


def test_bad_settings(tmp_path):
    with pytest.raises(ConfigError, match="2-10"):
        synthesize(tmp_path / "s", 1, 5)
    with pytest.raises(ConfigError):
        synthesize(tmp_path / "s", MAX_CLASSES + 1, 5)
    assert not (tmp_path / "s").exists()
    assert cli(["synth", "--out", str(tmp_path / "s"), "--classes", "11"]) == 1


def test_cli(tmp_path):
    assert cli(["synth", "--out", str(tmp_path / "s"), "--classes", "2", "--per-class", "3", "--seed", "4"]) == 0
    assert len(list((tmp_path / "s").rglob("*.jpg"))) == 6


def small_features(path: Path) -> np.ndarray:
    """The pipeline's square crop at 16 px, as a feature vector."""
    with Image.open(path) as img:
        return np.asarray(fill_resize_crop(img, 16), dtype=np.float32).ravel() / 255.0


def test_classes_are_separable_after_the_pipelines_crop(tmp_path):
    """A cheap learnability check: nearest class mean of 16 px crops beats chance by far.

    (This crude, position-bound classifier gets ~0.65 on 10 classes; the slow test below
    checks that a small convnet really learns the set.)
    """
    synthesize(tmp_path / "s", 10, 20, seed=3)
    names = class_names(10)
    features = {name: np.stack([small_features(p) for p in sorted((tmp_path / "s" / name).iterdir())])
                for name in names}
    means = np.stack([features[name][:12].mean(axis=0) for name in names])
    correct = total = 0
    for index, name in enumerate(names):
        for vector in features[name][12:]:
            correct += int(np.argmin(((means - vector) ** 2).sum(axis=1)) == index)
            total += 1
    assert correct / total > 0.4  # chance is 0.1


@pytest.mark.slow
def test_a_small_convnet_learns_the_classes(tmp_path):
    keras = pytest.importorskip("keras")
    synthesize(tmp_path / "s", 5, 40, seed=0)
    names = class_names(5)
    images, labels = [], []
    for index, name in enumerate(names):
        for path in sorted((tmp_path / "s" / name).iterdir()):
            with Image.open(path) as img:
                images.append(np.asarray(fill_resize_crop(img, 64), dtype=np.float32) / 255.0)
            labels.append(index)
    x, y = np.stack(images), np.array(labels)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((64, 64, 3)),
        keras.layers.Conv2D(16, 3, activation="relu", padding="same"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(32, 3, activation="relu", padding="same"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(32, 3, activation="relu", padding="same"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(5, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[:160], y[:160], epochs=8, batch_size=16, verbose=0)
    _, accuracy = model.evaluate(x[160:], y[160:], verbose=0)
    assert accuracy > 0.6  # chance is 0.2
