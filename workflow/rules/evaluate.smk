# Validation metrics and cost figures per model, then one tidy table for the whole study.


rule evaluate_model:
    input:
        model="results/models/{arch}/model.keras",
        record="results/models/{arch}/training.json",
        manifest=MANIFEST,
        shards=TFRECORDS,
    output:
        metrics="results/evaluation/{arch}/metrics.json",
        predictions="results/evaluation/{arch}/predictions.csv",
    log:
        "logs/evaluate_model/{arch}.log",
    benchmark:
        "benchmarks/evaluate_model/{arch}.tsv"
    conda:
        "../../environment.yml"
    threads: run_cores()
    resources:
        accelerator=1,
    params:
        code=code("evaluate"),
        out_dir="results/evaluation/{arch}",
        batch_size=config["evaluation"]["batch_size"],
        latency_runs=config["evaluation"]["latency_runs"],
        accelerator=config["accelerator"],
    shell:
        "flowerlab evaluate --arch {wildcards.arch} --model {input.model:q}"
        " --training-json {input.record:q} --manifest {input.manifest:q}"
        " --out-dir {params.out_dir:q} --batch-size {params.batch_size}"
        " --latency-runs {params.latency_runs} --accelerator {params.accelerator}"
        " --threads {threads} 2>&1 | tee {log:q}"


rule collect_metrics:
    input:
        expand("results/evaluation/{arch}/metrics.json", arch=STUDY),
    output:
        csv=report(
            METRICS_CSV,
            caption="../report/metrics.rst",
            category="4. Comparison",
            labels={"table": "metrics per architecture"},
        ),
        json=METRICS_JSON,
    log:
        "logs/collect_metrics.log",
    conda:
        "../../environment.yml"
    params:
        code=code("collect"),
    shell:
        "flowerlab collect --evaluations {input:q} --out-csv {output.csv:q}"
        " --out-json {output.json:q} 2>&1 | tee {log:q}"
