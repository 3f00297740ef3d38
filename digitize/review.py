"""Manual handling: list flagged dossiers, look at them, approve them, or swap in a re-scan."""

from __future__ import annotations

import contextlib
import getpass
import json
import re
import secrets
import tempfile
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pikepdf

from digitize.audit import AuditLog
from digitize.inbox import BATCH_MANIFEST, REQUESTS, SCHEMA
from digitize.storage import Store, check_key, key_problem, printable_key
from pipeline import atomic
from pipeline.paper import MM_PER_POINT
from pipeline.assemble import RecordMetadata, write_record
from pipeline.batch import process_inputs
from pipeline.errors import DigitizeError, ExitCode, InputError
from pipeline.documents import PageFacts, dossier_metadata, read_documents
from pipeline.manifest import Receipt, RecordManifest, dump_manifest, load_manifest
from pipeline.record import ORIGINAL_SUFFIX
from pipeline.settings import Settings
from pipeline.signing import RecordSigner

REVIEW_ITEM = "_item.json"
ARCHIVED = "_archived.json"
ACTIONS = "actions/"
# Quarantine: copies of inputs that could not be processed, each with its reason.
REJECTED = "rejected/"
# Quarantined inputs a person discarded: kept, never deleted, with who and why.
REJECTED_KEPT = "rejected-kept/"
# Beside a quarantined input once a person has dealt with it: given another try, or put away.
RELEASED = ".released.json"
DISCARDED = ".discarded.json"
QUARANTINE_ACTIONS = "rejected-actions/"


class ReviewError(DigitizeError):
    """A review command that cannot be carried out as asked."""

    exit_code = ExitCode.DATAERR


@dataclass(frozen=True)
class ReviewItem:
    prefix: str  # "<station>/<batch>/<name>/" in the review store
    name: str
    code: str | None
    archive_folder: str
    flags: dict[str, list[dict]]
    thumbnails: dict[str, str]
    archived: bool
    archive_as: str | None = None  # the code a person set for it, when they did
    batch: str = ""  # "<station>/<batch>/"
    resolved: tuple[dict, ...] = ()  # flags a replacement or split took away, with the action

    @property
    def archive_name(self) -> str:
        """The record's name in the archive: the code a person set, or the item's name."""
        return self.archive_as or self.name

    @property
    def station(self) -> str:
        return self.prefix.split("/", 1)[0]


def list_items(review: Store, *, include_archived: bool = False, where: Callable[[str], bool] | None = None) -> list[ReviewItem]:
    """The review area's items (open ones unless `include_archived`; those whose prefix passes
    `where` when given), from one listing. Only the items returned are read: the archived ones
    that pile up over the years cost their keys in the listing, never two downloads each."""
    keys = {o.key for o in review.list()}
    items = []
    for key in sorted(k for k in keys if k.endswith("/" + REVIEW_ITEM)):
        prefix = key[: -len(REVIEW_ITEM)]
        archived = prefix + ARCHIVED in keys
        if (archived and not include_archived) or (where is not None and not where(prefix)):
            continue
        item = json.loads(review.read_bytes(key))
        reasons = json.loads(review.read_bytes(prefix + "reasons.json"))
        items.append(ReviewItem(
            prefix, item["name"], item["code"], item["archive_folder"], reasons["flags"], reasons["thumbnails"], archived,
            archive_as=item.get("archive_name"), batch=prefix.rsplit("/", 2)[0] + "/",
            resolved=tuple(reasons.get("resolved", [])),
        ))  # fmt: skip
    return items


def find(review: Store, code: str) -> ReviewItem:
    """The open item named `code`: its dossier code, its name, or, when names clash, `<station>/<batch>/<name>`."""
    full = code.strip("/") + "/"

    def named(item: ReviewItem) -> bool:
        return code in (item.code, item.name) or item.prefix == full

    open_items = [i for i in list_items(review) if named(i)]
    if not open_items:  # only now are the archived items read, to say which mistake it was
        if any(named(i) for i in list_items(review, include_archived=True)):
            raise ReviewError(f"{code}: already archived")
        raise ReviewError(f"{code}: no such dossier in {review.url}")
    if len(open_items) > 1:
        names = ", ".join(i.prefix.rstrip("/") for i in open_items)
        raise ReviewError(f"{code}: {len(open_items)} open items match ({names}); give the full <station>/<batch>/<name>")
    return open_items[0]


def item_at(review: Store, prefix: str, *, include_archived: bool = True) -> ReviewItem:
    """The item whose folder is `prefix`, found by listing: a prefix from a browser never becomes a path."""
    for item in list_items(review, include_archived=include_archived, where=prefix.__eq__):
        return item
    raise ReviewError(f"{printable_key(prefix)}: no such item in {review.url}")


def record_action(
    review: Store, item: ReviewItem, action: str, *, by: str | None, details: dict, audit: Store | None = None
) -> dict:
    """Append-only by construction: one object per action, never rewritten.

    The entry also goes into the dossier's manifest (`review`), and, given the archive as
    `audit`, into the audit log there, so who did what stays with the record.
    """
    entry = {"action": action, "by": by or getpass.getuser(), "at": datetime.now(timezone.utc).isoformat(), **details}
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    review.put_bytes(f"{item.prefix}{ACTIONS}{stamp}-{action}.json", json.dumps(entry, ensure_ascii=False).encode())
    manifest_key = f"{item.prefix}{item.name}.json"
    if review.exists(manifest_key):
        manifest = _read_manifest(review, manifest_key)
        manifest.setdefault("review", []).append(entry)
        _write_manifest(review, manifest_key, manifest)
    if audit is not None:
        _audit(audit, f"review_{action}", by=entry["by"], item=item.prefix, dossier=item.code or item.name, **details)
    return entry


def _read_manifest(review: Store, key: str) -> dict:
    """A dossier's manifest, checked against the record schema, as JSON data for an action to edit."""
    return _manifest_data(review.read_bytes(key), origin=f"{review.url}/{key}")


def _manifest_data(data: bytes, *, origin: str) -> dict:
    return json.loads(dump_manifest(load_manifest(data, origin=origin)))


def _write_manifest(review: Store, key: str, manifest: dict) -> None:
    """Store an edited manifest only if it is still a record manifest (pipeline.manifest), written as records are."""
    review.put_bytes(key, dump_manifest(RecordManifest.model_validate(manifest)).encode())


def _audit(archive: Store, event: str, *, by: str, **details: object) -> None:
    log = AuditLog(archive, run=f"review-{datetime.now(timezone.utc):%H%M%S%f}-{secrets.token_hex(3)}")
    log.record(event, by=by, **details)
    log.flush()


def list_actions(review: Store, *, by: str | None = None) -> list[dict]:
    """Every recorded action, newest first, with the item it was taken on; only `by`'s when given."""
    entries = []
    for obj in review.list():
        if f"/{ACTIONS}" in obj.key and obj.key.endswith(".json"):
            entry = json.loads(review.read_bytes(obj.key))
            if by is None or entry.get("by") == by:
                entries.append({"item": obj.key.split(f"/{ACTIONS}")[0], **entry})
        elif obj.key.startswith(QUARANTINE_ACTIONS) and obj.key.endswith(".json"):
            entry = json.loads(review.read_bytes(obj.key))
            if by is None or entry.get("by") == by:
                entries.append(entry)
    return sorted(entries, key=lambda e: e.get("at", ""), reverse=True)


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


def approve(review: Store, archive: Store, item: ReviewItem, *, by: str | None, note: str = "") -> list[str]:
    """Archive the dossier as it is: PDF, text, then manifest; then mark the item archived.

    The PDF was signed when the night made it (or when a page was replaced); it is archived unchanged.
    An archived record is never overwritten: when another is already archived under this name
    (two dossiers claimed one code, and the other was approved first), this refuses.
    """
    if item.archived:
        raise ReviewError(f"{item.name}: already archived")
    name = item.archive_name
    manifest_key = f"{item.archive_folder}{name}.json"
    if archive.exists(manifest_key) and archive.read_bytes(manifest_key) != review.read_bytes(f"{item.prefix}{item.name}.json"):
        raise ReviewError(f"{name}: {archive.url}/{manifest_key} is another record; an archived record is never overwritten")
    current = _read_manifest(review, f"{item.prefix}{item.name}.json")
    # A signed input kept beside its record goes to the archive with it, before the manifest that names it.
    original = current.get("original")
    exts = (".pdf", ".txt", *((ORIGINAL_SUFFIX,) if original else ()), ".json")
    keys = [f"{item.archive_folder}{name}{ext}" for ext in exts]
    with tempfile.TemporaryDirectory(prefix="digitize-review-") as tmp:
        local = {ext: Path(tmp) / f"{item.name}{ext}" for ext in exts}
        for ext in (".pdf", ".txt"):
            review.download(f"{item.prefix}{item.name}{ext}", local[ext])
        # Only a whole record is archived: the PDF and text its manifest names, not a half-replaced one.
        output = current["output"]
        if atomic.sha256_file(local[".pdf"]) != output["pdf_sha256"] or atomic.sha256_file(local[".txt"]) != output["text_sha256"]:
            raise ReviewError(f"{item.name}: its PDF or text does not match its manifest (being changed?); try again")
        if original:
            review.download(f"{item.prefix}{original['file']}", local[ORIGINAL_SUFFIX])
            if atomic.sha256_file(local[ORIGINAL_SUFFIX]) != original["sha256"]:
                raise ReviewError(f"{item.name}: its kept original {original['file']} does not match its manifest's checksum")
        # Recorded before the manifest is copied, so the archived manifest carries who approved it and when.
        entry = record_action(review, item, "approve", by=by, details={"archived_as": keys, "note": note}, audit=archive)
        review.download(f"{item.prefix}{item.name}.json", local[".json"])
        for ext, key in zip(local, keys, strict=True):
            archive.upload(key, local[ext])
    review.put_bytes(item.prefix + ARCHIVED, json.dumps(entry, ensure_ascii=False).encode())
    return keys


def dossier_page(manifest: dict, evidence: dict) -> int | None:
    """The 1-based page of the dossier PDF that `evidence` is about, or None when it is about no one page.

    The night's evidence names the page of the source scan (`page`, 0-based); after a person
    replaced or split pages it names the dossier page itself (`dossier_page`).
    """
    if isinstance(evidence.get("dossier_page"), int):
        return evidence["dossier_page"]
    if not isinstance(evidence.get("page"), int):
        return None
    pages = manifest.get("document", {}).get("source_pages", [])
    return pages.index(evidence["page"]) + 1 if evidence["page"] in pages else evidence["page"] + 1


def _renumbered(manifest: dict, flags: dict[str, list[dict]], moves: dict[int, int | None]) -> tuple[dict, list[str]]:
    """Flags whose pages moved (old 1-based page -> new one, None: gone); returns them and the flags that went."""
    kept: dict[str, list[dict]] = {}
    for flag, evidence in flags.items():
        for ev in evidence:
            page = dossier_page(manifest, ev)
            if page is None:
                kept.setdefault(flag, []).append(ev)
            elif moves.get(page) is not None:
                kept.setdefault(flag, []).append({**{k: v for k, v in ev.items() if k != "page"}, "dossier_page": moves[page]})
    return kept, sorted(set(flags) - set(kept))


def _write_reasons(review: Store, item: ReviewItem, flags: dict, *, resolved: list[str], entry: dict | None, thick_after: int | None, settings: Settings) -> None:
    reasons = json.loads(review.read_bytes(item.prefix + "reasons.json")) if review.exists(item.prefix + "reasons.json") else {}
    if thick_after is not None and "thick_record" in flags and thick_after <= settings.triage.thick_record_pages:
        flags = {k: v for k, v in flags.items() if k != "thick_record"}
        resolved = [*resolved, "thick_record"]
    gone = list(reasons.get("resolved", [])) + [{"flag": f, "by": entry} for f in resolved if entry]
    reasons.update(flags=dict(sorted(flags.items())), resolved=gone)
    # Old thumbnails show pages that may be gone; the station renders pages from the PDF itself.
    reasons["thumbnails"] = {}
    review.put_bytes(item.prefix + "reasons.json", json.dumps(reasons, indent=2, ensure_ascii=False).encode())


@dataclass(frozen=True)
class _Dossier:
    pdf: Path
    texts: list[str]
    manifest: dict
    count: int


def _open_dossier(review: Store, item: ReviewItem, work: Path, stack: contextlib.ExitStack) -> tuple[pikepdf.Pdf, _Dossier]:
    current, current_txt = work / "current.pdf", work / "current.txt"
    review.download(f"{item.prefix}{item.name}.pdf", current)
    review.download(f"{item.prefix}{item.name}.txt", current_txt)
    manifest = _read_manifest(review, f"{item.prefix}{item.name}.json")
    pdf = stack.enter_context(pikepdf.open(current))
    texts = current_txt.read_text("utf-8").rstrip("\n").split("\f")
    texts += [""] * (len(pdf.pages) - len(texts))
    return pdf, _Dossier(current, texts, manifest, len(pdf.pages))


def _assemble(
    pages: list[Path], texts: list[str], out: Path, *, manifest: dict, name: str, code: str | None, settings: Settings,
    signer: RecordSigner | None, work: Path, sources: Sequence[int] = (),
) -> tuple[Path, Path, object]:
    """Assemble and sign a changed dossier; its component documents are read again, since its pages changed.

    `sources` are the source scan's page indexes of `pages`, when every page still has one (none after a re-scan).
    """
    result, result_txt = out / f"{name}.pdf", out / f"{name}.txt"
    documents = read_documents(
        [PageFacts(text=text, size_mm=_size_mm(page)) for page, text in zip(pages, texts, strict=True)],
        source_pages=sources if len(sources) == len(pages) else [],
    )
    receipt = Receipt.model_validate(manifest["receipt"]) if manifest.get("receipt") else None
    dossier = dossier_metadata(
        documents, code=code, pages=len(pages), agency=settings.output.agency, records=settings.records, receipt=receipt
    )
    manifest["documents"] = [document.model_dump(mode="json") for document in documents]
    manifest["dossier"] = dossier.model_dump(mode="json")
    written = write_record(pages, result, flavour=manifest["output"]["pdfa"], metadata=RecordMetadata(
        title=name, created=datetime.now(timezone.utc).replace(microsecond=0),
        agency=settings.output.agency, source_sha256=manifest["source"]["sha256"], dossier_code=code,
        outline=tuple((document.title, document.first_page) for document in documents),
    ), signer=signer, work=work)  # fmt: skip
    atomic.write_text(result_txt, "\f".join(texts) + "\n")
    return result, result_txt, written


def _size_mm(page_pdf: Path) -> tuple[float, float]:
    with pikepdf.open(page_pdf) as pdf:
        box = pdf.pages[0].mediabox
        return (float(box[2] - box[0]) * MM_PER_POINT, float(box[3] - box[1]) * MM_PER_POINT)


def _store_dossier(review: Store, prefix: str, name: str, manifest: dict, result: Path, result_txt: Path, written, *, previous: Path | None) -> None:
    """Upload a re-assembled dossier, the earlier PDF kept under previous/, the manifest last."""
    if previous is not None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        review.upload(f"{prefix}previous/{stamp}-{name}.pdf", previous)
    review.upload(f"{prefix}{name}.pdf", result)
    review.upload(f"{prefix}{name}.txt", result_txt)
    with pikepdf.open(result) as pdf:
        count = len(pdf.pages)
    manifest["output"].update(
        pdf=f"{name}.pdf", text=f"{name}.txt", pdf_sha256=atomic.sha256_file(result), pdf_bytes=result.stat().st_size,
        text_sha256=atomic.sha256_file(result_txt), pages=count,
    )  # fmt: skip
    manifest["signature"] = written.signature
    _write_manifest(review, f"{prefix}{name}.json", manifest)


def replace_pages(
    review: Store, item: ReviewItem, *, pages: list[int], rescan: Path, settings: Settings, by: str | None,
    signer: RecordSigner | None, note: str = "", audit: Store | None = None, insert: bool = False,
) -> dict:
    """Swap dossier pages `pages` (1-based, as in the PDF) for a re-scan, and re-assemble the PDF/A.

    The re-scan goes through the same pipeline (orientation, deskew, OCR); its pages take
    the place of the first replaced page (with `insert`, they go before page `pages[0]` and
    nothing is taken out). The previous PDF is kept under previous/. The replaced pages' flags
    are resolved; the re-scan's own flags, if any, are open on its pages.
    """
    _open_only(item)
    with tempfile.TemporaryDirectory(prefix="digitize-replace-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        old, current = _open_dossier(review, item, work, stack)
        count, manifest = current.count, current.manifest
        limit = count + 1 if insert else count
        if not pages or any(p < 1 or p > limit for p in pages) or (insert and len(pages) != 1):
            what = "one page number" if insert else "pages"
            raise ReviewError(f"{item.name}: {what} {pages} not within 1..{limit}")
        report = process_inputs([rescan], work / "rescan", settings, jobs=1, signer=None)
        if report.rejected:
            raise InputError(rescan, report.rejected[0].reason.split(": ", 1)[-1])
        docs = [d for d in report.documents if d.pdf]
        scans = [stack.enter_context(pikepdf.open(d.pdf)) for d in docs]
        new_texts = [t for d in docs for t in d.manifest.with_suffix(".txt").read_text("utf-8").rstrip("\n").split("\f")]
        removed = set() if insert else set(pages)
        first = min(pages) - 1
        parts = work / "parts"
        parts.mkdir()
        ordered, texts, moves = [], [], {}
        for index in range(first):
            ordered.append(_single(old, index, parts / f"old-{index:04d}.pdf"))
            texts.append(current.texts[index])
            moves[index + 1] = len(ordered)
        new_flags: dict[str, list[dict]] = {}
        for n, (doc, scan) in enumerate(zip(docs, scans, strict=True)):
            scan_manifest = _manifest_data(doc.manifest.read_bytes(), origin=str(doc.manifest))
            offset = len(ordered)
            for flag, evidence in scan_manifest.get("flags", {}).items():
                for ev in evidence:
                    page = dossier_page(scan_manifest, ev)
                    shown = {k: v for k, v in ev.items() if k != "page"}
                    new_flags.setdefault(flag, []).append({**shown, **({"dossier_page": offset + page} if page else {}), "rescan": rescan.name})
            ordered += [_single(scan, i, parts / f"new-{n}-{i:04d}.pdf") for i in range(len(scan.pages))]
        texts += new_texts
        for index in range(first, count):
            if index + 1 not in removed:
                ordered.append(_single(old, index, parts / f"old-{index:04d}.pdf"))
                texts.append(current.texts[index])
                moves[index + 1] = len(ordered)
        result, result_txt, written = _assemble(
            ordered, texts, work, manifest=manifest, name=item.name, code=item.code, settings=settings, signer=signer, work=parts
        )
        details = {
            "pages_inserted_before" if insert else "pages_replaced": sorted(pages), "rescan": rescan.name,
            "rescan_sha256": atomic.sha256_file(rescan), "previous_pdf_sha256": manifest["output"]["pdf_sha256"],
            "pdf_sha256": atomic.sha256_file(result), "note": note,
        }  # fmt: skip
        # The manifest keeps the original page records; the replacement says what changed.
        entry = {"action": "insert" if insert else "replace", "by": by or getpass.getuser(), "at": datetime.now(timezone.utc).isoformat(), **details}
        manifest.setdefault("replacements", []).append(entry)
        _store_dossier(review, item.prefix, item.name, manifest, result, result_txt, written, previous=current.pdf)
        entry = record_action(review, item, "insert" if insert else "replace", by=by, details=details, audit=audit)
        kept, gone = _renumbered(manifest, item.flags, moves)
        for flag, evidence in new_flags.items():
            kept.setdefault(flag, []).extend(evidence)
        _write_reasons(review, item, kept, resolved=[f for f in gone if f not in kept], entry=entry, thick_after=len(ordered), settings=settings)
        return entry


NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}$")


def _open_only(item: ReviewItem) -> None:
    """An archived dossier is the archive's now: changing its review copy would change nothing there."""
    if item.archived:
        raise ReviewError(f"{item.prefix.rstrip('/')}: already archived")


def split_item(
    review: Store, item: ReviewItem, *, at: int, new_name: str, settings: Settings, by: str | None,
    signer: RecordSigner | None, note: str = "", audit: Store | None = None,
) -> ReviewItem:
    """Cut a dossier in two before page `at` (1-based): pages `at`.. become a new item `new_name` in the same batch.

    For a wrong split at night: both parts are re-assembled (and signed) and each keeps the
    flags of its own pages. The new item is uncoded until a person sets its code.
    """
    _open_only(item)
    if not NAME.fullmatch(new_name) or key_problem(f"{item.batch}{new_name}/") is not None:
        raise ReviewError(f"{new_name!r}: a dossier name is letters, digits, '.', '_' and '-'")
    if list_items(review, include_archived=True, where=f"{item.batch}{new_name}/".__eq__):
        raise ReviewError(f"{new_name}: the batch {item.batch} already has an item of that name")
    with tempfile.TemporaryDirectory(prefix="digitize-split-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        old, current = _open_dossier(review, item, work, stack)
        if not 2 <= at <= current.count:
            raise ReviewError(f"{item.name}: a split must leave pages on both sides: page 2..{current.count}, not {at}")
        parts = work / "parts"
        parts.mkdir()
        singles = [_single(old, i, parts / f"old-{i:04d}.pdf") for i in range(current.count)]
        manifest = current.manifest
        # Flags are renumbered against the manifest as it was, before source_pages changes below.
        moves_a = {p: p for p in range(1, at)}
        moves_b = {p: p - at + 1 for p in range(at, current.count + 1)}
        flags_b, _ = _renumbered(manifest, item.flags, moves_b)
        kept, gone = _renumbered(manifest, item.flags, moves_a)
        sources = manifest.get("document", {}).get("source_pages", [])
        second = json.loads(json.dumps(manifest))
        second.update(name=new_name, code=None)
        if len(sources) == current.count:
            manifest["document"]["source_pages"], second["document"]["source_pages"] = sources[: at - 1], sources[at - 1 :]
        (work / "a").mkdir()
        (work / "b").mkdir()
        first = _assemble(singles[: at - 1], current.texts[: at - 1], work / "a", manifest=manifest, name=item.name,
                          code=item.code, settings=settings, signer=signer, work=parts,
                          sources=manifest["document"]["source_pages"])  # fmt: skip
        other = _assemble(singles[at - 1 :], current.texts[at - 1 :], work / "b", manifest=second, name=new_name,
                          code=None, settings=settings, signer=signer, work=parts,
                          sources=second["document"]["source_pages"])  # fmt: skip
        details = {"at_page": at, "new_item": f"{item.batch}{new_name}", "pages_moved": current.count - at + 1, "note": note}
        prefix = f"{item.batch}{new_name}/"
        entry = {"action": "split", "by": by or getpass.getuser(), "at": datetime.now(timezone.utc).isoformat(), **details}
        second["split_from"] = {"item": item.prefix, **entry}
        _store_dossier(review, prefix, new_name, second, *other, previous=None)
        flags_b.pop("thick_record", None)
        review.put_bytes(prefix + "reasons.json", json.dumps({"code": None, "flags": flags_b or {"split_by_person": [{"from": item.prefix}]}, "thumbnails": {}}, indent=2, ensure_ascii=False).encode())
        uncoded = item.archive_folder.split("/", 2)
        archive_folder = f"{uncoded[0]}/{uncoded[1]}/uncoded/{item.batch}"
        review.put_bytes(prefix + REVIEW_ITEM, json.dumps({"name": new_name, "code": None, "batch": item.batch, "archive_folder": archive_folder}, ensure_ascii=False).encode())
        _store_dossier(review, item.prefix, item.name, manifest, *first, previous=current.pdf)
        entry = record_action(review, item, "split", by=by, details=details, audit=audit)
        _write_reasons(review, item, kept, resolved=gone, entry=entry, thick_after=at - 1, settings=settings)
        new_item = item_at(review, prefix)
        record_action(review, new_item, "split_off", by=by, details={"from": item.prefix, "at_page": at, "note": note}, audit=None)
        return new_item


def move_pages(
    review: Store, source: ReviewItem, target: ReviewItem, *, pages: list[int], settings: Settings, by: str | None,
    signer: RecordSigner | None, note: str = "", audit: Store | None = None,
) -> dict:
    """Move dossier pages `pages` (1-based) of `source` to the end of `target`: for pages the night split wrongly.

    Both dossiers are re-assembled (and signed), each earlier PDF kept under previous/. The pages'
    texts and flag evidence go with them; the target is stored first, so a failure in between
    leaves the pages in both dossiers, never in neither.
    """
    # Read again from this store: both must be its items, and open now, not when the page was drawn.
    source, target = item_at(review, source.prefix), item_at(review, target.prefix)
    _open_only(source)
    _open_only(target)
    if source.prefix == target.prefix:
        raise ReviewError(f"{source.prefix.rstrip('/')}: the target is the same dossier; choose another")
    with tempfile.TemporaryDirectory(prefix="digitize-move-") as tmp, contextlib.ExitStack() as stack:
        work = {side: Path(tmp) / side for side in ("source", "target")}
        for folder in work.values():
            (folder / "parts").mkdir(parents=True)
            (folder / "out").mkdir()
        old, current = _open_dossier(review, source, work["source"], stack)
        other, into = _open_dossier(review, target, work["target"], stack)
        moved = sorted(set(pages))
        if not moved or any(p < 1 or p > current.count for p in moved):
            raise ReviewError(f"{source.name}: pages {pages} not within 1..{current.count}")
        if len(moved) == current.count:
            raise ReviewError(f"{source.name}: pages {pages} are all its pages; a dossier keeps at least one (approve or split it instead)")
        kept = [p for p in range(1, current.count + 1) if p not in moved]
        moves_out = {p: n for n, p in enumerate(kept, 1)}
        moves_in = {p: into.count + n for n, p in enumerate(moved, 1)}

        source_parts, target_parts = work["source"] / "parts", work["target"] / "parts"
        target_pages = [_single(other, i, target_parts / f"own-{i:04d}.pdf") for i in range(into.count)]
        target_pages += [_single(old, p - 1, target_parts / f"moved-{p:04d}.pdf") for p in moved]
        target_texts = into.texts + [current.texts[p - 1] for p in moved]
        source_pages = [_single(old, p - 1, source_parts / f"kept-{p:04d}.pdf") for p in kept]
        source_texts = [current.texts[p - 1] for p in kept]

        # Flags are renumbered against the manifests as they were, before source_pages changes below.
        source_manifest, target_manifest = current.manifest, into.manifest
        kept_flags, gone = _renumbered(source_manifest, source.flags, moves_out)
        paged = {f: [ev for ev in evs if dossier_page(source_manifest, ev) is not None] for f, evs in source.flags.items()}
        moved_flags, _ = _renumbered(source_manifest, paged, moves_in)
        target_flags, _ = _renumbered(target_manifest, target.flags, {p: p for p in range(1, into.count + 1)})
        for flag, evidence in moved_flags.items():
            target_flags.setdefault(flag, []).extend({**ev, "moved_from": source.prefix} for ev in evidence)

        sources = source_manifest["document"]["source_pages"]
        moved_sources = [sources[p - 1] for p in moved] if len(sources) == current.count else None
        if moved_sources is not None:
            source_manifest["document"]["source_pages"] = [sources[p - 1] for p in kept]
        target_result = _assemble(target_pages, target_texts, work["target"] / "out", manifest=target_manifest, name=target.name,
                                  code=target.code, settings=settings, signer=signer, work=target_parts)  # fmt: skip
        source_result = _assemble(source_pages, source_texts, work["source"] / "out", manifest=source_manifest, name=source.name,
                                  code=source.code, settings=settings, signer=signer, work=source_parts,
                                  sources=source_manifest["document"]["source_pages"])  # fmt: skip
        who, when = by or getpass.getuser(), datetime.now(timezone.utc).isoformat()
        out_details = {"pages_moved": moved, "to_item": target.prefix, "to_pages": [moves_in[p] for p in moved], "note": note,
                       "previous_pdf_sha256": source_manifest["output"]["pdf_sha256"],
                       "pdf_sha256": atomic.sha256_file(source_result[0])}  # fmt: skip
        in_details = {"pages_added": [moves_in[p] for p in moved], "from_item": source.prefix, "from_pages": moved,
                      "from_source_sha256": source_manifest["source"]["sha256"], "from_source_pages": moved_sources,
                      "note": note, "previous_pdf_sha256": target_manifest["output"]["pdf_sha256"],
                      "pdf_sha256": atomic.sha256_file(target_result[0])}  # fmt: skip
        # Like a replacement, a move changes the page list: the night's page records no longer line up.
        target_manifest.setdefault("replacements", []).append({"action": "move_in", "by": who, "at": when, **in_details})
        source_manifest.setdefault("replacements", []).append({"action": "move", "by": who, "at": when, **out_details})
        _store_dossier(review, target.prefix, target.name, target_manifest, *target_result, previous=into.pdf)
        _store_dossier(review, source.prefix, source.name, source_manifest, *source_result, previous=current.pdf)
        entry_in = record_action(review, target, "move_in", by=by, details=in_details, audit=audit)
        entry = record_action(review, source, "move", by=by, details=out_details, audit=audit)
        _write_reasons(review, target, target_flags, resolved=[], entry=entry_in, thick_after=len(target_pages), settings=settings)
        _write_reasons(review, source, kept_flags, resolved=gone, entry=entry, thick_after=len(kept), settings=settings)
        return entry


def set_code(review: Store, item: ReviewItem, *, code: str, settings: Settings, by: str | None, note: str = "", audit: Store | None = None) -> dict:
    """Give (or correct) the dossier code: the record is then archived as `<yyyy>/<mm>/<code>`."""
    if not re.fullmatch(settings.split.code_pattern, code) or key_problem(code) is not None:
        raise ReviewError(f"{code!r}: not a dossier code (split.code_pattern {settings.split.code_pattern})")
    if item.archived:
        raise ReviewError(f"{item.name}: already archived")
    year, month = item.archive_folder.split("/", 2)[:2]
    entry = record_action(review, item, "set_code", by=by, details={"code": code, "previous": item.code, "note": note}, audit=audit)
    data = json.loads(review.read_bytes(item.prefix + REVIEW_ITEM))
    data.update(code=code, archive_name=code, archive_folder=f"{year}/{month}/")
    manifest_key = f"{item.prefix}{item.name}.json"
    manifest = _read_manifest(review, manifest_key)
    manifest["code"] = code
    _write_manifest(review, manifest_key, manifest)
    review.put_bytes(item.prefix + REVIEW_ITEM, json.dumps(data, ensure_ascii=False).encode())
    return entry


def send_back(review: Store, inbox: Store, item: ReviewItem, *, pages: list[int], note: str, by: str | None, audit: Store | None = None) -> str:
    """Ask the station to scan again: `<station>/_requests/<id>.json` in the inbox, which `digitize drop` shows it."""
    _open_only(item)
    # Unique even for two requests in one second: a later one never replaces an earlier.
    stamp = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}-{secrets.token_hex(3)}"
    key = f"{item.station}/{REQUESTS}/{stamp}-{item.name}.json"
    entry = record_action(review, item, "send_back", by=by, details={"request": key, "pages": pages, "note": note}, audit=audit)
    request = {"dossier": item.code or item.name, "item": item.prefix, "batch": item.batch, "pages": pages, "note": note,
               "flags": sorted(item.flags), "by": entry["by"], "at": entry["at"]}  # fmt: skip
    inbox.put_bytes(check_key(key), json.dumps(request, indent=2, ensure_ascii=False).encode())
    return key


def station_requests(inbox: Store, station: str) -> list[dict]:
    """The review station's open requests to `station`, oldest first."""
    return [json.loads(inbox.read_bytes(o.key)) | {"key": o.key} for o in inbox.list(f"{station}/{REQUESTS}/") if o.key.endswith(".json")]


@dataclass(frozen=True)
class QuarantinedInput:
    """An input the night could not use, under rejected/ with its `.reason.json`."""

    key: str  # rejected/<station>/<batch>/<name>: the copy, when there is one
    station: str
    batch: str
    name: str
    reason: str
    copy: str | None
    sha256: str | None
    at: datetime
    released: dict | None


def waits_for_a_person(reason_key: str, keys: Container[str]) -> bool:
    """Whether the quarantined input with this `.reason.json` is still to be released or discarded."""
    base = reason_key.removesuffix(".reason.json")
    return base + RELEASED not in keys and base + DISCARDED not in keys


def list_quarantine(review: Store, *, include_released: bool = False) -> list[QuarantinedInput]:
    objects = {o.key: o for o in review.list(REJECTED)}
    found = []
    for key, obj in sorted(objects.items()):
        if not key.endswith(".reason.json"):
            continue
        base = key.removesuffix(".reason.json")
        if base + DISCARDED in objects or (base + RELEASED in objects and not include_released):
            continue  # dealt with: read only when asked for
        record = json.loads(review.read_bytes(key))
        released = json.loads(review.read_bytes(base + RELEASED)) if base + RELEASED in objects else None
        parts = base[len(REJECTED):].split("/")
        station, batch = (parts[0], "/".join(parts[:2]) + "/") if len(parts) >= 3 else ("", "")
        found.append(QuarantinedInput(base, station, batch, parts[-1], record.get("reason", ""), record.get("copy"),
                                      record.get("sha256"), obj.modified, released))  # fmt: skip
    return found


def quarantined_at(review: Store, key: str) -> QuarantinedInput:
    """The quarantined input `key`, found by listing: a key from a browser never becomes a path."""
    for entry in list_quarantine(review):
        if entry.key == key:
            return entry
    raise ReviewError(f"{printable_key(key)}: no such quarantined input in {review.url}")


def _quarantine_action(review: Store, entry: QuarantinedInput, action: str, *, by: str | None, details: dict, audit: Store | None) -> dict:
    record = {"action": action, "by": by or getpass.getuser(), "at": datetime.now(timezone.utc).isoformat(), "input": entry.key, **details}
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    review.put_bytes(f"{QUARANTINE_ACTIONS}{stamp}-{action}.json", json.dumps(record, ensure_ascii=False).encode())
    if audit is not None:
        _audit(audit, f"quarantine_{action}", by=record["by"], input=entry.key, **details)
    return record


def release(review: Store, inbox: Store, entry: QuarantinedInput, *, by: str | None, note: str = "", audit: Store | None = None) -> str:
    """Give a quarantined input another try: its copy becomes a batch of its own in the station's inbox."""
    if entry.copy is None:
        raise ReviewError(f"{entry.key}: nothing was kept of this input ({entry.reason}); ask the station to drop it again")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    prefix = f"{entry.station}/released-{stamp}-{secrets.token_hex(3)}/"
    with tempfile.TemporaryDirectory(prefix="digitize-release-") as tmp:
        local = Path(tmp) / entry.name
        review.download(entry.copy, local)
        inbox.upload(check_key(prefix + entry.name), local)
        files = [{"name": entry.name, "sha256": atomic.sha256_file(local), "bytes": local.stat().st_size}]
    manifest = {"schema": SCHEMA, "station": entry.station, "operator": f"{by or getpass.getuser()} (review station, released {entry.key})",
                "scanned_at": datetime.now(timezone.utc).isoformat(), "files": files, "dossiers": []}  # fmt: skip
    inbox.put_bytes(prefix + BATCH_MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False).encode())
    record = _quarantine_action(review, entry, "release", by=by, details={"batch": prefix, "note": note}, audit=audit)
    review.put_bytes(entry.key + RELEASED, json.dumps(record, ensure_ascii=False).encode())
    return prefix


def discard(review: Store, entry: QuarantinedInput, *, reason: str, by: str | None, audit: Store | None = None) -> str:
    """Take a quarantined input off the list for good: a copy goes to rejected-kept/ with who and why,
    and a `.discarded.json` beside the original takes it off the list. Nothing is deleted (the
    reviewers' store policy forbids it)."""
    if not reason.strip():
        raise ReviewError(f"{entry.key}: say why it is discarded")
    kept = REJECTED_KEPT + entry.key[len(REJECTED):]
    with tempfile.TemporaryDirectory(prefix="digitize-discard-") as tmp:
        for key in (k for k in (entry.copy, entry.key + ".reason.json") if k):
            local = Path(tmp) / "object"
            review.download(key, local)
            review.upload(REJECTED_KEPT + key[len(REJECTED):], local)
    record = _quarantine_action(review, entry, "discard", by=by, details={"kept_as": kept, "reason": reason}, audit=audit)
    body = json.dumps(record, ensure_ascii=False).encode()
    review.put_bytes(kept + ".discarded.json", body)
    review.put_bytes(entry.key + DISCARDED, body)
    return kept


def _single(pdf: pikepdf.Pdf, index: int, out: Path) -> Path:
    """One page as its own file: the assembler takes page files, as the pipeline writes them."""
    page = pikepdf.new()
    page.pages.append(pdf.pages[index])
    # The old record's signature widget belongs to the old signature, not to the new record.
    if "/Annots" in page.pages[0]:
        del page.pages[0].obj["/Annots"]
    page.save(out)
    return out
