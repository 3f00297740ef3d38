"""pdftotext (poppler): the text a born-digital PDF page already holds, for the record's text file."""

from __future__ import annotations

import unicodedata
from pathlib import Path

from pipeline._exec import run
from pipeline.errors import CorruptInput, ExternalProgramError, ProgramTimeout

PROGRAM = "pdftotext"


def page_text(pdf: Path, *, page: int, timeout: float) -> str:
    """The text of page `page` (0-based) in reading order, NFC-normalized."""
    argv = [PROGRAM, "-enc", "UTF-8", "-f", str(page + 1), "-l", str(page + 1), str(pdf), "-"]
    try:
        proc = run(argv, timeout=timeout, what=f"{pdf} page {page + 1}")
    except ExternalProgramError as exc:
        if isinstance(exc, ProgramTimeout):
            raise
        raise CorruptInput(pdf, f"page {page + 1}: its text cannot be read: {exc}") from None
    return unicodedata.normalize("NFC", proc.stdout.decode("utf-8", "replace")).strip("\f\n ")
