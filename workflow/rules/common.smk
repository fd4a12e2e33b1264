# Helpers shared by every stage file. Imports here must stay light (parsing the workflow never
# imports TensorFlow).

import atexit
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from snakemake.exceptions import WorkflowError

from flowerlab.backends import check_accelerator
from flowerlab.cli import code_version
from flowerlab.errors import FlowerlabError
from flowerlab.config import (
    check_downloads,
    cluster_resources,
    gpu_resources,
    hparams_for,
    job_resources,
    imagenet_weights_files,
    photos_dir,
    prepare_config,
    study_runs,
    weights_file,
)
from flowerlab.replicates import NAME_PATTERN as REPLICATE_PATTERN
from flowerlab.replicates import parse as parse_replicate
from flowerlab.replicates import split_name


def stop(error):
    """End the run on a configuration or input error with its message alone: the message says
    what to change, and Snakemake would add traceback lines of this file to it."""
    print(f"flowerlab: {error}", file=sys.stderr)
    raise SystemExit(1)


# Coerce --config strings, fill defaults and validate against workflow/schemas/config.schema.yaml;
# a bad setting stops here with one message naming the key, before any job runs.
# Workflow files are found beside this file, not in the working directory, so the workflow runs
# from any folder, with --directory, and as a module of another workflow.
WORKFLOW_DIR = Path(workflow.current_basedir).parent
try:
    prepare_config(config, WORKFLOW_DIR / "schemas" / "config.schema.yaml")
except FlowerlabError as error:
    stop(error)

STUDY = config["study"]
# Every (architecture, replicate) trained and evaluated: results/models/{arch}/{replicate}/.
RUNS = study_runs(config)
SPLIT_SEEDS = config["data"]["split_seeds"]
PHOTOS = photos_dir(config)
DATA = "results/data"
INVENTORY_CSV = f"{DATA}/inventory.csv"
INVENTORY_JSON = f"{DATA}/inventory.json"
METRICS_CSV = "results/metrics.csv"
METRICS_JSON = "results/metrics.json"
ARCHITECTURES_CSV = "results/architectures.csv"
COMPARISONS_CSV = "results/comparisons.csv"
MCNEMAR_CSV = "results/mcnemar.csv"
REPORT_DIR = "results/report"
REPORT_INDEX = f"{REPORT_DIR}/index.html"
FIGURES = "results/figures"
NOTEBOOKS = WORKFLOW_DIR / "notebooks"
REPORT_NOTEBOOK = str(NOTEBOOKS / "report.ipynb")
REPORT_TEMPLATE = str(NOTEBOOKS / "report.html.j2")
# What a job asks a cluster for (profiles/slurm): every job's partition and account, the GPUs of
# the training and evaluation jobs, and their memory and time from what each architecture measured
# (workflow/resources.yaml). Local runs ignore them.
CLUSTER = cluster_resources(config)
GPUS = gpu_resources(config)
MEASURED = yaml.safe_load((WORKFLOW_DIR / "resources.yaml").read_text())


def measured(rule_name, resource):
    """A training's or evaluation's `mem_mb` or `runtime` from what its architecture measured,
    for its configured epochs; more on a retry."""
    return lambda wildcards, attempt: job_resources(
        MEASURED,
        rule_name,
        wildcards.arch,
        config["models"][wildcards.arch]["epochs"],
        attempt,
    )[resource]


# Only for commands that run no job (--report, --dag): a job's threads are capped where it runs,
# at the CPUs it may use there (flowerlab.console.usable_cpus), never at this host's count.
CPUS = os.cpu_count() or 1


def run_cores():
    """Every core of the run: heavy jobs claim them all, so they run one after another with the
    whole machine. Commands that run no job (--report, --dag) give no --cores: the CPU count.
    """
    try:
        return workflow.cores
    except WorkflowError:
        return CPUS


def split_dir(split=None):
    """The TFRecords and manifest of one split: data.seed's in results/data/, each of
    data.split_seeds' in results/data/split-{seed}/."""
    return DATA if split is None else f"{DATA}/{split_name(split)}"


# The split the report's data figures show: the study's one split, or the first repeated one.
REPORT_DATA = split_dir(SPLIT_SEEDS[0] if SPLIT_SEEDS else None)


def replicate_data(wildcards):
    """A replicate's manifest and TFRecords: those of its split."""
    folder = split_dir(parse_replicate(wildcards.replicate).split)
    return {"manifest": f"{folder}/manifest.json", "shards": f"{folder}/tfrecords"}


def run_files(pattern):
    """`pattern` ({arch}, {replicate}) for every run of the study, in study order."""
    return [pattern.format(arch=arch, replicate=rep.name) for arch, rep in RUNS]


def photos_input(wildcards=None):
    """The photo folder, and for a local copy also its class folders, so that adding or
    removing a photo (which changes its class folder's mtime) reruns the inventory."""
    if config["data_source"] in ("official", "synthetic"):
        return [PHOTOS]
    root = Path(PHOTOS)
    return [PHOTOS] + sorted(str(p) for p in root.iterdir() if p.is_dir())


def weights_input(wildcards):
    """The backbone weights a training starts from: the fetched ImageNet file (rule
    fetch_weights) or a local file; none for models without a backbone."""
    path = weights_file(config, wildcards.arch)
    return [] if path is None else [path]


def planned_outputs(exclude_finished=True):
    """The files the jobs of this run will write (from Snakemake's DAG, once it is built); with
    exclude_finished=False also those a dry-run has already counted as done."""
    jobs = workflow.dag.needrun_jobs(exclude_finished=exclude_finished)
    return {str(path) for job in jobs for path in job.output}


def planned_trainings(planned):
    """ARCH/REPLICATE of each training this run will execute."""
    return [
        f"{arch}/{rep.name}"
        for arch, rep in RUNS
        if f"results/models/{arch}/{rep.name}/training.json" in planned
    ]


# The study's configuration as it ran, for `snakemake --report --configfile` (the landing page's
# command), so that Snakemake's report describes this study and not config/config.yaml's.
STUDY_CONFIG = f"{REPORT_DIR}/config.yaml"
SNAKEMAKE_REPORT_COMMAND = (
    f"snakemake --report {REPORT_DIR}/snakemake.html --configfile {STUDY_CONFIG}"
)


def study_config():
    """The resolved configuration, less what changes no result (`estimate` only prints)."""
    return json.dumps(
        {key: value for key, value in config.items() if key != "estimate"},
        sort_keys=True,
    )


def write_yaml(text_json, path):
    """JSON text as a YAML file, written atomically."""
    from flowerlab.filesystem import write_text

    write_text(path, yaml.safe_dump(json.loads(text_json), sort_keys=False))


def check_before_jobs(planned):
    """What would stop the run's jobs, checked before any: a download it cannot make
    (flowerlab.config.check_downloads) and, run locally, an accelerator this machine lacks or its
    backend cannot use (flowerlab.backends; on a cluster the submitting host is not the one that trains).
    """
    check_downloads(config, planned)
    if workflow.local_exec and planned_trainings(planned):
        check_accelerator(config["accelerator"], config["backend"])


def before_the_first_job():
    """What a run checks and says once its DAG is built: what would stop its jobs stops it here
    (check_before_jobs), then it says how long its trainings will take.
    """
    planned = planned_outputs()
    try:
        check_before_jobs(planned)
    except FlowerlabError as error:
        stop(error)
    print_training_estimate(planned)


def after_a_dry_run():
    """Snakemake runs no onstart hook in a dry-run (`snakemake -n`), so there the offline check runs
    as the process ends, after the plan is printed: it says what the real run would stop on.
    """
    try:
        if not workflow.dryrun:
            return
        # The dry-run has marked its jobs done by now.
        planned = planned_outputs(exclude_finished=False)
    except (AttributeError, TypeError):  # no DAG: Snakemake stopped before building one
        return
    try:
        check_before_jobs(planned)
    except FlowerlabError as error:
        print(
            f"flowerlab: the run (without -n) would stop before its first job: {error}",
            file=sys.stderr,
        )


atexit.register(after_a_dry_run)


def print_training_estimate(planned):
    """Before the trainings start, say how long they will take on this machine (flowerlab
    estimate, in its own process: this one never imports TensorFlow). Only for a local run: on a
    cluster this is the login node, not the machines that train. A failed estimate is said and
    the run goes on."""
    trainings = planned_trainings(planned)
    if not config["estimate"] or not trainings or not workflow.local_exec:
        return
    command = [sys.executable, "-m", "flowerlab", "estimate", "--config-json"]
    command += [json.dumps(config), "--threads", str(run_cores()), "--runs", *trainings]
    if subprocess.run(command, check=False).returncode != 0:
        print("flowerlab estimate failed (above); the run goes on", file=sys.stderr)


def weights_option(weights):
    return f"--weights {shlex.quote(str(weights[0]))}" if weights else ""


def hparams_json(wildcards):
    """One architecture's hyperparameters: a change reruns that model only."""
    return json.dumps(hparams_for(config, wildcards.arch), sort_keys=True)


def code(command, *files):
    """The fingerprint of the code `flowerlab <command>` runs (flowerlab.code_fingerprint), and of
    `files` it reads: as a parameter, a change to that code reruns the rule. Comments,
    docstrings and layout do not count. Given part by part (one short hash per subpackage and
    file), so that Snakemake's reason for a rerun names the part that changed."""
    return code_version(command, files=files).by_part()


def training_code(wildcards):
    """The training code plus this architecture's own module: editing one model's layers
    reruns that model only."""
    return code_version("train", wildcards.arch).by_part()
