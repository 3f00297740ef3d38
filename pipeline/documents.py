"""Component documents of a dossier: where each starts, and the Decree 30 Annex VI fields its first page shows."""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from pipeline.flags import FlagName
from pipeline.manifest import ComponentDocument, DossierMetadata, Receipt
from pipeline.page import PageResult
from pipeline.settings import RecordsSettings
from pipeline import vietnamese

# An ID card is 85.6 x 54 mm; a page with no side over this was scanned as a card, not as a sheet.
SMALL_PAGE_MM = 150.0
# Sheets whose sides differ by more than this share are different paper: a new document.
PAGE_SIZE_CHANGE = 0.12
# A title line is looked for among a page's first lines only: below them it is body text.
TITLE_WITHIN_LINES = 20
# Folded lines at least this close to the heading are the heading (OCR drops and swaps letters).
HEADING_SIMILARITY = 0.8
RELIABILITY = "digitized"

_NATIONAL_HEADING = "CONG HOA XA HOI CHU NGHIA VIET NAM"
_MOTTO = "DOC LAP TU DO HANH PHUC"
# Document types by their folded title words, longest first, with the type's name as written.
_TYPES = sorted([
    ("GIAY TIEP NHAN HO SO", "Giấy tiếp nhận hồ sơ"), ("GIAY CHUNG NHAN", "Giấy chứng nhận"),
    ("GIAY XAC NHAN", "Giấy xác nhận"), ("GIAY UY QUYEN", "Giấy ủy quyền"), ("GIAY PHEP", "Giấy phép"),
    ("GIAY KHAI SINH", "Giấy khai sinh"), ("GIAY MOI", "Giấy mời"), ("GIAY DE NGHI", "Giấy đề nghị"),
    ("QUYET DINH", "Quyết định"), ("CHI THI", "Chỉ thị"), ("THONG BAO", "Thông báo"), ("BAO CAO", "Báo cáo"),
    ("TO TRINH", "Tờ trình"), ("TO KHAI", "Tờ khai"), ("BIEN BAN", "Biên bản"), ("HOP DONG", "Hợp đồng"),
    ("KE HOACH", "Kế hoạch"), ("NGHI QUYET", "Nghị quyết"), ("NGHI DINH", "Nghị định"), ("THONG TU", "Thông tư"),
    ("CONG VAN", "Công văn"), ("HUONG DAN", "Hướng dẫn"), ("QUY CHE", "Quy chế"), ("QUY DINH", "Quy định"),
    ("TRICH LUC", "Trích lục"), ("PHIEU", "Phiếu"), ("DON", "Đơn"), ("BAN VE", "Bản vẽ"), ("SO DO", "Sơ đồ"),
    ("CAN CUOC CONG DAN", "Căn cước công dân"), ("CAN CUOC", "Căn cước"), ("CHUNG MINH NHAN DAN", "Chứng minh nhân dân"),
], key=lambda item: -len(item[0]))  # fmt: skip
_ID_CARD_WORDS = ("CAN CUOC", "CHUNG MINH NHAN DAN", "CITIZEN IDENTITY", "IDENTITY CARD")
# "Số: 123/QĐ-UBND", "Số 07/2020/CT-TTg", matched on the folded line (OCR may read "So", "S6"). A
# misread number ("Số: ý# /CT-UBND") still gives the notation, which has a hyphen (a date has none,
# nor does the "Số / No.:" of an ID card).
_NUMBER = re.compile(r"\bS[O6]\s*(?:[:.;]\s*([^\s/]{0,6})|(\d{1,6}))\s*/\s*([0-9A-Z][0-9A-Z/.]*-[0-9A-Z\-/.]*[0-9A-Z])")
# "Nghệ An, ngày 1 tháng 9 năm 2023": the comma before "ngày" tells it from a birth date in the text.
_ISSUED = re.compile(r"([A-Z][A-Z .]*?)\s*[,.]\s*NGAY\s*(\d{1,2})\s*THANG\s*(\d{1,2})\s*NAM\s*(\d{4})")
_SUBJECT_START = re.compile(r"^(V/V|VE VIEC|V/V:)\b")


@dataclass(frozen=True)
class PageFacts:
    """What finding documents needs of one page in the record: its text, paper size and kind."""

    text: str
    size_mm: tuple[float, float] | None = None
    drawing: bool = False


@dataclass(frozen=True)
class _Start:
    reason: str  # first_page, national_heading, title, id_card, drawing, page_size
    type_name: str | None
    title: str | None


def fold(text: str) -> str:
    """Upper case without diacritics, one character per character, so positions match the NFC text."""
    out = []
    for ch in unicodedata.normalize("NFC", text):
        base = unicodedata.normalize("NFD", ch)[0]
        out.append("D" if base in "đĐ" else base.upper() if len(base.upper()) == 1 else base)
    return "".join(out)


def _words(folded_line: str) -> str:
    return " ".join(re.sub(r"[^A-Z0-9]+", " ", folded_line).split())


def _near(folded_line: str, target: str) -> bool:
    """The line holds `target`, letters possibly misread: some window of its words is close to it."""
    words = _words(folded_line).split()
    size = len(target.split())
    if len(set(words) & set(target.split())) < 2:
        return False  # not two of its words read right: no need to compare letters
    matcher = difflib.SequenceMatcher(None, "", target)  # the target is indexed once, windows are cheap
    for width in (size - 1, size, size + 1):
        for start in range(max(1, len(words) - width + 1)):
            matcher.set_seq1(" ".join(words[start : start + width]))
            # The quick upper bounds rule out most windows before the real ratio is computed.
            if (
                matcher.real_quick_ratio() >= HEADING_SIMILARITY
                and matcher.quick_ratio() >= HEADING_SIMILARITY
                and matcher.ratio() >= HEADING_SIMILARITY
            ):
                return True
    return False


def _lines(text: str) -> list[str]:
    return [" ".join(line.split()) for line in text.splitlines() if line.strip()]


def _is_caps(line: str) -> bool:
    letters = [ch for ch in line if ch.isalpha()]
    return len(letters) >= 2 and sum(ch.isupper() for ch in letters) / len(letters) >= 0.8


def _title(lines: list[str]) -> tuple[int, str, str] | None:
    """(line index, type name, title as read) of the first title line near the top of a page."""
    for index, line in enumerate(lines[:TITLE_WITHIN_LINES]):
        if not _is_caps(line) or line.rstrip().endswith(":"):
            continue  # "QUYẾT ĐỊNH:" before a decision's articles is not a title
        words = _words(fold(line))
        if _near(fold(line), _NATIONAL_HEADING) or _near(fold(line), _MOTTO):
            continue
        for folded_type, type_name in _TYPES:
            if words == folded_type or words.startswith(folded_type + " "):
                title = [line]
                # A long title runs on over the next capital lines.
                for more in lines[index + 1 : index + 3]:
                    if not _is_caps(more) or more.endswith(":") or _SUBJECT_START.match(_words(fold(more)) + " "):
                        break
                    title.append(more)
                return index, type_name, " ".join(title)
    return None


def _has_heading(lines: list[str]) -> bool:
    return any(_near(fold(line), _NATIONAL_HEADING) for line in lines[:TITLE_WITHIN_LINES])


def _is_id_card(page: PageFacts, lines: list[str]) -> bool:
    # Capital lines only: an application mentions "số căn cước công dân" in its text.
    folded = " ".join(_words(fold(line)) for line in lines[:TITLE_WITHIN_LINES] if _is_caps(line))
    small = page.size_mm is not None and max(page.size_mm) <= SMALL_PAGE_MM
    return small or any(word in folded for word in _ID_CARD_WORDS)


def _other_paper(page: PageFacts, previous: PageFacts) -> bool:
    if page.size_mm is None or previous.size_mm is None:
        return False
    now, before = sorted(page.size_mm), sorted(previous.size_mm)
    return any(abs(a - b) / max(b, 1.0) > PAGE_SIZE_CHANGE for a, b in zip(now, before, strict=True))


def _start(page: PageFacts, previous: PageFacts | None, previous_start: _Start | None) -> _Start | None:
    """Why a document starts on this page, or None when the page continues the one before."""
    lines = _lines(page.text)
    title = _title(lines)
    type_name, title_text = (title[1], title[2]) if title else (None, None)
    if _is_id_card(page, lines):
        # A card's back follows its front: same size, no title of its own.
        continuing = previous is not None and previous_start is not None and previous_start.reason == "id_card"
        if continuing and title is None and not _other_paper(page, previous):
            return None
        return _Start("id_card", type_name or "Căn cước công dân", title_text or "Căn cước công dân")
    if previous is None:
        return _Start("first_page", type_name or ("Bản vẽ" if page.drawing else None), title_text)
    if page.drawing and not previous.drawing:
        return _Start("drawing", type_name or "Bản vẽ", title_text)
    if _has_heading(lines):
        return _Start("national_heading", type_name, title_text)
    if title is not None:
        return _Start("title", type_name, title_text)
    if _other_paper(page, previous):
        return _Start("page_size", type_name, title_text)
    return None


def find_starts(pages: Sequence[PageFacts]) -> list[int]:
    """Indexes of the pages (in the record) on which a component document starts; page 0 always does."""
    return [start for start, _ in _starts(pages)]


def _starts(pages: Sequence[PageFacts]) -> list[tuple[int, _Start]]:
    found: list[tuple[int, _Start]] = []
    for index, page in enumerate(pages):
        previous = pages[index - 1] if index else None
        start = _start(page, previous, found[-1][1] if found else None)
        if start is not None:
            found.append((index, start))
    return found


def read_documents(pages: Sequence[PageFacts], *, source_pages: Sequence[int]) -> list[ComponentDocument]:
    """The record's component documents, each with the Annex VI fields its first page shows.

    `source_pages[i]` is the source index of the record's page i.
    """
    starts = _starts(pages)
    documents = []
    for ordinal, (first, start) in enumerate(starts, start=1):
        last = starts[ordinal][0] - 1 if ordinal < len(starts) else len(pages) - 1
        documents.append(_document(ordinal, start, pages[first : last + 1], first, last, source_pages))
    return documents


def _document(
    ordinal: int, start: _Start, pages: Sequence[PageFacts], first: int, last: int, source_pages: Sequence[int]
) -> ComponentDocument:
    lines = _lines(pages[0].text)
    folded = [fold(line) for line in lines]
    number_at, number_end, number, notation = _number(folded, lines)
    issued, place = _issued(folded, lines, number_at=number_at, number_end=number_end)
    subject = _subject(pages[0].text)
    type_name = start.type_name
    if type_name is None and notation is not None and subject is not None:
        type_name = "Công văn"  # an official letter has a number and a "V/v" line, but no title
    type_name = type_name or "Văn bản"
    if start.title:
        title = start.title
    elif notation:
        title = f"{type_name} số {number or '…'}/{notation}"
    else:
        title = f"{type_name} {ordinal}"
    heading = title if subject is None or subject == start.title else f"{title}: {subject}"
    return ComponentDocument(
        ordinal=ordinal, type_name=type_name, title=heading, subject=subject or start.title,
        code_number=number, code_notation=notation, issued_date=issued, issued_place=place,
        organ_name=_organ(folded, lines, number_at), language=_language("\n".join(p.text for p in pages)),
        page_amount=last - first + 1, first_page=first, last_page=last,
        source_pages=list(source_pages[first : last + 1]), started_by=start.reason,
    )  # fmt: skip


def _number(folded: list[str], lines: list[str]) -> tuple[int | None, int, str | None, str | None]:
    """(line index, where it ends, number, notation) of "Số: 123/QĐ-UBND" in the header.

    "Nghị định số 61/2018/NĐ-CP" in the text is not it: the header's "Số" has a capital S.
    """
    for index, line in enumerate(folded[:TITLE_WITHIN_LINES]):
        for found in _NUMBER.finditer(line):
            if lines[index][found.start()] != "S":
                continue
            digits = found.group(1) or found.group(2) or ""
            # The notation as printed (QĐ, not QD): the folded line has the same positions.
            notation = lines[index][found.start(3) : found.end(3)].upper()
            return index, found.end(), digits if digits.isdigit() else None, notation
    return None, 0, None, None


def _issued(folded: list[str], lines: list[str], *, number_at: int | None, number_end: int) -> tuple[date | None, str | None]:
    for index, line in enumerate(folded):
        # On a line read across both header columns, the place follows the number.
        offset = number_end if index == number_at else 0
        found = _ISSUED.search(line, offset)
        if not found:
            continue
        day, month, year = (int(found.group(n)) for n in (2, 3, 4))
        try:
            when = date(year, month, day)
        except ValueError:
            continue  # misread digits: no date rather than a wrong one
        place = re.split(r"[.;:]", lines[index][found.start(1) : found.end(1)])[-1].strip()
        place = re.sub(r"^(Làm tại|Lam tai)\s+", "", place, flags=re.IGNORECASE)
        return when, place or None
    return None, None


def _subject(text: str) -> str | None:
    """The "V/v ..." or "Về việc ..." line near the top, with its run-on lines up to a blank line."""
    raw = [" ".join(line.split()) for line in text.splitlines()]
    seen = 0
    for index, line in enumerate(raw):
        seen += bool(line)
        if seen > TITLE_WITHIN_LINES + 5:
            break
        found = re.search(r"\b(V/V|VE VIEC)\b", fold(line))
        if not found or (found.group(1) == "V/V" and found.start() > 0 and line[found.start() - 1] not in " “\""):
            continue
        subject = [line[found.start() :]]
        for more in raw[index + 1 : index + 4]:
            folded = fold(more)
            # A blank line, a capital line or a "Kính gửi:" ends it; so does a colon (a stamp read into the text).
            if not more or ":" in more or _is_caps(more) or _near(folded, _MOTTO) or _ISSUED.search(folded):
                break
            subject.append(more)
        return re.sub(r"^(V/v|V/V|v/v)\s*:?\s*", "", " ".join(subject)).strip() or None
    return None


def _organ(folded: list[str], lines: list[str], number_at: int | None) -> str | None:
    """The issuing organ: the capital lines above "Số: ...", without the national heading and motto.

    Tesseract reads the two header columns block by block or line by line across both; either way
    the organ is the left part of the capital lines above the number.
    """
    if number_at is None:
        return None
    organ = []
    for line, text in zip(folded[:number_at], lines[:number_at], strict=True):
        for right in ("CONG HOA", "DOC LAP"):
            cut = line.find(right)
            if cut >= 0:
                line, text = line[:cut], text[:cut]
        if _near(line, _NATIONAL_HEADING) or _near(line, _MOTTO):
            continue
        text = text.strip(" -_.")
        if _is_caps(text) and len(_words(fold(text))) >= 2:
            organ.append(text)
    return " ".join(organ) or None


def _language(text: str) -> str:
    share, vietnamese_share = vietnamese.syllable_share(text)
    return "en" if share is not None and vietnamese_share < 0.05 else "vi"


def dossier_metadata(
    documents: Sequence[ComponentDocument], *, code: str | None, pages: int, agency: str, records: RecordsSettings,
    receipt: Receipt | None,
) -> DossierMetadata:
    """The dossier's Annex VI fields: its code, retention and access by the receipt's procedure, creator, dates and totals.

    The receipt's document name, when its QR held one, is the dossier's title as the reception desk named it.
    """
    rule = records.rule_for(receipt.procedure_code if receipt else None)
    dates = sorted(doc.issued_date for doc in documents if doc.issued_date is not None)
    titled = [doc for doc in documents if doc.type_name != "Giấy tiếp nhận hồ sơ"] or list(documents)
    languages = sorted({doc.language for doc in documents}) or ["vi"]
    return DossierMetadata(
        file_code=code, title=(receipt and receipt.document_name) or (titled[0].title if titled else None), maintenance=rule.maintenance, rights=rule.rights,
        creator=agency or None, language=",".join(languages), start_date=dates[0] if dates else None,
        end_date=dates[-1] if dates else None, doc_total=len(documents), page_total=pages,
        description=None, reliability=RELIABILITY,
    )  # fmt: skip


def page_facts(page: PageResult) -> PageFacts:
    return PageFacts(text=page.text, size_mm=page.size_mm, drawing=FlagName.TECHNICAL_DRAWING in page.flags)
