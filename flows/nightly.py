"""The nightly flow: claim each complete batch once and hand it to digitize.batchjob; artifacts and retention."""

import json
import os
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from prefect import allow_failure, flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from digitize.audit import AuditLog
from digitize.batchjob import run_claimed_batch
from digitize.inbox import BATCH_MANIFEST, DONE_MARKER, BatchState, Claim, scan_inbox
from digitize.keys import load_record_signer
from digitize.storage import Store, key_problem, open_store, printable_key
from pipeline.errors import DigitizeError, OutputError, writing_to
from pipeline.settings import Settings


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


# No result caching: whether a batch is done is the inbox's done marker, not Prefect's memory.
@task(
    retry_condition_fn=_transient, retry_jitter_factor=RETRY_JITTER,
    task_run_name="batch {prefix}", cache_policy=NO_CACHE,
)  # fmt: skip
def process_batch(prefix: str, settings: Settings, jobs: int, audit: AuditLog) -> dict:
    """Claim, download, process, upload and verify, then mark the batch done. Returns its summary."""
    env = os.environ
    inbox, archive, review = (open_store(url, env) for url in (settings.service.inbox, settings.service.archive, settings.service.review))
    claim = Claim(inbox, prefix, lease_s=settings.service.claim_lease_s, settle_s=settings.service.claim_settle_s)
    if not claim.acquire():
        return {"batch": prefix, "state": "claimed elsewhere or done", "documents": [], "pages": 0}
    try:
        work_dir = _work_dir(settings)
        with writing_to(work_dir or tempfile.gettempdir()):
            scratch = tempfile.TemporaryDirectory(prefix="digitize-batch-", dir=work_dir)
        with scratch as tmp:
            return run_claimed_batch(prefix, inbox, archive, review, Path(tmp), settings, jobs, audit)
    except Exception as exc:
        audit.record("batch_failed", batch=prefix, error=str(exc))
        raise
    finally:
        claim.release()
        audit.flush()


# Two batches in flight: one's downloads, uploads and PDF assembly overlap the other's OCR.
# Tesseract stays limited to `jobs` per machine, because both share one page-worker pool.
BATCHES_AT_ONCE = 2


@flow(name="digitize-nightly", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=BATCHES_AT_ONCE))
def nightly(settings: Settings, jobs: int = 2) -> dict:
    """Process every complete batch in the inbox; publish a table per batch and a summary."""
    logger = get_run_logger()
    started = time.monotonic()
    _check_work_dir(settings)
    inbox = open_store(settings.service.inbox, os.environ)
    states = scan_inbox(inbox, incomplete_after=timedelta(hours=settings.service.incomplete_after_h))
    # Complete batches; a bad batch.json, to be quarantined once; and a batch still missing listed
    # files after service.incomplete_after_h, whose files that did arrive are archived.
    ready = [s for s in states if s.state in ("ready", "invalid") or (s.state == "incomplete" and s.manifest is not None)]
    logger.info(
        "%d batches to take up, %d waiting, %d incomplete, %d refused", len(ready),
        *(sum(s.state == k for s in states) for k in ("waiting", "incomplete", "refused")),
    )  # fmt: skip
    # A key that is configured but will not open stops the night here, before any batch is claimed.
    load_record_signer(settings, os.environ)
    audit = AuditLog(open_store(settings.service.archive, os.environ), run=str(flow_run.get_id() or uuid.uuid4()))
    progress = create_progress_artifact(0.0, key="nightly-progress", description="Batches processed tonight")
    results, failures = [], []
    futures, first_with = {}, {}
    delays = settings.service.retry_delays_s
    batch_task = process_batch.with_options(retries=len(delays), retry_delay_seconds=delays or 0)
    for state in ready:
        checksums = {f.sha256 for f in state.manifest.files} if state.manifest else set()
        # A scan in two batches tonight is archived by the first; the second waits, then finds it archived.
        earlier = {id(f): f for c in checksums if (f := first_with.get(c)) is not None}
        future = batch_task.submit(
            state.prefix, settings, jobs, audit, wait_for=[allow_failure(f) for f in earlier.values()]
        )  # fmt: skip
        futures[future] = state
        for checksum in checksums:
            first_with.setdefault(checksum, future)
    for number, future in enumerate(as_completed(list(futures)), start=1):
        state = futures[future]
        try:
            result = future.result()
            results.append(result)
            if result["state"] in ("done", "rejected"):
                create_table_artifact(result["documents"], key=_artifact_key(state.prefix), description=f"Batch {state.prefix}")
        except DigitizeError as exc:
            failures.append(f"{state.prefix}: {exc}")
            logger.error("batch %s failed: %s", state.prefix, exc)
        update_progress_artifact(progress, 100.0 * number / max(1, len(ready)))
    _apply_retention(inbox, states, settings)
    summary = _night_summary(results, failures, states, time.monotonic() - started)
    create_markdown_artifact(summary, key="nightly-summary", description="Tonight's digitization")
    return {"processed": [r for r in results if r["state"] in ("done", "rejected")], "failures": failures,
            "waiting": [s.prefix for s in states if s.state == "waiting"],
            "incomplete": [s.prefix for s in states if s.state == "incomplete" and s.manifest is None],
            "refused": [f"{printable_key(s.prefix)}: {s.detail}" for s in states if s.state == "refused"]}  # fmt: skip


def _work_dir(settings: Settings) -> Path | None:
    """service.work_dir, or None for the system's temporary folder."""
    return Path(settings.service.work_dir) if settings.service.work_dir else None


def _check_work_dir(settings: Settings) -> None:
    """Stop the night before any batch is claimed when the work folder cannot take a file."""
    folder = _work_dir(settings) or Path(tempfile.gettempdir())
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder) as probe:
            probe.write(b"digitize")
            probe.flush()
    except OSError as exc:
        raise OutputError(f"service.work_dir {folder}: cannot write: {exc.strerror or exc}") from None


def _apply_retention(inbox: Store, states: list[BatchState], settings: Settings) -> None:
    """Remove originals of batches done more than `retention_days` ago (0 keeps them for ever)."""
    days = settings.service.retention_days
    if days <= 0:
        return
    cutoff = datetime.now(timezone.utc) - timedelta(days=days)
    for state in states:
        done = inbox.stat(state.prefix + DONE_MARKER) if state.state == "done" else None
        if done is None or done.modified > cutoff:
            continue
        # batch.json and the done marker stay: they are the batch's record of what was received.
        # An object under an unsafe key is left for a person: no key of it may be acted on.
        originals = [
            o for o in inbox.list(state.prefix)
            if not o.key.endswith((BATCH_MANIFEST, DONE_MARKER)) and key_problem(o.key) is None
        ]  # fmt: skip
        # A rejected batch's scans were never archived: they are all there is of them.
        if not originals or json.loads(inbox.read_bytes(state.prefix + DONE_MARKER)).get("status") == "rejected":
            continue
        for obj in originals:
            inbox.delete(obj.key)


def _artifact_key(prefix: str) -> str:
    # Artifact keys allow lowercase letters, digits and dashes only.
    return "batch-" + "".join(ch if ch.isalnum() else "-" for ch in prefix.lower()).strip("-")


def _night_summary(results: list[dict], failures: list[str], states: list[BatchState], seconds: float) -> str:
    done = [r for r in results if r["state"] == "done"]
    handled = [r for r in results if r["state"] in ("done", "rejected")]
    pages = sum(r["pages"] for r in done)
    flags: dict[str, int] = {}
    for r in done:
        for flag, n in r["flags"].items():
            flags[flag] = flags.get(flag, 0) + n
    lines = [
        "# Tonight's digitization", "",
        f"- batches processed: **{len(done)}**, pages: **{pages}**, pages per hour: **{pages / max(seconds, 1e-9) * 3600:.0f}**",
        f"- dossiers: **{sum(len(r['documents']) for r in done)}**",
        f"- failures: **{len(failures)}**",
    ]  # fmt: skip
    lines += ["", "## Flagged for manual handling", "", "| reason | dossiers |", "|---|---|"]
    lines += [f"| {flag} | {n} |" for flag, n in sorted(flags.items())] or ["| none | 0 |"]
    waiting = [s for s in states if s.state in ("waiting", "refused") or (s.state == "incomplete" and s.manifest is None)]
    lines += ["", "## Not processed", "", "| batch | state | why |", "|---|---|---|"]
    lines += [f"| {printable_key(s.prefix)} | {s.state} | {s.detail} |" for s in waiting] or ["| - | - | - |"]
    rejected = [f"{r['batch']}{reason}" for r in handled for reason in r["rejected"]]
    if rejected:
        lines += ["", "## Rejected inputs (quarantined under rejected/)", ""] + [f"- {r}" for r in rejected]
    already = [f"{r['batch']}{line}" for r in done for line in r.get("already_archived", [])]
    if already:
        lines += ["", "## Already archived (not archived again)", ""] + [f"- {a}" for a in already]
    if failures:
        lines += ["", "## Failures", ""] + [f"- {f}" for f in failures]
    return "\n".join(lines) + "\n"


@flow(name="digitize-nightly-scheduled")
def nightly_from_config(config: list[str] | None = None, jobs: int | None = None) -> dict:
    """The scheduled entry point: each worker reads its own config files and environment."""
    from digitize.config import app_settings

    settings = app_settings([Path(p) for p in config or []], os.environ, {})
    return nightly(settings, jobs or os.cpu_count() or 1)
