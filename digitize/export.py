"""`digitize export`: per dossier, its Decree 30 Annex VI XML and one signed PDF/A per component document."""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import date, datetime, timezone
from importlib.resources import files
from pathlib import Path
from typing import Literal

import pikepdf
from lxml import etree
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from digitize.storage import Store, key_problem
from pipeline import atomic
from pipeline.assemble import RecordMetadata, write_record
from pipeline.errors import ConfigError, DigitizeError, ExitCode, OutputError, UsageError
from pipeline.manifest import (
    ComponentDocument, DocumentPages, ManifestError, Output, RecordManifest, Signature, dump_manifest, load_manifest,
)
from pipeline.signing import RecordSigner

ANNEX_SCHEMA = files("digitize") / "schemas" / "decree30-annex6.xsd"
# An archived record's manifest: <yyyy>/<mm>/<code>.json (codeless records live under uncoded/).
_RECORD_KEY = re.compile(r"^\d{4}/\d{2}/(?P<name>[^/]+)\.json$")
# What a person can do about a field the dossier lacks.
_WHY_MISSING = {
    "FileCode": "the record has no dossier code",
    "Creator": "output.agency was not set when it was processed",
    "Title": "no document title was read",
    "Document": "no component documents were read",
}


class ExportError(DigitizeError):
    """A dossier that cannot be exported as it is archived: a required field missing, pages that do not match."""

    exit_code = ExitCode.DATAERR


class NotArchived(DigitizeError):
    exit_code = ExitCode.NOINPUT


class _Annex(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_min_length=1)


class AnnexDocument(_Annex):
    """A component document's Annex VI fields, in the order the XML gives them."""

    DocOrdinal: int = Field(ge=1)
    TypeName: str
    CodeNumber: str | None = Field(default=None, pattern=r"^\d+$")
    CodeNotation: str | None = None
    IssuedDate: date | None = None
    OrganName: str | None = None
    Subject: str
    Language: str
    PageAmount: int = Field(ge=1)
    Description: str | None = None
    FileName: str


class AnnexFile(_Annex):
    """A dossier's Annex VI fields and its documents: what `digitize export` requires before it writes anything."""

    FileCode: str
    Title: str
    Maintenance: str
    Rights: str
    Creator: str
    Language: str
    StartDate: date | None = None
    EndDate: date | None = None
    DocTotal: int = Field(ge=1)
    PageTotal: int = Field(ge=1)
    Description: str | None = None
    Reliability: Literal["digitized"]
    Document: list[AnnexDocument] = Field(min_length=1)


@dataclass(frozen=True)
class ExportedDossier:
    code: str
    folder: Path
    xml: Path
    pdfs: list[Path]


def document_pdf_name(code: str, ordinal: int) -> str:
    """Circular 02/2019/TT-BNV: the dossier code and the document's sequence number."""
    return f"{code}.{ordinal:02d}.pdf"


def annex_fields(manifest: RecordManifest, *, code: str) -> AnnexFile:
    """The dossier's fields, checked against their declared types; ExportError names the first one missing."""
    dossier, documents = manifest.dossier, manifest.documents or []
    if dossier is None:
        raise ExportError(f"{code}: no Annex VI metadata in its manifest (archived before component documents were read)")
    data = {
        "FileCode": dossier.file_code, "Title": dossier.title, "Maintenance": dossier.maintenance,
        "Rights": dossier.rights, "Creator": dossier.creator, "Language": dossier.language,
        "StartDate": dossier.start_date, "EndDate": dossier.end_date, "DocTotal": dossier.doc_total,
        "PageTotal": dossier.page_total, "Description": dossier.description, "Reliability": dossier.reliability,
        "Document": [_document_fields(doc, code=code) for doc in documents],
    }  # fmt: skip
    try:
        return AnnexFile.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        field = str(error["loc"][-1]) if isinstance(error["loc"][-1], str) else where
        missing = error["type"] in ("string_type", "missing", "too_short", "int_type") and error["input"] in (None, [], "")
        problem = "required, but missing" if missing else error["msg"]
        hint = f" ({_WHY_MISSING[field]})" if missing and field in _WHY_MISSING else ""
        raise ExportError(f"{code}: {where}: {problem}{hint}") from None


def _document_fields(doc: ComponentDocument, *, code: str) -> dict:
    return {
        "DocOrdinal": doc.ordinal, "TypeName": doc.type_name, "CodeNumber": doc.code_number,
        "CodeNotation": doc.code_notation, "IssuedDate": doc.issued_date, "OrganName": doc.organ_name,
        # Annex VI requires a subject; a document without a "V/v" line or title has only its bookmark's.
        "Subject": doc.subject or doc.title, "Language": doc.language, "PageAmount": doc.page_amount, "Description": None,
        "FileName": document_pdf_name(code, doc.ordinal),
    }  # fmt: skip


def annex_xml(fields: AnnexFile) -> bytes:
    """The XML, element by element in the model's order; empty optional fields are left out."""
    root = etree.Element("File")
    for name, value in fields:
        if name == "Document":
            for doc in value:
                element = etree.SubElement(root, "Document")
                for doc_name, doc_value in doc:
                    _add(element, doc_name, doc_value)
        else:
            _add(root, name, value)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _add(parent: etree._Element, name: str, value: object) -> None:
    if value is None:
        return
    etree.SubElement(parent, name).text = value.isoformat() if isinstance(value, date) else str(value)


def check_annex_xml(xml: bytes, *, origin: str) -> None:
    """Validate against the shipped XSD; ExportError names the first line and problem."""
    with ANNEX_SCHEMA.open("rb") as fh:
        schema = etree.XMLSchema(etree.parse(fh))
    document = etree.fromstring(xml)
    if not schema.validate(document):
        error = schema.error_log[0]
        raise ExportError(f"{origin}: line {error.line}: {error.message}")


def find_records(archive: Store, codes: list[str]) -> dict[str, str]:
    """Each code's manifest key in the archive, the latest month's when a code was archived twice."""
    wanted = set(codes)
    found: dict[str, str] = {}
    for stored in sorted(archive.list(), key=lambda stored: stored.key):
        match = _RECORD_KEY.match(stored.key)
        if match and match["name"] in wanted:
            found[match["name"]] = stored.key
    return found


def check_code(code: str) -> str:
    """A dossier code names files: a usage mistake (exit 64) when it could climb out of the folder."""
    problem = key_problem(code) or ("a '/'" if "/" in code else None)
    if problem:
        raise UsageError(f"{code!r}: not a dossier code: {problem}")
    return code


def export_dossier(
    code: str, manifest_key: str, *, archive: Store, to: Path, signer: RecordSigner, work: Path
) -> ExportedDossier:
    """Write <to>/<code>/: <code>.xml and <code>.<nn>.pdf per document, built aside and renamed in whole."""
    manifest = load_manifest(archive.read_bytes(manifest_key), origin=f"{archive.url}/{manifest_key}")
    fields = annex_fields(manifest, code=code)
    xml = annex_xml(fields)
    check_annex_xml(xml, origin=f"{code}.xml")
    record = work / f"{code}.pdf"
    stem = manifest_key.removesuffix(".json")
    for key in (f"{stem}.pdf", f"{stem}.txt"):
        if not archive.exists(key):
            raise ExportError(f"{code}: {archive.url}/{key} is missing beside its manifest")
    archive.download(f"{stem}.pdf", record)
    if atomic.sha256_file(record) != manifest.output.pdf_sha256:
        raise ExportError(f"{code}: {archive.url}/{stem}.pdf differs from the checksum in its manifest")
    texts = archive.read_bytes(f"{stem}.txt").decode("utf-8").removesuffix("\n").split("\f")
    final = to / code
    try:
        to.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(prefix=f".{code}.", dir=to))
    except OSError as exc:
        raise OutputError(f"{to}: cannot write: {exc.strerror or exc}") from None
    try:
        created = datetime.now(timezone.utc).replace(microsecond=0)
        pdfs = _document_pdfs(code, manifest, record, texts, staged, signer=signer, work=work, created=created)
        atomic.write_bytes(staged / f"{code}.xml", xml)
        atomic.replace_dir(staged, final)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return ExportedDossier(code, final, final / f"{code}.xml", [final / pdf.name for pdf in pdfs])


def _document_pdfs(
    code: str, manifest: RecordManifest, record: Path, texts: list[str], folder: Path, *, signer: RecordSigner,
    work: Path, created: datetime,
) -> list[Path]:  # fmt: skip
    """Each document's signed PDF/A, with its text and a manifest beside it, so `digitize verify` checks it as a record."""
    documents = manifest.documents or []
    written = []
    with pikepdf.open(record) as pdf:
        pages = len(pdf.pages)
        # Review can split, move or add pages after the documents were read: then they no longer fit.
        ranges = [page for doc in documents for page in range(doc.first_page, doc.last_page + 1)]
        if ranges != list(range(pages)) or len(texts) != pages:
            raise ExportError(f"{code}: its documents cover {len(ranges)} pages, the record has {pages} "
                              "(changed in review after they were read)")  # fmt: skip
        for doc in documents:
            indexes = range(doc.first_page, doc.last_page + 1)
            page_pdfs = [_single_page(pdf, index, work / f"{code}.page-{index:04d}.pdf") for index in indexes]
            out = folder / document_pdf_name(code, doc.ordinal)
            metadata = RecordMetadata(
                title=doc.title, created=created, agency=manifest.dossier.creator or signer.agency, language=doc.language,
                source_sha256=manifest.source.sha256, dossier_code=code, outline=((doc.title, 0),),
            )  # fmt: skip
            step = work / f"{code}.{doc.ordinal:02d}"
            step.mkdir(exist_ok=True)
            result = write_record(page_pdfs, out, flavour=manifest.output.pdfa, metadata=metadata, signer=signer, work=step)
            text = out.with_suffix(".txt")
            atomic.write_text(text, "\f".join(texts[index] for index in indexes) + "\n")
            part = _document_manifest(manifest, doc, out, text, result.signature, created=created)
            atomic.write_text(out.with_suffix(".json"), dump_manifest(part))
            written.append(out)
    return written


def _document_manifest(
    manifest: RecordManifest, doc: ComponentDocument, pdf: Path, text: Path, signature: dict | None, *, created: datetime
) -> RecordManifest:  # fmt: skip
    """The dossier's manifest cut down to one document: its pages, its checksums, its signature."""
    shown = set(doc.source_pages)
    return manifest.model_copy(update={
        "name": pdf.stem, "created": created,
        "document": DocumentPages(
            source_pages=doc.source_pages, removed_blank_pages=[], separator_sheets=[], unreadable_pages=[],
            split_by=manifest.document.split_by,
        ),
        "output": Output(
            pdf=pdf.name, pdf_sha256=atomic.sha256_file(pdf), pdf_bytes=pdf.stat().st_size, pdfa=manifest.output.pdfa,
            profile=manifest.output.profile, text=text.name, text_sha256=atomic.sha256_file(text),
        ),
        "signature": Signature.model_validate(signature) if signature else None,
        "pages": [page for page in manifest.pages if page.source_index in shown],
        "documents": [doc.model_copy(update={"first_page": 0, "last_page": doc.page_amount - 1})],
    })  # fmt: skip


def _single_page(pdf: pikepdf.Pdf, index: int, out: Path) -> Path:
    """One page of the signed record as a PDF of its own, without the signature's widget."""
    with pikepdf.new() as single:
        single.pages.append(pdf.pages[index])
        with contextlib.suppress(KeyError):
            del single.pages[0].obj["/Annots"]
        single.save(out)
    return out


@dataclass(frozen=True)
class ExportReport:
    exported: list[ExportedDossier]
    failed: list[DigitizeError]  # one per dossier, each naming it


def export_dossiers(codes: list[str], *, archive: Store, to: Path, signer: RecordSigner | None) -> ExportReport:
    """Export each dossier; one that cannot be exported is named with its reason, and the rest go on."""
    for code in codes:
        check_code(code)
    if signer is None:
        raise ConfigError("export: signing is not configured (signing.pkcs12 or signing.pkcs11_module): "
                          "the exported documents must be signed")  # fmt: skip
    keys = find_records(archive, codes)
    report = ExportReport([], [])
    for code in dict.fromkeys(codes):
        if code not in keys:
            report.failed.append(NotArchived(f"{code}: no record of that dossier code in {archive.url}"))
            continue
        with tempfile.TemporaryDirectory(prefix="digitize-export-") as work:
            try:
                report.exported.append(export_dossier(code, keys[code], archive=archive, to=to, signer=signer, work=Path(work)))
            except (ExportError, ManifestError) as exc:
                report.failed.append(exc)
    return report
