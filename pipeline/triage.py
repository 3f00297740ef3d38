"""Page-level triage: what a person must look at, with the measured values behind each flag."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.geometry import AnalysisImage
from pipeline.paper import PAPER_SIZES_MM
from pipeline.settings import TriageSettings

# Strokes at least this long count as line art: far longer than any character stroke.
LINE_MM = 8.0
A4_MM = PAPER_SIZES_MM["A4"][0]


@dataclass(frozen=True)
class DrawingEvidence:
    line_share: float | None  # share of the ink in long straight strokes; None: not measured
    mark_density: float  # character-sized marks per 100 cm²
    drawing: bool


def drawing_evidence(
    page: AnalysisImage,
    settings: TriageSettings,
    *,
    character_marks: int,
    level: Callable[[np.ndarray], np.ndarray],
    ignore: list[tuple[int, int, int, int]] = (),
) -> DrawingEvidence:
    """Line art with little text: most ink in long strokes, few character-sized marks.

    `character_marks` is the count the orientation step already made. `level` turns the
    page's ink upright and level, so strokes lie along the axes. `ignore` holds boxes
    (levelled analysis pixels) to leave out: a barcode's bars are long strokes too, and
    a receipt is no drawing.
    """
    area_cm2 = page.mm(page.ink.shape[0]) * page.mm(page.ink.shape[1]) / 100.0
    density = round(character_marks / area_cm2 * 100.0, 1)
    if density > settings.drawing_max_mark_density:
        # Plenty of text: not a drawing, whatever its lines. Most pages stop here, cheaply.
        return DrawingEvidence(None, density, False)
    ink = level(page.ink).view(np.uint8).copy()
    for x0, y0, x1, y1 in ignore:
        ink[max(0, y0) : y1 + 1, max(0, x0) : x1 + 1] = 0
    total = int(ink.sum())
    if total == 0:
        return DrawingEvidence(0.0, density, False)
    length = max(3, int(page.px(LINE_MM)))
    horizontal = cv2.morphologyEx(ink, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (length, 1)))
    vertical = cv2.morphologyEx(ink, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (1, length)))
    line_share = round(float((horizontal | vertical).sum()) / total, 3)
    return DrawingEvidence(line_share, density, line_share >= settings.drawing_min_line_share)


def oversized(size_mm: tuple[float, float], settings: TriageSettings) -> bool:
    """Larger than A4 by more than the tolerance on either side, whatever the resolution."""
    short, long = sorted(size_mm)
    a4_short, a4_long = A4_MM
    tolerance = 1.0 + settings.oversize_tolerance
    return short > a4_short * tolerance or long > a4_long * tolerance
