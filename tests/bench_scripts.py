"""Run bench/ scripts in tests: one imported as a module (bench/ is not a package), or the quick
run of them all that several tests share."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType


def load_bench_script(repo_root: Path, name: str) -> ModuleType:
    """bench/<name>.py as the module `name`; its sibling scripts import while it loads."""
    bench = str(repo_root / "bench")
    sys.path.insert(0, bench)
    try:
        spec = importlib.util.spec_from_file_location(name, repo_root / "bench" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(bench)


@dataclass(frozen=True)
class QuickBenchmarks:
    """One `bench/run_all.py --quick`: its output folder (every part's CSV, the summary and the
    figure), the folder it ran in, and what it printed (each part's own output included)."""

    out_dir: Path
    cwd: Path
    run: subprocess.CompletedProcess[str]

    def part_csv(self, part: str) -> Path:
        """The CSV of one part, which must have run (run_all's `[n/6] <part>: ran in` line)."""
        assert f"] {part}: ran in" in self.run.stdout, self.run.stdout[-3000:] + self.run.stderr[-3000:]
        return self.out_dir / f"{part}.csv"


def run_all_quick(repo_root: Path, cwd: Path) -> QuickBenchmarks:
    out_dir = cwd / "bench"
    done = subprocess.run([sys.executable, str(repo_root / "bench" / "run_all.py"), "--quick", "--out-dir", str(out_dir)],
                          capture_output=True, text=True, timeout=600, cwd=cwd, check=False)
    return QuickBenchmarks(out_dir=out_dir, cwd=cwd, run=done)
