"""The record manifest beside each PDF: typed, frozen, with its schema version, and the one way to read and write it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, PlainSerializer, ValidationError, model_serializer, model_validator

from pipeline.errors import DigitizeError, ExitCode
from pipeline.flags import FlagName

# The shape of the manifest. Bump it (and load the older shape too) only when the shape changes.
SCHEMA = "digitize.record/3"

# A number as measured: a whole number stays one, so a manifest read and written again keeps its bytes.
Number = int | float
# Written as Python's isoformat ("+00:00"), as records have always been, not pydantic's "Z".
Timestamp = Annotated[datetime, PlainSerializer(lambda when: when.isoformat(), return_type=str)]
# What a flag's evidence holds varies by flag: the measured values that raised it, and the page.
Evidence = dict[str, JsonValue]


class ManifestError(DigitizeError):
    """A record manifest that cannot be read as one: not JSON, or not the shape of any known schema."""

    exit_code = ExitCode.DATAERR

    def __init__(self, origin: str, problem: str) -> None:
        super().__init__(f"{origin}: {problem}")
        self.problem = problem


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    # Fields added after manifests were first written: left out unless set, so an older
    # manifest dumps back byte for byte as it was written.
    _added_later: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _as_written(self, handler) -> dict[str, Any]:
        data = handler(self)
        for key in self._added_later:
            if key not in self.model_fields_set:
                data.pop(key, None)
        return data


class Provenance(_Part):
    """Where an input was before it reached this machine: a station's batch in the inbox."""

    station: str
    operator: str
    batch: str  # the batch's key prefix in the inbox, "<station>/<batch>/"
    key: str  # the scan's object key in the inbox


class SourceFile(_Part):
    name: str
    sha256: str
    bytes: int


class Source(_Part):
    """The scan a record was made from: where it came from (provenance) or, outside the service, its path."""

    provenance: Provenance | None = None
    path: str | None = None
    kind: str
    sha256: str  # a file's checksum, or for a folder that of its files' names and checksums
    pages: int
    files: list[SourceFile]

    @model_validator(mode="after")
    def _one_origin(self) -> Source:
        if (self.provenance is None) == (self.path is None):
            raise ValueError("a source has either a provenance or a path")
        return self

    @model_serializer(mode="wrap")
    def _as_written(self, handler) -> dict[str, Any]:
        # A source has one origin: the other is left out, not written as null.
        data = handler(self)
        for origin in ("provenance", "path"):
            if data.get(origin) is None:
                data.pop(origin, None)
        return data


class DocumentPages(_Part):
    """Which source pages (0-based) became the record, and which were left out and why."""

    source_pages: list[int]
    # Left out of the PDF but kept in the source scan: the removal can be undone.
    removed_blank_pages: list[int]
    separator_sheets: list[int]
    unreadable_pages: list[int]
    split_by: Literal["hints", "sheets"]


class Output(_Part):
    pdf: str | None
    pdf_sha256: str | None
    pdf_bytes: int
    pdfa: str
    profile: str
    text: str
    text_sha256: str
    # Set when review re-assembles the PDF (its page count then differs from the page records).
    pages: int | None = None

    _added_later = ("pages",)


class Stamp(_Part):
    """Where the visible Decree 30 signature stamp was put on page 1, in PDF points from the bottom left."""

    page: int  # 0-based
    box: tuple[Number, Number, Number, Number]  # x0, y0, x1, y1
    # moved: the top right margin had ink; over_ink: page 1 had no free area that large
    placement: Literal["top_right", "moved", "over_ink"]


class Signature(_Part):
    """The fixity chain's middle link (the unsigned revision), and who signed the PDF, when and how."""

    unsigned_sha256: str
    unsigned_bytes: int
    level: str
    signed_at: Timestamp
    reason: str
    location: str
    field: str
    subject: str
    issuer: str
    serial: str
    certificate_sha256: str
    not_after: Timestamp
    # The visible stamp (signing.appearance = "decree30"); absent for an invisible signature.
    stamp: Stamp | None = None

    _added_later = ("stamp",)


class Receipt(_Part):
    """What the dossier's reception receipt says beside its code (Circular 01/2023/TT-VPCP).

    applicant_id is personal data: it is kept here and nowhere else (no log, artifact or name).
    """

    code_source: Literal["qr", "barcode", "text"]
    payload_kind: Literal["code", "url", "json", "key_value", "text"]
    procedure_code: str | None = None
    applicant_id: str | None = None
    document_name: str | None = None


class ModelRecord(_Part):
    """An OCR model or config file that read the pages, and whether it is the pinned one."""

    name: str
    sha256: str
    bytes: int
    pinned: bool


class OcrRecord(_Part):
    engine: str
    languages: str
    models: list[ModelRecord]
    mean_confidence: Number | None


class Separator(_Part):
    kind: str  # receipt, generic or unreadable
    code: str | None
    evidence: str


class PageEngine(_Part):
    """The OCR engine that read a page: its name, version and model files (name -> sha256)."""

    name: str
    version: str
    models: dict[str, str]


class PdfSourcePage(_Part):
    """How a PDF input's page went into the record: its own content kept, or a rendering, and why."""

    kind: str  # scan, born-digital or other (pipeline/pdfsource.py)
    finest_dpi: Number | None  # of its image layers and masks as placed; OCR read it at no less
    encodings: list[str]  # the filters of its images, as the input had them
    kept: bool  # the record page draws the input's own content, not a rendering of it
    not_kept_reason: str | None = None
    conversions: list[str] = []  # what PDF/A made us change in the kept content
    existing_text: str  # what became of the text the page held: none, replaced, kept, visible kept, ...
    ocr: bool  # whether we OCRed the page


class SealRecord(_Part):
    """A red seal on the page: its box in mm from the stored image's top-left corner (left, top, width, height)."""

    box_mm: tuple[Number, Number, Number, Number]
    red_share: Number


class OcrInputRecord(_Part):
    """How the copy that OCR read was made: its resolution and scale, the skew left for Tesseract
    (the text layer is turned by it), whether red/blue ink was dropped, and the seals found."""

    dpi: Number
    scale: Number
    residual_skew_deg: Number
    colour_dropout: bool
    seals: list[SealRecord]


class SecondPassRecord(_Part):
    """A second OCR reading of part of a page: why, how many lines were read again and how many changed."""

    reason: str
    lines_read: int
    lines_changed: int


class TitleBlock(_Part):
    """A drawing's title block, read on its own: its text and the fields found in it (null: not found)."""

    box: tuple[int, int, int, int]  # left, top, right, bottom in the drawing evidence's analysis pixels
    text: str
    number: str | None
    title: str | None
    scale: str | None
    date: str | None
    author: str | None


class PageRecord(_Part):
    """One source page, with every measured value that drove a decision about it."""

    source_index: int
    source_file: str
    source_frame: int
    flags: dict[FlagName, Evidence]
    timings: dict[str, Number]
    readable: bool
    pixels: tuple[int, int] | None
    dpi: Number | None
    dpi_inferred: bool | None
    size_mm: tuple[Number, Number] | None
    rotation: int
    orientation_method: str
    orientation_score: Number
    sideways_ratio: Number
    deskew_angle: Number
    blank: bool
    blank_evidence: dict[str, JsonValue]
    ocr_confidence: Number | None
    words: int
    characters: int
    syllable_share: Number | None
    separator: Separator | None
    drawing: dict[str, JsonValue]
    image_encoding: str | None
    image_bytes: int
    in_pdf: bool
    # Absent in manifests written before the OCR-engine seam; null for a page no engine read.
    ocr_engine: PageEngine | None = None
    # Only for a page of a PDF input, and absent in manifests written before it was recorded.
    pdf_source: PdfSourcePage | None = None
    # Absent in manifests written before OCR input preparation; null for a page no engine read.
    ocr_input: OcrInputRecord | None = None
    # Null when the page was read once; absent in manifests written before it (see pipeline/headings.py).
    ocr_second_pass: SecondPassRecord | None = None
    # Only on a drawing whose title block was found and read.
    title_block: TitleBlock | None = None

    _added_later = ("ocr_engine", "pdf_source", "ocr_input", "ocr_second_pass", "title_block")


class InputSignature(_Part):
    """One digital signature a PDF input carried, as checked when it was processed."""

    field: str
    signer: str
    signed_at: str | None
    intact: bool
    valid: bool
    trusted: bool  # against the trust roots configured then (signing.trust_roots)
    covers_whole_file: bool


class KeptInput(_Part):
    """A signed input kept byte for byte beside its record: its signature is evidence the record cannot carry."""

    file: str  # <name>.original.pdf, beside the record
    sha256: str
    bytes: int
    signatures: list[InputSignature]


class ComponentDocument(_Part):
    """One document inside a dossier (pipeline/documents.py), with the Decree 30 Annex VI fields read from it.

    Pages are 0-based indexes into the record's PDF (first_page..last_page) and the source pages they show.
    """

    ordinal: int  # DocOrdinal, from 1
    type_name: str  # TypeName: Quyết định, Đơn, Căn cước công dân, ...
    title: str  # the bookmark: the title line as read, with its subject
    subject: str | None  # Subject (trích yếu)
    code_number: str | None  # CodeNumber: "123" of "Số: 123/QĐ-UBND" (a string: "07" keeps its zero)
    code_notation: str | None  # CodeNotation: "QĐ-UBND"
    issued_date: date | None  # IssuedDate
    issued_place: str | None  # the place before ", ngày ..."
    organ_name: str | None  # OrganName: the issuing organ above "Số:"
    language: str
    page_amount: int  # PageAmount
    first_page: int
    last_page: int
    source_pages: list[int]
    started_by: str  # first_page, national_heading, title, id_card, drawing or page_size


class DossierMetadata(_Part):
    """The dossier's Decree 30 Annex VI fields, as far as the pipeline knows them; `digitize export` checks them."""

    file_code: str | None  # FileCode: the dossier code
    title: str | None
    maintenance: str  # Maintenance: retention, from [records] by procedure code
    rights: str  # Rights: access, from [records] by procedure code
    creator: str | None  # Creator: output.agency
    language: str
    start_date: date | None
    end_date: date | None
    doc_total: int
    page_total: int
    description: str | None
    reliability: Literal["digitized"]


class RecordManifest(_Part):
    """Everything a record is: source, pages, output checksums, signature, models, flags with their evidence."""

    model_config = ConfigDict(populate_by_name=True)

    schema_: Literal["digitize.record/3"] = Field(SCHEMA, alias="schema")
    pipeline_version: str
    name: str
    code: str | None
    created: Timestamp
    source: Source
    document: DocumentPages
    flags: dict[FlagName, list[Evidence]]
    output: Output
    # The fixity chain: source scans (above) -> unsigned PDF -> signed PDF (output.pdf_sha256).
    signature: Signature | None
    ocr: OcrRecord
    settings_sha256: str
    pages: list[PageRecord]
    timings_s: dict[str, Number]
    # What people did in review (digitize/review.py), each absent until it happens: pages swapped
    # for a re-scan, every action with who and when, and the item a dossier was split from.
    replacements: list[dict[str, JsonValue]] | None = None
    review: list[dict[str, JsonValue]] | None = None
    split_from: dict[str, JsonValue] | None = None
    # Component documents and the dossier's Annex VI fields; absent in manifests written before them.
    documents: list[ComponentDocument] | None = None
    dossier: DossierMetadata | None = None
    # The reception receipt's values, when the dossier began with one.
    receipt: Receipt | None = None
    # Only for a signed PDF input (pipeline/input_signatures.py).
    original: KeptInput | None = None

    _added_later = ("replacements", "review", "split_from", "documents", "dossier", "receipt", "original")


def load_manifest(data: bytes | str, *, origin: str) -> RecordManifest:
    """Read a manifest's JSON; ManifestError names `origin` (a path or key) and what is wrong."""
    try:
        raw = json.loads(data)
    except ValueError:
        raise ManifestError(origin, "manifest is not valid JSON") from None
    try:
        return RecordManifest.model_validate(raw)
    except ValidationError as exc:
        raise ManifestError(origin, f"not a {SCHEMA} manifest: {_problems(exc)}") from None


def dump_manifest(manifest: RecordManifest) -> str:
    """The manifest's JSON as records are written: UTF-8 text unescaped, indented, one final newline."""
    return json.dumps(manifest.model_dump(mode="json", by_alias=True), indent=2, ensure_ascii=False) + "\n"


class _SourceIdentity(BaseModel):
    model_config = ConfigDict(frozen=True)

    sha256: str


class _PagesIdentity(BaseModel):
    model_config = ConfigDict(frozen=True)

    source_pages: list[int]


class RecordIdentity(BaseModel):
    """Which pages of which scan a record holds: what makes two records the same dossier.

    Read from a whole manifest or only that part of one, so any record in an archive can be compared.
    """

    model_config = ConfigDict(frozen=True, from_attributes=True)

    source: _SourceIdentity
    document: _PagesIdentity

    @classmethod
    def of(cls, manifest: RecordManifest | Mapping[str, Any]) -> RecordIdentity:
        return cls.model_validate(manifest, from_attributes=True)


def load_identity(data: bytes | str, *, origin: str) -> RecordIdentity:
    """Read the identity part of an archived manifest; ManifestError names `origin` and what is wrong."""
    try:
        return RecordIdentity.model_validate_json(data)
    except ValidationError as exc:
        raise ManifestError(origin, f"not a record manifest: {_problems(exc)}") from None


def _problems(exc: ValidationError) -> str:
    """The first few problems, each as `dotted.key: message`, on one line."""
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'manifest'}: {err['msg']}" for err in exc.errors()[:3])
