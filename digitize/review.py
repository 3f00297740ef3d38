"""Manual handling: list flagged dossiers, look at them, approve them, or swap in a re-scan."""

from __future__ import annotations

import contextlib
import getpass
import json
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pikepdf

from digitize.storage import Store
from pipeline import atomic
from pipeline.assemble import RecordMetadata, write_record
from pipeline.batch import process_inputs
from pipeline.errors import DigitizeError, InputError
from pipeline.manifest import Signature, dump_manifest, load_manifest
from pipeline.settings import Settings
from pipeline.signing import RecordSigner

REVIEW_ITEM = "_item.json"
ARCHIVED = "_archived.json"
ACTIONS = "actions/"
# Quarantine: copies of inputs that could not be processed, each with its reason.
REJECTED = "rejected/"


class ReviewError(DigitizeError):
    """A review command that cannot be carried out as asked."""

    exit_code = 65


@dataclass(frozen=True)
class ReviewItem:
    prefix: str  # "<station>/<batch>/<name>/" in the review store
    name: str
    code: str | None
    archive_folder: str
    flags: dict[str, list[dict]]
    thumbnails: dict[str, str]
    archived: bool


def list_items(review: Store, *, include_archived: bool = False) -> list[ReviewItem]:
    keys = {o.key for o in review.list()}
    items = []
    for key in sorted(k for k in keys if k.endswith("/" + REVIEW_ITEM)):
        prefix = key[: -len(REVIEW_ITEM)]
        item = json.loads(review.read_bytes(key))
        reasons = json.loads(review.read_bytes(prefix + "reasons.json"))
        archived = prefix + ARCHIVED in keys
        if archived and not include_archived:
            continue
        items.append(ReviewItem(prefix, item["name"], item["code"], item["archive_folder"], reasons["flags"], reasons["thumbnails"], archived))
    return items


def find(review: Store, code: str) -> ReviewItem:
    matches = [i for i in list_items(review, include_archived=True) if code in (i.code, i.name)]
    open_items = [i for i in matches if not i.archived]
    if not matches:
        raise ReviewError(f"{code}: no such dossier in {review.url}")
    if not open_items:
        raise ReviewError(f"{code}: already archived")
    if len(open_items) > 1:
        raise ReviewError(f"{code}: {len(open_items)} open items match; give the full name")
    return open_items[0]


def record_action(review: Store, item: ReviewItem, action: str, *, by: str | None, details: dict) -> dict:
    """Append-only by construction: one object per action, never rewritten."""
    entry = {"action": action, "by": by or getpass.getuser(), "at": datetime.now(timezone.utc).isoformat(), **details}
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    review.put_bytes(f"{item.prefix}{ACTIONS}{stamp}-{action}.json", json.dumps(entry, ensure_ascii=False).encode())
    return entry


def fetch(review: Store, item: ReviewItem, dest: Path) -> list[Path]:
    """Download an item's thumbnails, reasons and PDF into `dest`, for a person to open."""
    dest.mkdir(parents=True, exist_ok=True)
    wanted = ["reasons.json", f"{item.name}.pdf", *item.thumbnails.values()]
    paths = []
    for name in wanted:
        if review.exists(item.prefix + name):
            review.download(item.prefix + name, dest / name)
            paths.append(dest / name)
    return paths


def approve(review: Store, archive: Store, item: ReviewItem, *, by: str | None) -> list[str]:
    """Archive the dossier as it is: PDF, text, then manifest; then mark the item archived.

    An archived record is never overwritten: when another is already archived under this name
    (two dossiers claimed one code, and the other was approved first), this refuses.
    """
    keys = []
    manifest_key = f"{item.archive_folder}{item.name}.json"
    if archive.exists(manifest_key) and archive.read_bytes(manifest_key) != review.read_bytes(f"{item.prefix}{item.name}.json"):
        raise ReviewError(f"{item.name}: {archive.url}/{manifest_key} is another record; an archived record is never overwritten")
    with tempfile.TemporaryDirectory(prefix="digitize-review-") as tmp:
        for ext in (".pdf", ".txt", ".json"):
            local = Path(tmp) / f"{item.name}{ext}"
            review.download(f"{item.prefix}{item.name}{ext}", local)
            key = f"{item.archive_folder}{item.name}{ext}"
            archive.upload(key, local)
            keys.append(key)
    entry = record_action(review, item, "approve", by=by, details={"archived_as": keys})
    review.put_bytes(item.prefix + ARCHIVED, json.dumps(entry, ensure_ascii=False).encode())
    return keys


def replace_pages(
    review: Store, item: ReviewItem, *, pages: list[int], rescan: Path, settings: Settings, by: str | None,
    signer: RecordSigner | None,
) -> dict:
    """Swap dossier pages `pages` (1-based, as in the PDF) for a re-scan, and re-assemble the PDF/A.

    The re-scan goes through the same pipeline (orientation, deskew, OCR); its pages take
    the place of the first replaced page. The previous PDF is kept under previous/.
    """
    with tempfile.TemporaryDirectory(prefix="digitize-replace-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        current, current_txt = work / "current.pdf", work / "current.txt"
        review.download(f"{item.prefix}{item.name}.pdf", current)
        review.download(f"{item.prefix}{item.name}.txt", current_txt)
        manifest_key = f"{item.prefix}{item.name}.json"
        manifest = load_manifest(review.read_bytes(manifest_key), origin=f"{review.url}/{manifest_key}")
        old = stack.enter_context(pikepdf.open(current))
        count = len(old.pages)
        if not pages or any(p < 1 or p > count for p in pages):
            raise ReviewError(f"{item.name}: pages {pages} are not all within 1..{count}")
        report = process_inputs([rescan], work / "rescan", settings, jobs=1, signer=None)
        if report.rejected:
            raise InputError(rescan, report.rejected[0].reason.split(": ", 1)[-1])
        scans = [stack.enter_context(pikepdf.open(d.pdf)) for d in report.documents if d.pdf]
        new_texts = [t for d in report.documents if d.pdf for t in d.manifest.with_suffix(".txt").read_text("utf-8").rstrip("\n").split("\f")]
        old_texts = current_txt.read_text("utf-8").rstrip("\n").split("\f")
        first = min(pages) - 1
        parts = work / "parts"
        parts.mkdir()
        ordered, texts = [], []
        for index in range(first):
            ordered.append(_single(old, index, parts / f"old-{index:04d}.pdf"))
            texts.append(old_texts[index] if index < len(old_texts) else "")
        for n, scan in enumerate(scans):
            ordered += [_single(scan, i, parts / f"new-{n}-{i:04d}.pdf") for i in range(len(scan.pages))]
        texts += new_texts
        for index in range(first, count):
            if index + 1 not in pages:
                ordered.append(_single(old, index, parts / f"old-{index:04d}.pdf"))
                texts.append(old_texts[index] if index < len(old_texts) else "")
        result, result_txt = work / f"{item.name}.pdf", work / f"{item.name}.txt"
        written = write_record(ordered, result, flavour=manifest.output.pdfa, metadata=RecordMetadata(
            title=item.name, created=datetime.now(timezone.utc).replace(microsecond=0),
            agency=settings.output.agency, source_sha256=manifest.source.sha256, dossier_code=item.code,
        ), signer=signer, work=parts)  # fmt: skip
        atomic.write_text(result_txt, "\f".join(texts) + "\n")
        details = {
            "pages_replaced": sorted(pages), "rescan": rescan.name, "rescan_sha256": atomic.sha256_file(rescan),
            "previous_pdf_sha256": manifest.output.pdf_sha256, "pdf_sha256": atomic.sha256_file(result),
        }  # fmt: skip
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        review.upload(f"{item.prefix}previous/{stamp}-{item.name}.pdf", current)
        review.upload(f"{item.prefix}{item.name}.pdf", result)
        review.upload(f"{item.prefix}{item.name}.txt", result_txt)
        entry = record_action(review, item, "replace", by=by, details=details)
        # The manifest keeps the original page records; the replacement says what changed.
        output = manifest.output.model_copy(update={
            "pdf_sha256": details["pdf_sha256"], "pdf_bytes": result.stat().st_size, "text_sha256": atomic.sha256_file(result_txt),
        })  # fmt: skip
        manifest = manifest.model_copy(update={
            "replacements": [*(manifest.replacements or []), entry], "output": output,
            "signature": Signature.model_validate(written.signature) if written.signature else None,
        })  # fmt: skip
        review.put_bytes(manifest_key, dump_manifest(manifest).encode())
        return entry


def _single(pdf: pikepdf.Pdf, index: int, out: Path) -> Path:
    """One page as its own file: the assembler takes page files, as the pipeline writes them."""
    page = pikepdf.new()
    page.pages.append(pdf.pages[index])
    # The old record's signature widget belongs to the old signature, not to the new record.
    if "/Annots" in page.pages[0]:
        del page.pages[0].obj["/Annots"]
    page.save(out)
    return out
