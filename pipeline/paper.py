"""Paper sizes and resolutions: inferring a missing dpi, and physical page sizes."""

from __future__ import annotations

MM_PER_INCH = 25.4
MM_PER_POINT = MM_PER_INCH / 72  # PDF user space

# Portrait sizes in mm, with how unlikely each is at a service centre (0 = everyday).
# The same pixels fit several sizes (A4 at 400 dpi is A2 at 200 dpi), so the
# likelihoods of paper and resolution together settle the tie.
PAPER_SIZES_MM = {
    "A4": ((210.0, 297.0), 0),
    "Letter": ((215.9, 279.4), 1),
    "A5": ((148.0, 210.0), 2),
    "Legal": ((215.9, 355.6), 2),
    "A3": ((297.0, 420.0), 2),
    "A2": ((420.0, 594.0), 4),
    "A1": ((594.0, 841.0), 5),
    "A0": ((841.0, 1189.0), 5),
}
SCANNER_DPIS = {300: 0, 200: 0, 400: 1, 150: 2, 240: 2, 600: 3, 100: 4}
# Metadata below this is a placeholder (72/96 are screen defaults), not a scan resolution.
MIN_PLAUSIBLE_DPI = 100
MAX_PLAUSIBLE_DPI = 1200


def plausible_dpi(dpi: float) -> bool:
    return MIN_PLAUSIBLE_DPI <= dpi <= MAX_PLAUSIBLE_DPI


def infer_dpi(width_px: int, height_px: int) -> float:
    """The scanner resolution that makes this page the nearest standard paper size."""
    short_px, long_px = sorted((width_px, height_px))
    candidates = []
    for (short_mm, long_mm), paper_rarity in PAPER_SIZES_MM.values():
        for dpi, dpi_rarity in SCANNER_DPIS.items():
            short_err = abs(short_px * MM_PER_INCH / dpi - short_mm) / short_mm
            long_err = abs(long_px * MM_PER_INCH / dpi - long_mm) / long_mm
            # Errors within 1% are a tie: scanners crop a few millimetres either way.
            candidates.append((round((short_err + long_err) * 50), paper_rarity + dpi_rarity, float(dpi)))
    return min(candidates)[-1]


def size_mm(width_px: int, height_px: int, dpi: float) -> tuple[float, float]:
    return (round(width_px * MM_PER_INCH / dpi, 1), round(height_px * MM_PER_INCH / dpi, 1))
