"""The OCR-engine seam: an engine reads one corrected page into NFC text and an invisible text layer.

The text-layer contract, which `pdfpage.build_page_pdf` and `assemble` rely on to place a layer
from any engine under the stored image:

- `PageText.text_pdf` is a one-page PDF file (or None when the engine failed on the page);
- its MediaBox is [0 0 W H] with W, H = the image's width and height in pixels × 72 / dpi,
  the image being the upright page handed to `read_page` at the `dpi` handed with it (a page
  skewed by up to 2° is handed over unlevelled, since Tesseract levels such lines better than
  resampling does: the layer is then drawn turned by that skew, so it still lands on the words);
- text positions are in PDF points of that page, y up from its bottom-left corner, so a word's
  box covers the same spot as the word on the image;
- text is invisible (render mode 3, `3 Tr`), and the page draws nothing else: no images, no
  vector graphics, no annotations, no optional content;
- fonts are embedded TrueType (simple or Type 0/CIDFontType2) or Type 1 programs: PDF/A-1b
  wants them even for invisible text, and the `pikepdf.pdfa` writer refuses Type 3 fonts;
  text extraction must give the words (a ToUnicode map);
- a font named `/GlyphLessFont` must be Tesseract's (Type 0, Identity-H, its `pdf.ttf` embedded,
  identity ToUnicode: each 2-byte code is the UTF-16 code unit), because `assemble` keeps one
  copy of it for all pages; an engine may write its text in it;
- no transparency, JavaScript or encryption, so the record can still be PDF/A-1b or 2b;
- `PageText.text` is the same words as plain text, Unicode NFC, pages without form feeds.

The page is handed over as a `PageImage`, whose pixels the engine may take for itself
(`PageImage.take`): the caller keeps no other reference to them, so a large sheet (an A0
drawing is 139 MB in gray) is not held by the caller while the engine reads it.

Tesseract is the one engine today; `choose_engine` in `batch.process_inputs` can route chosen
pages to another (a sparse-text pass on drawings, say), and each page's manifest record names
the engine, its version and model files.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from pipeline import headings
from pipeline._exec import tesseract
from pipeline.errors import ExternalProgramError
from pipeline.sources import PageRef

log = logging.getLogger(__name__)

# Package data; Tesseract reads them by path, hence `as_file` where they are used.
OCR_CONFIG = resources.files("pipeline") / "ocr_models" / "digitize.config"
USER_WORDS = resources.files("pipeline") / "ocr_models" / "vietnamese-headings.user-words"


@dataclass(frozen=True)
class PageText:
    """What an engine read on one page."""

    text: str  # NFC
    text_pdf: Path | None  # the invisible text layer (see the contract above); None when OCR failed
    mean_confidence: float | None  # 0-100
    words: int
    failure: str | None = None
    # A second reading of part of the page, with its reason (see pipeline/headings.py).
    second_pass: headings.HeadingPass | None = None

    @property
    def characters(self) -> int:
        return sum(1 for ch in self.text if not ch.isspace())


EMPTY_PAGE = PageText("", None, None, 0)


class PageImage:
    """The upright 8-bit gray page handed to `OcrEngine.read_page`; its pixels can be taken
    once, after which it holds none (see the module's docstring)."""

    def __init__(self, pixels: np.ndarray) -> None:
        self._pixels: np.ndarray | None = pixels
        self.shape: tuple[int, int] = pixels.shape[:2]

    def take(self) -> np.ndarray:
        pixels, self._pixels = self._pixels, None
        if pixels is None:
            raise RuntimeError("the page's pixels were already taken")
        return pixels


@dataclass(frozen=True)
class Orientation:
    rotate: int  # degrees clockwise that make the page upright
    confidence: float  # on the engine's own scale, only ever reported above its trust threshold


class OcrEngine(Protocol):
    """One OCR engine. Instances cross into page-worker processes, so they must pickle."""

    @property
    def name(self) -> str: ...

    def version(self) -> str: ...

    def model_files(self, languages: str) -> list[Path | Traversable]:
        """The files that decide what the engine reads; raises ConfigError/MissingProgram when missing."""
        ...

    def orientation(self, gray: np.ndarray, *, dpi: float, work: Path, timeout: float) -> Orientation | None:
        """The turn that makes a level page upright, or None when the engine cannot tell confidently."""
        ...

    def read_page(self, page: PageImage, *, dpi: float, work: Path, languages: str, timeout: float) -> PageText:
        """Read an upright gray page (skewed by 2° at most); files go next to `work` (a path stem). A crash or timeout
        gives an empty PageText with `failure` set, not an exception."""
        ...


# Chooses the engine for each page; called in the parent process, before the page is read.
EngineChooser = Callable[[PageRef], OcrEngine]


@dataclass(frozen=True)
class TesseractEngine:
    """Tesseract, run through `pipeline._exec.tesseract` (the one place faults are injected)."""

    name: str = "tesseract"
    # Tesseract's orientation detector is trusted from this confidence on (its scale).
    min_orientation_confidence: float = 2.0
    # Tesseract's --psm; None: its default page layout analysis. See `sparse_text`.
    page_segmentation: int | None = None

    def version(self) -> str:
        return tesseract.info().version

    def model_files(self, languages: str) -> list[Path | Traversable]:
        return [*tesseract.require_languages(languages), OCR_CONFIG, USER_WORDS]

    def orientation(self, gray: np.ndarray, *, dpi: float, work: Path, timeout: float) -> Orientation | None:
        image = work.with_suffix(".osd.pgm")
        cv2.imwrite(str(image), gray)
        try:
            osd = tesseract.detect_orientation(image, dpi=round(dpi), timeout=timeout)
        except ExternalProgramError as exc:  # the text-line evidence stands; the detector only breaks a tie
            log.warning("%s: orientation detection failed (%s); keeping the text-line evidence", work.name, exc)
            osd = None
        finally:
            image.unlink(missing_ok=True)
        if osd is None or osd.confidence < self.min_orientation_confidence:
            return None
        return Orientation(osd.rotate, osd.confidence)

    def read_page(self, page: PageImage, *, dpi: float, work: Path, languages: str, timeout: float) -> PageText:
        image = work.with_suffix(".pgm")  # uncompressed: cheapest to write and for Leptonica to read
        height, width = page.shape
        # Encoded, then written by Python: unlike cv2.imwrite, a full disk raises with its reason.
        # The pixels are dropped once on disk: Tesseract needs ~4x the page, and we need no copy.
        image.write_bytes(cv2.imencode(".pgm", page.take())[1])
        try:
            try:
                with resources.as_file(OCR_CONFIG) as config_file, resources.as_file(USER_WORDS) as user_words:
                    files = tesseract.ocr(
                        image, work, languages=languages, dpi=round(dpi), config_file=config_file, timeout=timeout,
                        user_words=user_words, page_segmentation=self.page_segmentation,
                    )  # fmt: skip
            except ExternalProgramError as exc:
                log.warning("OCR failed, page gets an empty text layer: %s", exc)
                return PageText("", None, None, 0, failure=str(exc))
            confidences = _word_confidences(files.tsv)
            text = unicodedata.normalize("NFC", files.txt.read_text("utf-8")).replace("\f", "").strip()
            mean = round(sum(confidences) / len(confidences), 2) if confidences else None
            second = None
            if "vie" in languages.split("+") and "+" in languages:
                # Heading crops are read back from the file, a few rows at a time.
                offset = image.stat().st_size - height * width
                gray = np.memmap(image, np.uint8, mode="r", offset=offset, shape=(height, width))
                text, second = _restore_headings(gray, files, text, work=work, dpi=round(dpi), timeout=timeout)
                del gray
        finally:
            image.unlink(missing_ok=True)
        return PageText(text=text, text_pdf=files.text_pdf, mean_confidence=mean, words=len(confidences), second_pass=second)


def _restore_headings(
    gray: np.ndarray, files: tesseract.OcrFiles, text: str, *, work: Path, dpi: int, timeout: float
) -> tuple[str, headings.HeadingPass | None]:
    """Vietnamese capital lines that lost every mark to the English model, read again in Vietnamese."""
    words = headings.read_words(files.tsv)
    suspects = headings.suspect_lines(words)
    if not suspects:
        return text, None
    with resources.as_file(USER_WORDS) as user_words:
        fixed = headings.reread(gray, words, suspects, work=work, dpi=dpi, timeout=timeout, user_words=user_words)
    if fixed and not headings.rewrite_text_layer(files.text_pdf, words, fixed):
        log.warning("%s: text layer does not match the word list; headings left as first read", work.name)
        fixed = {}
    if fixed:
        text = headings.rewrite_text(text, words, fixed)
    return text, headings.HeadingPass("capital lines without Vietnamese marks", len(suspects), len(fixed))


TESSERACT = TesseractEngine()

# Tesseract's "sparse text": find as much text as possible in no particular order. A drawing's
# words are scattered labels, dimensions and title-block cells, which page layout analysis
# merges into junk columns or drops.
SPARSE_TEXT_PSM = 11


def sparse_text(engine: OcrEngine) -> OcrEngine:
    """The engine set to read scattered text (drawings); an engine without such a mode reads as it reads."""
    if isinstance(engine, TesseractEngine):
        return dataclasses.replace(engine, page_segmentation=SPARSE_TEXT_PSM)
    return engine


def default_chooser(ref: PageRef) -> OcrEngine:
    """Every page to Tesseract."""
    return TESSERACT


def _word_confidences(tsv: Path) -> list[float]:
    confidences = []
    with open(tsv, encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
            if row.get("level") == "5" and (row.get("text") or "").strip():
                conf = float(row["conf"])
                if conf >= 0:
                    confidences.append(conf)
    return confidences
