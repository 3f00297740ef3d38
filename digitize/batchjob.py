"""One claimed batch: download and check it against batch.json, run the pipeline, archive, quarantine, mark it done."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from typing import ContextManager
from datetime import datetime, timezone
from pathlib import Path

from digitize.archive import Placement, note_received, place, received
from digitize.audit import AuditLog
from digitize.inbox import BATCH_MANIFEST, DONE_MARKER, parse_manifest
from digitize.keys import load_record_signer
from digitize.night import BatchOutcome, BatchResult, DossierRow
from digitize.review import REJECTED, REVIEW_ITEM
from digitize.storage import Store, key_problem, printable_key
from pipeline import atomic
from pipeline.batch import BatchReport, DocumentRecord, Provenance, process_inputs
from pipeline.errors import InputError
from pipeline.flags import FlagName
from pipeline.manifest import dump_manifest, load_manifest
from pipeline.record import ORIGINAL_SUFFIX
from pipeline.verify import load_trust_roots
from digitize.config import AppSettings
from pipeline.split import DossierHint


def run_claimed_batch(
    prefix: str, inbox: Store, archive: Store, review: Store, tmp: Path, settings: AppSettings, jobs: int, audit: AuditLog,
    *, on_pages: Callable[[int], None] | None = None, ocr_slots: Callable[[], ContextManager] = contextlib.nullcontext,
) -> BatchResult:
    """Archive what can be, quarantine what cannot with its reason, and mark the batch done.

    `ocr_slots` is held while the pages are processed, and only then: this machine's share of
    Tesseract, so one batch's downloads and uploads overlap another's OCR.

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
    provenance = {
        f.name: Provenance(station=manifest.station, operator=manifest.operator, batch=prefix, key=prefix + f.name)
        for f in manifest.files
    }
    with ocr_slots():
        report = (
            process_inputs(
                inputs, out, settings, jobs=jobs, hints=hints, signer=signer, work_dir=tmp, provenance=provenance, on_pages=on_pages,
                input_trust_roots=load_trust_roots(settings.signing.trust_roots),
            )
            if inputs else BatchReport()
        )  # fmt: skip
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
    return _summary(prefix, manifest.station, report, archived, quarantined, already + already_dossiers)


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
    return BatchResult(batch=prefix, station=prefix.split("/", 1)[0], outcome=BatchOutcome.REJECTED, rejected=[f"{BATCH_MANIFEST}: {reason}"])


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
        records = [{"store": a["store"], "key": a["key"]} for a in archived if a["input"] == name and a["key"].endswith(".pdf") and not a["key"].endswith(ORIGINAL_SUFFIX)]
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
            placement = place(archive, archive_folder, doc.name, load_manifest(doc.manifest.read_bytes(), origin=str(doc.manifest)))
            if placement.identical:
                already.append({"input": doc.input.name, "dossier": doc.code or doc.name, "key": placement.existing})
                audit.record("dossier_already_archived", batch=prefix, dossier=doc.code or doc.name, key=placement.existing)
                continue
            if placement.existing:
                name, flags = placement.name, [FlagName.DUPLICATE_CODE]
                folder = _duplicate_item(doc, placement, work)
                manifest_path = folder / f"{name}.json"
        if flags:
            # Where `digitize review approve` will archive it, decided now as for clean dossiers.
            item = folder / REVIEW_ITEM
            item.write_text(json.dumps({"name": name, "code": doc.code, "batch": prefix, "archive_folder": archive_folder}, ensure_ascii=False), "utf-8")
            files = sorted(p for p in folder.iterdir() if p not in (manifest_path, item)) + [manifest_path, item]
            keys = [f"{prefix}{name}/{p.name}" for p in files]
            store = review
        else:
            # A signed input kept beside its record (pipeline/record.py) goes with it, before the manifest.
            files = [doc.manifest.with_suffix(ext) for ext in (".pdf", ".txt", ORIGINAL_SUFFIX, ".json")]
            files = [path for path in files if path.exists() or not path.name.endswith(ORIGINAL_SUFFIX)]
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
    manifest = load_manifest(doc.manifest.read_bytes(), origin=str(doc.manifest))
    evidence = {"code": doc.code, "archived": placement.existing, "written_as": placement.name}
    manifest = manifest.model_copy(update={
        "name": placement.name, "flags": {FlagName.DUPLICATE_CODE: [evidence]},
        "output": manifest.output.model_copy(update={"pdf": f"{placement.name}.pdf", "text": f"{placement.name}.txt"}),
    })  # fmt: skip
    (folder / "reasons.json").write_text(
        json.dumps({"flags": manifest.flags, "thumbnails": {}}, indent=2, ensure_ascii=False), "utf-8"
    )
    (folder / f"{placement.name}.json").write_text(dump_manifest(manifest), "utf-8")
    return folder


def _summary(
    prefix: str, station: str, report: BatchReport, archived: list[dict], quarantined: list[dict], already: list[dict]
) -> BatchResult:
    rows = []
    flags = dict(report.flag_counts())
    for doc in report.documents:
        pdf = next((a for a in archived if a["dossier"] == doc.name and a["key"].endswith(".pdf")), None)
        found = next((a["key"] for a in already if a.get("dossier") == (doc.code or doc.name)), None)
        doc_flags = list(doc.flags)
        if pdf and pdf["store"] == "review" and not doc.flags:
            doc_flags = [FlagName.DUPLICATE_CODE]
            flags[FlagName.DUPLICATE_CODE] = flags.get(FlagName.DUPLICATE_CODE, 0) + 1
        where = f"{pdf['store']}: {pdf['key']}" if pdf else f"already archived: {found}"
        rows.append(DossierRow(dossier=doc.code or doc.name, pages=doc.pages, flags=doc_flags, where=where, mean_ocr_confidence=doc.mean_confidence))
    return BatchResult(
        batch=prefix, station=station, outcome=BatchOutcome.DONE, dossiers=rows,
        pages=sum(d.pages + len(d.removed_blank_pages) for d in report.documents),
        flags=dict(sorted(flags.items())), rejected=[f"{q['input']}: {q['reason']}" for q in quarantined],
        already_archived=[
            f"{a['input']}: same scan as {a['same_as']}, archived then" if "same_as" in a
            else f"{a['input']}: dossier {a['dossier']} is archived as {a['key']} from the same pages"
            for a in already
        ],
    )  # fmt: skip
