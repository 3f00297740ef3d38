"""Scheduling pages on the worker pool: a bounded window of pages in flight, inputs finished in order."""

from __future__ import annotations

import concurrent.futures as cf
import logging
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import DigitizeError, write_error
from pipeline.manifest import Source
from pipeline.ocr import OcrEngine
from pipeline.page import PageResult, process_page
from pipeline.pool import WorkerLost, forget_broken_pool
from pipeline.settings import Settings
from pipeline.sources import PageRef, ScanInput
from pipeline.split import DossierHint

log = logging.getLogger(__name__)

# Pages queued per worker: enough to keep every core busy while documents are written,
# few enough that decoded pages never pile up.
QUEUE_PER_WORKER = 2


@dataclass
class InputJob:
    """One input on its way through the pool: its pages' results as they come, or why it failed."""

    stem: str
    scan: ScanInput
    work: Path
    source: Source
    hints: list[DossierHint]
    engines: dict[int, OcrEngine]  # page index -> the engine that reads it
    results: dict[int, PageResult] = field(default_factory=dict)
    failure: DigitizeError | None = None

    @property
    def finished(self) -> bool:
        return self.failure is not None or len(self.results) == len(self.scan.pages)


def run_pages(
    pool: cf.Executor,
    pending: list[InputJob],
    settings: Settings,
    *,
    jobs: int,
    on_pages: Callable[[int], None] | None,
    on_done: Callable[[InputJob], None],
) -> None:
    """Process every page of `pending` on `pool`, and hand each input to `on_done` in order once finished."""
    tasks: Iterator[tuple[InputJob, PageRef]] = ((job, ref) for job in pending for ref in job.scan.pages)
    in_flight: dict[cf.Future, tuple[InputJob, PageRef]] = {}
    next_to_finish = 0
    window = max(1, jobs) * QUEUE_PER_WORKER

    def top_up() -> None:
        for job, ref in tasks:
            if job.failure is not None:
                continue
            in_flight[pool.submit(process_page, ref, job.work, settings, engine=job.engines[ref.index])] = (job, ref)
            if len(in_flight) >= window:
                return

    top_up()
    try:
        while in_flight:
            done, _ = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
            for future in done:
                job, ref = in_flight.pop(future)
                _collect(job, ref, future, on_pages)
            # Inputs are finished in order, so outputs appear in a predictable sequence.
            while next_to_finish < len(pending) and pending[next_to_finish].finished:
                job = pending[next_to_finish]
                if job.failure is not None and on_pages:
                    on_pages(-(len(job.scan.pages) - len(job.results)))
                on_done(job)
                next_to_finish += 1
            top_up()
    except BaseException:
        # The pool is shared: leave it idle, not busy writing into work folders about to go.
        for future in in_flight:
            future.cancel()
        cf.wait(in_flight)
        raise


def _collect(job: InputJob, ref: PageRef, future: cf.Future, on_pages: Callable[[int], None] | None) -> None:
    if job.failure is not None:
        return
    try:
        job.results[ref.index] = future.result()
    except DigitizeError as exc:
        job.failure = exc
        return
    except BrokenProcessPool:
        # A worker died (killed, out of memory): this input can be retried, with a new pool.
        forget_broken_pool()
        job.failure = WorkerLost(f"a page worker died on page {ref.frame + 1}")
        return
    except Exception as exc:
        # A full or read-only work folder is the disk's fault, not the input's.
        failure = write_error(exc, job.work) if isinstance(exc, OSError) else None
        if failure is None:  # a bug must cost one input, not the night's batch
            log.exception("unexpected error on %s page %d", ref.path, ref.frame + 1)
            failure = DigitizeError(f"internal error on page {ref.frame + 1}: {exc!r}")
        job.failure = failure
        return
    if on_pages:
        on_pages(0)
