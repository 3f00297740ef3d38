"""The page-worker pool: one per process and size, shared by every batch in flight, so Tesseract runs `jobs` at a time."""

from __future__ import annotations

import concurrent.futures as cf
import functools
import multiprocessing
import threading

from pipeline.errors import TransientError


class WorkerLost(TransientError):
    """A worker process died under us; nothing is wrong with the input."""


class InlineExecutor(cf.Executor):
    """One job: run pages in this process. Cheaper than a pool, and faults can be injected.

    The lock keeps it to one page at a time when several batches share it from threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def submit(self, fn, /, *args, **kwargs):  # noqa: D401 - the Executor API
        future: cf.Future = cf.Future()
        with self._lock:
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # handed to the caller through the future
                future.set_exception(exc)
        return future


_POOL_LOCK = threading.Lock()


def page_executor(jobs: int) -> cf.Executor:
    """One pool per process and size, shared by concurrent batches and kept for later ones:
    starting workers costs ~1 s, and sharing keeps Tesseract to `jobs` at a time."""
    with _POOL_LOCK:
        return _make_executor(jobs)


def forget_broken_pool() -> None:
    """A worker died and broke its pool: the next batch, or the retried input, gets a new one."""
    with _POOL_LOCK:
        _make_executor.cache_clear()


@functools.cache
def _make_executor(jobs: int) -> cf.Executor:
    if jobs <= 1:
        return InlineExecutor()
    # forkserver: workers start clean, without the parent's threads or open files. The
    # server imports the page code once, so each worker forks ready instead of importing it.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["pipeline.page"])
    return cf.ProcessPoolExecutor(max_workers=jobs, mp_context=context)
