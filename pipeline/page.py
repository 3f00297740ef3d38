"""Everything done to one page, in a worker process: decode, orient, deskew, OCR, encode."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from pipeline import geometry, paper
from pipeline._exec import tesseract
from pipeline.blank import BlankEvidence, detect_blank
from pipeline.errors import ExternalProgramError
from pipeline.ocr import OcrResult, read_page
from pipeline.pdfpage import build_page_pdf, encode_for_storage
from pipeline.settings import Settings
from pipeline.sources import PageRef, load_page

# Tesseract's own orientation detector is trusted from this confidence on (its scale).
OSD_MIN_CONFIDENCE = 2.0


@dataclass
class PageResult:
    """What one page became, with every measured value that drove a decision."""

    source_index: int
    source_file: str
    source_frame: int
    pixels: tuple[int, int]
    dpi: float
    dpi_inferred: bool
    size_mm: tuple[float, float]  # the corrected page, as archived
    rotation: int
    orientation_method: str
    orientation_score: float
    sideways_ratio: float
    deskew_angle: float
    blank: bool
    blank_evidence: dict
    ocr_confidence: float | None
    words: int
    characters: int
    image_encoding: str
    image_bytes: int
    flags: list[str]
    flag_reasons: dict[str, str]
    timings: dict[str, float]
    page_pdf: str
    text: str = field(repr=False)


class _Stopwatch:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - start, 4)


def process_page(ref: PageRef, work_dir: Path, settings: Settings) -> PageResult:
    """Turn one page reference into a one-page PDF in `work_dir` and its record."""
    clock = _Stopwatch()
    flags: dict[str, str] = {}
    stem = work_dir / f"page-{ref.index:05d}"
    with clock.stage("load"):
        page = load_page(ref, settings.limits)
        gray = geometry.gray_pixels(page.image)
        analysis = geometry.analysis_image(gray, page.dpi)
    with clock.stage("blank"):
        evidence = detect_blank(analysis, settings.blank)
    if evidence.blank:
        # Nothing to orient or read; OCR would only read bleed-through as mirrored gibberish.
        geo = geometry.Geometry(0, 0.0, 0.0, 0.0, 0, "none")
        ocr = OcrResult("", None, None, 0, 0)
    else:
        with clock.stage("orient"):
            geo = geometry.measure(analysis, max_skew_deg=settings.geometry.max_skew_deg)
            if abs(geo.updown_score) < settings.geometry.orientation_margin:
                geo = _ask_tesseract(analysis, geo, stem, settings)
        with clock.stage("deskew"):
            level = geometry.level_image(
                gray, quarter_turns=geo.quarter_turns, skew_deg=_applied_skew(geo, settings), fill=255
            )
        with clock.stage("ocr"):
            ocr = read_page(
                level, dpi=page.dpi, work=stem, languages=settings.ocr.languages,
                timeout=settings.ocr.page_timeout_s,
            )  # fmt: skip
            del level
    del gray
    skew = _applied_skew(geo, settings)
    if ocr.failure:
        flags["ocr_failed"] = ocr.failure
    with clock.stage("encode"):
        stored = encode_for_storage(
            page, profile=settings.output.profile, jpeg_quality=settings.output.jpeg_quality
        )
        page_pdf = stem.with_suffix(".page.pdf")
        build_page_pdf(
            stored, size_px=page.image.size, dpi=page.dpi, quarter_turns=geo.quarter_turns,
            skew_deg=skew, text_pdf=ocr.text_pdf, out=page_pdf,
        )  # fmt: skip
    width, height = page.image.size
    corrected = (height, width) if geo.quarter_turns % 2 else (width, height)
    return PageResult(
        source_index=ref.index,
        source_file=ref.path.name,
        source_frame=ref.frame,
        pixels=(width, height),
        dpi=round(page.dpi, 2),
        dpi_inferred=page.dpi_inferred,
        size_mm=paper.size_mm(*corrected, page.dpi),
        rotation=geo.rotation,
        orientation_method=geo.method,
        orientation_score=round(geo.updown_score, 3),
        sideways_ratio=round(geo.sideways_ratio, 3),
        deskew_angle=round(skew, 2),
        blank=evidence.blank,
        blank_evidence=_blank_record(evidence),
        ocr_confidence=ocr.mean_confidence,
        words=ocr.words,
        characters=ocr.characters,
        image_encoding=stored.encoding,
        image_bytes=len(stored.data),
        flags=sorted(flags),
        flag_reasons=flags,
        timings=clock.timings,
        page_pdf=str(page_pdf),
        text=ocr.text,
    )


def _applied_skew(geo: geometry.Geometry, settings: Settings) -> float:
    return geo.skew_deg if abs(geo.skew_deg) >= settings.geometry.min_skew_deg else 0.0


def _blank_record(evidence: BlankEvidence) -> dict:
    return {
        "marks": evidence.marks,
        "ink_fraction": evidence.ink_fraction,
        "punch_holes_ignored": evidence.ignored_punch_holes,
    }


def _ask_tesseract(
    analysis: geometry.AnalysisImage, geo: geometry.Geometry, stem: Path, settings: Settings
) -> geometry.Geometry:
    """When the text-line evidence for up/down is weak, let Tesseract's detector decide."""
    level = geometry.level_image(analysis.gray, quarter_turns=geo.quarter_turns, skew_deg=geo.skew_deg, fill=255)
    image = stem.with_suffix(".osd.pgm")
    cv2.imwrite(str(image), level)
    try:
        osd = tesseract.detect_orientation(image, dpi=round(analysis.dpi), timeout=settings.ocr.page_timeout_s)
    except ExternalProgramError:
        osd = None
    finally:
        image.unlink(missing_ok=True)
    if osd is None or osd.confidence < OSD_MIN_CONFIDENCE:
        return geo
    # OSD reports the clockwise turn that corrects the page; ours count counterclockwise.
    extra = (-osd.rotate // 90) % 4
    return geometry.Geometry(
        (geo.quarter_turns + extra) % 4, geo.skew_deg, geo.sideways_ratio,
        osd.confidence, geo.marks, "osd",
    )  # fmt: skip
