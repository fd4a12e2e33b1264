"""The study on a real SLURM cluster, through Snakemake's executor plugin and profiles/slurm.

A single-node SLURM (tests/slurm_cluster.py) runs the smoke study, every job but the local rules
as an sbatch job. The tests check the scheduler's own records of those jobs, the GPU request of
the training jobs, that the outputs equal a local run's (`deterministic: true`, as
config/smoke.yaml sets it), and that a training cancelled with scancel resumes from its
checkpoint when the workflow runs again.

Needs root and the Debian packages munge, slurmctld, slurmd and slurm-client (.ci/run installs
them) and snakemake-executor-plugin-slurm (the test extra). Skipped with the reason when they are
missing, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import slurm_cluster
import yaml
from workflow_runs import SMOKE, copy_workflow

from flowerlab.config import job_resources

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

# The test node has 2 CPUs: every job takes them both, as in the local smoke run it is compared
# with (TensorFlow's results may depend on its thread count). Status checks every 2 s, not the
# plugin's 40 s: one node and a few short jobs. No accounting database: no account, and the job
# states come from squeue.
TEST_CLUSTER = ("--slurm-no-account", "--slurm-status-command", "squeue",
                "--slurm-init-seconds-before-status-checks", "2",
                "--set-threads", "make_inventory=2", "make_tfrecords=2", "train_model=2", "evaluate_model=2",
                "render_report=1", "make_synthetic_photos=1")
# Part of the smoke study runs through SLURM: two of its architectures, its first seed (the local
# run's other runs do not touch these).
STUDY = ("study=[dense, convnet]", "seeds=[1]", "cluster={gpus: 1}")
RUNS = [("dense", "seed-1"), ("convnet", "seed-1")]
# Rules that run on the submitting host (the Snakefile's localrules), the others as SLURM jobs.
LOCAL_RULES = {"all", "collect_metrics", "publish_report", "write_study_config"}


def plugin_missing() -> str | None:
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return "snakemake-executor-plugin-slurm is not installed: pip install -e '.[test]'"
    return None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    reason = slurm_cluster.unavailable() or plugin_missing()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the SLURM test: {reason}")
        pytest.skip(reason)
    running = slurm_cluster.start_cluster(tmp_path_factory.mktemp("slurm"))
    yield running
    running.stop()


def on_cluster(workdir: Path, cluster: slurm_cluster.Cluster, *args: str, timeout: int = 900
               ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", "--profile", "profiles/slurm", *TEST_CLUSTER, *SMOKE,
                           *args], cwd=workdir, env=cluster.env, capture_output=True, text=True, timeout=timeout,
                          check=False)


def rule_jobs(cluster: slurm_cluster.Cluster, workdir: Path) -> list[dict[str, str]]:
    """The controller's records of the jobs submitted from `workdir` (its Comment names the
    rule and the wildcards' values: rule_<name>_wildcards_<arch>_<replicate>)."""
    return [job for job in cluster.jobs() if job.get("WorkDir") == str(workdir)
            and job.get("Comment", "").startswith("rule_")]


def rule_of(job: dict[str, str]) -> str:
    return job["Comment"].removeprefix("rule_").split("_wildcards_")[0]


def wait_for_first_checkpoint(cluster: slurm_cluster.Cluster, workdir: Path, replicate: str, checkpoints: Path,
                              run: subprocess.Popen) -> dict[str, str] | None:
    """The running training job of `replicate` in `workdir` once its first checkpoint is on disk (None if the run
    ended or 300 s passed first). The job is looked up while waiting, so no scheduler query stands
    between the checkpoint appearing and the caller's scancel."""
    deadline = time.monotonic() + 300
    training = None
    while time.monotonic() < deadline and run.poll() is None:
        if training is None:
            running = [job for job in rule_jobs(cluster, workdir)
                       if rule_of(job) == "train_model" and replicate in job["Comment"] and job["JobState"] == "RUNNING"]
            training = running[0] if running else None
        if training is not None and list(checkpoints.glob("epoch-*")):
            return training
        time.sleep(0.2)
    return None


@pytest.fixture(scope="module")
def slurm_study(cluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = copy_workflow(tmp_path_factory.mktemp("slurm-study"))
    started = time.monotonic()
    result = on_cluster(workdir, cluster, "--config", *STUDY)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-6000:]
    (workdir / "wall_seconds").write_text(f"{time.monotonic() - started:.1f}\n")
    return workdir


def test_every_job_but_the_local_rules_ran_as_a_slurm_job(cluster, slurm_study: Path) -> None:
    jobs = rule_jobs(cluster, slurm_study)
    ran = {}
    for job in jobs:
        assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", job
        ran.setdefault(rule_of(job), []).append(job)
    assert {rule: len(found) for rule, found in ran.items()} == {
        "make_synthetic_photos": 1, "make_inventory": 1, "make_tfrecords": 1, "train_model": 2,
        "evaluate_model": 2, "render_report": 1}
    assert not LOCAL_RULES & set(ran)
    # jobcomp/filetxt, the controller's log of finished jobs, has them too
    finished = {line.split()[0] for line in cluster.jobcomp.read_text().splitlines()}
    assert {f"JobId={job['JobId']}" for job in jobs} <= finished
    # what each heavy job asked for: the GPU, the CPUs, memory and time from workflow/resources.yaml
    measured = yaml.safe_load((slurm_study / "workflow" / "resources.yaml").read_text())
    epochs = {"dense": 2, "convnet": 3}  # config/smoke.yaml
    for rule in ("train_model", "evaluate_model"):
        for job in ran[rule]:
            arch, _ = job["Comment"].split("_wildcards_")[1].rsplit("_", 1)  # <arch>_<replicate>
            wanted = job_resources(measured, rule, arch, epochs[arch])
            assert job["TresPerJob"] == "gres:gpu:1", job  # cluster.gpus: 1
            assert job["NumCPUs"] == "2" and job["MinMemoryNode"] == f"{wanted['mem_mb']}M", job
            assert job["TimeLimit"] == f"{wanted['runtime'] // 60:02d}:{wanted['runtime'] % 60:02d}:00", job
    for job in ran["make_inventory"] + ran["render_report"]:
        assert "gres" not in job.get("TresPerJob", ""), job


def predictions_digest(workdir: Path, arch: str, replicate: str) -> str:
    return hashlib.sha256((workdir / "results" / "evaluation" / arch / replicate / "predictions.csv")
                          .read_bytes()).hexdigest()


QUALITY = ("val_accuracy", "val_loss", "val_macro_f1", "best_val_accuracy", "parameters")


def quality_rows(workdir: Path) -> dict[tuple[str, str], dict[str, str]]:
    with open(workdir / "results" / "metrics.csv", newline="") as handle:
        return {(row["arch"], row["replicate"]): {key: row[key] for key in QUALITY} for row in csv.DictReader(handle)}


def test_the_outputs_equal_a_local_runs(slurm_study: Path, smoke_study: Path) -> None:
    """TFRecords, predictions and every quality figure, against the local smoke study (the same
    configuration, deterministic; it also ran squeezenet and a second seed, which do not touch these)."""
    local_manifest = json.loads((smoke_study / "results" / "data" / "manifest.json").read_text())
    slurm_manifest = json.loads((slurm_study / "results" / "data" / "manifest.json").read_text())
    assert slurm_manifest["shards"] == local_manifest["shards"]  # every shard's sha256
    for arch, replicate in RUNS:
        assert predictions_digest(slurm_study, arch, replicate) == predictions_digest(smoke_study, arch, replicate)
    local = quality_rows(smoke_study)
    assert quality_rows(slurm_study) == {run: local[run] for run in RUNS}
    assert (slurm_study / "results" / "report" / "index.html").stat().st_size > 0


def test_a_cancelled_training_resumes_from_its_checkpoint(cluster, slurm_study: Path) -> None:
    """scancel a training after its first checkpoint; running the workflow again resumes it."""
    target = "results/models/convnet/seed-7/model.keras"
    # 60 epochs of about 0.4 s: the scancel lands long before the last one, even on a busy machine
    # (with 20, CI once saw the training finish between its first checkpoint and the scancel).
    args = ("--config", *STUDY, "seeds=[7]", "models={convnet: {epochs: 60}}", "--retries", "0", target)
    env = {**cluster.env, "PYTHONUNBUFFERED": "1"}
    run = subprocess.Popen([sys.executable, "-m", "snakemake", "--profile", "profiles/slurm", *TEST_CLUSTER, *SMOKE,
                            *args], cwd=slurm_study, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    checkpoints = slurm_study / "results" / "checkpoints" / "convnet" / "seed-7"
    training = wait_for_first_checkpoint(cluster, slurm_study, "seed-7", checkpoints, run)
    assert training, "the training job was not running when its first checkpoint appeared"
    cluster.command("scancel", training["JobId"])
    output, _ = run.communicate(timeout=300)
    assert run.returncode != 0, output[-3000:]  # the cancelled job failed the run
    cancelled = {job["JobId"]: job for job in cluster.jobs()}[training["JobId"]]
    assert cancelled["JobState"] == "CANCELLED", cancelled
    assert not (slurm_study / target).exists()
    kept = sorted(path.name for path in checkpoints.glob("epoch-*"))
    assert kept, "the checkpoint did not survive the cancellation"

    again = on_cluster(slurm_study, cluster, *args)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-4000:]
    record = json.loads((slurm_study / "results" / "models" / "convnet" / "seed-7" / "training.json").read_text())
    assert record["resumed_from_epoch"] == int(kept[-1].removeprefix("epoch-")) >= 1
    assert record["epochs"] == 60
    completed = [job for job in rule_jobs(cluster, slurm_study)
                 if rule_of(job) == "train_model" and "seed-7" in job["Comment"] and job["JobState"] == "COMPLETED"]
    assert len(completed) == 1
