"""Vietnamese capital headings read again in Vietnamese only, where the English model took them and dropped their marks.

Tesseract chooses a language per text line. On a capital line the English model often wins
and reads "GIẤY TIẾP NHẬN HỒ SƠ VÀ HẸN TRẢ KẾT QUẢ" as "… HEN TRA KẾT QUA". Reading the whole
page with `vie` alone costs English pages words (8071_093.3B: 0.973 -> 0.890), so only capital
lines without a single Vietnamese mark, on a page whose other lines are Vietnamese, are read
again, all in one Tesseract run on their crops. A new reading replaces the old one only when
it is the same letters with marks added, word for word: it can restore marks, never change letters.
"""

from __future__ import annotations

import csv
import logging
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pikepdf

from pipeline import vietnamese
from pipeline._exec import tesseract
from pipeline.errors import ExternalProgramError

log = logging.getLogger(__name__)

# The page must be Vietnamese: this share of its lines carry a Vietnamese mark.
MIN_VIETNAMESE_LINES = 0.3
PAD = 0.2  # of the line height, around each crop: enough for marks, little of the next line
_EDGES = "\"'“”‘’()[]{}<>.,;:!?…-–—/\\|*"


@dataclass(frozen=True)
class Word:
    line: int  # index of its line in reading order
    text: str
    box: tuple[int, int, int, int]  # left, top, width, height


@dataclass(frozen=True)
class HeadingPass:
    """A second, Vietnamese-only reading of capital lines, recorded with its reason."""

    reason: str
    lines_read: int
    lines_changed: int


def read_words(tsv: Path) -> list[Word]:
    """The words Tesseract wrote, in its order (the order of the text layer's TJ strings)."""
    words, lines = [], {}
    with open(tsv, encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
            text = (row.get("text") or "").strip()
            if row.get("level") != "5" or not text:
                continue
            key = (row["block_num"], row["par_num"], row["line_num"])
            box = tuple(int(row[k]) for k in ("left", "top", "width", "height"))
            words.append(Word(lines.setdefault(key, len(lines)), unicodedata.normalize("NFC", text), box))
    return words


def _base_letters(word: str) -> str:
    decomposed = unicodedata.normalize("NFD", word.upper().replace("Đ", "D"))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _has_mark(word: str) -> bool:
    return _base_letters(word) != word.upper()


def suspect_lines(words: list[Word]) -> list[int]:
    """Lines with capital Vietnamese syllables lacking marks, on a page where Vietnamese lines are common."""
    by_line: dict[int, list[Word]] = {}
    for word in words:
        by_line.setdefault(word.line, []).append(word)
    marked = sum(1 for line in by_line.values() if any(_has_mark(w.text) for w in line))
    if not by_line or marked < MIN_VIETNAMESE_LINES * len(by_line):
        return []
    suspects = []
    for index, line in by_line.items():
        bare_capitals = [
            w for w in (word.text.strip(_EDGES) for word in line)
            if len(w) > 1 and w.isalpha() and w.isupper() and not _has_mark(w) and vietnamese.could_be_syllable(w)
        ]  # fmt: skip
        # Two unmarked capital syllables: a heading, or a signature block's title, the English model took.
        if len(bare_capitals) >= 2:
            suspects.append(index)
    return suspects


def reread(
    gray: np.ndarray, words: list[Word], lines: list[int], *, work: Path, dpi: int, timeout: float,
    user_words: Path | None = None,
) -> dict[int, list[str]]:
    """Read the given lines again with `vie` alone; line index -> its words with the accepted new readings."""
    crops, origins = [], []  # origins: (page x, page y, stack y) of each crop's top-left corner
    y = 0
    for index in lines:
        boxes = [w.box for w in words if w.line == index]
        left, top = min(b[0] for b in boxes), min(b[1] for b in boxes)
        right, bottom = max(b[0] + b[2] for b in boxes), max(b[1] + b[3] for b in boxes)
        pad = max(4, int(PAD * (bottom - top)))
        x0, y0 = max(0, left - pad), max(0, top - pad)
        crop = gray[y0 : bottom + pad, x0 : right + pad]
        crops.append(crop)
        origins.append((x0, y0, y))
        y += crop.shape[0] + pad  # a white gap, so Tesseract keeps the lines apart
    stacked = np.full((y, max(c.shape[1] for c in crops)), 255, np.uint8)
    for crop, (_, _, start) in zip(crops, origins, strict=True):
        stacked[start : start + crop.shape[0], : crop.shape[1]] = crop
    image = work.with_suffix(".headings.pgm")
    image.write_bytes(cv2.imencode(".pgm", stacked)[1])
    try:
        tsv = tesseract.read_lines(
            image, work.with_suffix(".headings"), language="vie", dpi=dpi, timeout=timeout, user_words=user_words
        )  # fmt: skip
    except ExternalProgramError as exc:
        log.warning("%s: second reading of headings failed (%s); keeping the first", work.name, exc)
        return {}
    finally:
        image.unlink(missing_ok=True)
    placed = []  # the new words, in page coordinates
    for word in read_words(tsv):
        centre = word.box[1] + word.box[3] / 2
        for (x0, y0, start), crop in zip(origins, crops, strict=True):
            if start <= centre < start + crop.shape[0]:
                placed.append((word.text, (word.box[0] + x0, word.box[1] - start + y0, word.box[2], word.box[3])))
    tsv.unlink(missing_ok=True)
    accepted = {}
    for index in lines:
        old = [w for w in words if w.line == index]
        merged = [_matching(w, placed) or w.text for w in old]
        if merged != [w.text for w in old]:
            accepted[index] = merged
    return accepted


def _matching(word: Word, placed: list[tuple[str, tuple[int, int, int, int]]]) -> str | None:
    """The new reading at the word's place, if it is the same letters (marks aside)."""
    left, top, width, height = word.box
    best, best_overlap = None, 0.5 * width
    for text, (x, y, w, h) in placed:
        overlap = min(left + width, x + w) - max(left, x)
        if overlap > best_overlap and top <= y + h / 2 <= top + height:
            best, best_overlap = text, overlap
    if best is None or _base_letters(best) != _base_letters(word.text):
        return None
    return unicodedata.normalize("NFC", best)


def rewrite_text_layer(text_pdf: Path, words: list[Word], fixed: dict[int, list[str]]) -> bool:
    """Put the new words into Tesseract's text layer, one TJ string each; False if it does not match the TSV."""
    replacement: dict[int, str] = {}
    counters: dict[int, int] = {}
    for position, word in enumerate(words):
        if word.line in fixed:
            k = counters.get(word.line, 0)
            replacement[position] = fixed[word.line][k]
            counters[word.line] = k + 1
    with pikepdf.open(text_pdf, allow_overwriting_input=True) as pdf:
        page = pdf.pages[0]
        instructions = pikepdf.parse_content_stream(page)
        shows = [i for i, ins in enumerate(instructions) if str(ins.operator) == "TJ"]
        if len(shows) != len(words):
            return False
        out = list(instructions)
        for position, new in replacement.items():
            ins = out[shows[position]]
            (array,) = ins.operands
            old = bytes(array[0])
            spaced = old.endswith(b"\x00 ")
            data = new.encode("utf-16-be") + (b"\x00 " if spaced else b"")
            out[shows[position]] = pikepdf.ContentStreamInstruction([pikepdf.Array([pikepdf.String(data)])], ins.operator)
        page.Contents = pdf.make_stream(pikepdf.unparse_content_stream(out))
        pdf.save(text_pdf)
    return True


def rewrite_text(text: str, words: list[Word], fixed: dict[int, list[str]]) -> str:
    """The plain text with each changed line's words replaced, in order."""
    position = 0
    for index in sorted(fixed):
        old = " ".join(w.text for w in words if w.line == index)
        found = text.find(old, position)
        if found < 0:
            continue
        new = " ".join(fixed[index])
        text = text[:found] + new + text[found + len(old) :]
        position = found + len(new)
    return text
