"""Vietnamese syllable check: a cheap test of whether OCR output is real Vietnamese."""

from __future__ import annotations

import re
import unicodedata

# Tone marks are stripped before matching; vowel quality marks (circumflex, breve, horn) stay.
_TONE_MARKS = {"\u0300", "\u0301", "\u0303", "\u0309", "\u0323"}
_ONSET = r"(?:ngh|ng|nh|ch|gh|gi|kh|ph|qu|th|tr|[bcdđghklmnprstvx])?"
_NUCLEUS = r"(?:uyê|uya|oa|oă|oe|uâ|uê|uy|uơ|ua|uô|ưa|ươ|ia|iê|yê|a|ă|â|e|ê|i|o|ô|ơ|u|ư|y)"
_CODA = r"(?:nh|ng|ch|[cmnpt]|[iyou])?"
_SYLLABLE = re.compile(f"^{_ONSET}{_NUCLEUS}{_CODA}$")
_VIETNAMESE_LETTERS = set("ăâđêôơư")
# The same syllables with every mark gone, as an English model reads a Vietnamese capital heading.
_BARE_NUCLEUS = r"(?:uye|uya|oa|oe|ua|ue|uy|uo|ia|ie|ye|a|e|i|o|u|y)"
_BARE_SYLLABLE = re.compile(f"^{_ONSET.replace('đ', '')}{_BARE_NUCLEUS}{_CODA}$")
_WORD_EDGES = "\"'“”‘’()[]{}<>.,;:!?…-–—/\\|*"


def _strip_tones(word: str) -> str:
    decomposed = unicodedata.normalize("NFD", word.lower())
    return unicodedata.normalize("NFC", "".join(ch for ch in decomposed if ch not in _TONE_MARKS))


def _looks_vietnamese(word: str) -> bool:
    decomposed = unicodedata.normalize("NFD", word.lower())
    return any(ch in _TONE_MARKS for ch in decomposed) or any(ch in _VIETNAMESE_LETTERS for ch in word.lower())


def is_syllable(word: str) -> bool:
    return bool(_SYLLABLE.match(_strip_tones(word)))


def could_be_syllable(word: str) -> bool:
    """Whether the word is a Vietnamese syllable once its marks are put back (or already has them)."""
    decomposed = unicodedata.normalize("NFD", word.lower().replace("đ", "d"))
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return bool(_BARE_SYLLABLE.match(bare))


def words_of(text: str) -> list[str]:
    """Alphabetic words only: numbers, codes and dates say nothing about the language."""
    words = (w.strip(_WORD_EDGES) for w in text.split())
    return [w for w in words if w and w.isalpha()]


def syllable_share(text: str) -> tuple[float | None, float]:
    """(share of words that are valid syllables, share of words that look Vietnamese).

    The first is None when there are no words. A page in English or another language
    has few Vietnamese-looking words, and its syllable share means nothing.
    """
    words = words_of(text)
    if not words:
        return None, 0.0
    valid = sum(1 for w in words if is_syllable(w))
    vietnamese = sum(1 for w in words if _looks_vietnamese(w))
    return valid / len(words), vietnamese / len(words)
