"""One batch as a Prefect flow run of its own (`process-batch`): on the work pool's workers, or
in the night's own process when there is no pool. Either way the same flow does the work."""

# No `from __future__ import annotations`: Prefect ships flows to the run's process by value
# (cloudpickle), where string annotations such as "AppSettings" cannot be resolved.
import contextlib
import fcntl
import os
import socket
import tempfile
import time
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State

from digitize.audit import AuditLog
from digitize.batchjob import run_claimed_batch
from digitize.config import AppSettings
from digitize.inbox import BATCH_MANIFEST, Claim
from digitize.night import BatchOutcome, BatchResult, save_batch_result, table_rows
from digitize.preflight import work_dir
from digitize.storage import open_store
from pipeline.errors import DigitizeError, writing_to

BATCH_FLOW = "process-batch"


def _transient(task, task_run, state) -> bool:
    """Retry S3, network and timeout failures; never bad input."""
    try:
        state.result()
    except DigitizeError as exc:
        return not exc.permanent
    except Exception:
        return False
    return False


# Retry delays are service.retry_delays_s (see _claimed_and_processed); jitter spreads the workers that one
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
@task(retry_condition_fn=_transient, retry_jitter_factor=RETRY_JITTER, task_run_name="claim {prefix}", cache_policy=NO_CACHE)
def claim_batch(prefix: str, settings: AppSettings, run: str) -> tuple[Claim, bool]:
    """The batch's claim, naming this run so the night that dispatched it can tell when it died
    holding it; and whether this run won it."""
    inbox = open_store(settings.service.inbox, os.environ)
    claim = Claim(inbox, prefix, lease_s=settings.service.claim_lease_s, settle_s=settings.service.claim_settle_s, run=run)
    return claim, claim.acquire()


@task(retry_condition_fn=_transient, retry_jitter_factor=RETRY_JITTER, task_run_name="batch {prefix}", cache_policy=NO_CACHE)
def process_batch(prefix: str, station: str, settings: AppSettings, jobs: int, night: str) -> BatchResult:
    """Download, process, upload and verify a claimed batch, then mark it done."""
    started = time.monotonic()
    env = os.environ
    inbox, archive, review = (open_store(url, env) for url in (settings.service.inbox, settings.service.archive, settings.service.review))
    audit = AuditLog(archive, run=night, part=_slug(prefix))
    try:
        if not inbox.exists(prefix + BATCH_MANIFEST):
            # Listed before another night finished it and moved it to the done area.
            return BatchResult(batch=prefix, station=station, outcome=BatchOutcome.DONE_ELSEWHERE)
        folder = work_dir(settings)
        with writing_to(folder or tempfile.gettempdir()):
            scratch = tempfile.TemporaryDirectory(prefix="digitize-batch-", dir=folder)
        with scratch as tmp:
            result = run_claimed_batch(
                prefix, inbox, archive, review, Path(tmp), settings, jobs, audit, on_pages=PageProgress(prefix), ocr_slots=tesseract_slots(jobs),
            )  # fmt: skip
        return result.model_copy(update={"seconds": round(time.monotonic() - started, 1)})
    except Exception as exc:
        audit.record("batch_failed", batch=prefix, error=str(exc))
        raise
    finally:
        audit.flush()


def _claimed_and_processed(prefix: str, station: str, settings: AppSettings, jobs: int, night: str, run: str) -> BatchResult:
    """The batch processed under its claim, which is held across the retries: no other run
    starts the batch while this one waits to try again."""
    delays = settings.service.retry_delays_s
    retrying = {"retries": len(delays), "retry_delay_seconds": delays or 0}
    claim, won = claim_batch.with_options(**retrying)(prefix, settings, run)
    if not won:
        if claim.holder is None:
            return BatchResult(batch=prefix, station=station, outcome=BatchOutcome.DONE_ELSEWHERE)
        get_run_logger().warning("batch %s is %s", prefix, claim.holder)
        return BatchResult(
            batch=prefix, station=station, outcome=BatchOutcome.HELD, detail=str(claim.holder), lease_left_s=claim.holder.lease_left_s,
        )  # fmt: skip
    try:
        return process_batch.with_options(**retrying)(prefix, station, settings, jobs, night)
    finally:
        claim.release()


@flow(name=BATCH_FLOW, flow_run_name="batch {prefix}", log_prints=True)
def process_batch_run(
    prefix: str, station: str, night: str = "", jobs: int | None = None, config: list[str] | None = None, settings: AppSettings | None = None,
) -> State:
    """Process one batch of the inbox, with retries for temporary failures, and say how it went.

    Ends Failed when the batch failed (the dashboard's Retry runs it again), and Completed,
    named by its outcome, otherwise. Its result goes to the archive under the run's id, where
    the night that dispatched it reads it. A deployed run reads this machine's settings
    (`config` files and DIGITIZE_* environment); a night that runs it here passes its own.
    """
    if settings is None:
        from digitize.config import app_settings

        settings = app_settings([Path(p) for p in config or []], os.environ, {})
    jobs = jobs or os.cpu_count() or 1
    run = str(flow_run.get_id() or "")
    try:
        result = _claimed_and_processed(prefix, station, settings, jobs, night or run, run)
    except Exception as exc:  # the night's summary and this run's state say which batch failed and why
        get_run_logger().error("batch %s failed: %s", prefix, exc)
        result = BatchResult.failed(prefix, station, exc)
    result = result.model_copy(update={"run": run})
    if result.outcome in (BatchOutcome.DONE, BatchOutcome.REJECTED):
        create_table_artifact(table_rows(result), key=f"batch-{_slug(prefix)}", description=f"Batch {prefix} from {station}")
    try:
        save_batch_result(open_store(settings.service.archive, os.environ), run, result)
    except DigitizeError as exc:  # the night then goes by this run's state
        get_run_logger().warning("batch %s: result not saved for the night: %s", prefix, exc)
    if result.outcome == BatchOutcome.FAILED:
        return Failed(message=result.detail, data=result)
    return Completed(name=str(result.outcome).capitalize(), message=f"{len(result.dossiers)} dossiers, {result.pages} pages", data=result)


# A run that dies holding Tesseract slots gives them back when its lease runs out unrenewed.
OCR_SLOT_LEASE_S = 60.0  # the least Prefect allows


def tesseract_slots(jobs: int):
    """This machine's share of Tesseract, bounded by Prefect: the global concurrency limit
    `tesseract-<host>` (created at the machine's core count the first time; a supervisor can
    change it on the dashboard's Concurrency page). A batch holds `jobs` slots while its pages
    are processed, so batch runs on one machine never run more Tesseracts than it has cores."""
    name = f"tesseract-{socket.gethostname()}"
    limit = _host_limit(name, os.cpu_count() or 1)
    return lambda: concurrency(name, occupy=min(jobs, limit), lease_duration=OCR_SLOT_LEASE_S, strict=True)


def _host_limit(name: str, default: int) -> int:
    with get_client(sync_client=True) as client, _one_at_a_time_on_this_machine(name):
        try:
            return client.read_global_concurrency_limit_by_name(name).limit
        except ObjectNotFound:
            pass
        with contextlib.suppress(ObjectAlreadyExists):  # another run made it first, unlocked
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=default))
        return client.read_global_concurrency_limit_by_name(name).limit


MACHINE_LOCKS = Path("/run/lock")  # the FHS lock folder: shared by all users, emptied at boot


@contextlib.contextmanager
def _one_at_a_time_on_this_machine(name: str):
    """The batch runs of one machine make its limit in turn. Both would still get it, but the
    Prefect server logs the loser's insert as an error traceback, which alarms whoever reads the
    night's log. The lock file is the machine's, in its lock folder, not in the work folder a
    batch must leave empty; without that folder they go unlocked."""
    try:  # read-only, so the file whichever user made it locks for all
        lock = os.open(MACHINE_LOCKS / f"digitize-{name}.lock", os.O_RDONLY | os.O_CREAT, 0o644)
    except OSError:
        lock = None
    try:
        if lock is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield
    finally:
        if lock is not None:
            os.close(lock)  # which releases it


def _slug(prefix: str) -> str:
    """A batch prefix as lowercase letters, digits and dashes: what artifact keys allow, and safe in an object key."""
    return "".join(ch if ch.isalnum() else "-" for ch in prefix.lower()).strip("-")
