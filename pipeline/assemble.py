"""Assemble page PDFs into one PDF/A record with its XMP metadata, validated as written, and sign it."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pikepdf
import pikepdf.pdfa

from pipeline import __version__, atomic
from pipeline.errors import OutputError
from pipeline.signing import RecordSigner, sign_record

PRODUCER = f"digitize {__version__}"
TEXT_LAYER_FONT = "/GlyphLessFont"


@dataclass(frozen=True)
class RecordMetadata:
    title: str
    created: datetime
    agency: str = ""
    language: str = "vi"
    source_sha256: str = ""
    dossier_code: str | None = None
    # Bookmarks: (title, 0-based page index), one per component document (pipeline/documents.py).
    outline: tuple[tuple[str, int], ...] = ()
    description: str = ""  # e.g. a drawing's title block


@dataclass(frozen=True)
class WrittenRecord:
    pdf: Path
    timings: dict[str, float]
    signature: dict | None  # with the unsigned revision's checksum: the fixity chain's middle link


def write_record(
    page_pdfs: list[Path], out: Path, *, flavour: str, metadata: RecordMetadata, signer: RecordSigner | None, work: Path
) -> WrittenRecord:
    """The record's PDF/A at `out`, signed when there is a signer; the unsigned copy stays in `work`."""
    started = time.perf_counter()
    unsigned = work / f"{out.stem}.unsigned.pdf" if signer else out
    assemble_pdfa(page_pdfs, unsigned, flavour=flavour, metadata=metadata)
    timings = {"assemble": time.perf_counter() - started}
    if signer is None:
        return WrittenRecord(out, timings, None)
    started = time.perf_counter()
    signature = {
        "unsigned_sha256": atomic.sha256_file(unsigned),
        "unsigned_bytes": unsigned.stat().st_size,
        **sign_record(unsigned, out, signer=signer, code=metadata.dossier_code or metadata.title),
    }
    timings["sign"] = time.perf_counter() - started
    return WrittenRecord(out, timings, signature)


def assemble_pdfa(page_pdfs: list[Path], out: Path, *, flavour: str, metadata: RecordMetadata) -> None:
    """Write `out` atomically; pikepdf validates the bytes it wrote before moving them in place."""
    with contextlib.ExitStack() as stack:
        pdf = stack.enter_context(pikepdf.new())
        for path in page_pdfs:
            # Page streams are copied lazily from their files, so pages stay on disk, not in RAM.
            source = stack.enter_context(pikepdf.open(path))
            pdf.pages.append(source.pages[0])
        _share_text_font(pdf)
        if metadata.outline:
            with pdf.open_outline() as outline:
                outline.root.extend(pikepdf.OutlineItem(title, page) for title, page in metadata.outline)
        with pdf.open_metadata(set_pikepdf_as_editor=False) as xmp:
            xmp["dc:title"] = metadata.title
            xmp["dc:language"] = [metadata.language]
            if metadata.agency:
                xmp["dc:creator"] = [metadata.agency]
                xmp["dc:publisher"] = [metadata.agency]
            if metadata.source_sha256:
                xmp["dc:source"] = f"sha256:{metadata.source_sha256}"
            if metadata.dossier_code:
                xmp["dc:identifier"] = metadata.dossier_code
            if metadata.description:
                xmp["dc:description"] = metadata.description
            xmp["xmp:CreateDate"] = metadata.created.isoformat()
            xmp["xmp:ModifyDate"] = metadata.created.isoformat()
            xmp["xmp:CreatorTool"] = PRODUCER
            xmp["pdf:Producer"] = PRODUCER
        try:
            pikepdf.pdfa.save(pdf, out, flavour, compress_streams=True)
        except pikepdf.pdfa.PdfaError as exc:
            findings = "; ".join(f.message for f in exc.report.findings[:3])
            raise OutputError(f"{out}: not valid PDF/A-{flavour}: {findings}") from None
        except OSError as exc:
            raise OutputError(f"{out}: cannot write: {exc.strerror or exc}") from None


def _share_text_font(pdf: pikepdf.Pdf) -> None:
    """Tesseract embeds its invisible font once per page; one copy serves them all.

    The text-layer contract (pipeline/ocr.py) keeps the name for Tesseract's font, so any engine's is the same.
    """
    shared: pikepdf.Object | None = None
    for page in pdf.pages:
        layer = page.Resources.get("/XObject", {}).get("/OcrText")
        if layer is None:
            continue
        fonts = layer.get("/Resources", {}).get("/Font", {})
        for key in list(fonts.keys()):
            font = fonts[key]
            if font.get("/BaseFont") != TEXT_LAYER_FONT:
                continue
            if shared is None:
                shared = font
            else:
                fonts[key] = shared
