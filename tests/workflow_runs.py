"""Running the workflow in tests: a user's checkout in a temporary folder, Snakemake in a subprocess,
and what a run would do, read from Snakemake's machine-readable summary."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SMOKE = ("--configfile", "config/smoke.yaml")


def copy_workflow(dest: Path, *, with_source: bool = False) -> Path:
    """A user's checkout: Snakefile, environment.yml, workflow/, config/ and profiles/. The code is the
    installed package, or with `with_source` the checkout's own copy of src/ (which
    `snakemake()` then puts first on PYTHONPATH), so a test may edit the code it runs."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "environment.yml"):
        shutil.copy2(REPO / name, dest / name)
    shutil.copytree(REPO / "workflow", dest / "workflow")
    shutil.copytree(REPO / "config", dest / "config")
    shutil.copytree(REPO / "profiles", dest / "profiles")
    if with_source:
        shutil.copytree(REPO / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return dest


def snakemake(workdir: Path, *args: str, timeout: int = 900,
              environment: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Snakemake in `workdir`, with `environment` added to this process's for it and its jobs."""
    env = {**os.environ, **(environment or {})}
    if (workdir / "src" / "flowerlab").is_dir():  # the checkout's own code, for the jobs too
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(workdir / "src"), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=workdir, capture_output=True, text=True, timeout=timeout, check=False, env=env,
    )


def start_snakemake(workdir: Path, *args: str, log: Path,
                    environment: dict[str, str] | None = None) -> subprocess.Popen:
    """`snakemake(...)` started in the background, its stdout and stderr into `log`."""
    env = {**os.environ, **(environment or {})}
    if (workdir / "src" / "flowerlab").is_dir():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(workdir / "src"), env.get("PYTHONPATH")]))
    with open(log, "w") as output:
        return subprocess.Popen([sys.executable, "-m", "snakemake", *args], cwd=workdir, stdout=output,
                                stderr=subprocess.STDOUT, env=env)


def planned_rows(workdir: Path, *args: str) -> list[dict[str, str]]:
    """The rows of `snakemake --summary` (one per output file) that a run would update."""
    result = snakemake(workdir, "--summary", *args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    header = result.stdout.index("output_file\t")
    rows = csv.DictReader(result.stdout[header:].splitlines(), delimiter="\t")
    return [row for row in rows if row["plan"] != "no update"]


def planned_outputs(workdir: Path, *args: str) -> set[str]:
    """The output files a run would write."""
    return {row["output_file"] for row in planned_rows(workdir, *args)}


def planned_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """The jobs a run would execute, {rule: count}, without the target rule `all`.

    From `snakemake --summary`, a tab-separated table with one row per output file and a `plan`
    column; each job writes its own log file, so the pending jobs of a rule are its distinct log
    files among the rows planned for update. A missing output has no recorded log: it counts by
    its folder, which in this workflow holds the outputs of one job (results/models/{arch}/{replicate}/).
    """
    jobs: dict[str, set[str]] = defaultdict(set)
    for row in planned_rows(workdir, *args):
        if row["rule"] != "all":
            log = row["log-file(s)"]
            jobs[row["rule"]].add(log if log not in ("", "-") else str(Path(row["output_file"]).parent))
    return {rule: len(keys) for rule, keys in jobs.items()}
