"""Barcodes on a page, and what they say about dossier boundaries: receipts and separator sheets."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zxingcpp

from pipeline import receipt
from pipeline.manifest import Receipt

# QR codes on receipts, Code 128 where an office prints that instead.
_FORMATS = zxingcpp.barcode_formats_from_str("QRCode,Code128")
# The receipt's title, without diacritics: OCR may lose some of them on a bold heading.
_RECEIPT_TITLE = "GIAY TIEP NHAN HO SO"


@dataclass(frozen=True)
class Symbol:
    format: str
    text: str
    valid: bool  # False: a symbol was found but could not be decoded
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the pixels it was read from


@dataclass(frozen=True)
class SeparatorRules:
    code_pattern: str
    generic_prefix: str


@dataclass(frozen=True)
class Separator:
    """What a page says about where dossiers begin."""

    kind: str  # "receipt" (starts dossier `code`), "generic" (starts a document, sheet dropped), "unreadable"
    code: str | None
    evidence: str  # never the whole payload: it may hold the applicant's ID number
    receipt: Receipt | None = None  # a receipt's values beside its code


def read_symbols(gray: np.ndarray) -> list[Symbol]:
    found = zxingcpp.read_barcodes(gray, formats=_FORMATS, try_invert=False, return_errors=True)
    return [Symbol(str(b.format), b.text if b.valid else "", bool(b.valid), _box(b.position)) for b in found]


def _box(position: zxingcpp.Position) -> tuple[int, int, int, int]:
    corners = (position.top_left, position.top_right, position.bottom_right, position.bottom_left)
    xs, ys = [p.x for p in corners], [p.y for p in corners]
    return min(xs), min(ys), max(xs), max(ys)


def classify(symbols: list[Symbol], text: str, rules: SeparatorRules) -> Separator | None:
    """A receipt with a readable dossier code, a generic separator sheet, or a receipt we cannot read.

    The code is found anywhere in a symbol's payload (pipeline/receipt.py); when no symbol holds
    one, a receipt's printed "Mã hồ sơ: …" names the dossier (its receipt's code_source is "text").
    """
    for symbol in symbols:
        source = "qr" if symbol.format == str(zxingcpp.BarcodeFormat.QRCode) else "barcode"
        found = receipt.read_payload(symbol.text, code_pattern=rules.code_pattern, code_source=source) if symbol.valid else None
        if found:
            evidence = f"{symbol.format} {found.receipt.payload_kind} payload: {found.code}"
            return Separator("receipt", found.code, evidence, found.receipt)
    for symbol in symbols:
        if symbol.valid and rules.generic_prefix and symbol.text.startswith(rules.generic_prefix):
            return Separator("generic", None, f"{symbol.format} {receipt.mask(symbol.text)}")
    damaged = [s for s in symbols if not s.valid]
    titled = _RECEIPT_TITLE in " ".join(receipt.plain(text).split())
    if titled or damaged:
        printed = receipt.read_printed(text, code_pattern=rules.code_pattern)
        if printed:
            symbols_seen = f"{len(damaged)} undecodable, {len(symbols) - len(damaged)} without a code"
            return Separator("receipt", printed.code, f"printed code {printed.code}; symbols: {symbols_seen}", printed.receipt)
        reasons = []
        if titled:
            reasons.append("receipt title in the text")
        if damaged:
            reasons.append(f"{len(damaged)} undecodable {damaged[0].format}")
        unmatched = [receipt.mask(s.text) for s in symbols if s.valid]
        if unmatched:
            reasons.append(f"codes not matching the dossier pattern: {', '.join(unmatched)}")
        return Separator("unreadable", None, "; ".join(reasons))
    return None
