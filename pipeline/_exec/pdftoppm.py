"""pdftoppm (poppler), through pdf2image: rasterize one PDF page that is not a single image."""

from __future__ import annotations

import functools
import logging
import subprocess
from pathlib import Path

import pdf2image
from pdf2image.exceptions import PDFInfoNotInstalledError, PDFPageCountError, PDFSyntaxError
from PIL import Image

from pipeline._exec import run
from pipeline.errors import CorruptInput, MissingProgram, ProgramTimeout

log = logging.getLogger(__name__)
PROGRAM = "pdftoppm"


@functools.cache
def version() -> str:
    proc = run([PROGRAM, "-v"], timeout=30, what="version check")
    # pdftoppm prints its version on stderr.
    text = (proc.stderr or proc.stdout).decode("utf-8", "replace")
    return text.splitlines()[0].strip() if text else "unknown"


def rasterize(pdf: Path, *, page: int, dpi: int, timeout: float) -> Image.Image:
    """Render page `page` (0-based) at `dpi` as gray or colour, as poppler sees it."""
    version()
    log.debug("pdftoppm %s page %d at %d dpi", pdf, page + 1, dpi)
    try:
        images = pdf2image.convert_from_path(
            pdf, dpi=dpi, first_page=page + 1, last_page=page + 1, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise ProgramTimeout(f"{PROGRAM} timed out after {timeout:g} s on {pdf} page {page + 1}") from None
    except PDFInfoNotInstalledError:
        raise MissingProgram("poppler-utils is not installed (pdftoppm, pdfinfo)") from None
    except (PDFPageCountError, PDFSyntaxError) as exc:
        # poppler repeats itself over several lines; staff get each complaint once, on one line.
        said = "; ".join(dict.fromkeys(line.strip() for line in str(exc).splitlines() if line.strip()))
        raise CorruptInput(pdf, f"page {page + 1} cannot be rendered: {said}") from None
    if len(images) != 1:
        raise CorruptInput(pdf, f"page {page + 1} rendered to {len(images)} images")
    return images[0]
