# Getting the photos, accounting for every file, and writing sharded TFRecords.


# No code fingerprint: the archive is checked against a fixed sha256, so no change to the
# code that fetched it can change it, and a rerun would download 229 MB again.
rule download_photos:
    output:
        "resources/flower_photos.tgz",
    log:
        "logs/download_photos.log",
    conda:
        "../../environment.yml"
    params:
        url=config["download"]["url"],
        sha256=config["download"]["sha256"],
        size=config["download"]["bytes"],
    shell:
        "flowerlab fetch --url {params.url:q} --sha256 {params.sha256} --bytes {params.size}"
        " --dest {output:q} > {log:q} 2>&1"


rule extract_photos:
    input:
        rules.download_photos.output,
    output:
        directory("resources/flower_photos"),
    log:
        "logs/extract_photos.log",
    conda:
        "../../environment.yml"
    resources:
        **CLUSTER,
    params:
        code=code("extract"),
    shell:
        "flowerlab extract --archive {input:q} --dest {output:q} > {log:q} 2>&1"


rule make_synthetic_photos:
    output:
        directory("resources/synthetic_photos"),
    log:
        "logs/make_synthetic_photos.log",
    conda:
        "../../environment.yml"
    resources:
        **CLUSTER,
    params:
        code=code("synth"),
        classes=config["synthetic"]["classes"],
        per_class=config["synthetic"]["images_per_class"],
        seed=config["synthetic"]["seed"],
    shell:
        "flowerlab synth --out {output:q} --classes {params.classes}"
        " --per-class {params.per_class} --seed {params.seed} > {log:q} 2>&1"


rule make_inventory:
    input:
        photos_input,
    output:
        csv=INVENTORY_CSV,
        summary=INVENTORY_JSON,
    log:
        "logs/make_inventory.log",
    benchmark:
        "benchmarks/make_inventory.tsv"
    conda:
        "../../environment.yml"
    threads: run_cores()
    resources:
        **CLUSTER,
    params:
        code=code("inventory"),
        root=PHOTOS,
        max_pixels=config["data"]["max_pixels"],
    shell:
        "flowerlab inventory --root {params.root:q} --out-csv {output.csv:q}"
        " --out-json {output.summary:q} --max-pixels {params.max_pixels}"
        " --threads {threads} > {log:q} 2>&1"


rule make_tfrecords:
    input:
        photos=photos_input,
        inventory=INVENTORY_CSV,
        inventory_summary=INVENTORY_JSON,
    output:
        shards=directory(f"{DATA}/tfrecords"),
        manifest=f"{DATA}/manifest.json",
    log:
        "logs/make_tfrecords.log",
    benchmark:
        "benchmarks/make_tfrecords.tsv"
    conda:
        "../../environment.yml"
    threads: run_cores()
    resources:
        **CLUSTER,
    params:
        code=code("tfrecords"),
        root=PHOTOS,
        image_size=config["data"]["image_size"],
        quality=config["data"]["jpeg_quality"],
        fraction=config["data"]["validation_fraction"],
        shards=config["data"]["shards"],
        # data.seed, or the split seed of a repeated split (rule make_split_tfrecords)
        seed=lambda wildcards: int(wildcards.get("split", config["data"]["seed"])),
        # what the photos are, recorded in the manifest and from there in every model and report
        data_source=config["data_source"],
    shell:
        "flowerlab tfrecords --root {params.root:q} --inventory {input.inventory:q}"
        " --inventory-json {input.inventory_summary:q}"
        " --out-dir {output.shards:q} --manifest {output.manifest:q}"
        " --image-size {params.image_size} --jpeg-quality {params.quality}"
        " --validation-fraction {params.fraction} --shards {params.shards}"
        " --seed {params.seed} --data-source {params.data_source:q}"
        " --threads {threads} > {log:q} 2>&1"


# data.split_seeds: one more train/validation split per seed, each with its own TFRecords, so
# that the replicates also sample the data (results/data/split-{split}/).
use rule make_tfrecords as make_split_tfrecords with:
    output:
        shards=directory(f"{DATA}/split-{{split}}/tfrecords"),
        manifest=f"{DATA}/split-{{split}}/manifest.json",
    log:
        "logs/make_tfrecords/split-{split}.log",
    benchmark:
        "benchmarks/make_tfrecords/split-{split}.tsv"
