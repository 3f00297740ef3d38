"""jbig2dec: the decoder pikepdf runs for the JBIG2 images many scanners write into their PDFs."""

from __future__ import annotations

import functools

from pipeline._exec import run
from pipeline.errors import MissingProgram

PROGRAM = "jbig2dec"
DEBIAN_PACKAGE = "jbig2dec"


def missing() -> MissingProgram:
    """The one message for an absent decoder, wherever it is found missing."""
    return MissingProgram(f"{PROGRAM} is not installed (needed for JBIG2 pages in PDFs): apt-get install {DEBIAN_PACKAGE}")


@functools.cache
def version() -> str:
    try:
        proc = run([PROGRAM, "--version"], timeout=30, what="version check")
    except MissingProgram:
        raise missing() from None
    text = (proc.stdout or proc.stderr).decode("utf-8", "replace")
    return text.splitlines()[0].strip() if text else "unknown"
