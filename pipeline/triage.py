"""Page-level triage: what a person must look at, with the measured values behind each flag."""

from __future__ import annotations

from pipeline.paper import PAPER_SIZES_MM
from pipeline.settings import TriageSettings

A4_MM = PAPER_SIZES_MM["A4"][0]


def oversized(size_mm: tuple[float, float], settings: TriageSettings) -> bool:
    """Larger than A4 by more than the tolerance on either side, whatever the resolution."""
    short, long = sorted(size_mm)
    a4_short, a4_long = A4_MM
    tolerance = 1.0 + settings.oversize_tolerance
    return short > a4_short * tolerance or long > a4_long * tolerance
