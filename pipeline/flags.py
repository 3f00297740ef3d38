"""The one list of triage flags: what sends a dossier to a person, each name as manifests and reports spell it."""

from __future__ import annotations

from enum import StrEnum


class FlagName(StrEnum):
    """A reason a person must look at a dossier. The evidence behind each is recorded beside it."""

    # Raised on a page (pipeline/page.py), and copied onto its dossier with the page's index.
    UNREADABLE_PAGE = "unreadable_page"
    OCR_FAILED = "ocr_failed"
    OVERSIZED = "oversized"
    TECHNICAL_DRAWING = "technical_drawing"
    LOW_CONFIDENCE = "low_confidence"
    SEPARATOR_UNREADABLE = "separator_unreadable"
    CODE_FROM_TEXT = "code_from_text"  # the receipt's symbol was unreadable; its printed code named the dossier
    BELOW_STANDARD = "below_standard"  # scanned under the Decree 30 minimum (resolution, colour)
    # Raised on a dossier while splitting (pipeline/split.py) or naming it (pipeline/record.py, digitize/batchjob.py).
    THICK_RECORD = "thick_record"
    UNASSIGNED_PAGES = "unassigned_pages"
    SPLIT_MISMATCH = "split_mismatch"
    DUPLICATE_CODE = "duplicate_code"
