# The workflow lives in workflow/Snakefile (Snakemake's standard layout); this file lets
# `snakemake --cores 8` run it from the repository root. The `include:` directive would keep
# this file's (empty) default target, so the call that directive makes is spelled out to take
# the workflow's `rule all` as the default.
workflow.include("workflow/Snakefile", overwrite_default_target=True)
