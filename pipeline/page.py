"""Everything done to one page, in a worker process: decode, orient, deskew, OCR, classify, encode."""

from __future__ import annotations

import dataclasses
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import cv2

import numpy as np

from pipeline import barcodes, drawings, geometry, paper, triage, vietnamese
from pipeline.blank import BlankEvidence, detect_blank
from pipeline.errors import CorruptInput
from pipeline.flags import FlagName
from pipeline.ocr import EMPTY_PAGE, TESSERACT, OcrEngine, PageText, sparse_text
from pipeline.pdfpage import build_page_pdf, encode_for_storage
from pipeline.settings import Settings
from pipeline.sources import PageRef, load_page

THUMBNAIL_WIDTH = 240
# A flagged page's thumbnail: large enough that a reviewer reads a title block on it.
REVIEW_LONG_SIDE = 1200
# Room around the title block's rules when it is read on its own.
TITLE_BLOCK_MARGIN_MM = 1.5


@dataclass
class PageResult:
    """What one page became, with every measured value that drove a decision."""

    source_index: int
    source_file: str
    source_frame: int
    flags: dict[FlagName, dict] = field(default_factory=dict)  # flag -> its evidence
    timings: dict[str, float] = field(default_factory=dict)
    readable: bool = True
    pixels: tuple[int, int] | None = None
    dpi: float | None = None
    dpi_inferred: bool | None = None
    size_mm: tuple[float, float] | None = None  # the corrected page, as archived
    rotation: int = 0
    orientation_method: str = "none"
    orientation_score: float = 0.0
    sideways_ratio: float = 0.0
    deskew_angle: float = 0.0
    blank: bool = False
    blank_evidence: dict = field(default_factory=dict)
    ocr_engine: str | None = None  # the engine that read the page; None when none did (blank, unreadable)
    ocr_confidence: float | None = None
    words: int = 0
    characters: int = 0
    syllable_share: float | None = None
    separator: dict | None = None
    drawing: dict = field(default_factory=dict)
    title_block: dict | None = None  # a drawing's title block, read on its own (drawings.TitleBlockText)
    image_encoding: str | None = None
    image_bytes: int = 0
    # Work files and text, kept out of the manifest's page records.
    page_pdf: str | None = field(default=None, repr=False)
    thumbnail: str | None = field(default=None, repr=False)
    text: str = field(default="", repr=False)


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


def process_page(
    ref: PageRef, work_dir: Path, settings: Settings, *, engine: OcrEngine = TESSERACT
) -> PageResult:
    """Turn one page reference into a one-page PDF and a thumbnail in `work_dir`, and its record."""
    clock = _Stopwatch()
    result = PageResult(ref.index, ref.path.name, ref.frame, timings=clock.timings)
    stem = work_dir / f"page-{ref.index:05d}"
    try:
        with clock.stage("load"):
            page = load_page(ref, settings.limits)
    except CorruptInput as exc:
        # One damaged page costs that page, not the dossier: a person re-scans it.
        result.readable = False
        result.flags[FlagName.UNREADABLE_PAGE] = {"reason": exc.reason}
        return result
    with clock.stage("load"):
        gray = geometry.gray_pixels(page.image)
        analysis = geometry.analysis_image(gray, page.dpi)
    with clock.stage("blank"):
        evidence = detect_blank(analysis, settings.blank)
    geo = geometry.Geometry(0, 0.0, 0.0, 0.0, 0, "none")
    ocr = EMPTY_PAGE
    symbols: list[barcodes.Symbol] = []
    drawing: drawings.DrawingEvidence | None = None
    level = None
    if not evidence.blank:
        # Nothing to orient or read on a blank page; OCR would only read bleed-through.
        with clock.stage("orient"):
            geo = geometry.measure(analysis, max_skew_deg=settings.geometry.max_skew_deg)
            if abs(geo.updown_score) < settings.geometry.orientation_margin:
                geo = _ask_engine(engine, analysis, geo, stem, settings)
        skew = _applied_skew(geo, settings)
        with clock.stage("deskew"):
            level = geometry.level_image(gray, quarter_turns=geo.quarter_turns, skew_deg=skew, fill=255)
        with clock.stage("barcodes"):
            symbols = barcodes.read_symbols(level)
        with clock.stage("triage"):
            # Before OCR, so that a drawing is read once, in the mode that suits it.
            drawing = _drawing_evidence(analysis, geo, skew, symbols, page.dpi, settings)
            if drawing.drawing and drawing.turn:
                # Text-line evidence is weak on a drawing; its title block belongs bottom right.
                geo = dataclasses.replace(geo, quarter_turns=(geo.quarter_turns + drawing.turn) % 4, method="title-block")
                level = geometry.level_image(gray, quarter_turns=geo.quarter_turns, skew_deg=skew, fill=255)
                symbols = barcodes.read_symbols(level)
                drawing = _drawing_evidence(analysis, geo, skew, symbols, page.dpi, settings)
    del gray
    with clock.stage("encode"):
        # Stored before OCR, so that the decoded scan (an A0 sheet: 139 MB in gray, 418 MB in
        # colour) is not held while Tesseract runs. A drawing's thin lines would ring under
        # JPEG: it is kept lossless whatever the profile.
        stored = encode_for_storage(
            page, profile=settings.output.profile, jpeg_quality=settings.output.jpeg_quality,
            lossless=drawing is not None and drawing.drawing,
        )  # fmt: skip
    (width, height), dpi, dpi_inferred = page.image.size, page.dpi, page.dpi_inferred
    del page
    if level is not None:
        reader = sparse_text(engine) if drawing.drawing else engine
        with clock.stage("ocr"):
            ocr = reader.read_page(
                level, dpi=dpi, work=stem, languages=settings.ocr.languages, timeout=settings.ocr.page_timeout_s
            )
            if drawing.drawing and drawing.title_block is not None:
                result.title_block = _read_title_block(reader, level, drawing.title_block, analysis, dpi, stem, settings)
        result.ocr_engine = engine.name
        del level
    skew = _applied_skew(geo, settings)
    corrected = (height, width) if geo.quarter_turns % 2 else (width, height)
    result.pixels, result.dpi, result.dpi_inferred = (width, height), round(dpi, 2), dpi_inferred
    result.size_mm = paper.size_mm(*corrected, dpi)
    result.rotation, result.orientation_method = geo.rotation, geo.method
    result.orientation_score, result.sideways_ratio = round(geo.updown_score, 3), round(geo.sideways_ratio, 3)
    result.deskew_angle = round(skew, 2)
    result.blank, result.blank_evidence = evidence.blank, _blank_record(evidence)
    result.ocr_confidence, result.words, result.characters = ocr.mean_confidence, ocr.words, ocr.characters
    result.text = ocr.text
    with clock.stage("triage"):
        _classify(result, drawing, symbols, ocr, settings)
        result.thumbnail = str(_thumbnail(analysis, geo, stem, drawing=drawing, flagged=bool(result.flags)))
    with clock.stage("encode"):
        page_pdf = stem.with_suffix(".page.pdf")
        build_page_pdf(
            stored, size_px=(width, height), dpi=dpi, quarter_turns=geo.quarter_turns,
            skew_deg=skew, text_pdf=ocr.text_pdf, out=page_pdf,
        )  # fmt: skip
    result.image_encoding, result.image_bytes, result.page_pdf = stored.encoding, len(stored.data), str(page_pdf)
    return result


def _drawing_evidence(
    analysis: geometry.AnalysisImage,
    geo: geometry.Geometry,
    skew: float,
    symbols: list[barcodes.Symbol],
    dpi: float,
    settings: Settings,
) -> drawings.DrawingEvidence:
    """The drawing detector on the level, upright ink, barcodes left out: a barcode's bars are
    long strokes too, and a receipt is no drawing."""
    ink = geometry.level_image(analysis.ink, quarter_turns=geo.quarter_turns, skew_deg=skew).copy()
    scale = analysis.dpi / dpi
    margin = analysis.px(2.0)
    for symbol in symbols:
        x0, y0, x1, y1 = (round(v * scale + d) for v, d in zip(symbol.box, (-margin, -margin, margin, margin), strict=True))
        ink[max(0, y0) : y1 + 1, max(0, x0) : x1 + 1] = False
    return drawings.detect(analysis, ink, settings.triage, character_marks=geo.marks)


def _read_title_block(
    engine: OcrEngine,
    level: np.ndarray,
    block: drawings.Box,
    analysis: geometry.AnalysisImage,
    dpi: float,
    stem: Path,
    settings: Settings,
) -> dict | None:
    """The title block cut from the full-resolution page and read on its own: its cells then
    are the whole image, not a corner of a sheet full of lines."""
    box = block.scaled(dpi / analysis.dpi)
    margin = round(TITLE_BLOCK_MARGIN_MM * dpi / 25.4)
    height, width = level.shape
    crop = level[max(0, box.y0 - margin) : min(height, box.y1 + margin), max(0, box.x0 - margin) : min(width, box.x1 + margin)]
    read = engine.read_page(
        np.ascontiguousarray(crop), dpi=dpi, work=stem.with_name(stem.name + "-title"),
        languages=settings.ocr.languages, timeout=settings.ocr.page_timeout_s,
    )  # fmt: skip
    if read.text_pdf is not None:
        read.text_pdf.unlink(missing_ok=True)  # the page's own layer already holds these words
    if not read.text:
        return None
    fields = drawings.title_block_text(read.text)
    return {
        "box": block.as_list(),
        "text": fields.text, "number": fields.number, "title": fields.title,
        "scale": fields.scale, "date": fields.date, "author": fields.author,
    }  # fmt: skip


def _classify(
    result: PageResult,
    drawing: drawings.DrawingEvidence | None,
    symbols: list[barcodes.Symbol],
    ocr: PageText,
    settings: Settings,
) -> None:
    """Page-level flags, each with the values that raised it."""
    rules = settings.triage
    if ocr.failure:
        result.flags[FlagName.OCR_FAILED] = {"reason": ocr.failure}
    if triage.oversized(result.size_mm, rules):
        result.flags[FlagName.OVERSIZED] = {"size_mm": list(result.size_mm), "tolerance": rules.oversize_tolerance}
    if result.blank:
        return
    result.drawing = drawing.record()
    if drawing.drawing:
        result.flags[FlagName.TECHNICAL_DRAWING] = dict(result.drawing)
    share, vietnamese_share = vietnamese.syllable_share(ocr.text)
    result.syllable_share = round(share, 3) if share is not None else None
    if ocr.words >= rules.min_words and not drawing.drawing:
        low = {}
        if ocr.mean_confidence is not None and ocr.mean_confidence < rules.min_confidence:
            low["ocr_confidence"] = ocr.mean_confidence
        # The syllable test only means something on a page written in Vietnamese.
        if share is not None and vietnamese_share >= 0.1 and share < rules.min_syllable_share:
            low["syllable_share"] = result.syllable_share
        if low:
            result.flags[FlagName.LOW_CONFIDENCE] = {**low, "words": ocr.words}
    separator = barcodes.classify(
        symbols, ocr.text, barcodes.SeparatorRules(settings.split.code_pattern, settings.split.separator_prefix)
    )
    if separator is not None:
        result.separator = {"kind": separator.kind, "code": separator.code, "evidence": separator.evidence}
        if separator.kind == "unreadable":
            result.flags[FlagName.SEPARATOR_UNREADABLE] = {"evidence": separator.evidence}


def _thumbnail(
    analysis: geometry.AnalysisImage,
    geo: geometry.Geometry,
    stem: Path,
    *,
    drawing: drawings.DrawingEvidence | None,
    flagged: bool,
) -> Path:
    """A small picture of the page; for a flagged page, one a reviewer can read, with the
    detector's evidence drawn over a copy (the page's own pixels are never changed)."""
    upright = geometry.level_image(analysis.gray, quarter_turns=geo.quarter_turns, skew_deg=geo.skew_deg, fill=255)
    if flagged:
        scale = REVIEW_LONG_SIDE / max(upright.shape)
    else:
        scale = THUMBNAIL_WIDTH / upright.shape[1]
    small = cv2.resize(upright, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    if flagged and drawing is not None:
        small = drawings.draw_evidence(small, drawing, scale=scale)
    path = stem.with_suffix(".thumb.png")
    path.write_bytes(cv2.imencode(".png", small)[1])  # cv2.imwrite would fail silently on a full disk
    return path


def _applied_skew(geo: geometry.Geometry, settings: Settings) -> float:
    return geo.skew_deg if abs(geo.skew_deg) >= settings.geometry.min_skew_deg else 0.0


def _blank_record(evidence: BlankEvidence) -> dict:
    return {
        "marks": evidence.marks,
        "ink_fraction": evidence.ink_fraction,
        "punch_holes_ignored": evidence.ignored_punch_holes,
    }


def _ask_engine(
    engine: OcrEngine, analysis: geometry.AnalysisImage, geo: geometry.Geometry, stem: Path, settings: Settings
) -> geometry.Geometry:
    """When the text-line evidence for up/down is weak, let the OCR engine's detector decide."""
    level = geometry.level_image(analysis.gray, quarter_turns=geo.quarter_turns, skew_deg=geo.skew_deg, fill=255)
    found = engine.orientation(level, dpi=analysis.dpi, work=stem, timeout=settings.ocr.page_timeout_s)
    if found is None:
        return geo
    # The engine reports the clockwise turn that corrects the page; ours count counterclockwise.
    extra = (-found.rotate // 90) % 4
    return geometry.Geometry(
        (geo.quarter_turns + extra) % 4, geo.skew_deg, geo.sideways_ratio,
        found.confidence, geo.marks, "osd",
    )  # fmt: skip
