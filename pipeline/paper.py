"""Paper sizes and resolutions: inferring a missing dpi, and physical page sizes."""

from __future__ import annotations

MM_PER_INCH = 25.4

# Portrait sizes in mm; the ones reception desks and archives actually see.
PAPER_SIZES_MM = {
    "A5": (148.0, 210.0),
    "A4": (210.0, 297.0),
    "Letter": (215.9, 279.4),
    "Legal": (215.9, 355.6),
    "A3": (297.0, 420.0),
    "A2": (420.0, 594.0),
    "A1": (594.0, 841.0),
    "A0": (841.0, 1189.0),
}
SCANNER_DPIS = (100, 150, 200, 240, 300, 400, 600)
# Metadata below this is a placeholder (72/96 are screen defaults), not a scan resolution.
MIN_PLAUSIBLE_DPI = 100
MAX_PLAUSIBLE_DPI = 1200


def plausible_dpi(dpi: float) -> bool:
    return MIN_PLAUSIBLE_DPI <= dpi <= MAX_PLAUSIBLE_DPI


def infer_dpi(width_px: int, height_px: int) -> float:
    """The scanner resolution that makes this page the nearest standard paper size."""
    short_px, long_px = sorted((width_px, height_px))
    best = (float("inf"), 300.0)
    for short_mm, long_mm in PAPER_SIZES_MM.values():
        for dpi in SCANNER_DPIS:
            short_err = abs(short_px * MM_PER_INCH / dpi - short_mm) / short_mm
            long_err = abs(long_px * MM_PER_INCH / dpi - long_mm) / long_mm
            best = min(best, (short_err + long_err, float(dpi)))
    return best[1]


def size_mm(width_px: int, height_px: int, dpi: float) -> tuple[float, float]:
    return (round(width_px * MM_PER_INCH / dpi, 1), round(height_px * MM_PER_INCH / dpi, 1))
