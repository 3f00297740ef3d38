"""The Decree 30 copy stamp: its text, its embedded font, and a place on page 1 where it covers no ink."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import pikepdf
from fontTools import ttLib
from fontTools.ttLib.scaleUpem import scale_upem
from pyhanko.pdf_utils import generic, layout
from pyhanko.pdf_utils.font.opentype import GlyphAccumulator, GlyphAccumulatorFactory
from pyhanko.pdf_utils.generic import pdf_name
from pyhanko.pdf_utils.text import TextBoxStyle
from pyhanko.stamp import TextStampStyle

from pipeline._exec import pdftoppm
from pipeline.errors import MissingProgram

# Decree 30/2020/NĐ-CP, Annex I, Part II.I: Times New Roman 10 pt, black. Liberation Serif has
# Times New Roman's metrics and is free to embed (Debian's fonts-liberation2).
FONT = Path("/usr/share/fonts/truetype/liberation2/LiberationSerif-Regular.ttf")
FONT_PT = 10
VIETNAM = timezone(timedelta(hours=7))
# From the page edges (a scanner's dark borders live there), and around the text.
EDGE_MM = 8.0
NARROW_EDGE_MM = 3.0  # tried when no area that far from the edges is free
CLEARANCE_MM = 1.5
# Coarse enough to cost little, fine enough to see a signature's thin strokes.
RENDER_DPI = 50
_INK = 170  # darker than this (0-255) is ink at RENDER_DPI, where strokes are smoothed to gray


@dataclass(frozen=True)
class StampPlace:
    page: int
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in PDF points
    placement: str  # "top_right", "moved", or "over_ink" when page 1 has no free area that large


def require_font() -> None:
    """The stamp's font must be installed before a record is signed with it (exit 69 otherwise)."""
    if not FONT.is_file():
        raise MissingProgram(f"{FONT}: the Decree 30 stamp's font is missing; install fonts-liberation2 (or set signing.appearance = \"invisible\")")


def stamp_lines(*, copy_form: str, agency: str, signed_at: datetime) -> list[str]:
    """Form of copy, agency, signing time to the second with Vietnam's offset (ISO 8601)."""
    when = signed_at.astimezone(VIETNAM).replace(microsecond=0).isoformat()
    return [line for line in (copy_form, agency, when) if line]


def style() -> TextStampStyle:
    """Text only: no border, no background (PDF/A-1 allows no transparency), black, unscaled."""
    top_left = layout.SimpleBoxLayoutRule(
        x_align=layout.AxisAlignment.ALIGN_MIN, y_align=layout.AxisAlignment.ALIGN_MAX,
        margins=layout.Margins.uniform(0), inner_content_scaling=layout.InnerScaling.NO_SCALING,
    )  # fmt: skip
    return TextStampStyle(
        stamp_text="%(stamp)s",
        text_box_style=TextBoxStyle(
            font=_CidSetFontFactory(str(FONT), font_size=FONT_PT), font_size=FONT_PT, box_layout_rule=top_left
        ),
        border_width=0, background=None, inner_content_layout=top_left,
    )  # fmt: skip


def text_size(lines: list[str]) -> tuple[float, float]:
    """The text block's width and height in points: advance widths at FONT_PT, one line per FONT_PT."""
    font = _font()
    cmap, hmtx, per_em = font.getBestCmap(), font["hmtx"], font["head"].unitsPerEm
    widths = [sum(hmtx[cmap.get(ord(ch), ".notdef")][0] for ch in line) * FONT_PT / per_em for line in lines]
    # Kerning may widen a line a little; the last line's descenders reach under its baseline.
    return max(widths, default=0.0) + 2.0, FONT_PT * len(lines) + FONT_PT * 0.3


def place(pdf: Path, size: tuple[float, float], *, timeout: float = 60) -> StampPlace:
    """The top right of page 1 when it is free of ink, else the free spot nearest to it."""
    with pikepdf.open(pdf) as doc:
        x_min, y_min, x_max, y_max = (float(v) for v in doc.pages[0].mediabox)
    image = np.asarray(pdftoppm.rasterize(pdf, page=0, dpi=RENDER_DPI, timeout=timeout).convert("L"))
    px = RENDER_DPI / 72  # pixels per point
    rows, cols = image.shape
    ink = (image < _INK).astype(np.uint8)
    clear = CLEARANCE_MM / 25.4 * 72
    w, h = (int(np.ceil((v + 2 * clear) * px)) for v in size)
    if w >= cols or h >= rows:  # a page smaller than the stamp: its top right, over whatever is there
        return StampPlace(0, _box(x_max - size[0], y_max, size), "over_ink")
    # Ink under every w x h window (top-left corner at each pixel), from the summed-area table.
    table = cv2.integral(ink)
    under = table[h:, w:] - table[:-h, w:] - table[h:, :-w] + table[:-h, :-w]
    for edge_mm in (EDGE_MM, NARROW_EDGE_MM):
        edge = int(np.ceil(edge_mm / 25.4 * RENDER_DPI))
        inside = np.zeros(under.shape, bool)
        inside[edge : max(edge, rows - edge - h + 1), edge : max(edge, cols - edge - w + 1)] = True
        target = (edge, max(edge, cols - edge - w))  # row, column of the top right window
        free = inside & (under == 0)
        if free.any():
            break
    if not inside.any():
        return StampPlace(0, _box(x_max - size[0], y_max, size), "over_ink")
    if free[target]:
        row, col, placement = *target, "top_right"
    else:
        # The free window nearest the top right; on a page with none, the one over the least ink.
        candidates = free if free.any() else inside & (under == under[inside].min())
        ys, xs = np.nonzero(candidates)
        nearest = np.argmin((ys - target[0]) ** 2 + (xs - target[1]) ** 2)
        row, col = int(ys[nearest]), int(xs[nearest])
        placement = "moved" if free.any() else "over_ink"
    return StampPlace(0, _box(x_min + col / px + clear, y_max - row / px - clear, size), placement)


def _box(x0: float, y1: float, size: tuple[float, float]) -> tuple[float, float, float, float]:
    """The stamp's box from its top left corner, in points."""
    return round(x0, 1), round(y1 - size[1], 1), round(x0 + size[0], 1), round(y1, 1)


@cache
def _font() -> ttLib.TTFont:
    return ttLib.TTFont(FONT, lazy=True)


class _CidSetFont(GlyphAccumulator):
    """pyHanko's embedded font subset, with the CIDSet PDF/A-1 requires of a composite subset font."""

    def prepare_write(self) -> None:
        super().prepare_write()
        descendant = self.cidfont_obj
        descriptor = descendant["/FontDescriptor"]
        if "/CIDSet" in descriptor:
            return
        cids = {0}  # .notdef is always in a TrueType font
        widths = list(descendant["/W"])
        for first, run_widths in zip(widths[::2], widths[1::2], strict=True):
            cids.update(range(int(first), int(first) + len(run_widths)))
        bits = bytearray((max(cids) >> 3) + 1)
        for cid in cids:
            bits[cid >> 3] |= 0x80 >> (cid & 7)
        cidset = generic.StreamObject(stream_data=bytes(bits))
        cidset.compress()
        descriptor[pdf_name("/CIDSet")] = self.writer.add_object(cidset)


@cache
def _font_at_1000_upem() -> bytes:
    """The font redrawn on a 1000-unit em. pyHanko writes glyph widths in font units, which a PDF reads
    as thousandths of an em: Liberation's 2048-unit em would give widths PDF/A validators reject."""
    font = ttLib.TTFont(FONT)
    if "FFTM" in font:
        del font["FFTM"]  # FontForge's timestamps: the subsetter drops it, with a warning on every record
    scale_upem(font, 1000)
    out = io.BytesIO()
    font.save(out)
    return out.getvalue()


@dataclass(frozen=True)
class _CidSetFontFactory(GlyphAccumulatorFactory):
    def create_font_engine(self, writer, obj_stream=None) -> GlyphAccumulator:
        font = io.BytesIO(_font_at_1000_upem())
        return _CidSetFont(writer=writer, font_handle=font, font_size=self.font_size, obj_stream=obj_stream)
