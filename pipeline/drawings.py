"""Technical drawings: strokes at many angles across the sheet, or a frame with a title block."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.geometry import AnalysisImage
from pipeline.settings import TriageSettings

# Strokes at least this long count as line art: far longer than any character stroke.
LINE_MM = 8.0
# Pen strokes are thinner than this; thicker ink is a blob (a photo's shadow, a filled logo).
STROKE_MM = 1.2
# ... except rules: a scanned sheet's frame is drawn bold, and blurs wider still.
RULE_MM = 2.0
# A connected piece of line art at least this long: a frame, an outline, a dimension line.
PIECE_MM = 15.0
# An oblique or curved run shorter than this is a letter's stroke touching a rule ...
CURVE_MM = 3.0
# ... and one flatter than this is what a slightly tilted rule leaves when its straight runs are taken out.
CURVE_MIN_SPAN_MM = 1.0
# The sheet is judged in GRID × GRID cells, so a stamp or a small sketch fills only a few.
GRID = 8
# A cell counts when it holds this much oblique or curved ink: an 8 mm stroke, 0.25 mm wide.
CELL_INK_MM2 = 8.0 * 0.25
# A frame's sides lie within this share of the sheet's edges, and span this share of it.
FRAME_EDGE = 0.15
FRAME_SPAN = 0.6
# Title-block rules end at the frame's side, give or take a double border.
TITLE_RULE_END_MM = 12.0
TITLE_RULE_MIN_MM = 20.0
# Walls, outlines and boxes of a plan: rules shorter than this share of the sheet's side.
SHORT_RULE_SHARE = 0.3
# Label lookups go this many pixels at a time (see `_lookup`).
LOOKUP_BAND_PX = 1 << 20


@dataclass(frozen=True)
class Box:
    """A rectangle in pixels of the level, upright analysis image: left, top, right, bottom."""

    x0: int
    y0: int
    x1: int
    y1: int

    def scaled(self, factor: float) -> Box:
        return Box(*(round(v * factor) for v in (self.x0, self.y0, self.x1, self.y1)))

    def as_list(self) -> list[int]:
        return [self.x0, self.y0, self.x1, self.y1]


@dataclass(frozen=True)
class DrawingEvidence:
    """What the detector measured on one page, and its verdict."""

    # Long horizontal or vertical strokes, as a share of the thin ink; all 0 when the page has
    # no line art longer than PIECE_MM at all.
    line_share: float
    curve_spread: float  # share of the sheet's cells holding long oblique or curved strokes
    mark_density: float  # character-sized marks per 100 cm² (recorded; not a gate)
    frame: Box | None  # the sheet's border, when it has one
    title_block: Box | None  # the box of rules in a corner of the frame
    inner_rules: int  # rules across the drawing area besides the frame's and the title block's
    short_rules: float  # straight rules from LINE_MM to SHORT_RULE_SHARE of the sheet, per 100 cm²
    drawing: bool
    curve_cells: tuple[tuple[int, int], ...] = ()  # (row, column) of the GRID cells counted in curve_spread
    # Counterclockwise quarter turns that bring the title block to the bottom right, where it
    # belongs: text-line evidence is weak on a drawing, a title block is not.
    turn: int = 0

    def record(self) -> dict:
        """The evidence as the manifest keeps it (boxes in analysis pixels, at `dpi`)."""
        return {
            "line_share": self.line_share,
            "curve_spread": self.curve_spread,
            "mark_density": self.mark_density,
            "frame": self.frame.as_list() if self.frame else None,
            "title_block": self.title_block.as_list() if self.title_block else None,
            "inner_rules": self.inner_rules,
            "short_rules": self.short_rules,
        }


@dataclass(frozen=True)
class _Strokes:
    thin: np.ndarray  # uint8 0/1: thin ink
    horizontal: np.ndarray  # uint8 0/1: runs of at least LINE_MM along x
    vertical: np.ndarray
    curved: np.ndarray  # uint8 0/1: long oblique or curved runs inside large pieces of line art
    rows: np.ndarray  # horizontal rules as [left, top, width, height], small gaps bridged
    cols: np.ndarray  # vertical rules, likewise


def detect(
    page: AnalysisImage, level_ink: np.ndarray, settings: TriageSettings, *, character_marks: int
) -> DrawingEvidence:
    """Judge one page from its level, upright ink (bool, analysis pixels; barcodes already blanked).

    A drawing either has long oblique or curved strokes spread over much of the sheet (outlines,
    arcs, hatching, dimension lines: a form or table has only straight rules, a stamp or a small
    sketch fills a few cells); or fewer of them among many short straight rules (a plan's walls
    and door arcs: a table's rules run across it); or it is a framed sheet with a title block and
    an open drawing area (a sparse CAD sheet), which a ruled form is not: its rules cross the page.
    """
    height, width = level_ink.shape
    area_cm2 = page.mm(height) * page.mm(width) / 100.0
    density = round(character_marks / area_cm2 * 100.0, 1)
    strokes = _strokes(page, level_ink)
    thin_total = int(strokes.thin.sum()) if strokes is not None else 0
    if strokes is None or thin_total == 0:
        return DrawingEvidence(0.0, 0.0, density, None, None, 0, 0.0, False)
    line_share = round(min(1.0, float((strokes.horizontal | strokes.vertical).sum()) / thin_total), 3)
    cells = _cells(strokes.curved, min_ink=page.px(1.0) ** 2 * CELL_INK_MM2)
    spread = round(len(cells) / (GRID * GRID), 3)
    short_rules = round(_short_rules(page, strokes) / area_cm2 * 100.0, 1)
    frame = _frame(page, strokes)
    title_block, inner_rules, turn = (None, 0, 0)
    if frame is not None:
        title_block, inner_rules, turn = _title_block(page, strokes, frame)
        if title_block is None:
            # Perhaps a sheet lying on its side: look again a quarter turn round. Only framed
            # sheets without a title block pay for this.
            turned = _strokes(page, np.ascontiguousarray(np.rot90(level_ink, 1)))
            turned_frame = _frame(page, turned) if turned is not None else None
            if turned_frame is not None:
                found, _, extra = _title_block(page, turned, turned_frame)
                turn = (1 + extra) % 4 if found is not None else 0
    framed_sheet = (
        title_block is not None
        and inner_rules <= settings.drawing_max_inner_rules
        and line_share >= settings.drawing_min_line_share
    )
    plan = spread >= settings.drawing_plan_min_curve_spread and short_rules >= settings.drawing_plan_min_short_rules
    drawing = spread >= settings.drawing_min_curve_spread or plan or framed_sheet
    return DrawingEvidence(
        line_share, spread, density, frame, title_block, inner_rules, short_rules, drawing, cells, turn=turn
    )


def _without_blobs(page: AnalysisImage, ink: np.ndarray, width_mm: float) -> np.ndarray:
    blob = max(3, round(page.px(width_mm)) | 1)
    thick = cv2.morphologyEx(ink, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (blob, blob)))
    return ink & (1 - thick)


def _strokes(page: AnalysisImage, ink: np.ndarray) -> _Strokes | None:
    """The page's line art; None when it has none (most text pages), which costs least."""
    ink = ink.view(np.uint8)
    lines = _without_blobs(page, ink, RULE_MM)
    _, _, stats, _ = cv2.connectedComponentsWithStats(lines, connectivity=8)
    if not (np.maximum(stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT]) > page.px(PIECE_MM)).any():
        return None
    thin = _without_blobs(page, ink, STROKE_MM)
    # Pieces of line art: connected thin strokes far larger than a character.
    count, labels, stats, _ = cv2.connectedComponentsWithStats(thin, connectivity=8)
    large = np.zeros(count, np.uint8)
    large[1:] = np.maximum(stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT]) > page.px(PIECE_MM)
    pieces = _lookup(large, labels)
    del labels
    length = max(3, round(page.px(LINE_MM)))
    horizontal = cv2.morphologyEx(lines, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (length, 1)))
    vertical = cv2.morphologyEx(lines, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (1, length)))
    del lines
    # What is left of them without their straight rules: outlines, arcs, hatching, arrowheads,
    # and letters touching a rule, which the length test below leaves out.
    rules = cv2.dilate(horizontal | vertical, np.ones((3, 3), np.uint8))
    rest = pieces & (1 - rules)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(rest, connectivity=8)
    long_runs = np.zeros(count, np.uint8)
    sides = stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT]
    long_runs[1:] = (np.maximum(*sides) >= page.px(CURVE_MM)) & (np.minimum(*sides) >= page.px(CURVE_MIN_SPAN_MM))
    curved = _lookup(long_runs, labels)
    del labels, rest, rules, pieces  # ~0.25 GB on an A0 sheet, not to be held while the rules are measured
    return _Strokes(
        thin, horizontal, vertical, curved,
        rows=_segments(horizontal, page, along_x=True), cols=_segments(vertical, page, along_x=False),
    )  # fmt: skip


def _cells(mask: np.ndarray, *, min_ink: float) -> tuple[tuple[int, int], ...]:
    height, width = mask.shape
    rows = np.linspace(0, height, GRID + 1).astype(int)
    cols = np.linspace(0, width, GRID + 1).astype(int)
    sums = np.add.reduceat(np.add.reduceat(mask, rows[:-1], axis=0, dtype=np.int32), cols[:-1], axis=1)
    return tuple((int(r), int(c)) for r, c in zip(*np.nonzero(sums >= min_ink), strict=True))


def draw_evidence(gray: np.ndarray, evidence: DrawingEvidence, *, scale: float) -> np.ndarray:
    """A colour copy of a (scaled) level page with the evidence over it: the cells holding oblique
    or curved strokes tinted orange, the frame in blue, the title block in red."""
    picture = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    height, width = gray.shape
    tint = picture.copy()
    for row, col in evidence.curve_cells:
        y0, y1 = row * height // GRID, (row + 1) * height // GRID
        x0, x1 = col * width // GRID, (col + 1) * width // GRID
        cv2.rectangle(tint, (x0, y0), (x1 - 1, y1 - 1), (0, 140, 255), thickness=-1)
    picture = cv2.addWeighted(tint, 0.25, picture, 0.75, 0)
    for box, colour in ((evidence.frame, (255, 80, 0)), (evidence.title_block, (0, 0, 230))):
        if box is not None:
            b = box.scaled(scale)
            cv2.rectangle(picture, (b.x0, b.y0), (b.x1, b.y1), colour, thickness=3)
    return picture


def _lookup(table: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """`table[labels]`, a band of rows at a time: numpy indexes through a 64-bit copy of the
    labels, which on an A0 sheet would be 280 MB at once."""
    out = np.empty(labels.shape, table.dtype)
    band = max(1, LOOKUP_BAND_PX // labels.shape[1])
    for top in range(0, labels.shape[0], band):
        out[top : top + band] = table[labels[top : top + band]]
    return out


def _segments(mask: np.ndarray, page: AnalysisImage, *, along_x: bool) -> np.ndarray:
    """Rules as [left, top, width, height] rows, small gaps along them bridged."""
    gap = max(1, round(page.px(2.0)))
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (gap, 1) if along_x else (1, gap))
    closed = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    _, _, stats, _ = cv2.connectedComponentsWithStats(closed, connectivity=8)
    return stats[1:, :4]


def _short_rules(page: AnalysisImage, strokes: _Strokes) -> int:
    height, width = strokes.thin.shape
    rows, cols = strokes.rows, strokes.cols
    return int((rows[:, 2] < SHORT_RULE_SHARE * width).sum() + (cols[:, 3] < SHORT_RULE_SHARE * height).sum())


def _frame(page: AnalysisImage, strokes: _Strokes) -> Box | None:
    """The sheet's border: long rules near all four edges of the page."""
    height, width = strokes.thin.shape
    rows = strokes.rows[strokes.rows[:, 2] >= FRAME_SPAN * width]
    cols = strokes.cols[strokes.cols[:, 3] >= FRAME_SPAN * height]
    if len(rows) < 2 or len(cols) < 2:
        return None
    top, bottom = int(rows[:, 1].min()), int((rows[:, 1] + rows[:, 3]).max())
    left, right = int(cols[:, 0].min()), int((cols[:, 0] + cols[:, 2]).max())
    if top > FRAME_EDGE * height or bottom < (1 - FRAME_EDGE) * height:
        return None
    if left > FRAME_EDGE * width or right < (1 - FRAME_EDGE) * width:
        return None
    return Box(left, top, right, bottom)


def _title_block(page: AnalysisImage, strokes: _Strokes, frame: Box) -> tuple[Box | None, int, bool]:
    """The box of rules in the frame's bottom-right corner (top-left on a sheet upside down),
    how many rules cross the drawing area outside it, and the quarter turns that put it bottom right."""
    rows = strokes.rows
    frame_width, frame_height = frame.x1 - frame.x0, frame.y1 - frame.y0
    near = page.px(TITLE_RULE_END_MM)
    inside = (rows[:, 1] > frame.y0 + page.px(3)) & (rows[:, 1] + rows[:, 3] < frame.y1 - page.px(3))
    usable = inside & (rows[:, 2] >= page.px(TITLE_RULE_MIN_MM))
    right_end = np.abs(rows[:, 0] + rows[:, 2] - frame.x1) < near
    left_end = np.abs(rows[:, 0] - frame.x0) < near
    candidates = []
    low = rows[usable & right_end & (rows[:, 1] > frame.y0 + 0.5 * frame_height)]
    if len(low) >= 2:
        top = int(low[:, 1].min())
        candidates.append(Box(int(low[:, 0].min()), top, frame.x1, frame.y1))
    high = rows[usable & left_end & (rows[:, 1] < frame.y0 + 0.5 * frame_height)]
    if len(high) >= 2:
        bottom = int((high[:, 1] + high[:, 3]).max())
        candidates.append(Box(frame.x0, frame.y0, int((high[:, 0] + high[:, 2]).max()), bottom))
    if not candidates:
        return None, 0, False
    block = min(candidates, key=lambda b: (b.x1 - b.x0) * (b.y1 - b.y0))
    if (block.x1 - block.x0) * (block.y1 - block.y0) > 0.5 * frame_width * frame_height:
        return None, 0, False  # rules all over the page: a ruled form, not a title block
    crossing = inside & (rows[:, 2] >= FRAME_SPAN * frame_width)
    outside_block = (rows[:, 1] + rows[:, 3] < block.y0) | (rows[:, 1] > block.y1)
    return block, int((crossing & outside_block).sum()), 2 if block.y0 == frame.y0 else 0


@dataclass(frozen=True)
class TitleBlockText:
    """What the title block says, read on its own; fields None where no label or pattern matched."""

    text: str  # NFC, as read
    number: str | None
    title: str | None
    scale: str | None
    date: str | None
    author: str | None

    def description(self) -> str:
        """One line for the record's XMP description."""
        parts = [("Số/No", self.number), ("Tên/Title", self.title), ("Tỷ lệ/Scale", self.scale),
                 ("Ngày/Date", self.date), ("Người vẽ/By", self.author)]  # fmt: skip
        named = "; ".join(f"{label}: {value}" for label, value in parts if value)
        return named or " ".join(self.text.split())


_LABEL_END = r"\s*(?:[:.]\s*)?"
_NUMBER = re.compile(r"(?:DWG\.?\s*NO|DRAWING\s*(?:NO|NUMBER)|SHEET\s*NO|Số\s*(?:bản\s*vẽ|hiệu)?|Ký\s*hiệu)" + _LABEL_END + r"([A-Z0-9][\w./-]*\d[\w./-]*|[A-Z0-9][\w./-]{2,})", re.IGNORECASE)
_TITLE = re.compile(r"(?:TITLE|Tên\s*bản\s*vẽ|Tên)" + _LABEL_END + r"(\S[^\n]{2,})", re.IGNORECASE)
_SCALE = re.compile(r"(?:(?:SCALE|Tỷ\s*lệ|Tỉ\s*lệ)" + _LABEL_END + r")?\b(1\s*[:/]\s*\d{1,5}|\d{1,3}\s*:\s*1)\b", re.IGNORECASE)
_DATE = re.compile(r"\b(\d{1,2}[./-]\d{1,2}[./-](?:\d{4}|\d{2})|\d{4}-\d{2}-\d{2})\b")
_AUTHOR = re.compile(r"(?:DRAWN(?:\s*BY)?|DESIGNED(?:\s*BY)?|AUTHOR|Thiết\s*kế|Người\s*vẽ|Vẽ)" + _LABEL_END + r"([^\W\d_][^\n]{1,40})", re.IGNORECASE)


def title_block_text(text: str) -> TitleBlockText:
    """Pick the drawing number, title, scale, date and author out of a title block's text."""
    text = unicodedata.normalize("NFC", text).strip()

    def first(pattern: re.Pattern[str]) -> str | None:
        match = pattern.search(text)
        return " ".join(match.group(1).split()) if match else None

    title = first(_TITLE)
    if title is None:
        # Unlabelled: the sheet's name is the line set in capitals, the longest such.
        labelled = (_NUMBER, _SCALE, _DATE, _AUTHOR)
        capitals = [
            line.strip() for line in text.splitlines()
            if len(line.strip()) >= 6 and line.strip() == line.strip().upper() and any(c.isalpha() for c in line)
            and not any(pattern.search(line) for pattern in labelled)
        ]  # fmt: skip
        title = max(capitals, key=len) if capitals else None
    scale = first(_SCALE)
    return TitleBlockText(text, first(_NUMBER), title, scale.replace(" ", "") if scale else None, first(_DATE), first(_AUTHOR))
