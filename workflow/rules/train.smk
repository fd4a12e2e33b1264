# One model per architecture of the study. Each training claims all of the run's cores
# (threads: run_cores()), so trainings run one after another, each with the whole machine,
# instead of oversubscribing it; TensorFlow gets at most the machine's CPU count.


rule train_model:
    input:
        manifest=MANIFEST,
        shards=TFRECORDS,
    output:
        model="results/models/{arch}/model.keras",
        history="results/models/{arch}/history.csv",
        record="results/models/{arch}/training.json",
    log:
        "logs/train_model/{arch}.log",
    benchmark:
        "benchmarks/train_model/{arch}.tsv"
    conda:
        "../../environment.yml"
    threads: run_cores()
    resources:
        accelerator=1,
    params:
        code=training_code,
        hparams=hparams_json,
        accelerator=config["accelerator"],
        seed=config["seed"],
        deterministic="--deterministic" if config["deterministic"] else "",
        checkpoints="results/checkpoints/{arch}",
        out_dir="results/models/{arch}",
        cpus=lambda wildcards, threads: machine_threads(threads),
    shell:
        "flowerlab train --arch {wildcards.arch} --manifest {input.manifest:q}"
        " --out-dir {params.out_dir:q} --checkpoint-dir {params.checkpoints:q}"
        " --hparams {params.hparams:q} --accelerator {params.accelerator}"
        " --seed {params.seed} {params.deterministic} --threads {params.cpus}"
        " 2>&1 | tee {log:q}"
