"""The architectures: exact course layers and parameter counts, the input/output contract,
backbone weights and their failures, the fused batch norm, saving, and that each one learns."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml

from flowerlab.errors import ConfigError, DownloadError
from flowerlab.models import dense, squeezenet
from flowerlab.models.build import build_model, count_parameters
from flowerlab.models.layers import FusedBatchNormalization
from flowerlab.models.registry import ARCHITECTURES, get_spec

BACKBONE_OUTPUT_CHANNELS = {"mobilenet_v2": 1280, "xception": 2048}
MOBILENET_V2_BACKBONE_PARAMETERS = 2_257_984
MOBILENET_V2_BN_STATISTICS = 34_112  # moving mean + variance of its 52 batch norms


@pytest.fixture(autouse=True)
def float32_policy():
    """Each test starts from, and leaves, Keras' default policy."""
    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")


def images(count: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((count, size, size, 3), dtype=np.float32)


def all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    layers = []
    for layer in model.layers:
        layers += [layer, *(all_layers(layer) if isinstance(layer, keras.Model) else [])]
    return layers


def batch_norm_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return [
        layer
        for layer in all_layers(model)
        if isinstance(layer, (keras.layers.BatchNormalization, FusedBatchNormalization))
    ]


def nested_backbone(model: keras.Model) -> keras.Model:
    (backbone,) = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return backbone


# --- registry -----------------------------------------------------------------------------


def test_the_config_schema_takes_its_architecture_names_from_the_registry(repo_root: Path) -> None:
    from flowerlab.config import load_schema

    raw = yaml.safe_load((repo_root / "workflow/schemas/config.schema.yaml").read_text())
    # no second list to keep in step: the file names no allowed architectures
    assert "enum" not in raw["properties"]["study"]["items"]
    assert "enum" not in raw["properties"]["models"]["propertyNames"]
    schema = load_schema()
    assert schema["properties"]["study"]["items"]["enum"] == list(ARCHITECTURES)
    assert schema["properties"]["models"]["propertyNames"]["enum"] == list(ARCHITECTURES)
    for name, spec in ARCHITECTURES.items():
        assert spec.name == name and spec.description
    assert ARCHITECTURES["xception"].default_image_size == 331
    backbones = {name for name, spec in ARCHITECTURES.items() if spec.uses_backbone_weights}
    assert backbones == {"mobilenet_v2", "mobilenet_v2_finetune", "xception"}


def test_unknown_architecture_names_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match="allowed: dense, mobilenet_v2, convnet, squeezenet"):
        build_model("resnet", num_classes=5, image_size=192)


@pytest.mark.parametrize(
    ("arch", "kwargs", "message"),
    [
        ("convnet", {"num_classes": 1, "image_size": 64}, "num_classes must be an integer >= 2"),
        ("convnet", {"num_classes": 5, "image_size": 8}, "image_size must be an integer >= 16"),
        ("mobilenet_v2", {"num_classes": 5, "image_size": 24}, ">= 32"),
        ("xception", {"num_classes": 5, "image_size": 64}, ">= 71"),
        (
            "dense",
            {"num_classes": 5, "image_size": 32, "weights": "imagenet"},
            "weights must be 'none'",
        ),
    ],
)
def test_impossible_arguments_are_config_errors(arch: str, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_model(arch, **kwargs)


# --- the course's exact architectures -----------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "image_size", "total", "trainable"),
    [
        ("dense", 192, 55_321_805, 55_321_805),
        ("mobilenet_v2", 192, 2_488_389, 230_405),
        ("convnet", 192, 293_233, 293_233),
        ("squeezenet", 192, 120_613, 119_301),
        ("mobilenet_v2_finetune", 192, 2_264_389, 2_196_165),
        ("xception", 331, 20_871_725, 20_817_197),
    ],
)
def test_course_parameter_counts(arch: str, image_size: int, total: int, trainable: int) -> None:
    model = build_model(arch, num_classes=5, image_size=image_size, weights="none")
    assert count_parameters(model) == (total, trainable)
    assert model.name == arch
    course = ARCHITECTURES[arch].course
    if course is not None:  # the registry's course figures (the report's) are these very counts
        assert (course.parameters, course.trainable_parameters) == (total, trainable)


def test_dense_count_follows_its_formula_at_other_sizes() -> None:
    model = build_model("dense", num_classes=3, image_size=128)
    flat = 128 * 128 * 3
    expected = (flat * 500 + 500) + (500 * 50 + 50) + (50 * 3 + 3)
    assert count_parameters(model) == (expected, expected) == (24_601_703, 24_601_703)
    assert dense.parameter_count(num_classes=3, image_size=128) == expected


@pytest.mark.parametrize(
    ("arch", "total_5_classes", "features"),
    [
        ("convnet", 293_233, 40),
        ("squeezenet", 120_613, 48),
        ("mobilenet_v2_finetune", 2_264_389, 1280),
    ],
)
def test_pooled_models_count_changes_only_in_the_head(
    arch: str, total_5_classes: int, features: int
) -> None:
    # Global pooling: the image size does not matter; 3 classes remove 2 output units.
    model = build_model(arch, num_classes=3, image_size=64)
    total, _ = count_parameters(model)
    assert total == total_5_classes - 2 * (features + 1)


def test_frozen_mobilenet_head_grows_with_the_feature_map() -> None:
    model = build_model("mobilenet_v2", num_classes=3, image_size=128)
    head = (128 // 32) ** 2 * 1280 * 3 + 3  # Flatten of the 4x4x1280 map -> 3 units
    assert count_parameters(model) == (MOBILENET_V2_BACKBONE_PARAMETERS + head, head)


def test_convnet_layers_are_the_course_solution() -> None:
    model = build_model("convnet", num_classes=5, image_size=192)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [16, 30, 60, 90, 110, 130, 40]
    assert [c.kernel_size for c in convs] == [(3, 3)] * 6 + [(1, 1)]
    assert {c.padding for c in convs} == {"same"}
    assert {c.activation.__name__ for c in convs} == {"relu"}
    assert sum(isinstance(layer, keras.layers.MaxPooling2D) for layer in model.layers) == 4


def test_squeezenet_fire_modules_and_batch_norm_momentum() -> None:
    model = build_model("squeezenet", num_classes=5, image_size=64)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    # stem + 5 fire modules x (squeeze, expand 1x1, expand 3x3)
    fires = [(24, 48), (48, 96), (64, 128), (48, 96), (24, 48)]
    expected = [32] + [n for s, e in fires for n in (s, e // 2, e // 2)]
    assert [c.filters for c in convs] == expected
    norms = batch_norm_layers(model)
    assert len(norms) == len(convs) and {bn.momentum for bn in norms} == {0.9}


# --- the input/output contract ------------------------------------------------------------

def small_size(arch: str) -> int:
    """The smallest input the architecture takes (the registry's fact), at least 16 px so that
    a dense model still sees an image rather than a pixel."""
    return max(ARCHITECTURES[arch].min_image_size, 16)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_contract_float32_unit_images_in_float32_softmax_out(arch: str) -> None:
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    size = small_size(arch)
    model = build_model(arch, num_classes=3, image_size=size)
    assert model.inputs[0].dtype == "float32"
    assert tuple(model.inputs[0].shape) == (None, size, size, 3)
    head = model.layers[-1]
    assert isinstance(head, keras.layers.Dense) and head.units == 3
    assert head.activation is keras.activations.softmax and head.dtype_policy.name == "float32"
    probabilities = model.predict(images(2, size), verbose=0)
    assert probabilities.dtype == np.float32 and probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    # Everything before the head really runs in bfloat16 (the point of the policy).
    assert model.layers[1].compute_dtype == "bfloat16"


@pytest.mark.parametrize("arch", ["mobilenet_v2", "mobilenet_v2_finetune", "xception"])
def test_backbones_rescale_unit_images_to_symmetric_range_without_parameters(arch: str) -> None:
    model = build_model(arch, num_classes=3, image_size=small_size(arch))
    rescaling = model.layers[1]
    assert isinstance(rescaling, keras.layers.Rescaling) and not rescaling.weights
    np.testing.assert_allclose(rescaling(np.array([0.0, 0.5, 1.0])), [-1.0, 0.0, 1.0])


def _moving_means(model: keras.Model) -> list[np.ndarray]:
    return [bn.moving_mean.numpy() for bn in batch_norm_layers(model)]


def _changed(before: list[np.ndarray], after: list[np.ndarray]) -> bool:
    return any(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))


def test_frozen_mobilenet_is_frozen_and_in_inference_mode() -> None:
    model = build_model("mobilenet_v2", num_classes=3, image_size=32)
    backbone = nested_backbone(model)
    assert not backbone.trainable and backbone.trainable_weights == []
    x = images(4, 32)
    before = _moving_means(model)
    in_training = model(x, training=True)
    assert not _changed(before, _moving_means(model))
    np.testing.assert_allclose(in_training, model(x, training=False), rtol=1e-6, atol=1e-7)


def test_finetuned_mobilenet_trains_all_but_its_batch_norms_which_stay_in_inference_mode() -> None:
    model = build_model("mobilenet_v2_finetune", num_classes=3, image_size=32)
    backbone = nested_backbone(model)
    norms = batch_norm_layers(model)
    assert norms and not any(bn.trainable for bn in norms)
    others = [layer for layer in backbone.layers if layer.weights and layer not in norms]
    assert others and all(layer.trainable for layer in others)
    total, trainable = count_parameters(model)
    assert trainable == total - 2 * MOBILENET_V2_BN_STATISTICS  # gamma, beta, mean, variance
    # What model.fit does: the outer training=True must not reach the batch norms.
    # Eager: the same train step as fit's, without tracing the graph (seconds on 2 cores).
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss="sparse_categorical_crossentropy",
        run_eagerly=True,
    )
    before = _moving_means(model)
    conv = next(layer for layer in others if isinstance(layer, keras.layers.Conv2D))
    kernel_before = conv.kernel.numpy()
    model.train_on_batch(images(4, 32), np.array([0, 1, 2, 0]))
    assert not _changed(before, _moving_means(model))
    assert not np.array_equal(kernel_before, conv.kernel.numpy())


def test_xception_trains_its_batch_norms_like_the_course() -> None:
    model = build_model("xception", num_classes=3, image_size=71)
    before = _moving_means(model)
    model(images(2, 71), training=True)
    assert _changed(before, _moving_means(model))


# --- backbone weights ---------------------------------------------------------------------


@pytest.mark.real_data
@pytest.mark.parametrize("arch", ["mobilenet_v2", "mobilenet_v2_finetune"])
def test_local_weights_file_is_loaded(arch: str, mobilenet_weights: Path) -> None:
    model = build_model(arch, num_classes=5, image_size=96, weights=str(mobilenet_weights))
    reference = keras.applications.MobileNetV2(
        input_shape=(96, 96, 3), include_top=False, weights=str(mobilenet_weights)
    )
    loaded = nested_backbone(model).get_weights()
    assert len(loaded) == len(reference.weights)
    for ours, theirs in zip(loaded, reference.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_missing_weights_file_names_the_config_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"models\.mobilenet_v2\.weights.*not an existing file"):
        build_model("mobilenet_v2", num_classes=5, image_size=32, weights=str(tmp_path / "no.h5"))


def test_weights_file_without_h5_name_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    with pytest.raises(ConfigError, match=r"models\.xception\.weights.*\.h5"):
        build_model("xception", num_classes=5, image_size=71, weights=str(path))


def test_text_file_named_h5_is_not_a_weights_file(tmp_path: Path) -> None:
    path = tmp_path / "weights.h5"
    path.write_text("not weights")
    with pytest.raises(ConfigError, match=r"models\.mobilenet_v2_finetune\.weights.*not an HDF5"):
        build_model("mobilenet_v2_finetune", num_classes=5, image_size=32, weights=str(path))


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("file_name", ["convnet.weights.h5", "convnet.h5"])
def test_weights_of_another_network_are_a_config_error(tmp_path: Path, file_name: str) -> None:
    path = tmp_path / file_name
    other = build_model("convnet", num_classes=5, image_size=32)
    if file_name.endswith(".weights.h5"):
        other.save_weights(path)  # Keras 3 weights file
    else:
        other.save(path)  # legacy Keras 2 HDF5 (what keras.applications' own .h5 files are)
    with pytest.raises(ConfigError, match=r"models\.mobilenet_v2\.weights.*does not hold weights"):
        build_model("mobilenet_v2", num_classes=5, image_size=32, weights=str(path))


@pytest.fixture
def empty_keras_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """KERAS_HOME in an empty folder: no cached ImageNet weights. Keras reads the variable at
    import, so its cached copy is patched too."""
    from keras.src.backend import config as keras_config

    home = tmp_path / "keras_home"
    home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(home))
    return home


def test_imagenet_offline_names_the_local_weights_alternative(
    empty_keras_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keras.src.utils import file_utils

    requested: list[str] = []

    def offline(url: str, *args: object, **kwargs: object) -> None:
        requested.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(file_utils, "urlretrieve", offline)
    with pytest.raises(DownloadError, match=r"models\.mobilenet_v2\.weights: PATH"):
        build_model("mobilenet_v2", num_classes=5, image_size=96, weights="imagenet")
    assert requested and requested[0].endswith("_96_no_top.h5")
    # Nothing half-downloaded is left to pass for a cached file.
    assert not any(path.is_file() for path in empty_keras_home.rglob("*"))


def test_imagenet_other_failures_are_not_reported_as_offline(
    empty_keras_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keras.src.utils import file_utils

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug, not the network")

    monkeypatch.setattr(file_utils, "urlretrieve", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        build_model("xception", num_classes=5, image_size=71, weights="IMAGENET")


# --- the fused batch norm -----------------------------------------------------------------


def _twin_batch_norms(channels: int, seed: int) -> tuple[keras.layers.Layer, keras.layers.Layer]:
    keras_bn = keras.layers.BatchNormalization(momentum=0.9)
    fused_bn = FusedBatchNormalization(momentum=0.9)
    for layer in (keras_bn, fused_bn):
        layer.build((None, 5, 6, channels))
    values = np.random.default_rng(seed).random((4, channels), dtype=np.float32) + 0.5
    for ours, theirs, value in zip(fused_bn.weights, keras_bn.weights, values, strict=True):
        assert ours.name == theirs.name
        ours.assign(value)
        theirs.assign(value)
    return keras_bn, fused_bn


# Under bfloat16 the layer takes two paths (see FusedBatchNormalization.call): the bfloat16
# kernel when the channels are a multiple of 16 (32 here), float32 inside otherwise (3, 24).
@pytest.mark.parametrize(
    ("policy", "channels", "atol"),
    [("float32", 3, 1e-5), ("mixed_bfloat16", 3, 2e-2), ("mixed_bfloat16", 24, 2e-2),
     ("mixed_bfloat16", 32, 2e-2)],
)
def test_fused_batch_norm_matches_keras_in_training_and_inference(
    policy: str, channels: int, atol: float
) -> None:
    import tensorflow as tf

    keras.mixed_precision.set_global_policy(policy)
    keras_bn, fused_bn = _twin_batch_norms(channels=channels, seed=1)
    x = (np.random.default_rng(2).standard_normal((4, 5, 6, channels)) * 3 + 1).astype(np.float32)
    for training in (True, False, True):
        with tf.GradientTape(persistent=True) as tape:
            expected = keras_bn(x, training=training)
            actual = fused_bn(x, training=training)
            loss_expected = tf.reduce_sum(tf.cast(expected, tf.float32) ** 2)
            loss_actual = tf.reduce_sum(tf.cast(actual, tf.float32) ** 2)
        assert actual.dtype == expected.dtype
        np.testing.assert_allclose(np.float32(actual), np.float32(expected), atol=atol)
        # Moving statistics move identically (Keras tracks the biased batch variance).
        for ours, theirs in zip(fused_bn.weights, keras_bn.weights, strict=True):
            np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6)
        for ours, theirs in zip(
            tape.gradient(loss_actual, fused_bn.trainable_weights),
            tape.gradient(loss_expected, keras_bn.trainable_weights),
            strict=True,
        ):
            np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=atol)
    assert not np.allclose(fused_bn.moving_mean.numpy(), 0.0)


def test_fused_batch_norm_not_trainable_means_inference_mode() -> None:
    _, fused_bn = _twin_batch_norms(channels=3, seed=1)
    fused_bn.trainable = False
    before = [w.numpy() for w in fused_bn.weights]
    x = np.random.default_rng(0).standard_normal((2, 5, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(fused_bn(x, training=True), fused_bn(x, training=False))
    for b, w in zip(before, fused_bn.weights, strict=True):
        np.testing.assert_array_equal(b, w.numpy())


def test_squeezenet_with_fused_and_keras_batch_norm_compute_the_same_function() -> None:
    fused = squeezenet.build(num_classes=3, image_size=32, batch_norm="fused")
    plain = squeezenet.build(num_classes=3, image_size=32, batch_norm="keras")
    assert count_parameters(fused) == count_parameters(plain)
    plain.set_weights(
        [
            w + 0.1 * np.random.default_rng(0).random(w.shape, dtype=np.float32)
            for w in fused.get_weights()
        ]
    )
    fused.set_weights(plain.get_weights())
    x = images(4, 32)
    for training in (True, False):
        np.testing.assert_allclose(
            fused(x, training=training), plain(x, training=training), rtol=1e-4, atol=1e-5
        )


# --- saving -------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["squeezenet", "mobilenet_v2"])
def test_saved_model_loads_with_the_same_function(arch: str, tmp_path: Path) -> None:
    size = small_size(arch) * 2
    model = build_model(arch, num_classes=3, image_size=size)
    x = images(2, size)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    assert count_parameters(loaded) == count_parameters(model)


# --- each architecture learns -------------------------------------------------------------


# arch -> (image size, Adam learning rate, steps). Fine-tuning a pretrained backbone wants a
# small rate (the course uses 5e-5); a fresh head or network takes the default 1e-3 or more.
LEARNING_RECIPES = {
    "dense": (16, 1e-3, 10),
    "convnet": (16, 2e-3, 12),
    "squeezenet": (16, 1e-3, 10),
    "mobilenet_v2": (64, 1e-3, 10),
    "mobilenet_v2_finetune": (64, 1e-4, 12),
    "xception": (71, 1e-3, 4),
}
# A random MobileNetV2 whose batch norms are in inference mode (frozen) outputs features of
# ~1e-12, so nothing reaches the head: both MobileNetV2 models learn only from real weights.
LEARNING_CASES = [
    pytest.param(arch, marks=pytest.mark.real_data) if arch.startswith("mobilenet_v2") else arch
    for arch in ARCHITECTURES
]


@pytest.mark.slow
@pytest.mark.parametrize("arch", LEARNING_CASES)
def test_each_architecture_learns(arch: str, request: pytest.FixtureRequest) -> None:
    """A few Adam steps on one fixed tiny batch lower the loss: the gradients reach the
    trainable weights and the output is wired to the loss. The losses compared are those of
    the training steps (training-mode batch norm), which is what the optimiser lowers."""
    keras.utils.set_random_seed(0)
    size, learning_rate, steps = LEARNING_RECIPES[arch]
    uses_weights = arch.startswith("mobilenet_v2")
    weights = str(request.getfixturevalue("mobilenet_weights")) if uses_weights else "none"
    model = build_model(arch, num_classes=3, image_size=size, weights=weights)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        # Tracing Xception's graph takes ~16 s on 2 cores, more than 4 eager steps.
        run_eagerly=arch == "xception",
    )
    x = images(6, size, seed=1)
    y = np.array([0, 1, 2, 0, 1, 2])
    losses = [float(model.train_on_batch(x, y)) for _ in range(steps)]
    assert all(np.isfinite(losses)), losses
    assert losses[-1] < 0.85 * losses[0], f"{arch}: losses {np.round(losses, 3).tolist()}"


@pytest.mark.parametrize("arch", ["mobilenet_v2", "mobilenet_v2_finetune"])
def test_random_mobilenet_is_useless_and_says_so(
    arch: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="flowerlab.models"):
        model = build_model(arch, num_classes=3, image_size=32, weights="none")
    assert get_spec(arch).needs_pretrained_weights and "random weights" in caplog.text
    features = nested_backbone(model)(model.layers[1](images(2, 32)))
    assert float(np.abs(np.array(features)).max()) < 1e-6
