"""Blank-page detection that ignores bleed-through, dust, scanner borders and punch holes."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.geometry import AnalysisImage
from pipeline.settings import BlankSettings

# Sizes in mm. Dust is smaller than any printed character; punch holes are round and ~6 mm.
SMALLEST_MARK_MM = 0.5
PAPER_WINDOW_MM = 6.0
PUNCH_HOLE_MM = (4.0, 10.0)


@dataclass(frozen=True)
class BlankEvidence:
    blank: bool
    marks: int  # marks left after ignoring artefacts
    ink_fraction: float
    ignored_punch_holes: int


def _paper_brightness(page: AnalysisImage) -> np.ndarray:
    """Local paper brightness: closing erases anything thinner than the window, text included.

    Paper brightness varies slowly, so it is estimated at a quarter of the resolution.
    """
    small = cv2.resize(page.gray, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
    size = max(3, int(page.px(PAPER_WINDOW_MM) * 0.25) | 1)
    closed = cv2.morphologyEx(small, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (size, size)))
    height, width = page.gray.shape
    return cv2.resize(closed, (width, height), interpolation=cv2.INTER_LINEAR)


def _ink_below(paper: np.ndarray, ink_contrast: float) -> np.ndarray:
    """For each paper level, how many gray levels count as ink there: those darker than
    `ink_contrast` × the paper (float32, as the comparison was made per pixel). A 256-entry
    table instead of float images: on an A0 sheet those cost ~0.5 GB at once."""
    levels = np.arange(256, dtype=np.float32)
    limits = ink_contrast * np.maximum(levels, 1.0)
    counts = (levels[np.newaxis, :] < limits[:, np.newaxis]).sum(axis=1)
    return cv2.LUT(paper, counts.astype(np.uint8))  # ink_contrast < 1: at most 255 levels


def detect_blank(page: AnalysisImage, settings: BlankSettings) -> BlankEvidence:
    # Bleed-through and show-through are only a little darker than the paper around them.
    ink = page.gray < _ink_below(_paper_brightness(page), settings.ink_contrast)
    count, _, stats, _ = cv2.connectedComponentsWithStats(ink.view(np.uint8), connectivity=8)
    left, top, width, height, area = (stats[1:, i].astype(np.float64) for i in range(5))
    rows, cols = ink.shape
    touches_edge = (left <= 0) | (top <= 0) | (left + width >= cols) | (top + height >= rows)
    big_enough = np.maximum(width, height) >= page.px(SMALLEST_MARK_MM)
    diameter = (width + height) / 2.0
    round_fill = area / (math.pi * (diameter / 2.0) ** 2 + 1e-9)
    punch_hole = (
        (diameter >= page.px(PUNCH_HOLE_MM[0])) & (diameter <= page.px(PUNCH_HOLE_MM[1]))
        & (np.abs(width - height) <= 0.2 * diameter) & (round_fill > 0.8)
    )  # fmt: skip
    counted = big_enough & ~touches_edge & ~punch_hole
    marks = int(counted.sum())
    ink_fraction = float(area[counted].sum()) / float(rows * cols)
    blank = marks <= settings.max_marks and ink_fraction <= settings.max_ink_fraction
    return BlankEvidence(blank, marks, round(ink_fraction, 6), int((punch_hole & big_enough).sum()))
