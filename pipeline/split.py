"""Split an input's pages into documents: by receipts and separator sheets, or by the station's hints."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pipeline.flags import FlagName
from pipeline.manifest import Receipt
from pipeline.page import PageResult
from pipeline.settings import SplitSettings, TriageSettings


@dataclass(frozen=True)
class DossierHint:
    """A station's word on which pages form a dossier (0-based, inclusive)."""

    code: str
    first_page: int
    last_page: int


@dataclass
class Document:
    """One dossier (or codeless document) cut from an input, before it is written."""

    code: str | None
    pages: list[int] = field(default_factory=list)  # source indices, in the PDF, in order
    removed_blank: list[int] = field(default_factory=list)
    separator_sheets: list[int] = field(default_factory=list)  # dropped separator sheets
    unreadable: list[int] = field(default_factory=list)
    flags: dict[FlagName, list[dict]] = field(default_factory=dict)  # flag -> evidence items
    receipt: Receipt | None = None  # the values of the receipt that began it

    def flag(self, name: FlagName, evidence: dict) -> None:
        self.flags.setdefault(name, []).append(evidence)

    @property
    def has_content(self) -> bool:
        return bool(self.pages or self.unreadable)


def split(
    pages: Sequence[PageResult],
    *,
    rules: SplitSettings,
    triage: TriageSettings,
    hints: Sequence[DossierHint] = (),
) -> list[Document]:
    """Cut pages into documents and attach every page-level flag to its document.

    Without separators, the input is one document. Pages before the first separator
    are flagged `unassigned_pages`. Hints, when given, decide the cut; any disagreement
    with the sheets is flagged `split_mismatch` on the dossiers concerned.
    """
    detected = _split_by_sheets(pages, rules)
    documents = _split_by_hints(pages, hints, detected, rules) if hints else detected
    for doc in documents:
        for index in doc.pages + doc.unreadable:
            for flag, evidence in pages[index].flags.items():
                doc.flag(flag, {"page": index, **evidence})
        if len(doc.pages) > triage.thick_record_pages:
            doc.flag(FlagName.THICK_RECORD, {"pages": len(doc.pages), "threshold": triage.thick_record_pages})
    return documents


def _separator(page: PageResult) -> tuple[str | None, str | None]:
    if page.separator and page.separator["kind"] in ("receipt", "generic"):
        return page.separator["kind"], page.separator["code"]
    return None, None


def _place(doc: Document, page: PageResult, rules: SplitSettings) -> None:
    if not page.readable:
        doc.unreadable.append(page.source_index)
    elif page.blank and rules.drop_blank:
        doc.removed_blank.append(page.source_index)
    else:
        doc.pages.append(page.source_index)


def _split_by_sheets(pages: Sequence[PageResult], rules: SplitSettings) -> list[Document]:
    documents = [Document(code=None)]
    any_separator = False
    previous_receipt: str | None = None
    for page in pages:
        kind, code = _separator(page)
        current = documents[-1]
        if kind == "receipt" and code == previous_receipt and current.code == code:
            # A receipt printed on two sheets, or fed twice: still the same dossier.
            (current.pages if rules.keep_receipt else current.separator_sheets).append(page.source_index)
            continue
        if kind is not None:
            any_separator = True
            current = Document(code=code, receipt=page.receipt if kind == "receipt" else None)
            documents.append(current)
            if kind == "generic" or not rules.keep_receipt:
                current.separator_sheets.append(page.source_index)
            else:
                current.pages.append(page.source_index)
            previous_receipt = code if kind == "receipt" else None
            continue
        if not page.blank:
            previous_receipt = None
        _place(current, page, rules)
    leading = documents[0]
    if any_separator and leading.has_content:
        leading.flag(FlagName.UNASSIGNED_PAGES, {"pages": leading.pages + leading.unreadable})
    return _without_empty(documents)


def _without_empty(documents: list[Document]) -> list[Document]:
    """Drop documents with no page, handing their removed blanks and sheets to a neighbour."""
    kept: list[Document] = []
    orphans: Document = Document(code=None)
    for doc in documents:
        if not doc.has_content:
            orphans.removed_blank += doc.removed_blank
            orphans.separator_sheets += doc.separator_sheets
            continue
        doc.removed_blank = sorted(doc.removed_blank + orphans.removed_blank)
        doc.separator_sheets = sorted(doc.separator_sheets + orphans.separator_sheets)
        orphans = Document(code=None)
        kept.append(doc)
    if kept:
        kept[-1].removed_blank = sorted(kept[-1].removed_blank + orphans.removed_blank)
        kept[-1].separator_sheets = sorted(kept[-1].separator_sheets + orphans.separator_sheets)
    elif orphans.removed_blank or orphans.separator_sheets:
        # An input of nothing but blank pages still becomes a document, blanks and all:
        # an empty record would hide that the scan was received.
        kept.append(Document(code=None, pages=orphans.removed_blank, separator_sheets=orphans.separator_sheets))
    return kept


def _split_by_hints(
    pages: Sequence[PageResult], hints: Sequence[DossierHint], detected: list[Document], rules: SplitSettings
) -> list[Document]:
    """The station's manifest wins; every dossier where the sheets disagree is flagged."""
    detected_by_code = {doc.code: doc for doc in detected if doc.code}
    claimed: set[int] = set()
    documents = []
    for hint in hints:
        doc = Document(code=hint.code)
        for page in pages[hint.first_page : hint.last_page + 1]:
            claimed.add(page.source_index)
            if _separator(page)[0] == "generic":
                doc.separator_sheets.append(page.source_index)
            else:
                _place(doc, page, rules)
        seen = detected_by_code.get(hint.code)
        doc.receipt = seen.receipt if seen else None
        if seen is None or seen.pages != doc.pages:
            doc.flag(
                FlagName.SPLIT_MISMATCH,
                {"manifest_pages": doc.pages, "detected_pages": seen.pages if seen else None},
            )
        documents.append(doc)
    rest = Document(code=None)
    for page in pages:
        if page.source_index not in claimed:
            _place(rest, page, rules)
    if rest.has_content:
        rest.flag(FlagName.UNASSIGNED_PAGES, {"pages": rest.pages + rest.unreadable})
    documents.append(rest)
    return _without_empty(documents)
