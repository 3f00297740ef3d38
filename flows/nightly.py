"""The nightly flow: claim each complete batch once, run the pipeline on it, archive, mark it done."""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from digitize.audit import AuditLog
from digitize.inbox import BATCH_MANIFEST, DONE_MARKER, BatchState, Claim, parse_manifest, scan_inbox
from digitize.keys import load_record_signer
from digitize.review import REJECTED, REVIEW_ITEM
from digitize.storage import Store, open_store
from pipeline import atomic
from pipeline.batch import BatchReport, process_inputs
from pipeline.errors import DigitizeError
from pipeline.settings import Settings
from pipeline.split import DossierHint


def _transient(task, task_run, state) -> bool:
    """Retry S3, network and timeout failures; never bad input."""
    try:
        state.result()
    except DigitizeError as exc:
        return not exc.permanent
    except Exception:
        return False
    return False


# No result caching: whether a batch is done is the inbox's done marker, not Prefect's memory.
@task(
    retries=3, retry_delay_seconds=[10, 30, 90], retry_condition_fn=_transient,
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
        with tempfile.TemporaryDirectory(prefix="digitize-batch-") as tmp:
            return _process_claimed(prefix, inbox, archive, review, Path(tmp), settings, jobs, audit)
    except Exception as exc:
        audit.record("batch_failed", batch=prefix, error=str(exc))
        raise
    finally:
        claim.release()
        audit.flush()


def _process_claimed(
    prefix: str, inbox: Store, archive: Store, review: Store, tmp: Path, settings: Settings, jobs: int, audit: AuditLog
) -> dict:
    manifest = parse_manifest(inbox.read_bytes(prefix + BATCH_MANIFEST), f"{inbox.url}/{prefix}{BATCH_MANIFEST}")
    audit.record("batch_claimed", batch=prefix, station=manifest.station, files=[f.name for f in manifest.files])
    audit.flush()
    scans = tmp / "scans"
    scans.mkdir()
    inputs, mismatched = [], []
    for listed in manifest.files:
        local = scans / listed.name
        inbox.download(prefix + listed.name, local)
        if local.stat().st_size != listed.bytes or atomic.sha256_file(local) != listed.sha256:
            mismatched.append((local, "checksum does not match batch.json"))
        else:
            inputs.append(local)
    hints: dict[str, list[DossierHint]] = {}
    for hint in manifest.dossiers:
        hints.setdefault(hint.file, []).append(DossierHint(hint.code, hint.first_page, hint.last_page))
    out = tmp / "out"
    signer = load_record_signer(settings, os.environ)
    report = process_inputs(inputs, out, settings, jobs=jobs, hints=hints, signer=signer) if inputs else BatchReport()
    archived = _upload(report, prefix, manifest.scanned_at, archive, review, audit)
    rejected = mismatched + [(r.input, r.reason.removeprefix(f"{r.input}: ")) for r in report.rejected]
    quarantined = _quarantine(rejected, prefix, review)
    for record in quarantined:
        audit.record("input_rejected", batch=prefix, **record)
    done = {
        "batch": prefix, "station": manifest.station, "finished": datetime.now(timezone.utc).isoformat(),
        "objects": archived, "rejected": quarantined,
    }  # fmt: skip
    # The done marker goes last: it is what makes a rerun skip this batch.
    inbox.put_bytes(prefix + DONE_MARKER, json.dumps(done, indent=2, ensure_ascii=False).encode())
    audit.record("batch_done", batch=prefix, dossiers=len(report.documents), rejected=len(quarantined))
    return _summary(prefix, report, archived, quarantined)


def _quarantine(rejected: list[tuple[Path, str]], prefix: str, review: Store) -> list[dict]:
    """A copy of each rejected input and its reason under rejected/ in the review area.

    The original stays in the inbox untouched; the rest of the batch goes on.
    """
    records = []
    for path, reason in rejected:
        key = f"{REJECTED}{prefix}{path.name}"
        review.upload(key, path)
        record = {"input": path.name, "reason": reason, "copy": key, "sha256": atomic.sha256_file(path)}
        review.put_bytes(key + ".reason.json", json.dumps(record, indent=2, ensure_ascii=False).encode())
        records.append(record)
    return records


def _upload(
    report: BatchReport, prefix: str, scanned_at: datetime, archive: Store, review: Store, audit: AuditLog
) -> list[dict]:
    """Clean dossiers to <yyyy>/<mm>/<code>.*, flagged ones to the review area; manifests last,
    and for a review item its _item.json after that, since listing keys on it."""
    uploaded = []
    for doc in report.documents:
        # A dossier code is unique in the province; a file name is not, so uncoded documents
        # stay with their batch.
        archive_folder = f"{scanned_at:%Y}/{scanned_at:%m}/" + ("" if doc.code else f"uncoded/{prefix}")
        if doc.flags:
            folder = doc.manifest.parent
            # Where `digitize review approve` will archive it, decided now as for clean dossiers.
            item = folder / REVIEW_ITEM
            item.write_text(json.dumps({"name": doc.name, "code": doc.code, "batch": prefix, "archive_folder": archive_folder}))
            files = sorted(p for p in folder.iterdir() if p not in (doc.manifest, item)) + [doc.manifest, item]
            keys = [f"{prefix}{doc.name}/{p.name}" for p in files]
            store = review
        else:
            files = [doc.manifest.with_suffix(ext) for ext in (".pdf", ".txt", ".json")]
            keys = [f"{archive_folder}{p.name}" for p in files]
            store = archive
        for path, key in zip(files, keys, strict=True):
            store.upload(key, path)
            uploaded.append({"store": "review" if doc.flags else "archive", "key": key, "sha256": atomic.sha256_file(path)})
        pdf = next((u for u in uploaded[-len(files):] if u["key"].endswith(".pdf")), None)
        details = {"batch": prefix, "dossier": doc.code or doc.name, "pdf": pdf and pdf["key"], "pdf_sha256": pdf and pdf["sha256"]}
        if doc.flags:
            audit.record("dossier_flagged", **details, flags=sorted(doc.flags), review_folder=f"{prefix}{doc.name}/")
        else:
            audit.record("dossier_archived", **details)
    return uploaded


def _summary(prefix: str, report: BatchReport, archived: list[dict], quarantined: list[dict]) -> dict:
    rows = []
    for doc in report.documents:
        key = next((a["key"] for a in archived if a["key"].endswith(f"{doc.name}.pdf")), None)
        rows.append({
            "dossier": doc.code or doc.name, "pages": doc.pages, "flags": ", ".join(doc.flags) or "none",
            "mean OCR confidence": doc.mean_confidence, "output": key,
        })  # fmt: skip
    return {
        "batch": prefix, "state": "done", "documents": rows,
        "pages": sum(d.pages + len(d.removed_blank_pages) for d in report.documents),
        "flags": report.flag_counts(), "rejected": [f"{q['input']}: {q['reason']}" for q in quarantined],
    }  # fmt: skip


# Two batches in flight: one's downloads, uploads and PDF assembly overlap the other's OCR.
# Tesseract stays limited to `jobs` per machine, because both share one page-worker pool.
BATCHES_AT_ONCE = 2


@flow(name="digitize-nightly", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=BATCHES_AT_ONCE))
def nightly(settings: Settings, jobs: int = 2) -> dict:
    """Process every complete batch in the inbox; publish a table per batch and a summary."""
    logger = get_run_logger()
    started = time.monotonic()
    inbox = open_store(settings.service.inbox, os.environ)
    states = scan_inbox(inbox, incomplete_after=timedelta(hours=settings.service.incomplete_after_h))
    ready = [s for s in states if s.state == "ready"]
    logger.info("%d batches ready, %d waiting, %d incomplete", len(ready), *(sum(s.state == k for s in states) for k in ("waiting", "incomplete")))
    # A key that is configured but will not open stops the night here, before any batch is claimed.
    load_record_signer(settings, os.environ)
    audit = AuditLog(open_store(settings.service.archive, os.environ), run=str(flow_run.get_id() or uuid.uuid4()))
    progress = create_progress_artifact(0.0, key="nightly-progress", description="Batches processed tonight")
    results, failures = [], []
    futures = {process_batch.submit(state.prefix, settings, jobs, audit): state for state in ready}
    for number, future in enumerate(as_completed(list(futures)), start=1):
        state = futures[future]
        try:
            result = future.result()
            results.append(result)
            if result["state"] == "done":
                create_table_artifact(result["documents"], key=_artifact_key(state.prefix), description=f"Batch {state.prefix}")
        except DigitizeError as exc:
            failures.append(f"{state.prefix}: {exc}")
            logger.error("batch %s failed: %s", state.prefix, exc)
        update_progress_artifact(progress, 100.0 * number / max(1, len(ready)))
    _apply_retention(inbox, states, settings)
    summary = _night_summary(results, failures, states, time.monotonic() - started)
    create_markdown_artifact(summary, key="nightly-summary", description="Tonight's digitization")
    return {"processed": [r for r in results if r["state"] == "done"], "failures": failures,
            "waiting": [s.prefix for s in states if s.state == "waiting"],
            "incomplete": [s.prefix for s in states if s.state in ("incomplete", "invalid")]}  # fmt: skip


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
        for obj in inbox.list(state.prefix):
            # batch.json and the done marker stay: they are the batch's record of what was received.
            if not obj.key.endswith((BATCH_MANIFEST, DONE_MARKER)):
                inbox.delete(obj.key)


def _artifact_key(prefix: str) -> str:
    # Artifact keys allow lowercase letters, digits and dashes only.
    return "batch-" + "".join(ch if ch.isalnum() else "-" for ch in prefix.lower()).strip("-")


def _night_summary(results: list[dict], failures: list[str], states: list[BatchState], seconds: float) -> str:
    done = [r for r in results if r["state"] == "done"]
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
    waiting = [s for s in states if s.state in ("waiting", "incomplete", "invalid")]
    lines += ["", "## Not processed", "", "| batch | state | why |", "|---|---|---|"]
    lines += [f"| {s.prefix} | {s.state} | {s.detail} |" for s in waiting] or ["| - | - | - |"]
    rejected = [f"{r['batch']}{reason}" for r in done for reason in r["rejected"]]
    if rejected:
        lines += ["", "## Rejected inputs (quarantined under rejected/)", ""] + [f"- {r}" for r in rejected]
    if failures:
        lines += ["", "## Failures", ""] + [f"- {f}" for f in failures]
    return "\n".join(lines) + "\n"


@flow(name="digitize-nightly-scheduled")
def nightly_from_config(config: list[str] | None = None, jobs: int | None = None) -> dict:
    """The scheduled entry point: each worker reads its own config files and environment."""
    from digitize.config import app_settings

    settings = app_settings([Path(p) for p in config or []], os.environ, {})
    return nightly(settings, jobs or os.cpu_count() or 1)
