"""One PDF page: the scan as stored, drawn upright and level, under its invisible text layer."""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import img2pdf
import numpy as np
import pikepdf

from pipeline.sources import ScanPage

# An RGB scan whose channels differ by less than this is a gray document on a colour scanner.
GRAY_TOLERANCE = 6


@dataclass(frozen=True)
class StoredImage:
    data: bytes
    encoding: str  # how the pixels are kept: jpeg-original, ccitt-g4, png, jpeg-qNN


def encode_for_storage(page: ScanPage, *, profile: str, jpeg_quality: int, lossless: bool = False) -> StoredImage:
    """Choose the archive encoding: never re-encode JPEG, always keep bitonal lossless, and keep
    every pixel when `lossless` (a technical drawing), whatever the profile."""
    if page.jpeg is not None:
        return StoredImage(page.jpeg, "jpeg-original")
    if page.image.mode == "1":
        buf = io.BytesIO()
        page.image.save(buf, format="TIFF", compression="group4")
        return StoredImage(buf.getvalue(), "ccitt-g4")
    pixels = np.asarray(page.image)
    if lossless:
        return _lossless(pixels)
    if profile == "archival":
        buf = io.BytesIO()
        page.image.save(buf, format="PNG", compress_level=6)
        return StoredImage(buf.getvalue(), "png")
    if pixels.ndim == 3 and _is_gray(pixels):
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    elif pixels.ndim == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    # Optimized Huffman tables: ~8% smaller for ~15 ms a page, and no loss.
    ok, data = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality, cv2.IMWRITE_JPEG_OPTIMIZE, 1])
    if not ok:
        raise OSError("JPEG encoder failed")
    return StoredImage(data.tobytes(), f"jpeg-q{jpeg_quality}")


def _lossless(pixels: np.ndarray) -> StoredImage:
    """PNG (Flate in the PDF), in gray when the colour scan is exactly gray."""
    if pixels.ndim == 3 and not (np.any(pixels[..., 0] != pixels[..., 1]) or np.any(pixels[..., 1] != pixels[..., 2])):
        pixels = np.ascontiguousarray(pixels[..., 0])
    elif pixels.ndim == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise OSError("PNG encoder failed")
    return StoredImage(data.tobytes(), "png")


def _is_gray(rgb: np.ndarray) -> bool:
    sample = rgb[::8, ::8].astype(np.int16)
    spread = sample.max(axis=2) - sample.min(axis=2)
    return float(np.percentile(spread, 99.5)) <= GRAY_TOLERANCE


def frame_size_pt(width_px: int, height_px: int, dpi: float, quarter_turns: int) -> tuple[float, float]:
    """The corrected page's size in points: quarter turns swap the sides, skew does not."""
    width, height = width_px * 72.0 / dpi, height_px * 72.0 / dpi
    return (height, width) if quarter_turns % 2 else (width, height)


def placement_matrix(
    width_pt: float, height_pt: float, *, quarter_turns: int, skew_deg: float
) -> tuple[float, ...]:
    """The `cm` that draws the unrotated scan turned and levelled, centred on the page.

    The page is the corrected frame, so the text layer, which Tesseract measured on the
    corrected image, lines up with the words without touching the stored image bytes.
    """
    page_w, page_h = (height_pt, width_pt) if quarter_turns % 2 else (width_pt, height_pt)
    # Counterclockwise as seen, which is the mathematical sense in PDF's y-up space.
    phi = math.radians(90.0 * quarter_turns + skew_deg)
    cos, sin = math.cos(phi), math.sin(phi)
    a, b = cos * width_pt, sin * width_pt
    c, d = -sin * height_pt, cos * height_pt
    e = page_w / 2 - (a + c) / 2
    f = page_h / 2 - (b + d) / 2
    return tuple(round(v, 6) for v in (a, b, c, d, e, f))


def build_page_pdf(
    stored: StoredImage,
    *,
    size_px: tuple[int, int],
    dpi: float,
    quarter_turns: int,
    skew_deg: float,
    text_pdf: Path | None,
    out: Path,
) -> None:
    """Write a one-page PDF: img2pdf embeds the image bytes as they are; pikepdf places them."""
    layout = img2pdf.get_fixed_dpi_layout_fun((dpi, dpi))
    image_pdf = pikepdf.open(io.BytesIO(img2pdf.convert(stored.data, layout_fun=layout)))
    page = image_pdf.pages[0]
    (name, _image), = page.get_images(recursive=False).items()
    width_pt, height_pt = size_px[0] * 72.0 / dpi, size_px[1] * 72.0 / dpi
    page_w, page_h = frame_size_pt(*size_px, dpi, quarter_turns)
    page.mediabox = pikepdf.Array([0, 0, round(page_w, 4), round(page_h, 4)])
    matrix = placement_matrix(width_pt, height_pt, quarter_turns=quarter_turns, skew_deg=skew_deg)
    content = f"q {' '.join(f'{v:.6f}' for v in matrix)} cm {name} Do Q".encode()
    with contextlib.ExitStack() as stack:
        if text_pdf is not None:
            # Any engine's layer, made to the contract in pipeline/ocr.py: its page is the
            # corrected frame, so it is drawn as it is, with no matrix.
            # qpdf copies stream data lazily: the text PDF stays open until the save.
            text = stack.enter_context(pikepdf.open(text_pdf))
            layer = image_pdf.copy_foreign(text.pages[0].as_form_xobject())
            page.Resources.XObject[pikepdf.Name.OcrText] = layer
            content += b" q /OcrText Do Q"
        page.Contents = image_pdf.make_stream(content)
        image_pdf.save(out)
