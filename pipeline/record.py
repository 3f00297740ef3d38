"""Writing one input's dossiers: PDF/A, text and manifest to records/, or a whole review folder to manual/<name>/."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from pipeline import __version__, atomic, drawings
from pipeline._exec import tesseract
from pipeline.assemble import RecordMetadata, WrittenRecord, write_record
from pipeline.documents import dossier_metadata, page_facts, read_documents
from pipeline.errors import CorruptInput
from pipeline.flags import FlagName
from pipeline.models import EngineRecord, engine_record
from pipeline.manifest import (
    DocumentPages, InputSignature, KeptInput, ModelRecord, OcrRecord, Output, PageRecord, Provenance,
    RecordManifest, Signature, Source, SourceFile, dump_manifest,
)  # fmt: skip
from pipeline.ocr import OcrEngine
from pipeline.page import PageResult
from pipeline.report import DocumentRecord
from pipeline.schedule import InputJob
from pipeline.settings import Settings
from pipeline.signing import RecordSigner
from pipeline.input_signatures import read_signatures
from pipeline.sources import FileKind, InputKind, ScanInput
from pipeline.split import Document, split

RECORDS = "records"
MANUAL = "manual"
# PageResult fields for the worker's own use: work files and the text, which has its own file,
# and the receipt, which the dossier's manifest holds once.
_NOT_IN_MANIFEST = ("page_pdf", "thumbnail", "text", "receipt")


@dataclass(frozen=True)
class RecordContext:
    """What every record of a run shares: where it goes, the settings, the models, the signer."""

    out_dir: Path
    settings: Settings
    models: list[ModelRecord]
    settings_digest: str
    signer: RecordSigner | None
    engines: dict[str, tuple[OcrEngine, EngineRecord]]  # by name: the engines this run uses, checked once
    # Certificates a signed PDF input's signatures are checked against (signing.trust_roots).
    input_trust_roots: tuple = ()

    def use_engine(self, engine: OcrEngine) -> None:
        """Check an engine and its models once per run, in this process, before it reads a page."""
        if engine.name in self.engines:
            if self.engines[engine.name][0] != engine:
                raise ValueError(f"two different OCR engines are named {engine.name!r}")
            return
        self.engines[engine.name] = (engine, engine_record(engine, self.settings.ocr.languages))


class Names:
    """Output names taken in this run: a dossier code, or the input's stem with -2, -3, ..."""

    def __init__(self) -> None:
        self.taken: set[str] = set()

    def reserve(self, names: Iterable[str]) -> None:
        self.taken.update(names)

    def take(self, wanted: str) -> str:
        name, n = wanted, 1
        while name in self.taken:
            n += 1
            name = f"{wanted}-{n}"
        self.taken.add(name)
        return name


def describe_source(scan: ScanInput, provenance: Provenance | None) -> Source:
    """The scan's identity for its manifests: checksums of its files, and where it came from."""
    files = [SourceFile(name=path.name, sha256=atomic.sha256_file(path), bytes=path.stat().st_size) for path in scan.files]
    if scan.kind == "file":
        digest = files[0].sha256
    else:
        # A folder's identity is its files' names and contents, in page order.
        lines = "".join(f"{f.name}\t{f.sha256}\n" for f in files)
        digest = hashlib.sha256(lines.encode()).hexdigest()
    return Source(
        provenance=provenance, path=None if provenance else str(scan.path),
        kind=str(scan.kind), sha256=digest, pages=len(scan.pages), files=files,
    )  # fmt: skip


def write_documents(job: InputJob, context: RecordContext, names: Names) -> list[DocumentRecord]:
    """Split a finished input into dossiers and write each; a flagged one goes to manual/<name>/."""
    pages = [job.results[i] for i in sorted(job.results)]
    if not any(page.readable for page in pages):
        # Nothing could be decoded: that is a corrupt input, not a dossier to review.
        raise CorruptInput(job.scan.path, pages[0].flags[FlagName.UNREADABLE_PAGE]["reason"])
    documents = split(pages, rules=context.settings.split, triage=context.settings.triage, hints=job.hints)
    original = _signed_original(job, context)
    written = []
    codeless = 0
    for doc in documents:
        if doc.code:
            name = names.take(doc.code)
            if name != doc.code:
                doc.flag(FlagName.DUPLICATE_CODE, {"code": doc.code, "written_as": name})
        else:
            codeless += 1
            name = names.take(job.stem if codeless == 1 else f"{job.stem}-{codeless}")
        written.append(_write_document(job, doc, name, pages, context, original))
    return written


ORIGINAL_SUFFIX = ".original.pdf"


def _signed_original(job: InputJob, context: RecordContext) -> KeptInput | None:
    """A signed PDF input is kept whole beside each of its records; its signatures, checked, go in the manifest."""
    if job.scan.kind is not InputKind.FILE or job.scan.pages[0].kind is not FileKind.PDF:
        return None
    signatures = read_signatures(job.scan.path, trust_roots=context.input_trust_roots)
    if not signatures:
        return None
    return KeptInput(
        file=ORIGINAL_SUFFIX, sha256=atomic.sha256_file(job.scan.path), bytes=job.scan.path.stat().st_size,
        signatures=[InputSignature.model_validate(asdict(signature)) for signature in signatures],
    )  # fmt: skip


def _write_document(
    job: InputJob, doc: Document, name: str, pages: list[PageResult], context: RecordContext,
    original: KeptInput | None,
) -> DocumentRecord:  # fmt: skip
    settings, out_dir = context.settings, context.out_dir
    created = datetime.now(timezone.utc).replace(microsecond=0)
    flagged = bool(doc.flags)
    final_dir = out_dir / MANUAL / name if flagged else out_dir / RECORDS
    # A manual-review folder appears whole or not at all: it is built aside, then renamed.
    target = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out_dir / MANUAL)) if flagged else final_dir
    try:
        in_pdf = [pages[i] for i in doc.pages]
        text = "\f".join(page.text for page in in_pdf)
        txt_path, pdf_path, json_path = (target / f"{name}{ext}" for ext in (".txt", ".pdf", ".json"))
        atomic.write_text(txt_path, text + "\n")
        documents = read_documents([page_facts(page) for page in in_pdf], source_pages=doc.pages)
        dossier = dossier_metadata(
            documents, code=doc.code, pages=len(in_pdf), agency=settings.output.agency, records=settings.records,
            receipt=doc.receipt,
        )  # fmt: skip
        written = write_record(
            [Path(page.page_pdf) for page in in_pdf], pdf_path, flavour=settings.output.pdfa,
            metadata=RecordMetadata(
                title=name, created=created, agency=settings.output.agency,
                source_sha256=job.source.sha256, dossier_code=doc.code,
                outline=tuple((document.title, document.first_page) for document in documents),
                description=_title_blocks(in_pdf),
            ),
            signer=context.signer, work=job.work,
        ) if in_pdf else None  # fmt: skip
        if original is not None:
            original = original.model_copy(update={"file": f"{name}{ORIGINAL_SUFFIX}"})
            with atomic.replacing(target / original.file) as out, open(job.scan.path, "rb") as source:
                shutil.copyfileobj(source, out)
        manifest = _manifest(job, doc, name, pages, created, written, txt_path, context).model_copy(
            update={"documents": documents, "dossier": dossier, **({"original": original} if original else {})}
        )
        if flagged:
            _write_review_material(target, doc, pages)
        # The manifest goes last: its presence says the record is complete.
        atomic.write_text(json_path, dump_manifest(manifest))
        if flagged:
            atomic.replace_dir(target, final_dir)
    except BaseException:
        if flagged:
            shutil.rmtree(target, ignore_errors=True)
        raise
    return DocumentRecord(
        input=job.scan.path, name=name, code=doc.code, source_pages=list(doc.pages),
        removed_blank_pages=list(doc.removed_blank),
        flags={flag: len(items) for flag, items in sorted(doc.flags.items())},
        pdf=final_dir / f"{name}.pdf" if in_pdf else None, manifest=final_dir / f"{name}.json",
        pages=len(doc.pages),
        mean_confidence=_mean_confidence(doc, pages),
    )  # fmt: skip


def _manifest(
    job: InputJob, doc: Document, name: str, pages: list[PageResult], created: datetime,
    written: WrittenRecord | None, txt_path: Path, context: RecordContext,
) -> RecordManifest:  # fmt: skip
    settings = context.settings
    included = doc.pages + doc.removed_blank + doc.separator_sheets + doc.unreadable
    timings: dict[str, float] = {}
    for index in included:
        for stage, seconds in pages[index].timings.items():
            timings[stage] = round(timings.get(stage, 0.0) + seconds, 4)
    timings.update({stage: round(seconds, 4) for stage, seconds in (written.timings if written else {}).items()})
    pdf_path = written.pdf if written else None
    return RecordManifest(
        pipeline_version=__version__,
        name=name,
        code=doc.code,
        created=created,
        source=job.source,
        document=DocumentPages(
            source_pages=doc.pages,
            removed_blank_pages=doc.removed_blank,
            separator_sheets=doc.separator_sheets,
            unreadable_pages=doc.unreadable,
            split_by="hints" if job.hints else "sheets",
        ),
        flags=doc.flags,
        output=Output(
            pdf=pdf_path.name if pdf_path else None,
            pdf_sha256=atomic.sha256_file(pdf_path) if pdf_path else None,
            pdf_bytes=pdf_path.stat().st_size if pdf_path else 0,
            pdfa=settings.output.pdfa,
            profile=settings.output.profile,
            text=txt_path.name,
            text_sha256=atomic.sha256_file(txt_path),
        ),
        signature=Signature.model_validate(written.signature) if written and written.signature else None,
        ocr=OcrRecord(
            engine=f"tesseract {tesseract.info().version}",
            languages=settings.ocr.languages,
            models=context.models,
            mean_confidence=_mean_confidence(doc, pages),
        ),
        settings_sha256=context.settings_digest,
        pages=[_page_record(pages[i], in_pdf=i in doc.pages, context=context) for i in sorted(included)],
        timings_s=timings,
        # Set only when there is one, so a manifest without a receipt dumps as before.
        **({"receipt": doc.receipt} if doc.receipt else {}),
    )


def _mean_confidence(doc: Document, pages: list[PageResult]) -> float | None:
    """Mean of the per-page OCR confidences of the pages in the PDF."""
    confidences = [pages[i].ocr_confidence for i in doc.pages if pages[i].ocr_confidence is not None]
    return round(sum(confidences) / len(confidences), 2) if confidences else None


def _title_blocks(pages: list[PageResult]) -> str:
    """The drawings' title blocks, one per line, for the record's XMP description."""
    lines = []
    for page in pages:
        if page.title_block:
            fields = drawings.TitleBlockText(**{k: v for k, v in page.title_block.items() if k != "box"})
            lines.append(fields.description())
    return "\n".join(lines)


def _page_record(page: PageResult, *, in_pdf: bool, context: RecordContext) -> PageRecord:
    measured = {key: value for key, value in asdict(page).items() if key not in _NOT_IN_MANIFEST}
    for only_some in ("title_block", "pdf_source"):  # absent rather than null on other pages
        if measured[only_some] is None:
            del measured[only_some]
    # Which engine, version and model files read this page: null when no engine did (blank pages).
    engine = asdict(context.engines[page.ocr_engine][1]) if page.ocr_engine else None
    return PageRecord.model_validate({**measured, "in_pdf": in_pdf, "ocr_engine": engine})


def _write_review_material(folder: Path, doc: Document, pages: list[PageResult]) -> None:
    """reasons.json and a thumbnail of each flagged page, so a person can triage at a glance."""
    flagged_pages = sorted({item["page"] for items in doc.flags.values() for item in items if "page" in item})
    if not flagged_pages and doc.pages:
        flagged_pages = [doc.pages[0]]  # a flag on the whole document: show where it starts
    thumbnails = {}
    for index in flagged_pages:
        if pages[index].thumbnail:
            target = folder / f"page-{index:04d}.png"
            shutil.copyfile(pages[index].thumbnail, target)
            thumbnails[str(index)] = target.name
    reasons = {
        "code": doc.code,
        "flags": doc.flags,
        "thumbnails": thumbnails,
    }
    atomic.write_text(folder / "reasons.json", json.dumps(reasons, indent=2, ensure_ascii=False) + "\n")

