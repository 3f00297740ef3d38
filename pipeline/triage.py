"""Page-level triage: what a person must look at, with the measured values behind each flag."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.geometry import AnalysisImage, character_marks
from pipeline.paper import PAPER_SIZES_MM
from pipeline.settings import TriageSettings

# Strokes at least this long count as line art: far longer than any character stroke.
LINE_MM = 8.0
A4_MM = PAPER_SIZES_MM["A4"][0]


@dataclass(frozen=True)
class DrawingEvidence:
    line_share: float  # share of the ink in long straight strokes
    mark_density: float  # character-sized marks per 100 cm²
    drawing: bool


def drawing_evidence(
    page: AnalysisImage, settings: TriageSettings, *, ignore: list[tuple[int, int, int, int]] = ()
) -> DrawingEvidence:
    """Line art with little text: most ink in long strokes, few character-sized marks.

    `ignore` holds boxes (analysis pixels) to leave out: a barcode's bars are long
    strokes too, and a receipt is no drawing.
    """
    ink = page.ink.view(np.uint8).copy()
    for x0, y0, x1, y1 in ignore:
        ink[max(0, y0) : y1 + 1, max(0, x0) : x1 + 1] = 0
    total = int(ink.sum())
    if total == 0:
        return DrawingEvidence(0.0, 0.0, False)
    length = max(3, int(page.px(LINE_MM)))
    horizontal = cv2.morphologyEx(ink, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (length, 1)))
    vertical = cv2.morphologyEx(ink, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (1, length)))
    line_share = float((horizontal | vertical).sum()) / total
    area_cm2 = page.mm(ink.shape[0]) * page.mm(ink.shape[1]) / 100.0
    density = character_marks(page).x.size / area_cm2 * 100.0
    drawing = line_share >= settings.drawing_min_line_share and density <= settings.drawing_max_mark_density
    return DrawingEvidence(round(line_share, 3), round(density, 1), drawing)


def oversized(size_mm: tuple[float, float], settings: TriageSettings) -> bool:
    """Larger than A4 by more than the tolerance on either side, whatever the resolution."""
    short, long = sorted(size_mm)
    a4_short, a4_long = A4_MM
    tolerance = 1.0 + settings.oversize_tolerance
    return short > a4_short * tolerance or long > a4_long * tolerance
