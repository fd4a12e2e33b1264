# The report: the notebook executed by papermill (figures, tables) and exported to HTML, then a
# landing page. The notebook and its HTML template are inputs, so editing them reruns the
# report and nothing upstream. The jobs' benchmark files are inputs too, so the report's wall
# times are always this run's.

from flowerlab.reporting.captions import snakemake_captions
from flowerlab.reporting.timings import study_benchmark_files

BENCHMARKS = "benchmarks"  # where the rules' benchmark: files go (data.smk, train.smk, evaluate.smk)


rule render_report:
    input:
        notebook=REPORT_NOTEBOOK,
        template=REPORT_TEMPLATE,
        metrics=METRICS_CSV,
        architectures=ARCHITECTURES_CSV,
        comparisons=COMPARISONS_CSV,
        mcnemar=MCNEMAR_CSV,
        histories=run_files("results/models/{arch}/{replicate}/history.csv"),
        evaluations=run_files("results/evaluation/{arch}/{replicate}/metrics.json"),
        predictions=run_files("results/evaluation/{arch}/{replicate}/predictions.csv"),
        manifest=f"{REPORT_DATA}/manifest.json",
        shards=f"{REPORT_DATA}/tfrecords",
        inventory=INVENTORY_CSV,
        inventory_summary=INVENTORY_JSON,
        benchmarks=[
            f"{BENCHMARKS}/{name}"
            for name in study_benchmark_files([(arch, rep.name) for arch, rep in RUNS])
        ],
    output:
        notebook=f"{REPORT_DIR}/report.ipynb",
        html=report(
            f"{REPORT_DIR}/report.html",
            caption="../report/report_notebook.rst",
            category="3. Report",
        ),
        figures=report(
            directory(FIGURES),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="2. Figures",
        ),
    log:
        "logs/render_report.log",
    conda:
        "../../environment.yml"
    resources:
        **CLUSTER,
    params:
        code=code("render", REPORT_NOTEBOOK, REPORT_TEMPLATE),
        # The notebook's data paths default to their places under this folder.
        results=lambda wildcards, input: os.path.abspath(os.path.dirname(input.metrics)),
        benchmarks=os.path.abspath(BENCHMARKS),
        # The figures' captions for Snakemake's report (workflow/report/figures.rst).
        captions=snakemake_captions(),
    shell:
        # papermill executes into a temporary name; a killed run never leaves a finished-looking report.
        "flowerlab render --notebook {input.notebook:q} --template {input.template:q}"
        " --executed {output.notebook:q} --html {output.html:q}"
        " --results-dir {params.results:q} --manifest {input.manifest:q} --figures {output.figures:q}"
        " --benchmarks-dir {params.benchmarks:q} > {log:q} 2>&1"


rule publish_report:
    input:
        html=f"{REPORT_DIR}/report.html",
        metrics=METRICS_CSV,
        architectures=ARCHITECTURES_CSV,
        figures=FIGURES,
        manifest=f"{REPORT_DATA}/manifest.json",
        evaluations=run_files("results/evaluation/{arch}/{replicate}/metrics.json"),
        study_config=STUDY_CONFIG,
    output:
        report(REPORT_INDEX, caption="../report/landing_page.rst", category="3. Report"),
    log:
        "logs/publish_report.log",
    conda:
        "../../environment.yml"
    params:
        code=code("publish"),
        report_command=SNAKEMAKE_REPORT_COMMAND,
    shell:
        "flowerlab publish --figures {input.figures:q} --metrics {input.metrics:q}"
        " --architectures {input.architectures:q}"
        " --notebook-html {input.html:q} --manifest {input.manifest:q}"
        " --evaluations {input.evaluations:q} --report-command {params.report_command:q}"
        " --out {output:q} > {log:q} 2>&1"


rule write_study_config:
    output:
        STUDY_CONFIG,
    log:
        "logs/write_study_config.log",
    conda:
        "../../environment.yml"
    params:
        config=study_config(),
    run:
        write_yaml(params.config, output[0])
