"""The nightly flow: claim each complete batch once, run the pipeline on it, archive, mark it done."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
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

from digitize.archive import Placement, note_received, place, received
from digitize.audit import AuditLog
from digitize.inbox import BATCH_MANIFEST, DONE_MARKER, BatchState, Claim, parse_manifest, scan_inbox
from digitize.keys import load_record_signer
from digitize.review import REJECTED, REVIEW_ITEM
from digitize.storage import Store, key_problem, open_store, printable_key
from pipeline import atomic
from pipeline.batch import BatchReport, DocumentRecord, process_inputs
from pipeline.errors import DigitizeError, InputError, OutputError, writing_to
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
    """Archive what can be, quarantine what cannot with its reason, and mark the batch done.

    What a records office needs from a batch that is not all there or not all good:
    * a batch.json that cannot be used rejects the batch once (`_reject_batch`);
    * a file that batch.json lists but the inbox still lacks once the batch is older than
      `service.incomplete_after_h` is named in the quarantine and the night's summary, and
      the files that did arrive are archived: their citizens are waiting, and the missing
      scan is dropped again as a batch of its own;
    * an object under the batch whose key is unsafe is refused unread, with its reason;
    * a scan whose content the archive already holds, from any batch, is not archived again
      (digitize.archive), and neither is a dossier already archived from the same pages.
    """
    raw = inbox.read_bytes(prefix + BATCH_MANIFEST)
    try:
        manifest = parse_manifest(raw, f"{inbox.url}/{prefix}{BATCH_MANIFEST}")
    except InputError as exc:
        return _reject_batch(prefix, raw, exc.reason, inbox, review, audit)
    audit.record("batch_claimed", batch=prefix, station=manifest.station, files=[f.name for f in manifest.files])
    audit.flush()
    scans = tmp / "scans"
    scans.mkdir()
    present = {o.key[len(prefix):] for o in inbox.list(prefix)}
    # Each rejection: the name in the batch, the local copy to quarantine (None: there is none), the reason.
    rejected: list[tuple[str, Path | None, str]] = [
        (name, None, f"unsafe object key: {problem}; not read")
        for name in sorted(present) if (problem := key_problem(prefix + name))
    ]  # fmt: skip
    inputs: list[Path] = []
    already: list[dict] = []
    for listed in manifest.files:
        if listed.name not in present:
            hours = settings.service.incomplete_after_h
            reason = f"listed in batch.json but not in the inbox {hours:g} h after the batch arrived (service.incomplete_after_h)"
            rejected.append((listed.name, None, reason))
            continue
        local = scans / listed.name
        inbox.download(prefix + listed.name, local)
        size = local.stat().st_size
        if size != listed.bytes:
            rejected.append((listed.name, local, f"{size} bytes, but batch.json says {listed.bytes}"))
        elif atomic.sha256_file(local) != listed.sha256:
            rejected.append((listed.name, local, "checksum does not match batch.json"))
        elif (first := received(archive, listed.sha256)) is not None:
            already.append({
                "input": listed.name, "sha256": listed.sha256, "same_as": f"{first['batch']}{first['file']}",
                "records": first["records"],
            })  # fmt: skip
        else:
            inputs.append(local)
    hints: dict[str, list[DossierHint]] = {}
    for hint in manifest.dossiers:
        hints.setdefault(hint.file, []).append(DossierHint(hint.code, hint.first_page, hint.last_page))
    out = tmp / "out"
    signer = load_record_signer(settings, os.environ)
    report = process_inputs(inputs, out, settings, jobs=jobs, hints=hints, signer=signer, work_dir=tmp) if inputs else BatchReport()
    archived, already_dossiers = _upload(report, prefix, manifest.scanned_at, archive, review, audit, tmp / "duplicates")
    _note_received(report, manifest, prefix, archived, already_dossiers, archive)
    rejected += [(r.input.name, r.input, r.reason.removeprefix(f"{r.input}: ")) for r in report.rejected]
    quarantined = _quarantine(rejected, prefix, review)
    for record in quarantined:
        audit.record("input_rejected", batch=prefix, **record)
    for record in already:
        audit.record("input_already_archived", batch=prefix, **record)
    done = {
        "batch": prefix, "station": manifest.station, "status": "done", "finished": datetime.now(timezone.utc).isoformat(),
        "objects": archived, "rejected": quarantined, "already_archived": already + already_dossiers,
    }  # fmt: skip
    # The done marker goes last: it is what makes a rerun skip this batch.
    inbox.put_bytes(prefix + DONE_MARKER, json.dumps(done, indent=2, ensure_ascii=False).encode())
    audit.record("batch_done", batch=prefix, dossiers=len(report.documents), rejected=len(quarantined))
    return _summary(prefix, report, archived, quarantined, already + already_dossiers)


def _reject_batch(prefix: str, raw: bytes, reason: str, inbox: Store, review: Store, audit: AuditLog) -> dict:
    """Quarantine a batch whose batch.json cannot be used, once.

    A copy of batch.json and the reason go under rejected/ in the review area, and the done
    marker, saying the batch was rejected, keeps later nights from reporting it again. Nothing
    in the inbox is changed or processed: without a usable batch.json nobody can tell which
    files belong to the batch or whether they arrived whole. The station drops it again, with
    a good batch.json, under another batch name.
    """
    key = f"{REJECTED}{prefix}{BATCH_MANIFEST}"
    review.put_bytes(key, raw)
    record = {"input": BATCH_MANIFEST, "reason": reason, "copy": key, "sha256": hashlib.sha256(raw).hexdigest()}
    review.put_bytes(key + ".reason.json", json.dumps(record, indent=2, ensure_ascii=False).encode())
    audit.record("batch_rejected", batch=prefix, reason=reason)
    done = {
        "batch": prefix, "status": "rejected", "finished": datetime.now(timezone.utc).isoformat(),
        "objects": [], "rejected": [record],
    }  # fmt: skip
    inbox.put_bytes(prefix + DONE_MARKER, json.dumps(done, indent=2, ensure_ascii=False).encode())
    return {
        "batch": prefix, "state": "rejected", "documents": [], "pages": 0, "flags": {},
        "rejected": [f"{BATCH_MANIFEST}: {reason}"], "already_archived": [],
    }  # fmt: skip


def _quarantine(rejected: list[tuple[str, Path | None, str]], prefix: str, review: Store) -> list[dict]:
    """A copy of each rejected input, when there is one, and its reason under rejected/ in the review area.

    The original stays in the inbox untouched; the rest of the batch goes on. An input under
    an unsafe key is recorded under a name made from that key's checksum, since its own cannot be used.
    """
    records = []
    for name, path, reason in rejected:
        if key_problem(prefix + name) is None:
            safe = name
        else:
            safe = f"unsafe-key-{hashlib.sha256(name.encode('utf-8', 'surrogateescape')).hexdigest()[:12]}"
        key = f"{REJECTED}{prefix}{safe}"
        record = {"input": printable_key(name), "reason": reason, "copy": None, "sha256": None}
        if path is not None:
            review.upload(key, path)
            record.update(copy=key, sha256=atomic.sha256_file(path))
        review.put_bytes(key + ".reason.json", json.dumps(record, indent=2, ensure_ascii=False).encode())
        records.append(record)
    return records


def _note_received(
    report: BatchReport, manifest, prefix: str, archived: list[dict], already_dossiers: list[dict], archive: Store
) -> None:
    """Index each scan that became records, once all are uploaded, so a later batch holding it skips it."""
    sha256 = {f.name: f.sha256 for f in manifest.files}
    rejected = {r.input.name for r in report.rejected}
    for name in sorted({doc.input.name for doc in report.documents} - rejected):
        records = [{"store": a["store"], "key": a["key"]} for a in archived if a["input"] == name and a["key"].endswith(".pdf")]
        records += [{"store": "archive", "key": a["key"]} for a in already_dossiers if a["input"] == name]
        note_received(archive, sha256[name], batch=prefix, file=name, records=records)


def _upload(
    report: BatchReport, prefix: str, scanned_at: datetime, archive: Store, review: Store, audit: AuditLog, work: Path
) -> tuple[list[dict], list[dict]]:
    """Clean dossiers to <yyyy>/<mm>/<code>.*, flagged ones to the review area; manifests last,
    and for a review item its _item.json after that, since listing keys on it.

    An archived record is never overwritten (digitize.archive.place): a dossier already
    archived from the same pages of the same scan is not uploaded again, and a different
    dossier under an archived code goes to a person as `<code>-2`, flagged duplicate_code
    with the archived record named, to approve beside the first or not. Returns what was
    uploaded, and the dossiers found already archived.
    """
    uploaded, already = [], []
    for doc in report.documents:
        # A dossier code is unique in the province; a file name is not, so uncoded documents
        # stay with their batch.
        archive_folder = f"{scanned_at:%Y}/{scanned_at:%m}/" + ("" if doc.code else f"uncoded/{prefix}")
        name, flags, folder, manifest_path = doc.name, sorted(doc.flags), doc.manifest.parent, doc.manifest
        if not doc.flags:
            placement = place(archive, archive_folder, doc.name, json.loads(doc.manifest.read_text("utf-8")))
            if placement.identical:
                already.append({"input": doc.input.name, "dossier": doc.code or doc.name, "key": placement.existing})
                audit.record("dossier_already_archived", batch=prefix, dossier=doc.code or doc.name, key=placement.existing)
                continue
            if placement.existing:
                name, flags = placement.name, ["duplicate_code"]
                folder = _duplicate_item(doc, placement, work)
                manifest_path = folder / f"{name}.json"
        if flags:
            # Where `digitize review approve` will archive it, decided now as for clean dossiers.
            item = folder / REVIEW_ITEM
            item.write_text(json.dumps({"name": name, "code": doc.code, "batch": prefix, "archive_folder": archive_folder}))
            files = sorted(p for p in folder.iterdir() if p not in (manifest_path, item)) + [manifest_path, item]
            keys = [f"{prefix}{name}/{p.name}" for p in files]
            store = review
        else:
            files = [doc.manifest.with_suffix(ext) for ext in (".pdf", ".txt", ".json")]
            keys = [f"{archive_folder}{p.name}" for p in files]
            store = archive
        for path, key in zip(files, keys, strict=True):
            store.upload(key, path)
            uploaded.append({
                "store": "review" if flags else "archive", "key": key, "sha256": atomic.sha256_file(path),
                "input": doc.input.name, "dossier": doc.name,
            })  # fmt: skip
        pdf = next((u for u in uploaded[-len(files):] if u["key"].endswith(".pdf")), None)
        details = {"batch": prefix, "dossier": doc.code or doc.name, "pdf": pdf and pdf["key"], "pdf_sha256": pdf and pdf["sha256"]}
        if flags:
            audit.record("dossier_flagged", **details, flags=flags, review_folder=f"{prefix}{name}/")
        else:
            audit.record("dossier_archived", **details)
    return uploaded, already


def _duplicate_item(doc: DocumentRecord, placement: Placement, work: Path) -> Path:
    """A review item for a clean dossier whose code is archived from other pages: the record
    renamed to the free name, flagged duplicate_code with the archived one as evidence."""
    folder = work / placement.name
    folder.mkdir(parents=True)
    for ext in (".pdf", ".txt"):
        shutil.copyfile(doc.manifest.with_suffix(ext), folder / f"{placement.name}{ext}")
    manifest = json.loads(doc.manifest.read_text("utf-8"))
    evidence = {"code": doc.code, "archived": placement.existing, "written_as": placement.name}
    manifest.update(name=placement.name, flags={"duplicate_code": [evidence]})
    manifest["output"].update(pdf=f"{placement.name}.pdf", text=f"{placement.name}.txt")
    (folder / "reasons.json").write_text(
        json.dumps({"flags": manifest["flags"], "thumbnails": {}}, indent=2, ensure_ascii=False), "utf-8"
    )
    (folder / f"{placement.name}.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", "utf-8")
    return folder


def _summary(prefix: str, report: BatchReport, archived: list[dict], quarantined: list[dict], already: list[dict]) -> dict:
    rows = []
    flags = dict(report.flag_counts())
    for doc in report.documents:
        pdf = next((a for a in archived if a["dossier"] == doc.name and a["key"].endswith(".pdf")), None)
        found = next((a["key"] for a in already if a.get("dossier") == (doc.code or doc.name)), None)
        doc_flags = list(doc.flags)
        if pdf and pdf["store"] == "review" and not doc.flags:
            doc_flags = ["duplicate_code"]
            flags["duplicate_code"] = flags.get("duplicate_code", 0) + 1
        rows.append({
            "dossier": doc.code or doc.name, "pages": doc.pages,
            "flags": ", ".join(doc_flags) or ("already archived" if found else "none"),
            "mean OCR confidence": doc.mean_confidence, "output": pdf["key"] if pdf else found,
        })  # fmt: skip
    return {
        "batch": prefix, "state": "done", "documents": rows,
        "pages": sum(d.pages + len(d.removed_blank_pages) for d in report.documents),
        "flags": dict(sorted(flags.items())), "rejected": [f"{q['input']}: {q['reason']}" for q in quarantined],
        "already_archived": [
            f"{a['input']}: same scan as {a['same_as']}, archived then" if "same_as" in a
            else f"{a['input']}: dossier {a['dossier']} is archived as {a['key']} from the same pages"
            for a in already
        ],
    }  # fmt: skip


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
