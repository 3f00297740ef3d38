"""The external programs and models a run needs, checked before any work is taken on."""

from __future__ import annotations

from pipeline._exec import jbig2dec, pdftoppm, tesseract


def check_programs(languages: str) -> None:
    """Tesseract with every model in `languages` (and osd), pdftoppm and jbig2dec; MissingProgram or
    ConfigError naming what is wrong."""
    tesseract.require_languages(languages)
    pdftoppm.version()
    jbig2dec.version()
