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
PAD = 0.35  # of the line height, around each crop
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
    """Capital lines of Vietnamese syllables on a page where Vietnamese lines are common."""
    by_line: dict[int, list[Word]] = {}
    for word in words:
        by_line.setdefault(word.line, []).append(word)
    marked = sum(1 for line in by_line.values() if any(_has_mark(w.text) for w in line))
    if not by_line or marked < MIN_VIETNAMESE_LINES * len(by_line):
        return []
    suspects = []
    for index, line in by_line.items():
        letters = [w.text.strip(_EDGES) for w in line]
        letters = [w for w in letters if w.isalpha()]
        if len(letters) < 2 or not all(vietnamese.could_be_syllable(w) for w in letters):
            continue
        capitals = sum(1 for w in letters if sum(ch.isupper() for ch in w) * 2 > len(w))
        if capitals >= 0.7 * len(letters) and not all(_has_mark(w) for w in letters if len(w) > 1):
            suspects.append(index)
    return suspects


def reread(
    gray: np.ndarray, words: list[Word], lines: list[int], *, work: Path, dpi: int, timeout: float
) -> dict[int, list[str]]:
    """Read the given lines again with `vie` alone; line index -> its new words, where accepted."""
    crops, spans = [], []
    y = 0
    for index in lines:
        boxes = [w.box for w in words if w.line == index]
        left = min(b[0] for b in boxes)
        top = min(b[1] for b in boxes)
        right = max(b[0] + b[2] for b in boxes)
        bottom = max(b[1] + b[3] for b in boxes)
        pad = max(4, int(PAD * (bottom - top)))
        crop = gray[max(0, top - pad) : bottom + pad, max(0, left - pad) : right + pad]
        crops.append(crop)
        spans.append((y, y + crop.shape[0]))
        y += crop.shape[0]
    width = max(c.shape[1] for c in crops)
    stacked = np.full((y, width), 255, np.uint8)
    for crop, (start, end) in zip(crops, spans, strict=True):
        stacked[start:end, : crop.shape[1]] = crop
    image = work.with_suffix(".headings.pgm")
    image.write_bytes(cv2.imencode(".pgm", stacked)[1])
    try:
        tsv = tesseract.read_lines(image, work.with_suffix(".headings"), language="vie", dpi=dpi, timeout=timeout)
    except ExternalProgramError as exc:
        log.warning("%s: second reading of headings failed (%s); keeping the first", work.name, exc)
        return {}
    finally:
        image.unlink(missing_ok=True)
    found: dict[int, list[tuple[int, str]]] = {}
    for word in read_words(tsv):
        centre = word.box[1] + word.box[3] / 2
        slot = next((i for i, (start, end) in enumerate(spans) if start <= centre < end), None)
        if slot is not None:
            found.setdefault(slot, []).append((word.box[0], word.text))
    tsv.unlink(missing_ok=True)
    accepted = {}
    for slot, index in enumerate(lines):
        new = [text for _, text in sorted(found.get(slot, []))]
        old = [w.text for w in words if w.line == index]
        if len(new) != len(old):
            continue
        # Word by word: the Vietnamese reading wins where its letters are the same, marks aside.
        merged = [b if _base_letters(a) == _base_letters(b) else a for a, b in zip(old, new, strict=True)]
        if merged != old:
            accepted[index] = [unicodedata.normalize("NFC", w) for w in merged]
    return accepted


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
