"""flowerlab's convolution weight-gradient kernel: its numbers against TensorFlow's, its build
and cache, when a training uses it, and how a model's layers reach it (and a saved model does not
know it ran)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from flowerlab.training import weight_gradients
from flowerlab.training.weight_gradients import layers, native, policy

# (images, height, width, in channels, out channels, kernel)
CASES = [
    (3, 7, 5, 3, 16, (3, 3)),  # the convnet's first layer: three input channels
    (2, 12, 12, 30, 60, (3, 3)),  # output channels not a multiple of 16
    (2, 6, 9, 13, 30, (3, 3)),  # odd sizes everywhere
    (1, 50, 50, 8, 8, (3, 3)),  # rows longer than one 48-pixel chunk; one image for up to 3 threads
    (3, 4, 4, 110, 130, (3, 3)),  # many channels, a tiny image
    (2, 8, 8, 5, 7, (5, 5)),  # a larger kernel, fewer than 8 outputs
    (2, 9, 7, 4, 9, (2, 2)),  # an even kernel: 'same' pads one more row and column after than before
    (2, 6, 6, 6, 17, (1, 3)),  # not square
]


def tensorflow_weight_gradient(x: np.ndarray, dy: np.ndarray, kernel: tuple[int, int]) -> np.ndarray:
    import tensorflow as tf

    return tf.raw_ops.Conv2DBackpropFilter(
        input=x, filter_sizes=(*kernel, x.shape[3], dy.shape[3]), out_backprop=dy, strides=[1, 1, 1, 1],
        padding="SAME").numpy()


def random_pair(case: tuple, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    images, height, width, ci, co, _ = case
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((images, height, width, ci), dtype=np.float32),
            rng.standard_normal((images, height, width, co), dtype=np.float32))


@pytest.mark.parametrize("case", CASES, ids=lambda case: "x".join(map(str, case[:5])) + f"-k{case[5][0]}{case[5][1]}")
def test_the_kernel_matches_tensorflows_weight_gradient(case: tuple, cxx_compiler: str) -> None:
    x, dy = random_pair(case)
    want = tensorflow_weight_gradient(x, dy, case[5])
    for threads in (1, 2, 3):
        got = native.conv2d_weight_gradient(x, dy, case[5], threads)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max(), err_msg=f"{threads} threads")


def test_the_kernel_is_bit_identical_from_call_to_call(cxx_compiler: str) -> None:
    case = (5, 20, 20, 16, 30, (3, 3))
    x, dy = random_pair(case)
    first = native.conv2d_weight_gradient(x, dy, case[5], 2)
    assert np.array_equal(first, native.conv2d_weight_gradient(x, dy, case[5], 2))


def test_mismatched_shapes_are_refused_before_the_kernel_runs() -> None:
    with pytest.raises(ValueError, match="does not match"):
        native.conv2d_weight_gradient(np.zeros((1, 4, 4, 2)), np.zeros((1, 2, 2, 3)), (3, 3), 1)


# ------------------------------------------------------------------------------------------
# Building it
# ------------------------------------------------------------------------------------------


def test_the_kernel_is_compiled_once_into_the_cache(cxx_compiler: str, tmp_path: Path, monkeypatch) -> None:
    env = {"FLOWERLAB_NATIVE_CACHE": str(tmp_path / "cache"), "PATH": os.environ["PATH"]}
    built = native.library_path(env)
    assert built.is_file() and built.parent == tmp_path / "cache"
    assert list(built.parent.iterdir()) == [built]  # no temporary folder left behind
    monkeypatch.setattr(native, "compile_library", lambda *args: pytest.fail("compiled again"))
    assert native.library_path(env) == built


def test_the_cached_name_changes_with_the_source_and_the_compiler() -> None:
    name = native.library_name(b"source", "/usr/bin/g++", "g++ 12")
    assert name == native.library_name(b"source", "/usr/bin/g++", "g++ 12")
    assert len({name, native.library_name(b"source 2", "/usr/bin/g++", "g++ 12"),
                native.library_name(b"source", "/usr/bin/clang++", "g++ 12"),
                native.library_name(b"source", "/usr/bin/g++", "g++ 13")}) == 4


def test_no_compiler_is_a_clear_reason(tmp_path: Path) -> None:
    env = {"FLOWERLAB_NATIVE_CACHE": str(tmp_path), "PATH": str(tmp_path / "empty")}
    assert native.find_compiler(env) is None
    with pytest.raises(native.NativeKernelUnavailable, match="no C\\+\\+ compiler found"):
        native.library_path(env)
    env["CXX"] = str(tmp_path / "no-such-compiler")
    with pytest.raises(native.NativeKernelUnavailable, match="cannot run the C\\+\\+ compiler"):
        native.library_path(env)


def test_a_failed_compilation_says_why_and_leaves_nothing(cxx_compiler: str, tmp_path: Path, monkeypatch) -> None:
    broken = tmp_path / "conv2d_weight_gradient.cc"
    broken.write_text("this is not C++\n")
    monkeypatch.setattr(native, "SOURCE", broken)
    cache = tmp_path / "cache"
    with pytest.raises(native.NativeKernelUnavailable, match="failed") as error:
        native.library_path({"FLOWERLAB_NATIVE_CACHE": str(cache), "PATH": os.environ["PATH"]})
    assert "error" in str(error.value)  # the compiler's own message
    assert not any(cache.iterdir())


# ------------------------------------------------------------------------------------------
# When a training uses it
# ------------------------------------------------------------------------------------------

AVX2 = {"avx", "avx2", "fma"}
AVX512 = AVX2 | {"avx512f", "avx512_vnni"}


@pytest.mark.parametrize(("flags", "onednn", "environ", "expected"), [
    (AVX2, True, {}, True),  # the AVX2-only CPU: oneDNN's weight gradients are the slow ones
    (AVX2, False, {}, True),  # Eigen's, the default there, slower still
    (AVX512, True, {}, False),  # oneDNN's AVX-512 kernels
    (AVX512, True, {"ONEDNN_MAX_CPU_ISA": "AVX2"}, True),  # capped at AVX2: as on an AVX2-only CPU
    (AVX512, True, {"ONEDNN_MAX_CPU_ISA": "avx512_core"}, False),
    (AVX512, False, {}, True),  # oneDNN turned off by the user: Eigen's
    (AVX512, True, {"FLOWERLAB_WEIGHT_GRADIENTS": "flowerlab"}, True),
    (AVX2, True, {"FLOWERLAB_WEIGHT_GRADIENTS": "tensorflow"}, False),
    (AVX2, True, {"FLOWERLAB_KERNELS": "tensorflow"}, False),  # TensorFlow's own defaults, all of them
    (AVX2, True, {"FLOWERLAB_KERNELS": "tensorflow", "FLOWERLAB_WEIGHT_GRADIENTS": "auto"}, True),  # unless named
    (AVX2 - {"fma"}, True, {"FLOWERLAB_WEIGHT_GRADIENTS": "flowerlab"}, False),  # it cannot run there
    (AVX2, True, {"FLOWERLAB_WEIGHT_GRADIENTS": "fast"}, False),
])
def test_the_policy(flags: set[str], onednn: bool, environ: dict[str, str], expected: bool) -> None:
    choice = policy.choose(device_kind="cpu", flags=flags, onednn=onednn, environ=environ)
    assert choice.use_flowerlab is expected, choice.reason
    assert choice.reason


def test_the_policy_leaves_accelerators_alone() -> None:
    choice = policy.choose(device_kind="gpu", flags=AVX2, onednn=True, environ={"FLOWERLAB_WEIGHT_GRADIENTS": "flowerlab"})
    assert not choice.use_flowerlab and "gpu" in choice.reason


def test_a_kernel_that_cannot_be_built_falls_back_with_the_reason_recorded(monkeypatch) -> None:
    from flowerlab.models.build import build_model
    from flowerlab.training.setup import compile_model

    def unavailable() -> None:
        raise native.NativeKernelUnavailable("no C++ compiler found (set CXX, ...)")

    monkeypatch.setenv("FLOWERLAB_WEIGHT_GRADIENTS", "flowerlab")
    monkeypatch.setattr(native, "load", unavailable)
    monkeypatch.setattr("flowerlab.devices.cpu_flags", lambda: frozenset(AVX2))
    model = build_model("convnet", num_classes=3, image_size=32, weights="none")
    compile_model(model, 1e-3)
    record = weight_gradients.use_for(model, "cpu")
    assert record == {"kernel": "tensorflow", "reason": "flowerlab's kernel is unavailable: no C++ compiler found "
                      "(set CXX, ...)", "convolutions": 0, "of": 7}
    assert layers.routed_count(model) == 0
    assert "TensorFlow's" in weight_gradients.describe(record)


# ------------------------------------------------------------------------------------------
# A model's layers
# ------------------------------------------------------------------------------------------


def test_which_convolutions_qualify() -> None:
    import keras

    def conv(**options) -> keras.layers.Layer:
        layer = keras.layers.Conv2D(4, options.pop("kernel_size", 3), **{"padding": "same", **options})
        layer.build((None, 8, 8, 2))
        return layer

    assert layers.eligible(conv())
    assert layers.eligible(conv(kernel_size=(1, 3)))
    assert not layers.eligible(conv(kernel_size=1))  # one matrix product: oneDNN's kernels do it well
    assert not layers.eligible(conv(strides=2))
    assert not layers.eligible(conv(padding="valid"))
    assert not layers.eligible(conv(dilation_rate=2))
    assert not layers.eligible(conv(dtype="mixed_bfloat16"))
    frozen = conv()
    frozen.trainable = False
    assert not layers.eligible(frozen)  # no weight gradient to compute
    assert not layers.eligible(keras.layers.Dense(3))


def one_sgd_step(route: bool) -> tuple[dict | None, list[np.ndarray], object]:
    """The convnet's weights' change after one SGD step (learning rate 1: minus the gradients)."""
    import keras

    from flowerlab.models.build import build_model

    keras.utils.set_random_seed(3)
    model = build_model("convnet", num_classes=3, image_size=32, weights="none")
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="categorical_crossentropy")
    record = weight_gradients.use_for(model, "cpu") if route else None
    before = [variable.numpy().copy() for variable in model.trainable_variables]
    rng = np.random.default_rng(0)
    images = rng.random((6, 32, 32, 3), dtype=np.float32) * 255
    model.train_on_batch(images, np.eye(3, dtype=np.float32)[np.arange(6) % 3])
    return record, [b - v.numpy() for b, v in zip(before, model.trainable_variables, strict=True)], model


def test_a_routed_model_trains_with_the_same_gradients_and_saves_as_plain_keras(
        cxx_compiler: str, tmp_path: Path, monkeypatch) -> None:
    import keras

    monkeypatch.setenv("FLOWERLAB_WEIGHT_GRADIENTS", "flowerlab")
    record, routed, model = one_sgd_step(route=True)
    assert record == {"kernel": "flowerlab", "reason": "FLOWERLAB_WEIGHT_GRADIENTS=flowerlab", "convolutions": 6,
                      "of": 7}
    assert "6 of 7 convolutions" in weight_gradients.describe(record)
    _, stock, _ = one_sgd_step(route=False)
    for got, want in zip(routed, stock, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * max(np.abs(want).max(), 1e-12))
    assert weight_gradients.use_for(model, "cpu")["convolutions"] == 6  # routing twice changes nothing

    model.save(tmp_path / "model.keras")
    reopened = keras.models.load_model(tmp_path / "model.keras")
    assert layers.routed_count(model) == 6 and layers.routed_count(reopened) == 0
    assert json.dumps(reopened.get_config(), sort_keys=True) == json.dumps(model.get_config(), sort_keys=True)
    assert {type(layer) for layer in layers.all_layers(reopened) if layers.is_convolution(layer)} == {
        keras.layers.Conv2D}


def test_the_cache_folder_default_follows_xdg(tmp_path: Path) -> None:
    assert native.cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "flowerlab" / "native"
    assert native.cache_dir({"FLOWERLAB_NATIVE_CACHE": str(tmp_path / "mine")}) == tmp_path / "mine"
    assert native.cache_dir({}) == Path.home() / ".cache" / "flowerlab" / "native"
