"""Tesseract: version and model checks, OCR of one page image, orientation detection."""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass
from pathlib import Path

import pytesseract

from pipeline._exec import run
from pipeline.errors import ConfigError, ExternalProgramError, MissingProgram, OutputError, ProgramTimeout, out_of_space

PROGRAM = "tesseract"
MIN_VERSION = (5, 0)
# One Tesseract per core: its own OpenMP threads would only fight the other workers.
ENV = {"OMP_THREAD_LIMIT": "1"}


@dataclass(frozen=True)
class TesseractInfo:
    version: str
    tessdata_dir: Path
    languages: frozenset[str]


@functools.cache
def info() -> TesseractInfo:
    """What is installed. Cached: it cannot change during a run."""
    try:
        version = pytesseract.get_tesseract_version()
    except pytesseract.TesseractNotFoundError:
        raise MissingProgram(
            "tesseract is not installed: apt-get install tesseract-ocr tesseract-ocr-vie"
        ) from None
    if (version.major, version.minor) < MIN_VERSION:
        raise MissingProgram(f"tesseract {version} is too old; need 5.0 or newer")
    listing = run([PROGRAM, "--list-langs"], timeout=30, what="listing languages")
    text = listing.stdout.decode("utf-8", "replace")
    match = re.search(r'"(.+?)"', text)
    if not match:
        raise ExternalProgramError(f"tesseract --list-langs gave no tessdata folder: {text!r}")
    languages = frozenset(line.strip() for line in text.splitlines()[1:] if line.strip())
    return TesseractInfo(str(version), Path(match.group(1)), languages)


# Two-letter codes people type, and Tesseract's names for them (Tesseract names models by ISO 639-2/3).
_ISO_639_1 = {
    "vi": "vie", "en": "eng", "fr": "fra", "zh": "chi_sim", "ja": "jpn", "ko": "kor", "km": "khm",
    "lo": "lao", "th": "tha", "de": "deu", "ru": "rus", "es": "spa",
}  # fmt: skip


def require_languages(languages: str) -> list[Path]:
    """Check that every model in "vie+eng" (and osd) is installed; return the model files."""
    installed = info()
    needed = [*languages.split("+"), "osd"]
    missing = [lang for lang in needed if lang not in installed.languages]
    for lang in (m for m in missing if m != "osd"):
        # "vi" for "vie": a setting mistake, not a model to install.
        guess = _ISO_639_1.get(lang.lower()) or next(iter(difflib.get_close_matches(lang, sorted(installed.languages), n=1)), None)
        if guess:
            raise ConfigError(f"Tesseract has no language {lang!r}; did you mean {guess!r}? (--lang, ocr.languages)")
    if missing:
        packages = " ".join(f"tesseract-ocr-{m}" for m in missing)
        raise MissingProgram(f"Tesseract models not installed: {', '.join(missing)} ({packages})")
    return [installed.tessdata_dir / f"{lang}.traineddata" for lang in needed]


@dataclass(frozen=True)
class OcrFiles:
    text_pdf: Path
    tsv: Path
    txt: Path


def ocr(
    image: Path, out_base: Path, *, languages: str, dpi: int, config_file: Path, timeout: float,
    user_words: Path | None = None, page_segmentation: int | None = None,
) -> OcrFiles:  # fmt: skip
    """OCR one page: a text-only PDF layer, word boxes with confidences (TSV), and plain text.

    `page_segmentation` is Tesseract's --psm (11: sparse text, for drawings); None keeps its default.
    """
    argv = [PROGRAM, str(image), str(out_base), "-l", languages, "--dpi", str(dpi)]
    if page_segmentation is not None:
        argv += ["--psm", str(page_segmentation)]
    if user_words is not None:
        argv += ["--user-words", str(user_words)]
    argv += [str(config_file), "pdf", "tsv", "txt"]
    files = OcrFiles(*(out_base.with_suffix(f".{ext}") for ext in ("pdf", "tsv", "txt")))
    try:
        run(argv, timeout=timeout, env=ENV, what=f"OCR of {image.name}")
        for path in (files.text_pdf, files.tsv, files.txt):
            if not path.exists():
                raise ExternalProgramError(f"tesseract wrote no {path.suffix} for {image.name}")
    except ExternalProgramError as exc:
        # On a full disk Tesseract only says "Error during processing."; that is not the page's
        # fault, and must not cost it its text layer as a crash would.
        if not isinstance(exc, ProgramTimeout) and out_of_space(out_base.parent):
            raise OutputError(f"{out_base.parent}: cannot write: No space left on device (tesseract: {exc})") from None
        raise
    return files


def read_lines(
    image: Path, out_base: Path, *, language: str, dpi: int, timeout: float, user_words: Path | None = None
) -> Path:
    """Read an image of stacked text lines (a uniform block) into word boxes (TSV)."""
    argv = [PROGRAM, str(image), str(out_base), "-l", language, "--dpi", str(dpi), "--psm", "6"]
    if user_words is not None:
        argv += ["--user-words", str(user_words)]
    argv += ["tsv"]
    tsv = out_base.parent / f"{out_base.name}.tsv"
    run(argv, timeout=timeout, env=ENV, what=f"second reading of {image.name}")
    if not tsv.exists():
        raise ExternalProgramError(f"tesseract wrote no .tsv for {image.name}")
    return tsv


@dataclass(frozen=True)
class OsdResult:
    rotate: int  # degrees clockwise that make the page upright
    confidence: float


def detect_orientation(image: Path, *, dpi: int, timeout: float) -> OsdResult | None:
    """Tesseract's orientation detector; None when the page has too little text to judge."""
    argv = [PROGRAM, str(image), "-", "--psm", "0", "--dpi", str(dpi)]
    try:
        proc = run(argv, timeout=timeout, env=ENV, what=f"orientation of {image.name}")
    except ExternalProgramError as exc:
        if "Too few characters" in str(exc):
            return None
        raise
    out = proc.stdout.decode("utf-8", "replace")
    rotate = re.search(r"Rotate:\s*(\d+)", out)
    conf = re.search(r"Orientation confidence:\s*([\d.]+)", out)
    if not rotate or not conf:
        return None
    return OsdResult(int(rotate.group(1)), float(conf.group(1)))
