# The report: a papermill-executed notebook (figures, tables) exported to HTML, and a landing page.


rule render_report:
    input:
        notebook=REPORT_NOTEBOOK,
        metrics=METRICS_CSV,
        histories=expand("results/models/{arch}/history.csv", arch=STUDY),
        evaluations=expand("results/evaluation/{arch}/metrics.json", arch=STUDY),
        predictions=expand("results/evaluation/{arch}/predictions.csv", arch=STUDY),
        manifest=MANIFEST,
        shards=TFRECORDS,
        inventory=INVENTORY_CSV,
        inventory_summary=INVENTORY_JSON,
    output:
        notebook=f"{REPORT_DIR}/report.ipynb",
        html=f"{REPORT_DIR}/report.html",
        figures=report(
            directory(FIGURES),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="5. Figures",
        ),
    params:
        results=lambda wildcards, input: os.path.dirname(input.metrics),
        report_dir=lambda wildcards, output: os.path.dirname(output.html),
    conda:
        "../../environment.yml"
    log:
        "logs/render_report.log",
    shell:
        # Executed into a temporary name first: a killed run never leaves a notebook that looks done.
        "(papermill {input.notebook:q} {output.notebook:q}.partial.ipynb --kernel python3"
        " -p results_dir {params.results:q} -p figures_dir {output.figures:q} --log-output"
        " && jupyter nbconvert --to html {output.notebook:q}.partial.ipynb"
        " --output-dir {params.report_dir:q} --output report.partial"
        " && mv {output.notebook:q}.partial.ipynb {output.notebook:q}"
        " && mv {params.report_dir:q}/report.partial.html {output.html:q}) 2>&1 | tee {log:q}"


rule publish_report:
    input:
        html=f"{REPORT_DIR}/report.html",
        metrics=METRICS_CSV,
        figures=FIGURES,
    output:
        REPORT_INDEX,
    conda:
        "../../environment.yml"
    log:
        "logs/publish_report.log",
    shell:
        "flowerlab publish --figures {input.figures:q} --metrics {input.metrics:q}"
        " --notebook-html {input.html:q} --out {output:q} 2>&1 | tee {log:q}"
