# The ImageNet weights of the study's backbones, fetched once into resources/weights/ and
# checked (flowerlab.models.backbone); a local weights file is used where it is. No code
# fingerprint, as for the photos: the file is Keras' bytes whatever code fetched it.
WEIGHTS_FILES = imagenet_weights_files(config)


rule fetch_weights:
    output:
        "resources/weights/{file}",
    log:
        "logs/fetch_weights/{file}.log",
    wildcard_constraints:
        file="|".join(re.escape(Path(path).name) for path in WEIGHTS_FILES)
        or "no-weights",
    conda:
        "../../environment.yml"
    params:
        arch=lambda wildcards, output: WEIGHTS_FILES[output[0]].archs[0],
        size=lambda wildcards, output: WEIGHTS_FILES[output[0]].image_size,
        url=config["weights_url"],
    shell:
        "flowerlab fetch-weights --arch {params.arch} --image-size {params.size}"
        " --base-url {params.url:q} --dest {output:q} > {log:q} 2>&1"


# One model per architecture and replicate (seed) of the study. Each training claims all of the run's cores
# (threads: run_cores()), so trainings run one after another, each with the whole machine,
# instead of oversubscribing it; the job caps TensorFlow's threads at the CPUs it may use.


rule train_model:
    input:
        unpack(replicate_data),
        weights=weights_input,
    output:
        model="results/models/{arch}/{replicate}/model.keras",
        history="results/models/{arch}/{replicate}/history.csv",
        record="results/models/{arch}/{replicate}/training.json",
    log:
        "logs/train_model/{arch}/{replicate}.log",
    benchmark:
        "benchmarks/train_model/{arch}/{replicate}.tsv"
    conda:
        "../../environment.yml"
    threads: run_cores()
    resources:
        **GPUS,
        **CLUSTER,
        accelerator=1,
        mem_mb=measured("train_model", "mem_mb"),
        runtime=measured("train_model", "runtime"),
    params:
        code=training_code,
        hparams=hparams_json,
        epochs=lambda wildcards: config["models"][wildcards.arch]["epochs"],
        accelerator=config["accelerator"],
        backend=config["backend"],
        seed=lambda wildcards: parse_replicate(wildcards.replicate).seed,
        deterministic="--deterministic" if config["deterministic"] else "",
        checkpoints="results/checkpoints/{arch}/{replicate}",
        # precision auto on a CPU: measured once per machine and architecture, kept here
        precision_cache="resources/precision",
        # the machine's peak FLOP/s and bandwidth, against which each training's share is recorded
        peak_cache="resources/peak",
        # on JAX: compiled steps, reused by the other seeds and by a resumed training
        compile_cache="resources/jax-compilation",
        out_dir="results/models/{arch}/{replicate}",
        weights=lambda wildcards, input: weights_option(input.weights),
    message:
        "Training {wildcards.arch} {wildcards.replicate} for {params.epochs} epochs: `flowerlab status`"
        " shows its epoch, images/s and time left (its log: {log}). Stopped, it keeps its last"
        " epoch's checkpoint and the next run resumes from it."
    shell:
        "flowerlab train --arch {wildcards.arch} --manifest {input.manifest:q}"
        " --out-dir {params.out_dir:q} --checkpoint-dir {params.checkpoints:q}"
        " --hparams {params.hparams:q} --accelerator {params.accelerator}"
        " --backend {params.backend} --seed {params.seed} {params.deterministic} --threads {threads}"
        " {params.weights} --precision-cache {params.precision_cache:q}"
        " --peak-cache {params.peak_cache:q} --compile-cache {params.compile_cache:q}"
        " > {log:q} 2>&1"
