"""pdftoppm (poppler): rasterize one PDF page that is not a single image."""

from __future__ import annotations

import functools
import io
from pathlib import Path

from PIL import Image

from pipeline._exec import run
from pipeline.errors import CorruptInput, ExternalProgramError, ProgramTimeout

PROGRAM = "pdftoppm"


@functools.cache
def version() -> str:
    proc = run([PROGRAM, "-v"], timeout=30, what="version check")
    # pdftoppm prints its version on stderr.
    text = (proc.stderr or proc.stdout).decode("utf-8", "replace")
    return text.splitlines()[0].strip() if text else "unknown"


def rasterize(pdf: Path, *, page: int, dpi: int, timeout: float) -> Image.Image:
    """Render page `page` (0-based) at `dpi` in colour, as poppler sees it (a PPM on stdout)."""
    version()
    argv = [PROGRAM, "-r", str(dpi), "-f", str(page + 1), "-l", str(page + 1), "-singlefile", str(pdf)]
    try:
        proc = run(argv, timeout=timeout, what=f"{pdf} page {page + 1}")
    except ExternalProgramError as exc:
        if isinstance(exc, ProgramTimeout):
            raise
        # poppler repeats itself over several lines; staff get each complaint once, on one line.
        said = "; ".join(dict.fromkeys(line.strip() for line in exc.stderr.splitlines() if line.strip())) or str(exc)
        raise CorruptInput(pdf, f"page {page + 1} cannot be rendered: {said}") from None
    try:
        image = Image.open(io.BytesIO(proc.stdout))
        image.load()
    except (OSError, ValueError) as exc:
        raise CorruptInput(pdf, f"page {page + 1} rendered to no image ({exc})") from None
    return image
