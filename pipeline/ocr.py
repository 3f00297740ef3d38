"""OCR of one corrected page: text layer, plain text in NFC, and word confidences."""

from __future__ import annotations

import csv
import logging
import unicodedata
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from pipeline._exec import tesseract
from pipeline.errors import ExternalProgramError

log = logging.getLogger(__name__)

# Package data; Tesseract reads them by path, hence `as_file` where they are used.
OCR_CONFIG = resources.files("pipeline") / "ocr_models" / "digitize.config"
USER_WORDS = resources.files("pipeline") / "ocr_models" / "vietnamese-headings.user-words"


@dataclass(frozen=True)
class OcrResult:
    text: str
    text_pdf: Path | None  # Tesseract's invisible text layer; None when OCR failed
    mean_confidence: float | None
    words: int
    confident_words: int  # confidence >= 60: evidence the page really carries text
    failure: str | None = None

    @property
    def characters(self) -> int:
        return sum(1 for ch in self.text if not ch.isspace())


def read_page(gray: np.ndarray, *, dpi: float, work: Path, languages: str, timeout: float) -> OcrResult:
    """OCR a level, upright gray page. A Tesseract crash or timeout yields an empty result."""
    image = work.with_suffix(".pgm")  # uncompressed: cheapest to write and for Leptonica to read
    # Encoded, then written by Python: unlike cv2.imwrite, a full disk raises with its reason.
    image.write_bytes(cv2.imencode(".pgm", gray)[1])
    try:
        with resources.as_file(OCR_CONFIG) as config_file, resources.as_file(USER_WORDS) as user_words:
            files = tesseract.ocr(
                image, work, languages=languages, dpi=round(dpi), config_file=config_file, timeout=timeout,
                user_words=user_words,
            )
    except ExternalProgramError as exc:
        log.warning("OCR failed, page gets an empty text layer: %s", exc)
        return OcrResult("", None, None, 0, 0, failure=str(exc))
    finally:
        image.unlink(missing_ok=True)
    confidences = _word_confidences(files.tsv)
    text = unicodedata.normalize("NFC", files.txt.read_text("utf-8")).replace("\f", "").strip()
    mean = round(sum(confidences) / len(confidences), 2) if confidences else None
    return OcrResult(
        text=text,
        text_pdf=files.text_pdf,
        mean_confidence=mean,
        words=len(confidences),
        confident_words=sum(1 for c in confidences if c >= 60),
    )


def _word_confidences(tsv: Path) -> list[float]:
    confidences = []
    with open(tsv, encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
            if row.get("level") == "5" and (row.get("text") or "").strip():
                conf = float(row["conf"])
                if conf >= 0:
                    confidences.append(conf)
    return confidences
