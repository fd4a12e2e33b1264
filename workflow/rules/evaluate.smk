# Validation metrics and cost figures per model and replicate, then the study's tables: one row
# per run, one per architecture (mean and interval across replicates), and the comparisons.


rule evaluate_model:
    input:
        unpack(replicate_data),
        model="results/models/{arch}/{replicate}/model.keras",
        record="results/models/{arch}/{replicate}/training.json",
    output:
        metrics="results/evaluation/{arch}/{replicate}/metrics.json",
        predictions="results/evaluation/{arch}/{replicate}/predictions.csv",
    log:
        "logs/evaluate_model/{arch}/{replicate}.log",
    benchmark:
        "benchmarks/evaluate_model/{arch}/{replicate}.tsv"
    conda:
        "../../environment.yml"
    threads: run_cores()
    resources:
        **GPUS,
        **CLUSTER,
        accelerator=1,
        mem_mb=measured("evaluate_model", "mem_mb"),
        runtime=measured("evaluate_model", "runtime"),
    params:
        code=code("evaluate"),
        out_dir="results/evaluation/{arch}/{replicate}",
        batch_size=config["evaluation"]["batch_size"],
        latency_runs=config["evaluation"]["latency_runs"],
        accelerator=config["accelerator"],
    message:
        "Evaluating {wildcards.arch} {wildcards.replicate} on the validation photos; log: {log}"
    shell:
        "flowerlab evaluate --arch {wildcards.arch} --model {input.model:q}"
        " --training-json {input.record:q} --manifest {input.manifest:q}"
        " --out-dir {params.out_dir:q} --batch-size {params.batch_size}"
        " --latency-runs {params.latency_runs} --accelerator {params.accelerator}"
        " --threads {threads} > {log:q} 2>&1"


rule collect_metrics:
    input:
        evaluations=run_files("results/evaluation/{arch}/{replicate}/metrics.json"),
        predictions=run_files("results/evaluation/{arch}/{replicate}/predictions.csv"),
    output:
        csv=report(
            METRICS_CSV,
            caption="../report/metrics.rst",
            category="1. Comparison",
            labels={"table": "metrics per run"},
        ),
        json=METRICS_JSON,
        architectures=report(
            ARCHITECTURES_CSV,
            caption="../report/architectures.rst",
            category="1. Comparison",
            labels={"table": "metrics per architecture"},
        ),
        comparisons=COMPARISONS_CSV,
        mcnemar=MCNEMAR_CSV,
    log:
        "logs/collect_metrics.log",
    conda:
        "../../environment.yml"
    params:
        code=code("collect"),
    shell:
        "flowerlab collect --evaluations {input.evaluations:q} --out-csv {output.csv:q}"
        " --out-json {output.json:q} --architectures {output.architectures:q}"
        " --comparisons {output.comparisons:q} --mcnemar {output.mcnemar:q} > {log:q} 2>&1"
