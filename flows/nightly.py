"""The nightly flow: Prefect wiring around digitize.batchjob, and a final state that tells the night's truth."""

# No `from __future__ import annotations` here: Prefect's serve ships these flows to the run's
# process by value (cloudpickle), where string annotations such as "AppSettings" cannot be resolved.
import os
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from prefect import allow_failure, flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, as_completed
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from digitize.audit import AuditLog
from digitize.done_area import move_finished, sweep_done_area
from digitize.batchjob import run_claimed_batch
from digitize.inbox import BATCH_MANIFEST, BatchState, Claim, Readiness, apply_retention, scan_inbox
from digitize.preflight import check_service, work_dir
from digitize.night import (
    BatchOutcome, BatchResult, NightOutcome, NightReport, queue_left, review_queue, save_last_night, table_rows,
)  # fmt: skip
from digitize.storage import open_store
from pipeline.errors import DigitizeError, writing_to
from digitize.config import AppSettings


def _transient(task, task_run, state) -> bool:
    """Retry S3, network and timeout failures; never bad input."""
    try:
        state.result()
    except DigitizeError as exc:
        return not exc.permanent
    except Exception:
        return False
    return False


# Retry delays are service.retry_delays_s (see nightly); jitter spreads the workers that one
# S3 outage failed at the same moment, so they do not all come back at once.
RETRY_JITTER = 0.5
# How often a batch's progress artifact is updated, at most.
PROGRESS_EVERY_S = 5.0


class PageProgress:
    """A batch's progress artifact on the dashboard, counted in pages (process_inputs' on_pages)."""

    def __init__(self, prefix: str) -> None:
        self.total = self.done = 0
        self._artifact = create_progress_artifact(0.0, description=f"Pages of batch {prefix}")
        self._shown = time.monotonic()

    def __call__(self, count: int) -> None:
        if count == 0:
            self.done += 1
        else:
            self.total += count
        if time.monotonic() - self._shown >= PROGRESS_EVERY_S or self.done == self.total:
            update_progress_artifact(self._artifact, 100.0 * self.done / max(1, self.total))
            self._shown = time.monotonic()


# No result caching: whether a batch is done is the inbox's done marker, not Prefect's memory.
@task(
    retry_condition_fn=_transient, retry_jitter_factor=RETRY_JITTER,
    task_run_name="batch {prefix}", cache_policy=NO_CACHE,
)  # fmt: skip
def process_batch(prefix: str, station: str, settings: AppSettings, jobs: int, run_id: str) -> BatchResult:
    """Claim, download, process, upload and verify, then mark the batch done."""
    started = time.monotonic()
    env = os.environ
    inbox, archive, review = (open_store(url, env) for url in (settings.service.inbox, settings.service.archive, settings.service.review))
    audit = AuditLog(archive, run=run_id, part=_slug(prefix))
    claim = Claim(inbox, prefix, lease_s=settings.service.claim_lease_s, settle_s=settings.service.claim_settle_s)
    if not claim.acquire():
        if claim.holder is None:
            return BatchResult(batch=prefix, station=station, outcome=BatchOutcome.DONE_ELSEWHERE)
        get_run_logger().warning("batch %s is %s", prefix, claim.holder)
        return BatchResult(
            batch=prefix, station=station, outcome=BatchOutcome.HELD, detail=str(claim.holder),
            lease_left_s=claim.holder.lease_left_s,
        )  # fmt: skip
    try:
        if not inbox.exists(prefix + BATCH_MANIFEST):
            # Listed before another night finished it and moved it to the done area.
            return BatchResult(batch=prefix, station=station, outcome=BatchOutcome.DONE_ELSEWHERE)
        folder = work_dir(settings)
        with writing_to(folder or tempfile.gettempdir()):
            scratch = tempfile.TemporaryDirectory(prefix="digitize-batch-", dir=folder)
        with scratch as tmp:
            result = run_claimed_batch(prefix, inbox, archive, review, Path(tmp), settings, jobs, audit, on_pages=PageProgress(prefix))
        return result.model_copy(update={"seconds": round(time.monotonic() - started, 1)})
    except Exception as exc:
        audit.record("batch_failed", batch=prefix, error=str(exc))
        raise
    finally:
        claim.release()
        audit.flush()


# Two batches in flight: one's downloads, uploads and PDF assembly overlap the other's OCR.
# Tesseract stays limited to `jobs` per machine, because both share one page-worker pool.
BATCHES_AT_ONCE = 2
# While other runs hold batches, look again after their lease would run out, within these bounds.
HELD_RECHECK_S = (5.0, 60.0)


@flow(name="digitize-nightly", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=BATCHES_AT_ONCE))
def nightly(settings: AppSettings, jobs: int = 2, wait_for_held: bool = True) -> State:
    """Process every complete batch in the inbox; publish a table per batch and the night's summary.

    The run ends Failed when a batch failed, "Needs attention" when inputs were rejected or
    batches are stuck, "Nothing to do" when no batch was ready, and Completed otherwise; the
    summary is published in every case. With `wait_for_held`, batches that live runs elsewhere
    hold are waited for until they are done or their lease runs out and this run takes them.
    """
    return _final_state(_night(settings, jobs, wait_for_held))


@flow(name="digitize-nightly-scheduled", task_runner=ThreadPoolTaskRunner(max_workers=BATCHES_AT_ONCE))
def nightly_from_config(config: list[str] | None = None, jobs: int | None = None, wait_for_held: bool = True) -> State:
    """The scheduled entry point: each worker reads its own config files and environment."""
    from digitize.config import app_settings

    settings = app_settings([Path(p) for p in config or []], os.environ, {})
    return _final_state(_night(settings, jobs or os.cpu_count() or 1, wait_for_held))


def _final_state(report: NightReport) -> State:
    outcome = report.outcome
    if outcome == NightOutcome.FAILED:
        return Failed(message=report.message(), data=report)
    return Completed(name=str(outcome), message=report.message(), data=report)


def _night(settings: AppSettings, jobs: int, wait_for_held: bool) -> NightReport:
    logger = get_run_logger()
    started_at, started = datetime.now(timezone.utc), time.monotonic()
    try:
        check_service(settings, os.environ)
        inbox, archive, review = (open_store(url, os.environ) for url in (settings.service.inbox, settings.service.archive, settings.service.review))
        incomplete_after = timedelta(hours=settings.service.incomplete_after_h)
        states = scan_inbox(inbox, incomplete_after=incomplete_after)
    except DigitizeError as exc:
        create_markdown_artifact(
            f"# Tonight's digitization: Failed\n\nThe night stopped before any batch was taken up: {exc}\n",
            key="nightly-summary", description="Tonight's digitization",
        )  # fmt: skip
        raise
    run_id = str(flow_run.get_id() or uuid.uuid4())
    audit = AuditLog(archive, run=run_id)
    # Batches finished by earlier nights leave the listing now: old originals first (not worth
    # copying), then the move into the done area, so tomorrow's listing no longer holds them.
    _housekeeping("retention in the inbox", lambda: apply_retention(inbox, states, settings.service.retention_days))
    moves = move_finished(inbox, states)
    todo = [s for s in states if s.takeable]
    logger.info(
        "%d batches to take up, %d waiting, %d incomplete, %d refused", len(todo),
        *(sum(s.state == k for s in states) for k in (Readiness.WAITING, Readiness.INCOMPLETE, Readiness.REFUSED)),
    )  # fmt: skip
    progress = NightProgress(todo)
    results: dict[str, BatchResult] = {}
    give_up_at = time.monotonic() + settings.service.held_wait_max_s
    while todo:
        for result in _run_batches(todo, settings, jobs, run_id):
            results[result.batch] = result
            progress.batch_finished(result)
        held = [r for r in results.values() if r.outcome == BatchOutcome.HELD]
        if not held or not wait_for_held or time.monotonic() >= give_up_at:
            break
        pause = min(max(min(r.lease_left_s or 0 for r in held) + 1, HELD_RECHECK_S[0]), HELD_RECHECK_S[1])
        logger.warning("%d batches held by other runs; looking again in %.0f s", len(held), pause)
        time.sleep(pause)
        now_states = {s.prefix: s for s in scan_inbox(inbox, incomplete_after=incomplete_after)}
        todo = []
        for result in held:
            state = now_states.get(result.batch)
            if state is not None and state.takeable:
                todo.append(state)
            else:
                results[result.batch] = result.model_copy(update={"outcome": BatchOutcome.DONE_ELSEWHERE, "detail": ""})
    _housekeeping("retention in the done area", lambda: sweep_done_area(inbox, settings.service.retention_days))
    now = datetime.now(timezone.utc)
    report = NightReport(
        run=run_id, started=started_at, seconds=round(time.monotonic() - started, 1), batches=list(results.values()),
        moved_to_done=moves.moved, stays_in_inbox=moves.stays,
        queue=queue_left(scan_inbox(inbox, incomplete_after=incomplete_after), now, settings.service.claim_lease_s),
        review=review_queue(review, now),
    )  # fmt: skip
    create_markdown_artifact(report.markdown(), key="nightly-summary", description="Tonight's digitization")
    save_last_night(archive, report)
    audit.record("night_finished", outcome=str(report.outcome), message=report.message())
    audit.flush()
    logger.info("%s: %s", report.outcome, report.message())
    return report


def _housekeeping(what: str, action) -> None:
    """Retention never stops a night: what it could not remove tonight, the next night removes."""
    try:
        action()
    except DigitizeError as exc:
        get_run_logger().warning("%s: %s; the next night tries again", what, exc)


def _run_batches(states: list[BatchState], settings: AppSettings, jobs: int, run_id: str) -> list[BatchResult]:
    """Each batch as a task run tagged with its station; a failed batch becomes a FAILED result."""
    delays = settings.service.retry_delays_s
    batch_task = process_batch.with_options(retries=len(delays), retry_delay_seconds=delays or 0)
    futures: dict[PrefectFuture, BatchState] = {}
    first_with: dict[str, PrefectFuture] = {}
    for state in states:
        checksums = {f.sha256 for f in state.manifest.files} if state.manifest else set()
        # A scan in two batches tonight is archived by the first; the second waits, then finds it archived.
        earlier = {id(f): f for c in checksums if (f := first_with.get(c)) is not None}
        future = batch_task.with_options(tags={f"station:{state.station}"}).submit(
            state.prefix, state.station, settings, jobs, run_id, wait_for=[allow_failure(f) for f in earlier.values()]
        )  # fmt: skip
        futures[future] = state
        for checksum in checksums:
            first_with.setdefault(checksum, future)
    results = []
    for future in as_completed(list(futures)):
        state = futures[future]
        try:
            result = future.result()
        except Exception as exc:  # the night goes on, and its summary says which batch failed and why
            get_run_logger().error("batch %s failed: %s", state.prefix, exc)
            exit_code = exc.exit_code if isinstance(exc, DigitizeError) else DigitizeError.exit_code
            result = BatchResult(
                batch=state.prefix, station=state.station, outcome=BatchOutcome.FAILED, detail=str(exc) or type(exc).__name__,
                exit_code=exit_code,
            )  # fmt: skip
        if result.outcome in (BatchOutcome.DONE, BatchOutcome.REJECTED):
            create_table_artifact(table_rows(result), key=f"batch-{_slug(state.prefix)}", description=f"Batch {state.prefix} from {state.station}")
        results.append(result)
    return results


class NightProgress:
    """The night's progress artifact, in pages: those the stations announced, against those done."""

    def __init__(self, todo: list[BatchState]) -> None:
        # Files whose page count batch.json does not give count as one page until their batch is done.
        self.expected = {s.prefix: sum((f.pages or 1) for f in s.manifest.files) if s.manifest else 1 for s in todo}
        self.done: dict[str, int] = {}
        self._artifact = create_progress_artifact(0.0, key="nightly-progress", description="Pages processed tonight")

    def batch_finished(self, result: BatchResult) -> None:
        self.done[result.batch] = result.pages if result.outcome == BatchOutcome.DONE else self.expected.get(result.batch, 0)
        expected = sum(max(self.expected[p], self.done.get(p, 0)) for p in self.expected)
        update_progress_artifact(self._artifact, 100.0 * sum(self.done.values()) / max(1, expected))


def _slug(prefix: str) -> str:
    """A batch prefix as lowercase letters, digits and dashes: what artifact keys allow, and safe in an object key."""
    return "".join(ch if ch.isalnum() else "-" for ch in prefix.lower()).strip("-")
