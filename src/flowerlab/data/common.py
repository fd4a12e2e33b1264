"""Small helpers shared by the data-stage commands: hashing, folder swaps, worker pools, CLI glue.

Nothing here imports TensorFlow or Pillow, so every data command starts fast.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import concurrent.futures.process
import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from flowerlab.errors import DataError, FlowerlabError

logger = logging.getLogger(__name__)

HASH_CHUNK_BYTES = 1 << 20
# When stderr is a log file, a progress line every half minute is plenty; on a terminal, redraw often.
LOG_PROGRESS_INTERVAL_S = 30.0


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks (constant memory for big archives)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_json(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    """A JSON object from `path`, or a DataError that names the file and how to remake it."""
    try:
        with open(path, encoding="utf-8") as handle:
            value = json.load(handle)
    except FileNotFoundError:
        raise DataError(f"{what} not found: {path} (run the stage that makes it first)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{what} {path} is not valid JSON ({error}); delete it and rerun its stage") from None
    if not isinstance(value, dict):
        raise DataError(f"{what} {path} must hold a JSON object, not {type(value).__name__}")
    return value


def progress(total: int | None, desc: str, unit: str = "it", **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr: live on a terminal, a line every 30 s in a log file."""
    interactive = sys.stderr.isatty()
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        mininterval=0.1 if interactive else LOG_PROGRESS_INTERVAL_S,
        dynamic_ncols=interactive,
        **kwargs,
    )


def temporary_dir_beside(destination: str | os.PathLike[str]) -> Path:
    """A new empty folder beside `destination` (same file system, so renaming it is atomic).

    Its name starts with a dot and carries the process id, so it never looks like the output
    and `remove_stale_temporaries` can tell a dead run's leftovers from a live run's folder.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    return Path(
        tempfile.mkdtemp(prefix=f".{destination.name}.tmp-{os.getpid()}-", dir=destination.parent)
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(destination: str | os.PathLike[str]) -> None:
    """Delete temporary folders/files beside `destination` left by runs that were killed.

    A temporary whose owning process still runs is left alone (two runs of the same output at
    once are a user error, but deleting the other run's files would turn it into corruption).
    """
    destination = Path(destination)
    if not destination.parent.is_dir():
        return
    prefix = f".{destination.name}.tmp-"
    for leftover in destination.parent.iterdir():
        if not leftover.name.startswith(prefix):
            continue
        pid_text = leftover.name[len(prefix) :].split("-", 1)[0]
        if pid_text.isdigit() and _pid_alive(int(pid_text)) and int(pid_text) != os.getpid():
            continue
        logger.info("removing %s, left by an interrupted run", leftover)
        remove_path(leftover)


def remove_path(path: str | os.PathLike[str]) -> None:
    """Delete a file, link or folder tree; no error when it does not exist."""
    path = Path(path)
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path)


def replace_directory(new: Path, destination: Path) -> None:
    """Put the finished folder `new` in place of `destination`, whatever was there.

    `os.replace` cannot swap a folder over a non-empty one, so the old one is first renamed
    aside (one atomic rename), the new one renamed in, and only then the old one deleted: at no
    moment does `destination` hold a mix of old and new files.
    """
    old: Path | None = None
    if destination.is_symlink() or destination.exists():
        old = destination.parent / f".{destination.name}.tmp-{os.getpid()}-old"
        remove_path(old)
        os.replace(destination, old)
    os.replace(new, destination)
    if old is not None:
        remove_path(old)


def _exit_when_orphaned(parent_pid: int) -> None:
    """Worker initializer: end this worker soon after its parent dies (e.g. `kill -9`).

    Pool workers otherwise outlive a killed parent, blocked on (or still working through) a
    task queue nobody reads, holding CPU and memory on a shared machine.
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


def start_method() -> str:
    """The workers' start method: "fork" (instant, no re-import of __main__) unless TensorFlow is loaded.

    Forking a process that runs TensorFlow's thread pools can deadlock the child on a lock a
    vanished thread held; the workers only need Pillow and hashlib, so a fresh interpreter
    (a fraction of a second) is the safe choice then.
    """
    if "tensorflow" in sys.modules or "fork" not in multiprocessing.get_all_start_methods():
        return "spawn"
    return "fork"


def worker_pool(processes: int) -> concurrent.futures.ProcessPoolExecutor:
    """A process pool for CPU-bound per-file work; `map(fn, items, chunksize=n)` keeps order.

    A worker that dies (out of memory, killed) raises BrokenProcessPool in the caller instead
    of hanging, and workers exit when the caller is killed. Leave it with
    `shutdown_now(pool)` on errors so pending work is cancelled rather than awaited.
    """
    return concurrent.futures.ProcessPoolExecutor(
        max_workers=processes,
        mp_context=multiprocessing.get_context(start_method()),
        initializer=_exit_when_orphaned,
        initargs=(os.getpid(),),
    )


@contextlib.contextmanager
def running_pool(processes: int) -> Iterator[concurrent.futures.ProcessPoolExecutor]:
    """`worker_pool` as a context: waits for the workers on success, cancels work on error."""
    pool = worker_pool(processes)
    try:
        yield pool
    except concurrent.futures.process.BrokenProcessPool as error:
        pool.shutdown(wait=False, cancel_futures=True)
        raise FlowerlabError(
            f"a worker process died or could not start ({error}): out of memory, killed, or (with the "
            "'spawn' start method) a __main__ that cannot be imported again; rerun with --threads 1 "
            "to work in one process and see the cause"
        ) from error
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def configure_logging(verbose: bool = False) -> None:
    """Progress to stderr with timestamps (Snakemake sends stderr to the rule's log)."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        )
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1, with a message that names the bad value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def run_command(command: str, work: Callable[[], object]) -> int:
    """Run one command's work; a FlowerlabError becomes one clear line on stderr and exit 1.

    Expected failures (bad input, offline, corrupt download) are the user's to fix and need a
    sentence, not a traceback; anything else is a bug and keeps its traceback.
    """
    try:
        work()
    except FlowerlabError as error:
        print(f"flowerlab {command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"flowerlab {command}: interrupted", file=sys.stderr)
        return 130
    return 0


@contextlib.contextmanager
def cleanup_on_error(path: Path) -> Iterator[Path]:
    """Yield `path`; delete it (file or folder) if the block raises (including Ctrl-C)."""
    try:
        yield path
    except BaseException:
        remove_path(path)
        raise
