# flowerlab: the Fast and Lean Data Science Keras flowers labs as one reproducible study.
#
#   snakemake --cores 8                                          # the whole study
#   snakemake --cores 8 --config data_source=PATH                # a local copy of the photos
#   snakemake --cores 2 --configfile config/smoke.yaml           # offline smoke run, synthetic data
#
# Stages (one rule file each, logic in src/flowerlab; docs/architecture.md has the files between them):
#   data.smk      photos -> inventory -> TFRecords
#   train.smk     one model per architecture in config["study"] and seed in config["seeds"]
#   evaluate.smk  validation metrics and cost figures, collected into results/metrics.csv
#   report.smk    papermill report notebook, figures, results/report/index.html

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"


wildcard_constraints:
    arch="|".join(sorted(config["models"])),
    replicate=REPLICATE_PATTERN,
    split=r"\d+",


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


# On a cluster (profiles/slurm) these run on the submitting host: the downloads (compute nodes
# often have no internet), the tables and the landing page (seconds each), and the target.
localrules:
    all,
    download_photos,
    fetch_weights,
    collect_metrics,
    publish_report,


# A run that must download what it cannot reach stops here, before any job, naming the
# settings that make it work offline (flowerlab.config.check_downloads); then it says how long
# its trainings will take on this machine (flowerlab.training.estimate).
onstart:
    check_downloads(config, planned_outputs())
    print_training_estimate(planned_outputs())


rule all:
    default_target: True
    input:
        REPORT_INDEX,
