"""bench/bench_machinery.py --quick works, and its rows say what each piece saves."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_quick_run_compares_each_piece_with_its_alternative(repo_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "machinery.csv"
    done = subprocess.run([sys.executable, str(repo_root / "bench" / "bench_machinery.py"), "--quick",
                           "--threads", "2", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    pieces = {(row["piece"], row["measure"]) for row in rows}
    assert ("tfrecord_writer", "TFRecords stage wall time") in pieces
    assert ("fused_adam", "dense training step") in pieces and ("fused_adam", "convnet training step") in pieces
    writer = next(row for row in rows if row["piece"] == "tfrecord_writer")
    assert "byte-identical shards: True" in writer["note"]  # the own framing writes TensorFlow's bytes
    for row in rows:
        assert float(row["with_it"]) > 0 and float(row["without_it"]) > 0
    assert f"wrote {out}" in done.stdout
