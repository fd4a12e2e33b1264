"""Backbone weights as a workflow input: which file, fetched and checked, and offline at the start."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from workflow_runs import copy_workflow, snakemake

from flowerlab.config import check_downloads, imagenet_weights_files, missing_downloads, prepare_config, weights_file
from flowerlab.errors import ConfigError, DownloadError
from flowerlab.models.registry import get_spec

CLOSED_PORT = "http://127.0.0.1:9/"  # nothing listens on the discard port: refused at once


def study(tmp_path: Path, **overrides) -> dict:
    config = {"data_source": "synthetic", "study": ["mobilenet_v2", "mobilenet_v2_finetune", "convnet"],
              "models": {"mobilenet_v2": {"epochs": 1, "batch_size": 8},
                         "mobilenet_v2_finetune": {"epochs": 1, "batch_size": 8},
                         "convnet": {"epochs": 1, "batch_size": 8}}}
    config.update(overrides)
    return prepare_config(config)


def test_the_fetched_file_is_the_one_keras_would_download() -> None:
    mobilenet = get_spec("mobilenet_v2").imagenet
    assert mobilenet.file_for(192) == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_192_no_top.h5"
    assert mobilenet.file_for(200).endswith("_1.0_224_no_top.h5")  # Keras' choice for other sizes
    assert mobilenet.url_for(96, "https://example.org/keras/") == (
        "https://example.org/keras/mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5")
    assert get_spec("xception").imagenet.md5 == "b0042744bf5b25fce3cb969f33bebb97"
    assert get_spec("convnet").imagenet is None and get_spec("mobilenet_v2_finetune").imagenet is not None


def test_two_architectures_of_one_backbone_share_one_file_and_local_files_are_used_as_they_are(tmp_path) -> None:
    config = study(tmp_path)
    files = imagenet_weights_files(config)
    assert list(files) == ["resources/weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_192_no_top.h5"]
    assert weights_file(config, "mobilenet_v2") == weights_file(config, "mobilenet_v2_finetune") == next(iter(files))
    assert weights_file(config, "convnet") is None
    local = tmp_path / "backbone.h5"
    local.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    config = study(tmp_path, models={"mobilenet_v2": {"epochs": 1, "batch_size": 8, "weights": str(local)},
                                     "mobilenet_v2_finetune": {"epochs": 1, "batch_size": 8, "image_size": 160},
                                     "convnet": {"epochs": 1, "batch_size": 8}})
    assert weights_file(config, "mobilenet_v2") == str(local.resolve())
    assert weights_file(config, "mobilenet_v2_finetune").endswith("_1.0_160_no_top.h5")


def test_offline_the_run_names_the_setting_for_each_missing_download(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = study(tmp_path, data_source="official", weights_url=CLOSED_PORT,
                   download={"url": CLOSED_PORT + "flower_photos.tgz"})
    assert len(missing_downloads(config)) == 2
    with pytest.raises(ConfigError) as error:
        check_downloads(config)
    message = str(error.value)
    # as the user types them: one --config argument per top-level key, and as YAML
    assert ("--config 'data_source=PHOTOS' 'models={mobilenet_v2: {weights: WEIGHTS.h5}, "
            "mobilenet_v2_finetune: {weights: WEIGHTS.h5}}'") in message
    assert "  models:\n    mobilenet_v2:\n      weights: WEIGHTS.h5\n    mobilenet_v2_finetune:" in message
    assert "  data_source: PHOTOS\n" in message and "config/smoke.yaml" in message


def test_files_already_fetched_or_reachable_pass_the_check(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = study(tmp_path, weights_url=CLOSED_PORT)
    fetched = Path(next(iter(imagenet_weights_files(config))))
    fetched.parent.mkdir(parents=True)
    fetched.write_bytes(b"weights")
    assert missing_downloads(config) == []
    check_downloads(config)
    mirror = tmp_path / "mirror" / "mobilenet_v2"
    mirror.mkdir(parents=True)
    (mirror / fetched.name).write_bytes(b"weights")
    fetched.unlink()
    check_downloads(study(tmp_path, weights_url=(tmp_path / "mirror").as_uri() + "/"))


def test_offline_snakemake_stops_before_any_job(tmp_path) -> None:
    workdir = copy_workflow(tmp_path)
    result = snakemake(workdir, "--cores", "1", "--config", "data_source=synthetic", "study=[mobilenet_v2]",
                       f"weights_url={CLOSED_PORT}", timeout=300)
    assert result.returncode != 0
    output = result.stderr + result.stdout
    assert "'models={mobilenet_v2: {weights: WEIGHTS.h5}}'" in output
    assert "Traceback" not in output and 'File "' not in output  # the message alone
    assert not (workdir / "logs").exists() and not (workdir / "resources").exists()
    # A dry-run runs no job and no onstart hook, but still says what the real run would stop on.
    planned = snakemake(workdir, "-n", "--cores", "1", "--config", "data_source=synthetic", "study=[mobilenet_v2]",
                        f"weights_url={CLOSED_PORT}", timeout=300)
    output = planned.stderr + planned.stdout
    assert planned.returncode == 0 and "This was a dry-run" in output, output[-3000:]
    assert "the run (without -n) would stop before its first job" in output
    assert "'models={mobilenet_v2: {weights: WEIGHTS.h5}}'" in output and "Traceback" not in output


def fake_mirror(root: Path, image_size: int, *, wrong: bool = False) -> Path:
    """A weights store with the MobileNetV2 file Keras would fetch at `image_size` (random weights:
    the check is that the file fits the backbone, not what it learnt)."""
    import keras

    if wrong:
        inputs = keras.Input((image_size, image_size, 3))
        model = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))
    else:
        model = keras.applications.MobileNetV2(input_shape=(image_size, image_size, 3), include_top=False,
                                               weights=None)
    path = root / "mobilenet_v2" / get_spec("mobilenet_v2").imagenet.file_for(image_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keras publishes its weights in the legacy HDF5 layout, which Keras 3 still reads but only
    # writes through this internal helper.
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, model)
    return path


def test_fetch_weights_checks_the_file_fits_and_writes_it_atomically(tmp_path) -> None:
    from flowerlab.models.backbone import fetch_imagenet_weights

    source = fake_mirror(tmp_path / "mirror", 96)
    dest = tmp_path / "resources" / "weights" / source.name
    fetch_imagenet_weights("mobilenet_v2", 96, dest, (tmp_path / "mirror").as_uri())
    assert dest.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in dest.parent.iterdir()) == [dest.name]  # no temporary left

    shutil.rmtree(tmp_path / "mirror")
    fake_mirror(tmp_path / "mirror", 96, wrong=True)
    dest.unlink()
    with pytest.raises(ConfigError, match="does not hold weights of the"):
        fetch_imagenet_weights("mobilenet_v2", 96, dest, (tmp_path / "mirror").as_uri())
    assert list(dest.parent.iterdir()) == []

    with pytest.raises(DownloadError, match=r"models\.mobilenet_v2\.weights: PATH"):
        fetch_imagenet_weights("mobilenet_v2", 96, dest, CLOSED_PORT)
    assert list(dest.parent.iterdir()) == []


@pytest.mark.slow  # a Snakemake run
def test_a_run_that_needs_no_download_is_not_stopped_offline(tmp_path) -> None:
    """Only the downloads of the jobs that will run count: the data stage alone needs no weights."""
    workdir = copy_workflow(tmp_path)
    result = snakemake(workdir, "results/data/manifest.json", "--cores", "1", "--config", "data_source=synthetic",
                       "study=[mobilenet_v2]", "synthetic={images_per_class: 4}", "data={image_size: 32, shards: 2}",
                       f"weights_url={CLOSED_PORT}", timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (workdir / "results" / "data" / "manifest.json").is_file() and not (workdir / "resources" / "weights").exists()
