"""Process pools for the data stages' per-file work (decoding, hashing, resizing photos).

Workers need only Pillow and hashlib; see `start_method` for why they are not forked once
TensorFlow is loaded.
"""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import contextlib
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Iterator

from flowerlab.errors import FlowerlabError


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

