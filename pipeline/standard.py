"""The scan parameters Decree 30 (Annex I) asks of a digital copy: resolution, and colour where the station's profile says so."""

from __future__ import annotations

from pipeline.settings import StandardSettings

# PIL modes by what the scanner delivered: bitonal, gray, or colour (palette and CMYK count as colour).
_COLOUR_MODES = {"1": "bitonal", "L": "gray", "LA": "gray", "I;16": "gray", "I": "gray"}


def colour_mode(pil_mode: str) -> str:
    return _COLOUR_MODES.get(pil_mode, "colour")


def shortfall(*, dpi: float, dpi_inferred: bool, pil_mode: str, rules: StandardSettings) -> dict | None:
    """The evidence for `below_standard`, or None when the page meets the station's standard."""
    evidence: dict = {}
    # A PDF gives its page size in points, so a 200 dpi scan may measure 199.98: whole dots per inch count.
    if round(dpi) < rules.min_dpi:
        evidence.update(dpi=round(dpi, 1), min_dpi=rules.min_dpi, dpi_inferred=dpi_inferred)
    mode = colour_mode(pil_mode)
    if rules.require_colour and mode != "colour":
        evidence.update(colour_mode=mode, required="colour")
    return evidence or None
