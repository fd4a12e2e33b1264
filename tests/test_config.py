"""Configuration: --config strings take effect with the right types, bad settings stop early."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.cli import parse_config
from snakemake.utils import update_config

from flowerlab.config import load_schema, prepare_config, resolved_config
from flowerlab.errors import ConfigError, DataError
from flowerlab.schema import resolve

REPO = Path(__file__).resolve().parents[1]


def study_config(*overrides: str) -> dict:
    """config/config.yaml merged with command-line overrides exactly as Snakemake does it."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    update_config(config, parse_config(list(overrides)))
    return config


def test_default_config_is_valid_and_gets_schema_defaults():
    config = prepare_config(study_config())
    assert config["data"]["image_size"] == 192
    assert config["models"]["convnet"]["schedule"] == "constant"  # schema default filled
    assert config["evaluation"]["batch_size"] == 64


def test_nested_command_line_overrides_take_effect_with_their_types():
    config = prepare_config(
        study_config(
            "study=[convnet]",
            "models={convnet: {epochs: 2, learning_rate: 0.01, augment: true}}",
            "data={image_size: 128}",
            "deterministic=true",
        )
    )
    assert config["study"] == ["convnet"]
    convnet = config["models"]["convnet"]
    assert convnet["epochs"] == 2 and isinstance(convnet["epochs"], int)
    assert convnet["learning_rate"] == pytest.approx(0.01)
    assert convnet["augment"] is True
    assert convnet["batch_size"] == 32  # untouched keys of the file survive the merge
    assert config["models"]["squeezenet"]["epochs"] == 35
    assert config["data"] == {**config["data"], "image_size": 128, "shards": 16}
    assert config["deterministic"] is True


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("study=[resnet9000]", ["'study.0'", "allowed: dense, mobilenet_v2"]),
        ("models={convnet: {epochs: 0}}", ["'models.convnet.epochs'", "minimum of 1"]),
        ("models={convnet: {epochs: -3}}", ["'models.convnet.epochs'"]),
        ("data={validation_fraction: 1.5}", ["'data.validation_fraction'"]),
        ("data={validation_fraction: 0}", ["'data.validation_fraction'"]),
        ("data={image_size: big}", ["'data.image_size'", "integer"]),
        ("data={image_size: 12.5}", ["'data.image_size'"]),
        ("accelerator=quantum", ["'accelerator'", "allowed: auto, tpu, gpu, cpu"]),
        ("data_source=/no/such/folder", ["'data_source'", "official, synthetic"]),
        ("models={resnet: {epochs: 1}}", ["'models'", "resnet"]),
        ("models={mobilenet_v2: {weights: /no/such.h5}}", ["'models.mobilenet_v2.weights'", "imagenet, none"]),
        # a misspelt key or name gets the nearest allowed one; a scalar where a list belongs, the list
        ("modles={convnet: {epochs: 1}}", ["config key 'modles': unknown key", "did you mean 'models'?"]),
        ("study=[convnt]", ["'study.0'", "did you mean 'convnet'?"]),
        ("models={convnet: {epoch: 2}}", ["'models.convnet.epoch': unknown key", "did you mean 'epochs'?"]),
        ("seeds=1", ["'seeds'", "write a list, --config 'seeds=[1]'"]),
    ],
)
def test_bad_settings_name_the_key_and_the_allowed_values(override, expected):
    with pytest.raises(ConfigError) as caught:
        prepare_config(study_config(override))
    for fragment in expected:
        assert fragment in str(caught.value)


def test_a_backbone_model_in_the_study_needs_pretrained_weights():
    with pytest.raises(ConfigError, match=r"'models\.mobilenet_v2\.weights': none"):
        prepare_config(study_config("models={mobilenet_v2: {weights: none}}"))
    # Outside the study the setting is not used, so it is not an error.
    prepare_config(study_config("study=[convnet]", "models={xception: {weights: none}}"))


def test_a_weights_file_that_is_not_hdf5_is_refused(tmp_path):
    fake = tmp_path / "weights.h5"
    fake.write_text("not weights")
    with pytest.raises(ConfigError, match="not an HDF5 weights file"):
        prepare_config(study_config(f"models={{mobilenet_v2: {{weights: {fake}}}}}"))


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as caught:
        prepare_config(study_config("accelerator=quantum", "models={dense: {epochs: 0}}"))
    assert "'accelerator'" in str(caught.value) and "'models.dense.epochs'" in str(caught.value)


def test_parsing_the_workflow_never_imports_tensorflow(tmp_path):
    """A dry run or a no-op rerun must not pay TensorFlow's start-up."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "snakemake", "results/data/manifest.json",
         "-n", "--cores", "1",
         "--directory", str(tmp_path), "--snakefile", str(REPO / "Snakefile"),
         "--configfile", str(REPO / "config" / "config.yaml"),
         "--config", "data_source=synthetic"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "flowerlab.config" in imported
    assert not any(name == "tensorflow" or name.startswith("tensorflow.") for name in imported)
    assert "keras" not in imported


def test_a_bad_setting_stops_snakemake_before_any_job(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", "--directory", str(tmp_path),
         "--snakefile", str(REPO / "Snakefile"), "--configfile", str(REPO / "config" / "config.yaml"),
         "--config", "data_source=synthetic", "accelerator=quantum"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "config key 'accelerator'" in output and "allowed: auto, tpu, gpu, cpu" in output
    assert "Traceback" not in output and 'File "' not in output  # the message alone, no code lines
    assert not (tmp_path / "resources").exists() and not (tmp_path / "results").exists()


def test_flowerlab_config_prints_the_merged_configuration_with_every_default(capsys, repo_root):
    import yaml

    from flowerlab import schema
    from flowerlab.config import cli

    assert cli(["config", "--base", str(repo_root / "config/config.yaml"),
                "--configfile", str(repo_root / "config/smoke.yaml")]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["data_source"] == "synthetic"  # smoke.yaml over config.yaml
    assert shown["data"]["image_size"] == 64 and shown["data"]["seed"] == schema.default("data", "seed")
    assert shown["models"]["squeezenet"]["learning_rate"] == schema.default("hparams", "learning_rate")
    assert shown["evaluation"]["latency_runs"] == 5


def test_flowerlab_config_takes_overrides_as_snakemake_does(capsys, repo_root):
    import yaml

    from flowerlab.config import cli

    base = ["config", "--base", str(repo_root / "config/config.yaml")]
    assert cli([*base, "--config", "models={convnet: {epochs: 2}}", "seeds=[1]", "data_source=synthetic"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["models"]["convnet"]["epochs"] == 2 and shown["seeds"] == [1]  # typed, as in a run
    assert shown["models"]["convnet"]["batch_size"] == 32  # the rest of the entry kept
    assert cli([*base, "--config", "seeds=1"]) == 1  # the same check, the same message, as a run
    assert "write a list, --config 'seeds=[1]'" in capsys.readouterr().err


def test_the_commands_take_their_defaults_from_the_schema():
    """One place of defaults: a changed schema default changes the command's default."""
    from flowerlab import schema
    from flowerlab.data import tfrecords
    from flowerlab.evaluation import stage as evaluation
    from flowerlab.training import stage as training

    parser = tfrecords.build_parser("flowerlab tfrecords")
    defaults = {
        ("data", "seed"): schema.default("data", "seed"),
        ("evaluation", "batch_size"): schema.default("evaluation", "batch_size"),
        ("seeds",): schema.default("seeds"),
    }
    assert defaults[("data", "seed")] == 35155 and defaults[("seeds",)] == [1, 2, 3]
    assert parser.get_default("seed") == defaults[("data", "seed")]
    required = ["--arch", "a", "--model", "m", "--training-json", "t", "--manifest", "x", "--out-dir", "o"]
    assert evaluation.build_parser("e").parse_args(required).batch_size == defaults[("evaluation", "batch_size")]
    train_required = ["--arch", "a", "--manifest", "x", "--out-dir", "o", "--checkpoint-dir", "c", "--hparams", "{}"]
    assert training.build_parser("t").parse_args(train_required).seed == defaults[("seeds",)][0]


def test_a_key_without_a_default_says_so():
    from flowerlab import schema

    with pytest.raises(KeyError, match="no default"):
        schema.default("hparams", "epochs")


def test_seeds_make_the_replicates_crossed_with_repeated_splits():
    from flowerlab.config import hparams_for, study_replicates, study_runs
    from flowerlab.replicates import Replicate, parse

    config = resolved_config([REPO / "config" / "config.yaml"])
    assert study_replicates(config, "convnet") == [Replicate(1), Replicate(2), Replicate(3)]
    config["models"]["convnet"]["seeds"] = [7]
    config["data"]["split_seeds"] = [5, 6]
    assert [rep.name for rep in study_replicates(config, "convnet")] == ["split-5-seed-7", "split-6-seed-7"]
    assert len(study_runs(config)) == 2 + 2 * 3 * (len(config["study"]) - 1)
    assert "seeds" not in hparams_for(config, "convnet")  # a model's seeds name runs, not a recipe
    assert parse("split-5-seed-7") == Replicate(7, 5) and parse("seed-3") == Replicate(3)
    with pytest.raises(DataError, match="not a replicate name"):
        parse("seed-x")


def test_cluster_jobs_ask_for_measured_memory_and_time_with_headroom():
    from flowerlab.config import job_resources

    measured = {"train_model": {"convnet": {"max_rss_mb": 1900, "fixed_seconds": 40, "epoch_seconds": 40},
                                "default": {"max_rss_mb": 12000, "fixed_seconds": 600, "epoch_seconds": 1800}}}
    # 1.5 x 1900 MB -> 3000 (rounded up to 500 MB); 2 x (40 + 20 x 40) s = 28 min
    assert job_resources(measured, "train_model", "convnet", epochs=20) == {"mem_mb": 3000, "runtime": 28}
    assert job_resources(measured, "train_model", "convnet", epochs=1) == {"mem_mb": 3000, "runtime": 10}  # floor
    assert job_resources(measured, "train_model", "convnet", epochs=20, attempt=2) == {"mem_mb": 6000, "runtime": 56}
    assert job_resources(measured, "train_model", "xception", epochs=1)["mem_mb"] == 18000  # not measured


def test_partition_account_and_gpus_come_from_the_config_else_from_sbatchs_environment():
    from flowerlab.config import cluster_resources, gpu_resources

    config = resolved_config([REPO / "config" / "config.yaml"])
    assert cluster_resources(config, {}) == {} and gpu_resources(config) == {}
    environment = {"SBATCH_PARTITION": "batch", "SBATCH_ACCOUNT": "lab"}
    assert cluster_resources(config, environment) == {"slurm_partition": "batch", "slurm_account": "lab"}
    config["cluster"].update(partition="gpu", gpus=2)
    assert cluster_resources(config, environment) == {"slurm_partition": "gpu", "slurm_account": "lab"}
    assert gpu_resources(config) == {"gpu": 2}


def test_every_measured_architecture_is_a_known_one():
    from flowerlab.models.registry import ARCH_NAMES

    measured = yaml.safe_load((REPO / "workflow" / "resources.yaml").read_text())
    for rule in ("train_model", "evaluate_model"):
        assert "default" in measured[rule]
        assert set(measured[rule]) - {"default"} <= set(ARCH_NAMES), rule


def schema_keys(node: dict, schema: dict, prefix: str = "") -> list[str]:
    """Every key a user can set, dotted (`data.image_size`), hyperparameters as `models.<arch>.KEY`."""
    node = resolve(node, schema)
    if prefix == "models":
        return ["models", *(f"models.<arch>.{key}" for key in schema["$defs"]["hparams"]["properties"])]
    if "properties" not in node:
        return [prefix]
    return [key for name, child in node["properties"].items()
            for key in schema_keys(child, schema, f"{prefix}.{name}" if prefix else name)]


def test_config_readme_explains_every_key(repo_root):
    text = (repo_root / "config" / "README.md").read_text(encoding="utf-8")
    keys = schema_keys(load_schema(), load_schema())
    assert len(keys) > 30 and "cluster.gpus" in keys
    assert [key for key in keys if f"`{key}`" not in text] == []
