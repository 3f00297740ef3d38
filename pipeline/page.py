"""Everything done to one page, in a worker process: decode, orient, deskew, OCR, classify, encode."""

from __future__ import annotations

import dataclasses
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import cv2

import numpy as np

from pipeline import barcodes, drawings, geometry, ocr_input, paper, pdfsource, standard, triage, vietnamese
from pipeline._exec import pdftotext
from pipeline.blank import BlankEvidence, detect_blank
from pipeline.errors import CorruptInput
from pipeline.flags import FlagName
from pipeline.manifest import Receipt
from pipeline.ocr import EMPTY_PAGE, TESSERACT, OcrEngine, PageImage, PageText, sparse_text
from pipeline.pdfpage import (
    PDF_ORIGINAL, KeptOriginal, OriginalNotKept, StoredImage, build_page_pdf, encode_for_storage, keep_original_page,
)  # fmt: skip
from pipeline.settings import Settings
from pipeline.sources import PageRef, ScanPage, load_page

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
    receipt: Receipt | None = field(default=None, repr=False)  # kept out of page records: it holds personal data
    drawing: dict = field(default_factory=dict)
    title_block: dict | None = None  # a drawing's title block, read on its own (drawings.TitleBlockText)
    image_encoding: str | None = None
    image_bytes: int = 0
    pdf_source: dict | None = None  # a PDF input's page: kept or rendered, and why (manifest.PdfSourcePage)
    # How the copy OCR read was made from the page: resolution, skew left to Tesseract, colour dropout, seals.
    ocr_input: dict | None = None
    # A second OCR reading of part of the page, with its reason; None when it was read once.
    ocr_second_pass: dict | None = None
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
    text_skew = 0.0
    symbols: list[barcodes.Symbol] = []
    drawing: drawings.DrawingEvidence | None = None
    prepared: ocr_input.OcrInput | None = None
    page_pdf = stem.with_suffix(".page.pdf")
    survey = page.pdf_survey
    plan = pdfsource.plan(survey, settings.ocr.existing_text) if survey else None
    kept: KeptOriginal | None = None
    if plan is not None and not plan.ocr:
        # A page keeping its own text is not read; if PDF/A refuses its content, it is read after all.
        with clock.stage("encode"):
            kept = _keep_pdf_page(result, page, plan, geo, 0.0, None, 0.0, page_pdf, settings)
        if kept is not None:
            with clock.stage("ocr"):
                # Its own text, for the record's text file, as OCR's would be.
                result.text = pdftotext.page_text(
                    page.ref.path, page=page.ref.frame, timeout=settings.ocr.page_timeout_s
                )
        else:
            plan = dataclasses.replace(plan, keep_original=False, ocr=True, existing_text="replaced")
            result.pdf_source = _pdf_source_record(
                page.pdf_survey, plan, kept=None, reason=result.pdf_source["not_kept_reason"]
            )
    if not evidence.blank and kept is None:
        # Nothing to orient or read on a blank page; OCR would only read bleed-through.
        with clock.stage("orient"):
            geo = geometry.measure(analysis, max_skew_deg=settings.geometry.max_skew_deg)
            if abs(geo.updown_score) < settings.geometry.orientation_margin:
                geo = _ask_engine(engine, analysis, geo, stem, settings)
        skew = _applied_skew(geo, settings)
        with clock.stage("deskew"):
            prepared, level = _ocr_copy(page, gray, geo, skew)
        with clock.stage("barcodes"):
            symbols = barcodes.read_symbols(level)
        with clock.stage("triage"):
            # Before OCR, so that a drawing is read once, in the mode that suits it.
            drawing = _drawing_evidence(analysis, geo, skew, symbols, page.dpi, settings)
            if drawing.drawing and drawing.turn:
                # Text-line evidence is weak on a drawing; its title block belongs bottom right.
                geo = dataclasses.replace(geo, quarter_turns=(geo.quarter_turns + drawing.turn) % 4, method="title-block")
                prepared, level = _ocr_copy(page, gray, geo, skew)
                symbols = barcodes.read_symbols(level)
                drawing = _drawing_evidence(analysis, geo, skew, symbols, page.dpi, settings)
    del gray
    is_drawing = drawing is not None and drawing.drawing
    (width, height), dpi, dpi_inferred, mode = page.image.size, page.dpi, page.dpi_inferred, page.image.mode
    stored: StoredImage | None = None
    if kept is None and not (plan is not None and plan.keep_original):
        with clock.stage("encode"):
            # Stored before OCR, so that the decoded scan (an A0 sheet: 139 MB in gray, 418 MB in
            # colour) is not held while Tesseract runs. A drawing's thin lines would ring under
            # JPEG: it is kept lossless whatever the profile.
            stored = encode_for_storage(
                page, profile=settings.output.profile, jpeg_quality=settings.output.jpeg_quality, lossless=is_drawing,
            )  # fmt: skip
        # A scanner PDF page whose own content is kept needs its source until it is drawn.
        page = None
    if prepared is not None:
        reader = sparse_text(engine) if is_drawing else engine
        title_crop = None
        if is_drawing and drawing.title_block is not None:
            title_crop = _title_block_crop(level, drawing.title_block, analysis, dpi)
        result.ocr_engine = engine.name
        result.ocr_input = _ocr_input_record(prepared)
        text_skew, ocr_dpi = prepared.residual_skew_deg, prepared.dpi
        # The engine takes the pixels: an A0 sheet (139 MB) is not held here while Tesseract reads it.
        page_image = PageImage(prepared.image)
        del level, prepared
        with clock.stage("ocr"):
            ocr = reader.read_page(
                page_image, dpi=ocr_dpi, work=stem, languages=settings.ocr.languages,
                timeout=settings.ocr.page_timeout_s,
            )  # fmt: skip
            del page_image
            if title_crop is not None:
                result.title_block = _read_title_block(reader, title_crop, drawing.title_block, dpi, stem, settings)
        if ocr.second_pass is not None:
            result.ocr_second_pass = dataclasses.asdict(ocr.second_pass)
    skew = _applied_skew(geo, settings)
    corrected = (height, width) if geo.quarter_turns % 2 else (width, height)
    result.pixels, result.dpi, result.dpi_inferred = (width, height), round(dpi, 2), dpi_inferred
    result.size_mm = paper.size_mm(*corrected, dpi)
    result.rotation, result.orientation_method = geo.rotation, geo.method
    result.orientation_score, result.sideways_ratio = round(geo.updown_score, 3), round(geo.sideways_ratio, 3)
    result.deskew_angle = round(skew, 2)
    result.blank, result.blank_evidence = evidence.blank, _blank_record(evidence)
    result.ocr_confidence, result.words, result.characters = ocr.mean_confidence, ocr.words, ocr.characters
    result.text = result.text or ocr.text
    with clock.stage("triage"):
        if not result.blank:
            below = standard.shortfall(dpi=dpi, dpi_inferred=dpi_inferred, pil_mode=mode, rules=settings.standard)
            if below:
                result.flags[FlagName.BELOW_STANDARD] = below
        _classify(result, drawing, symbols, ocr, settings)
        result.thumbnail = str(_thumbnail(analysis, geo, stem, drawing=drawing, flagged=bool(result.flags)))
    with clock.stage("encode"):
        if kept is None and plan is not None and plan.keep_original:
            kept = _keep_pdf_page(result, page, plan, geo, skew, ocr.text_pdf, text_skew, page_pdf, settings)
        if kept is None:
            if stored is None:
                # The page's own content could not be kept (PDF/A refused it): its rendering is stored.
                stored = encode_for_storage(
                    page, profile=settings.output.profile, jpeg_quality=settings.output.jpeg_quality, lossless=is_drawing,
                )  # fmt: skip
            build_page_pdf(
                stored, size_px=(width, height), dpi=dpi, quarter_turns=geo.quarter_turns,
                skew_deg=skew, text_pdf=ocr.text_pdf, out=page_pdf, text_skew_deg=text_skew,
            )  # fmt: skip
            result.image_encoding, result.image_bytes = stored.encoding, len(stored.data)
        else:
            result.image_encoding, result.image_bytes = PDF_ORIGINAL, kept.stored_bytes
    if plan is not None and result.pdf_source is None:
        result.pdf_source = _pdf_source_record(survey, plan, kept=None, reason="rendered: ocr.existing_text = force")
    result.page_pdf = str(page_pdf)
    return result


def _ocr_copy(
    page: ScanPage, gray: np.ndarray, geo: geometry.Geometry, skew: float
) -> tuple[ocr_input.OcrInput, np.ndarray]:
    """The copy OCR reads, and the upright page at the stored resolution that barcodes and the
    title block are read on (with the same skew left in: symbol boxes are in its pixels).
    Barcodes are black, so the colour dropout does not touch them."""
    prepared = ocr_input.prepare(page.image, gray, dpi=page.dpi, quarter_turns=geo.quarter_turns, skew_deg=skew)
    level = prepared.image if prepared.scale == 1.0 else geometry.level_image(
        gray, quarter_turns=geo.quarter_turns, skew_deg=skew - prepared.residual_skew_deg, fill=255
    )  # fmt: skip
    return prepared, level


def _keep_pdf_page(
    result: PageResult,
    page: ScanPage,
    plan: pdfsource.PdfPagePlan,
    geo: geometry.Geometry,
    skew: float,
    text_pdf: Path | None,
    text_skew: float,
    page_pdf: Path,
    settings: Settings,
) -> KeptOriginal | None:
    """Draw a PDF page's own content under the text layer; None, with the reason recorded, when PDF/A refuses it."""
    try:
        kept = keep_original_page(
            page.ref.path, frame=page.ref.frame, flavour=settings.output.pdfa,
            drop_invisible_text=plan.drop_invisible_text, size_px=page.image.size, dpi=page.dpi,
            quarter_turns=geo.quarter_turns, skew_deg=skew, text_pdf=text_pdf, text_skew_deg=text_skew, out=page_pdf,
            jpeg_quality=settings.output.jpeg_quality,
        )  # fmt: skip
    except OriginalNotKept as exc:
        result.pdf_source = _pdf_source_record(page.pdf_survey, plan, kept=None, reason=exc.reason)
        return None
    result.pdf_source = _pdf_source_record(page.pdf_survey, plan, kept=kept, reason=None)
    return kept


def _pdf_source_record(
    survey: pdfsource.PdfPageSurvey, plan: pdfsource.PdfPagePlan, *, kept: KeptOriginal | None, reason: str | None
) -> dict:
    existing = plan.existing_text
    if kept is None and plan.keep_original:
        # A rendering carries none of the page's own text: our layer replaces all of it.
        existing = "replaced" if survey.text_layer else "none"
    return {
        "kind": survey.kind.value,
        "finest_dpi": survey.finest_dpi,
        "encodings": list(survey.encodings),
        "kept": kept is not None,
        "not_kept_reason": reason,
        "conversions": list(kept.conversions) if kept else [],
        "existing_text": existing,
        "ocr": plan.ocr,
    }


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


def _title_block_crop(level: np.ndarray, block: drawings.Box, analysis: geometry.AnalysisImage, dpi: float) -> np.ndarray:
    """The title block cut from the full-resolution page (a copy: the page itself goes to OCR)."""
    box = block.scaled(dpi / analysis.dpi)
    margin = round(TITLE_BLOCK_MARGIN_MM * dpi / 25.4)
    height, width = level.shape
    crop = level[max(0, box.y0 - margin) : min(height, box.y1 + margin), max(0, box.x0 - margin) : min(width, box.x1 + margin)]
    return crop.copy()


def _read_title_block(
    engine: OcrEngine, crop: np.ndarray, block: drawings.Box, dpi: float, stem: Path, settings: Settings
) -> dict | None:
    """The title block read on its own: its cells then are the whole image, not a corner of a
    sheet full of lines."""
    read = engine.read_page(
        PageImage(crop), dpi=dpi, work=stem.with_name(stem.name + "-title"),
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
    # A born-digital page kept with its own text was not measured: it is no scan of a drawing.
    is_drawing = drawing is not None and drawing.drawing
    if drawing is not None:
        result.drawing = drawing.record()
    if is_drawing:
        result.flags[FlagName.TECHNICAL_DRAWING] = dict(result.drawing)
    share, vietnamese_share = vietnamese.syllable_share(ocr.text)
    result.syllable_share = round(share, 3) if share is not None else None
    if ocr.words >= rules.min_words and not is_drawing:
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
        result.receipt = separator.receipt
        if separator.receipt and separator.receipt.code_source == "text":
            result.flags[FlagName.CODE_FROM_TEXT] = {"code": separator.code}
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


def _ocr_input_record(prepared: ocr_input.OcrInput) -> dict:
    return {
        "dpi": round(prepared.dpi, 2),
        "scale": round(prepared.scale, 4),
        "residual_skew_deg": round(prepared.residual_skew_deg, 2),
        "colour_dropout": prepared.colour_dropout,
        "seals": [{"box_mm": list(seal.box_mm), "red_share": seal.red_share} for seal in prepared.seals],
    }


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
