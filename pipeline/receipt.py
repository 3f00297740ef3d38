"""What a reception receipt's QR or Code 128 payload, or its printed text, says: dossier code, procedure, applicant, name."""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import parse_qsl, urlsplit

from pipeline.manifest import Receipt

# Payload keys, compared without diacritics, case, spaces, "_" or "-" (so maHoSo, ma_ho_so and
# "Mã hồ sơ" are one key). The Vietnamese names are those of the national public-service portal
# and Circular 01/2023/TT-VPCP's receipt; the English ones are what other portals use.
CODE_KEYS = frozenset({"mahoso", "sohoso", "hoso", "dossiercode", "dossier", "code", "recordcode"})
PROCEDURE_KEYS = frozenset({"matthc", "mathutuc", "mathutuchanhchinh", "procedurecode", "procedure"})
APPLICANT_ID_KEYS = frozenset({
    "socccd", "cccd", "sogiayto", "sodinhdanh", "madinhdanh", "socmnd", "cmnd", "masothue", "mst",
    "idnumber", "applicantid", "personalid", "taxcode",
})  # fmt: skip
# tenHoSo names this dossier; the procedure's name is the fallback.
DOCUMENT_NAME_KEYS = ("tenhoso", "documentname", "dossiername", "title", "tentthc", "tenthutuc", "procedurename")
# A 12-digit personal identification number (CCCD), or a 10- or 13-digit tax code ("0101234567-001").
_APPLICANT_ID = re.compile(r"\d{12}|\d{10}(?:-?\d{3})?")
# Digit runs long enough to be an identification number: masked wherever payload text is shown.
_ID_LIKE = re.compile(r"\d{9,}")
# "Mã hồ sơ" as printed on the receipt, without diacritics (OCR may drop some).
_PRINTED_LABEL = re.compile(r"MA\s*HO\s*SO\s*[:.]?", re.IGNORECASE)


@dataclass(frozen=True)
class ReceiptReading:
    """A dossier code found in a payload or on the page, and the receipt's other values."""

    code: str
    receipt: Receipt


@lru_cache(maxsize=8)
def code_search(pattern: str) -> re.Pattern[str]:
    """`split.code_pattern` made to find a code anywhere: anchors dropped, not inside a longer word."""
    core = re.sub(r"^(\^|\\A)|(\$|\\Z)$", "", pattern)
    return re.compile(rf"(?<![0-9A-Za-z])(?:{core})(?![0-9A-Za-z])")


def read_payload(payload: str, *, code_pattern: str, code_source: str) -> ReceiptReading | None:
    """The dossier code and receipt values in a symbol's payload, or None when it holds no dossier code."""
    text = payload.strip()
    search = code_search(code_pattern)
    kind, fields = _fields(text)
    code = next((m.group(0) for key, value in fields if key in CODE_KEYS for m in [search.search(value)] if m), None)
    if code is None:
        found = search.search(text)
        if found is None:
            return None
        code = found.group(0)
    if kind == "text" and code == text:
        kind = "code"
    applicant = next(
        (value for key, value in fields if key in APPLICANT_ID_KEYS and _APPLICANT_ID.fullmatch(value)),
        None,
    )  # fmt: skip
    names = {key: value for key, value in fields if key in DOCUMENT_NAME_KEYS and value}
    receipt = Receipt(
        code_source=code_source,
        payload_kind=kind,
        procedure_code=next((value for key, value in fields if key in PROCEDURE_KEYS and value), None),
        applicant_id=applicant,
        document_name=next((unicodedata.normalize("NFC", names[key]) for key in DOCUMENT_NAME_KEYS if key in names), None),
    )
    return ReceiptReading(code, receipt)


def read_printed(text: str, *, code_pattern: str) -> ReceiptReading | None:
    """The code printed after "Mã hồ sơ:" on the receipt, as OCR read it."""
    search = code_search(code_pattern)
    for line in text.splitlines():
        label = _PRINTED_LABEL.search(plain(line))  # OCR may also space the code out
        if label is None:
            continue
        # Codes are digits, dots, dashes and capitals, so the plain line holds them as printed.
        rest = plain(line)[label.end():]
        found = search.search(rest) or search.search(re.sub(r"\s+", "", rest))
        if found:
            return ReceiptReading(found.group(0), Receipt(code_source="text", payload_kind="text"))
    return None


def mask(payload: str, *, limit: int = 60) -> str:
    """A payload as it may be shown in evidence and logs: identification numbers masked, cut short."""
    masked = _ID_LIKE.sub("…", payload.strip())
    return masked if len(masked) <= limit else masked[: limit - 1] + "…"


def plain(text: str) -> str:
    """Text without diacritics, upper case: how labels and titles are matched."""
    decomposed = unicodedata.normalize("NFD", text.replace("đ", "d").replace("Đ", "D"))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).upper()


def _key(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", plain(name).lower())


def _fields(text: str) -> tuple[str, list[tuple[str, str]]]:
    """The payload's kind and its (normalised key, value) pairs, in order."""
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            return "json", list(_flatten(data))
    parts = urlsplit(text)
    if parts.scheme in ("http", "https") and parts.netloc:
        pairs = parse_qsl(parts.query) + parse_qsl(parts.fragment)
        return "url", [(_key(k), v.strip()) for k, v in pairs]
    pairs = []
    for item in re.split(r"[\n;|]", text):
        key, sep, value = item.partition(":") if ":" in item else item.partition("=")
        if sep and key.strip():
            pairs.append((_key(key), value.strip()))
    if pairs:
        return "key_value", pairs
    return "text", []


def _flatten(data: dict) -> list[tuple[str, str]]:
    pairs = []
    for key, value in data.items():
        if isinstance(value, dict):
            pairs += _flatten(value)
        elif isinstance(value, str | int) and not isinstance(value, bool):
            pairs.append((_key(str(key)), str(value).strip()))
    return pairs
