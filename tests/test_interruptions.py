"""Interruptions and exact reruns.

Real processes killed with SIGKILL at the worst moment: nothing half-written looks complete,
and a rerun finishes the job. Each test starts the real command (`python -m flowerlab ...`) in
a subprocess, waits until it is provably mid-way (a partial file on disk, a temporary notebook,
a write not yet renamed), kills it with `kill -9` (no cleanup handler can run), checks what a
reader or Snakemake would see, and reruns it.

Then the records: training.json and metrics.json hold everything needed to rerun a result, and
a rerun built from nothing but the record reproduces it exactly.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from photo_factory import jpeg_bytes

from flowerlab.cli import code_version

KILL_WAIT_S = 60  # generous: the machine is shared; a healthy run reaches its kill point in seconds


def start(command: list[str], log: Path, **kwargs) -> subprocess.Popen:
    """`command` in its own session (so that a child it started, e.g. a Jupyter kernel, can be
    cleaned up with its process group), stderr to `log`."""
    with open(log, "wb") as stderr:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True, **kwargs)


def kill_when(process: subprocess.Popen, ready: Callable[[], bool], log: Path, what: str) -> None:
    """Poll `ready()` while the process runs; once true, SIGKILL it. Fails if it exits first."""
    deadline = time.monotonic() + KILL_WAIT_S
    while not ready():
        assert process.poll() is None, f"exited ({process.returncode}) before {what}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"not {what} after {KILL_WAIT_S} s:\n{log.read_text()[-3000:]}"
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, f"it finished before it could be killed ({what})"


def reap_group(process: subprocess.Popen) -> None:
    """SIGKILL whatever is left of the process group we started (e.g. an orphaned kernel)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def flowerlab(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "flowerlab", *arguments]


# ---------------------------------------------------------------------------------------------
# Killed during the download


@dataclass
class Transfer:
    """What the test server sends: `payload`, throttled, stalling at `stall_at` bytes until
    `release` is set (so that the client is provably mid-transfer when it is killed)."""

    payload: bytes
    chunk: int = 64 * 1024
    pause_s: float = 0.005
    stall_at: int | None = None
    release: threading.Event = field(default_factory=threading.Event)
    ranges: list[str | None] = field(default_factory=list)  # the Range header of each request


class ThrottledHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        transfer: Transfer = self.server.transfer  # type: ignore[attr-defined]
        range_header = self.headers.get("Range")
        transfer.ranges.append(range_header)
        start = int(range_header.removeprefix("bytes=").split("-")[0]) if range_header else 0
        body = transfer.payload[start:]
        if range_header:
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(transfer.payload) - 1}/{len(transfer.payload)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            for offset in range(0, len(body), transfer.chunk):
                if transfer.stall_at is not None and start + offset >= transfer.stall_at:
                    transfer.release.wait(KILL_WAIT_S)
                    transfer.stall_at = None
                self.wfile.write(body[offset : offset + transfer.chunk])
                time.sleep(transfer.pause_s)
        except (BrokenPipeError, ConnectionResetError):  # the client was killed
            pass

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def throttled_server() -> Iterator[tuple[str, Transfer]]:
    transfer = Transfer(payload=b"")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ThrottledHandler)
    httpd.daemon_threads = True
    httpd.transfer = transfer  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/flower_photos.tgz", transfer
    transfer.release.set()
    httpd.shutdown()
    httpd.server_close()


def photo_archive() -> bytes:
    """A valid .tgz like the official one: flower_photos/<class>/<photo>, plus 3 MB of random
    (incompressible) bytes so that the transfer takes several of the client's 1 MB reads."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        members = {f"flower_photos/daisy/{index}.jpg": jpeg_bytes(24, 16, seed=index) for index in range(4)}
        members["flower_photos/LICENSE.txt"] = os.urandom(3 * 1024 * 1024)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_download_killed_mid_transfer_publishes_nothing_and_the_rerun_resumes(throttled_server, tmp_path: Path) -> None:
    url, transfer = throttled_server
    transfer.payload = photo_archive()
    transfer.stall_at = 3 * len(transfer.payload) // 4  # the client has written >= 1 MB by then
    sha256 = hashlib.sha256(transfer.payload).hexdigest()
    dest = tmp_path / "resources" / "flower_photos.tgz"
    part = dest.with_name(dest.name + ".part")
    command = flowerlab("fetch", "--url", url, "--sha256", sha256, "--bytes", str(len(transfer.payload)),
                        "--dest", str(dest), "--attempts", "1")

    process = start(command, tmp_path / "killed.log")
    try:
        kill_when(process, lambda: part.exists() and part.stat().st_size > 0, tmp_path / "killed.log",
                  "the partial download had bytes")
    finally:
        reap_group(process)
        transfer.release.set()

    # Nothing that looks complete: no archive, no verification stamp; only the partial file,
    # holding a true prefix of the archive.
    assert not dest.exists()
    assert not dest.with_name(dest.name + ".sha256").exists()
    kept = part.read_bytes()
    assert 0 < len(kept) < len(transfer.payload) and transfer.payload.startswith(kept)

    transfer.pause_s = 0.0
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert dest.read_bytes() == transfer.payload
    assert transfer.ranges == [None, f"bytes={len(kept)}-"], "the rerun did not resume from the partial file"
    assert f"resuming {url} at byte {len(kept):,}" in rerun.stderr
    assert sorted(p.name for p in dest.parent.iterdir()) == ["flower_photos.tgz", "flower_photos.tgz.sha256"]
    with tarfile.open(dest) as tar:  # the archive is whole and readable
        assert "flower_photos/daisy/3.jpg" in tar.getnames()


# ---------------------------------------------------------------------------------------------
# Killed during the report


@pytest.fixture(scope="module")
def fake_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny evaluated study (one architecture): what `flowerlab render` reads."""
    import fake_study

    results = tmp_path_factory.mktemp("study") / "results"
    fake_study.make_fake_study(results, ["dense"])
    fake_study.evaluate_and_collect(results, ["dense"])
    return results


def render_command(results: Path) -> list[str]:
    import fake_study

    report_dir = results / "report"
    return flowerlab("render", "--notebook", str(fake_study.NOTEBOOK), "--executed", str(report_dir / "report.ipynb"),
                     "--html", str(report_dir / "report.html"), "--results-dir", str(results))


def executed_cells(folder: Path) -> int:
    """Cells papermill has recorded as run in a temporary notebook under `folder` (0 if none yet;
    papermill rewrites the file after every cell, so it may be caught half-written)."""
    for temporary in folder.glob(".report.ipynb.tmp-*.ipynb"):
        try:
            notebook = json.loads(temporary.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        return sum(1 for cell in notebook["cells"] if cell.get("execution_count"))
    return 0


@pytest.mark.slow
def test_render_killed_while_papermill_executes_publishes_nothing_and_the_rerun_completes(
    fake_results: Path, tmp_path: Path
) -> None:
    report_dir = fake_results / "report"
    command = render_command(fake_results)
    log = tmp_path / "killed.log"
    process = start(command, log)
    try:
        # The kernel has run at least one cell: papermill is mid-way through the notebook.
        kill_when(process, lambda: executed_cells(report_dir) >= 1, log, "papermill had executed a cell")
    finally:
        reap_group(process)  # the orphaned kernel, should it outlive its parent
    assert not (report_dir / "report.ipynb").exists()
    assert not (report_dir / "report.html").exists()
    assert not (report_dir / "report.failed.ipynb").exists()  # killed is not failed: nothing to debug
    # What is left is hidden and named temporary: no reader or Snakemake takes it for the report.
    assert all(p.name.startswith(".") and ".tmp" in p.name for p in report_dir.iterdir())

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    html = (report_dir / "report.html").read_text(encoding="utf-8")
    assert html.rstrip().endswith("</html>")
    assert not list(report_dir.glob(".*.tmp-*"))  # the killed run's leftover was cleared
    executed = json.loads((report_dir / "report.ipynb").read_text(encoding="utf-8"))
    code_cells = [cell for cell in executed["cells"] if cell["cell_type"] == "code"]
    assert all(cell.get("execution_count") for cell in code_cells)  # every cell ran
    assert not [o for cell in code_cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]


# `flowerlab publish` takes a second; to kill it at the one instant that matters, the real
# command runs with os.fsync wrapped: after the page's temporary file is complete and synced,
# and before the rename that publishes it, the process records the file and stalls until killed.
STALL_AFTER_FSYNC = """
import os, sys, time
marker = sys.argv[1]
real_fsync = os.fsync
def fsync_then_stall(descriptor):
    real_fsync(descriptor)
    with open(marker + ".part", "w") as handle:
        handle.write(os.readlink(f"/proc/self/fd/{descriptor}"))
    os.replace(marker + ".part", marker)
    time.sleep(600)
os.fsync = fsync_then_stall
from flowerlab.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.fixture
def publish_arguments(fake_results: Path, tmp_path: Path) -> list[str]:
    """`flowerlab publish` arguments for the fake study, with one real figure and a stand-in
    notebook export (publish only links to it)."""
    from flowerlab.reporting import figures, plotting, results

    figures_dir = tmp_path / "figures"
    figure = figures.accuracy_vs_parameters(results.load_metrics(fake_results / "metrics.csv"),
                                            results.load_architectures(fake_results / "architectures.csv"))
    plotting.save_figure(figure, "accuracy_vs_parameters", "Accuracy against parameters.", figures_dir)
    notebook_html = tmp_path / "report" / "report.html"
    notebook_html.parent.mkdir()
    notebook_html.write_text("<html><body>the report notebook</body></html>\n")
    return ["publish", "--figures", str(figures_dir), "--metrics", str(fake_results / "metrics.csv"),
            "--architectures", str(fake_results / "architectures.csv"), "--notebook-html", str(notebook_html), "--out", str(notebook_html.with_name("index.html")),
            "--manifest", str(fake_results / "data" / "manifest.json"),
            "--evaluations", str(fake_results / "evaluation" / "dense" / "seed-1" / "metrics.json")]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name the file being synced")
def test_publish_killed_before_its_rename_leaves_no_page_or_the_complete_old_one(
    publish_arguments: list[str], tmp_path: Path
) -> None:
    index = Path(publish_arguments[publish_arguments.index("--out") + 1])
    marker = tmp_path / "stalled"

    def publish_killed_before_rename(log_name: str) -> None:
        marker.unlink(missing_ok=True)
        process = start([sys.executable, "-c", STALL_AFTER_FSYNC, str(marker), *publish_arguments], tmp_path / log_name)
        try:
            kill_when(process, marker.exists, tmp_path / log_name, "the page was written and synced")
        finally:
            reap_group(process)
        synced = Path(marker.read_text())
        assert synced.parent == index.parent and synced.name.startswith(".index.html.") and synced.name.endswith(".tmp")

    publish_killed_before_rename("first.log")
    assert not index.exists()  # the complete page was never renamed into place: nothing published
    assert all(p.name.startswith(".") for p in index.parent.iterdir() if p.name != "report.html")

    done = subprocess.run(flowerlab(*publish_arguments), capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    published = index.read_bytes()
    assert published.rstrip().endswith(b"</html>") and b"data:image/png;base64," in published

    publish_killed_before_rename("second.log")
    assert index.read_bytes() == published  # the old page, whole


# ---------------------------------------------------------------------------------------------
# The records are enough to rerun a result exactly

DATA_SETTINGS = {"image_size", "jpeg_quality", "validation_fraction", "shards", "seed"}



def history_figures(path: Path) -> list[list[str]]:
    import csv

    with open(path, newline="") as handle:
        return [[row[m] for m in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")]
                for row in csv.DictReader(handle)]


@pytest.mark.slow
def test_training_and_evaluation_records_rerun_to_identical_results(restore_tensorflow_globals, tmp_path: Path) -> None:
    from synthetic_records import write_dataset

    from flowerlab.evaluation import stage as evaluation
    from flowerlab.training import setup, stage

    manifest_path = write_dataset(tmp_path / "data", image_size=16, num_classes=3, train_per_class=8,
                                  validation_per_class=4)
    manifest = json.loads(manifest_path.read_text())
    manifest_sha256 = hashlib.sha256(manifest_path.read_bytes()).hexdigest()
    first = setup.TrainSettings(
        arch="dense", manifest=manifest_path, out_dir=tmp_path / "first", checkpoint_dir=tmp_path / "ckpt",
        hparams=setup.resolve_hparams({"epochs": 2, "batch_size": 8, "precision": "float32"}),
        accelerator="cpu", seed=11, deterministic=True,
    )
    stage.train(first)
    record = json.loads((first.out_dir / "training.json").read_text())

    # training.json: the settings, the data, the code, the libraries and the machine.
    assert record["hparams"] == first.hparams and record["seed"] == 11 and record["deterministic"] is True
    assert record["accelerator_requested"] == "cpu" and record["precision"] == "float32"
    assert record["weights"] == "none" and record["weights_sha256"] is None
    assert record["manifest_sha256"] == manifest_sha256
    assert record["data_settings"] == manifest["settings"] and set(record["data_settings"]) == DATA_SETTINGS
    assert len(record["code_version"]["commit"]) == 40 and isinstance(record["code_version"]["dirty"], bool)
    assert record["code_version"]["fingerprint"] == code_version("train", "dense").sha256
    assert {"python", "tensorflow", "keras", "numpy", "flowerlab"} <= set(record["versions"])
    assert record["device"]["kind"] == "cpu" and record["device"]["name"] and record["device"]["replicas"] == 1

    # A rerun built from the record alone (as `flowerlab train` options) gives the same epochs.
    rerun = setup.TrainSettings(
        arch=record["arch"], manifest=manifest_path, out_dir=tmp_path / "rerun", checkpoint_dir=tmp_path / "ckpt2",
        hparams=setup.resolve_hparams(record["hparams"]), accelerator=record["accelerator_requested"],
        seed=record["seed"], deterministic=record["deterministic"], threads=record["threads"],
    )
    again = stage.train(rerun)
    assert history_figures(rerun.out_dir / "history.csv") == history_figures(first.out_dir / "history.csv")
    assert again["fingerprint"] == record["fingerprint"]

    # metrics.json: its own settings, the data's, and the training record's carried along.
    def evaluate_into(out_dir: Path, **options) -> dict:
        evaluation.evaluate(arch="dense", model_path=first.out_dir / "model.keras",
                          training_json=first.out_dir / "training.json", manifest_path=manifest_path,
                          out_dir=out_dir, **options)
        return json.loads((out_dir / "metrics.json").read_text())

    metrics = evaluate_into(tmp_path / "evaluation", batch_size=4, latency_runs=2, accelerator="cpu")
    assert metrics["data_settings"] == manifest["settings"]
    assert metrics["inputs"]["manifest_sha256"] == manifest_sha256
    assert metrics["eval_batch_size"] == 4 and metrics["latency_runs"] == 2
    assert metrics["accelerator_requested"] == "cpu" and metrics["device"]["kind"] == "cpu"
    assert set(metrics["code_version"]) == {"commit", "dirty", "fingerprint"} and "tensorflow" in metrics["versions"]
    assert metrics["code_version"]["fingerprint"] == code_version("evaluate").sha256
    for key in ("hparams", "seed", "deterministic", "precision", "device", "data_settings", "weights",
                "weights_sha256", "accelerator_requested", "threads", "manifest_sha256", "code_version",
                "versions"):
        assert metrics["training"][key] == record[key], key

    again = evaluate_into(tmp_path / "evaluation-rerun", batch_size=metrics["eval_batch_size"],
                          latency_runs=metrics["latency_runs"], accelerator=metrics["accelerator_requested"])
    for key in ("accuracy", "loss", "per_class", "confusion_matrix", "flops_per_image"):
        assert again[key] == metrics[key], key
    assert (tmp_path / "evaluation-rerun" / "predictions.csv").read_bytes() == (
        tmp_path / "evaluation" / "predictions.csv").read_bytes()
