"""The nightly flow: the dispatcher of the night's batch runs (flows.dispatch), its summary, and a final state that tells the night's truth."""

# No `from __future__ import annotations` here: Prefect's serve ships these flows to the run's
# process by value (cloudpickle), where string annotations such as "AppSettings" cannot be resolved.
import os
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from digitize.audit import AuditLog
from digitize.config import AppSettings
from digitize.done_area import move_finished, sweep_done_area
from digitize.inbox import BatchState, Readiness, apply_retention, scan_inbox
from digitize.night import BatchOutcome, BatchResult, NightOutcome, NightReport, queue_left, review_queue, save_last_night
from digitize.preflight import check_service
from digitize.storage import open_store
from flows.dispatch import run_batches, run_url
from pipeline.errors import DigitizeError


# Batches run here (no work pool) two at a time: one's downloads, uploads and PDF assembly
# overlap the other's OCR. Tesseract stays bounded by the machine's slots (flows.batch.tesseract_slots).
BATCHES_AT_ONCE = 2
# While other runs hold batches, look again after their lease would run out, within these bounds.
HELD_RECHECK_S = (5.0, 60.0)


@flow(name="digitize-nightly", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=BATCHES_AT_ONCE))
def nightly(settings: AppSettings, jobs: int = 2, wait_for_held: bool = True) -> State:
    """Process every complete batch in the inbox, each as a `process-batch` run; publish the night's summary.

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
    return _final_state(_night(settings, jobs or os.cpu_count() or 1, wait_for_held, config))


def _final_state(report: NightReport) -> State:
    outcome = report.outcome
    if outcome == NightOutcome.FAILED:
        return Failed(message=report.message(), data=report)
    return Completed(name=str(outcome), message=report.message(), data=report)


def _night(settings: AppSettings, jobs: int, wait_for_held: bool, config: list[str] | None = None) -> NightReport:
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
        for result in run_batches(todo, settings, jobs, run_id, config):
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
    create_markdown_artifact(report.markdown(run_url), key="nightly-summary", description="Tonight's digitization")
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
