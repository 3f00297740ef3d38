"""Page geometry measured on a downscaled copy: quarter-turn orientation and skew angle."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

# Text lines, characters and punch holes are all still clearly resolved at this resolution,
# and every measurement on an A4 page costs milliseconds.
ANALYSIS_DPI = 150.0


@dataclass(frozen=True)
class AnalysisImage:
    """A downscaled gray copy of a page, and the ink found on it."""

    gray: np.ndarray  # uint8, 255 = paper
    ink: np.ndarray  # bool
    dpi: float

    def mm(self, pixels: float) -> float:
        return pixels * 25.4 / self.dpi

    def px(self, mm: float) -> float:
        return mm * self.dpi / 25.4


def gray_pixels(image: Image.Image) -> np.ndarray:
    """The page as 8-bit gray, the one form every measurement and the OCR start from."""
    return np.asarray(image.convert("L") if image.mode != "L" else image)


def analysis_image(gray: np.ndarray, dpi: float) -> AnalysisImage:
    """Gray copy at ~150 dpi, with ink separated from the paper by Otsu's threshold."""
    scale = min(1.0, ANALYSIS_DPI / dpi)
    if scale < 1.0:
        size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    threshold, _ = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    # Otsu on a nearly empty page splits noise in two; ink is never lighter than mid-gray.
    ink = gray <= min(threshold, 160)
    return AnalysisImage(gray, ink, dpi * scale)


@dataclass(frozen=True)
class Marks:
    """Character-sized connected components: centres and extents, in analysis pixels."""

    x: np.ndarray
    y: np.ndarray
    width: np.ndarray
    height: np.ndarray


def character_marks(page: AnalysisImage) -> Marks:
    count, _, stats, _ = cv2.connectedComponentsWithStats(page.ink.view(np.uint8), connectivity=8)
    left, top, width, height, area = (stats[1:, i].astype(np.float64) for i in range(5))
    keep = (
        (np.maximum(width, height) >= page.px(0.7)) & (height <= page.px(10))
        & (width <= page.px(10)) & (area >= 4)
    )  # fmt: skip
    return Marks(
        x=(left + width / 2.0)[keep],
        y=(top + height / 2.0)[keep],
        width=width[keep],
        height=height[keep],
    )


def _line_scores(along: np.ndarray, across: np.ndarray, bin_px: float, angles_deg: np.ndarray) -> np.ndarray:
    """For each angle, how sharply marks collect into lines when projected across it."""
    radians = np.deg2rad(angles_deg)[:, None]
    projected = across[None, :] * np.cos(radians) - along[None, :] * np.sin(radians)
    bins = np.floor((projected - projected.min()) / bin_px).astype(np.int64)
    width = int(bins.max()) + 1
    offsets = (np.arange(len(angles_deg)) * width)[:, None]
    counts = np.bincount((bins + offsets).ravel(), minlength=width * len(angles_deg))
    counts = counts.reshape(len(angles_deg), width).astype(np.float64)
    return (counts**2).sum(axis=1) / max(1, along.size) ** 2


@dataclass(frozen=True)
class LineFit:
    angle_deg: float  # counterclockwise rotation that levels the lines
    score: float


def fit_lines(along: np.ndarray, across: np.ndarray, bin_px: float, max_deg: float) -> LineFit:
    """Coarse-to-fine search for the angle at which the marks form the sharpest lines."""
    coarse = np.arange(-max_deg, max_deg + 1e-9, 0.25)
    scores = _line_scores(along, across, bin_px, coarse)
    best = float(coarse[int(np.argmax(scores))])
    fine = np.arange(best - 0.25, best + 0.25 + 1e-9, 0.02)
    fine_scores = _line_scores(along, across, bin_px, fine)
    i = int(np.argmax(fine_scores))
    return LineFit(float(fine[i]), float(fine_scores[i]))


@dataclass(frozen=True)
class Geometry:
    """What it takes to make a page upright and level, with the evidence for it."""

    quarter_turns: int  # counterclockwise quarter turns applied (rotation = 90 * this)
    skew_deg: float  # further counterclockwise rotation that levels the text
    sideways_ratio: float  # line sharpness across the page / along it; > 1 means sideways
    updown_score: float  # log(ink above lines / ink below) once level; < 0 means upside down
    marks: int
    method: str  # "text-lines", "osd", or "none" when there was nothing to measure

    @property
    def rotation(self) -> int:
        return (90 * self.quarter_turns) % 360


MIN_MARKS = 30
# Line sharpness ratios across/along the page that do not settle which way lines run.
AMBIGUOUS_SIDEWAYS = (0.75, 1.33)


def measure(page: AnalysisImage, *, max_skew_deg: float) -> Geometry:
    """Find the quarter turn and skew that make the text lines upright and level."""
    marks = character_marks(page)
    if marks.x.size < MIN_MARKS:
        return Geometry(0, 0.0, 0.0, 0.0, int(marks.x.size), "none")
    bin_px = max(1.0, float(np.median(np.minimum(marks.height, marks.width))) * 0.5)
    level = fit_lines(marks.x, marks.y, bin_px, max_skew_deg)
    sideways = fit_lines(marks.y, marks.x, bin_px, max_skew_deg)
    ratio = sideways.score / level.score
    upright_score = updown_score(_project(marks.x, marks.y, level.angle_deg), marks.height)
    # After a counterclockwise quarter turn, the old x axis points up.
    sideways_score = updown_score(-_project(marks.y, marks.x, sideways.angle_deg), marks.width)
    if AMBIGUOUS_SIDEWAYS[0] < ratio < AMBIGUOUS_SIDEWAYS[1]:
        # Short or sparse lines: let the stronger up/down evidence pick the axis.
        is_sideways = abs(sideways_score) > abs(upright_score)
    else:
        is_sideways = ratio > 1.0
    if is_sideways:
        turns, skew, score = 1, -sideways.angle_deg, sideways_score
    else:
        turns, skew, score = 0, level.angle_deg, upright_score
    if score < 0:
        turns += 2
    return Geometry(turns % 4, skew, ratio, score, int(marks.x.size), "text-lines")


def _project(along: np.ndarray, across: np.ndarray, angle_deg: float) -> np.ndarray:
    radians = math.radians(angle_deg)
    return across * math.cos(radians) - along * math.sin(radians)


def updown_score(down: np.ndarray, extent: np.ndarray) -> float:
    """Log ratio of marks reaching above their line's x-height band to marks reaching below.

    Capitals, ascenders and, in Vietnamese, most diacritics rise above the band; only
    a few descenders drop below it. Upside down, the ratio inverts. Working on marks
    rather than ink profiles keeps lines apart even when tight leading makes them touch.
    """
    x_height = float(np.median(extent))
    core = (extent > 0.6 * x_height) & (extent < 1.4 * x_height)
    centres = np.sort(down[core])
    if centres.size < 2:
        return 0.0
    breaks = np.flatnonzero(np.diff(centres) > 0.6 * x_height) + 1
    lines = np.array([float(np.median(group)) for group in np.split(centres, breaks)])
    nearest = np.abs(down[:, None] - lines[None, :]).argmin(axis=1)
    centre = lines[nearest]
    on_a_line = np.abs(down - centre) < 1.5 * x_height
    reach = 0.85 * x_height
    above = int(((down - extent / 2 < centre - reach) & on_a_line).sum())
    below = int(((down + extent / 2 > centre + reach) & on_a_line).sum())
    return math.log((above + 1.0) / (below + 1.0))


def level_image(image: np.ndarray, *, quarter_turns: int, skew_deg: float, fill: int = 0) -> np.ndarray:
    """Apply quarter turns, then rotate counterclockwise by `skew_deg` about the centre."""
    out = np.rot90(image, quarter_turns % 4) if quarter_turns % 4 else image
    if skew_deg:
        as_bytes = out.view(np.uint8) if out.dtype == bool else out
        height, width = out.shape[:2]
        matrix = cv2.getRotationMatrix2D((width / 2.0, height / 2.0), skew_deg, 1.0)
        # Linear is enough for OCR at 200-400 dpi and twice as fast as cubic on a full page.
        flags = cv2.INTER_NEAREST if out.dtype == bool else cv2.INTER_LINEAR
        rotated = cv2.warpAffine(
            np.ascontiguousarray(as_bytes), matrix, (width, height), flags=flags,
            borderMode=cv2.BORDER_CONSTANT, borderValue=(fill, fill, fill),
        )  # fmt: skip
        out = rotated.astype(bool) if image.dtype == bool else rotated
    return np.ascontiguousarray(out)
