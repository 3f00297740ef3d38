"""One PDF page: the scan as stored (its image, or a PDF input's own content), drawn upright and level,
under its invisible text layer."""

from __future__ import annotations

import contextlib
import functools
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import img2pdf
import numpy as np
import pikepdf
import pikepdf.pdfa

from pipeline import pdfsource
from pipeline.sources import ScanPage, open_pdf

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
    text_skew_deg: float = 0.0,
) -> None:
    """Write a one-page PDF: img2pdf embeds the image bytes as they are; pikepdf places them.

    `text_skew_deg`: the skew left in the image OCR read; its layer is turned by it about the centre.
    """
    layout = img2pdf.get_fixed_dpi_layout_fun((dpi, dpi))
    image_pdf = pikepdf.open(io.BytesIO(img2pdf.convert(stored.data, layout_fun=layout)))
    page = image_pdf.pages[0]
    (name, _image), = page.get_images(recursive=False).items()
    _draw_under_text(image_pdf, name, size_px=size_px, dpi=dpi, quarter_turns=quarter_turns, skew_deg=skew_deg,
                     unit=b"", text_pdf=text_pdf, text_skew_deg=text_skew_deg, out=out)  # fmt: skip


def _draw_under_text(
    pdf: pikepdf.Pdf,
    name: str,
    *,
    size_px: tuple[int, int],
    dpi: float,
    quarter_turns: int,
    skew_deg: float,
    unit: bytes,
    text_pdf: Path | None,
    text_skew_deg: float,
    out: Path,
    save: Callable[[pikepdf.Pdf, Path], None] | None = None,
) -> None:
    """Make `pdf`'s one page the corrected frame, draw XObject `name` on it turned and levelled,
    and the text layer over it. `unit`: a `cm` that first brings the XObject to the unit square."""
    page = pdf.pages[0]
    width_pt, height_pt = size_px[0] * 72.0 / dpi, size_px[1] * 72.0 / dpi
    page_w, page_h = frame_size_pt(*size_px, dpi, quarter_turns)
    page.mediabox = pikepdf.Array([0, 0, round(page_w, 4), round(page_h, 4)])
    for box in ("/CropBox", "/TrimBox", "/BleedBox", "/ArtBox"):
        if box in page.obj:
            del page.obj[box]
    matrix = placement_matrix(width_pt, height_pt, quarter_turns=quarter_turns, skew_deg=skew_deg)
    content = f"q {' '.join(f'{v:.6f}' for v in matrix)} cm ".encode() + unit + f"{name} Do Q".encode()
    with contextlib.ExitStack() as stack:
        if text_pdf is not None:
            # Any engine's layer, made to the contract in pipeline/ocr.py: its page is the
            # corrected frame, so it is drawn as it is, with no matrix.
            # qpdf copies stream data lazily: the text PDF stays open until the save.
            text = stack.enter_context(pikepdf.open(text_pdf))
            layer = pdf.copy_foreign(text.pages[0].as_form_xobject())
            page.Resources.XObject[pikepdf.Name.OcrText] = layer
            turn = _turn_about_centre(page_w, page_h, text_skew_deg)
            content += f" q {' '.join(f'{v:.6f}' for v in turn)} cm /OcrText Do Q".encode()
        page.Contents = pdf.make_stream(content)
        if save is None:
            pdf.save(out)
        else:
            save(pdf, out)


# The image encoding recorded for a page that draws a PDF input's own content.
PDF_ORIGINAL = "pdf-original"


class OriginalNotKept(Exception):
    """The page's own content cannot go into the record as it is; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class KeptOriginal:
    """A PDF input's page content, kept as a form XObject under our text layer."""

    encodings: tuple[str, ...]
    stored_bytes: int
    conversions: tuple[str, ...]  # what PDF/A made us change, least first
    invisible_text_removed: bool


def keep_original_page(
    source: Path,
    *,
    frame: int,
    flavour: str,
    drop_invisible_text: bool,
    size_px: tuple[int, int],
    dpi: float,
    quarter_turns: int,
    skew_deg: float,
    text_pdf: Path | None,
    text_skew_deg: float,
    out: Path,
    jpeg_quality: int,
) -> KeptOriginal:
    """Write a one-page PDF drawing page `frame` of `source` as its scanner wrote it: its images
    keep their encodings (CCITT, JBIG2, JPEG, JPX, mixed-raster layers and masks), nothing is
    rendered. `size_px` at `dpi` is the page as OCR read it, which the original is fitted to.

    Raises OriginalNotKept when PDF/A `flavour` forbids something the page holds that cannot be
    changed without re-encoding pixels; the caller then stores the rendering instead.
    """
    with open_pdf(source) as pdf:
        original = pdf.pages[frame]
        form = original.as_form_xobject(handle_transformations=True)
        resources = pikepdf.Dictionary(form.get("/Resources", pikepdf.Dictionary()))
        removed = False
        if drop_invisible_text:
            content, visible = pdfsource.without_invisible_text(pikepdf.parse_content_stream(form))
            removed = True
            form.write(content)
            if not visible and "/Font" in resources:
                del resources["/Font"]
        form.Resources = resources
        record = pikepdf.new()
        record.add_blank_page(page_size=(72, 72))
        kept = record.copy_foreign(form)
        conversions = _make_pdfa_safe(kept, jpeg_quality=jpeg_quality)
        record.pages[0].Resources = pikepdf.Dictionary(XObject=pikepdf.Dictionary(Scan=kept))
        x0, y0, x1, y1 = _shown_box(kept)
        unit = f"{1 / (x1 - x0):.9f} 0 0 {1 / (y1 - y0):.9f} {-x0 / (x1 - x0):.9f} {-y0 / (y1 - y0):.9f} cm ".encode()

        _draw_under_text(record, "/Scan", size_px=size_px, dpi=dpi, quarter_turns=quarter_turns, skew_deg=skew_deg,
                         unit=unit, text_pdf=text_pdf, text_skew_deg=text_skew_deg, out=out,
                         save=functools.partial(_save_as_pdfa, flavour=flavour))  # fmt: skip
        images = list(pdfsource.images_in(kept.get("/Resources")))
        return KeptOriginal(
            encodings=tuple(sorted({f for image in images for f in pdfsource.filters_of(image)})),
            stored_bytes=sum(len(image.read_raw_bytes()) for image in images),
            conversions=tuple(conversions),
            invisible_text_removed=removed,
        )


def _save_as_pdfa(pdf: pikepdf.Pdf, path: Path, *, flavour: str) -> None:
    # The page is checked on its own: what PDF/A forbids costs that page its original, not the record.
    try:
        pikepdf.pdfa.save(pdf, path, flavour, compress_streams=True)
    except pikepdf.pdfa.PdfaError as exc:
        findings = "; ".join(dict.fromkeys(f.message for f in exc.report.findings[:3]))
        raise OriginalNotKept(f"PDF/A-{flavour} forbids its content: {findings}") from None


def _shown_box(form: pikepdf.Object) -> tuple[float, float, float, float]:
    """The form's bounding box as drawn, after its own matrix (a page's /Rotate becomes that matrix)."""
    bbox = [float(v) for v in form.BBox]
    matrix = pikepdf.Matrix(*(float(v) for v in form.get("/Matrix", [1, 0, 0, 1, 0, 0])))
    corners = [matrix.transform((x, y)) for x in (bbox[0], bbox[2]) for y in (bbox[1], bbox[3])]
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    return min(xs), min(ys), max(xs), max(ys)


def _make_pdfa_safe(form: pikepdf.Object, *, jpeg_quality: int) -> list[str]:
    """Change what PDF/A (as pikepdf's validator reads it) refuses, the least that will do, and say
    what was changed. Only a JPEG 2000 layer is re-encoded; every other change leaves pixels as they are."""
    conversions: dict[str, None] = {}
    for image in pdfsource.images_in(form.get("/Resources")):
        if image.get("/Interpolate") is not None:
            # A viewer's smoothing hint, which PDF/A wants false.
            del image["/Interpolate"]
            conversions["image Interpolate hint removed"] = None
        if "/OC" in image:
            # Mixed-raster layers tagged as optional content: every layer is shown, as the scanner meant.
            del image["/OC"]
            conversions["optional-content tags removed from image layers (all shown)"] = None
        parms = image.get("/DecodeParms")
        if isinstance(parms, pikepdf.Dictionary) and parms.is_indirect:
            # The same parameters written in place; the validator reads them only so.
            image.DecodeParms = pikepdf.Dictionary({key: value for key, value in parms.items()})
        filters = pdfsource.filters_of(image)
        if "LZWDecode" in filters and set(filters) <= {"LZWDecode", "FlateDecode"}:
            image.write(image.read_bytes())
            conversions["LZW image recompressed with Flate (lossless)"] = None
        colour = image.get("/ColorSpace")
        if (
            int(image.get("/BitsPerComponent", 8)) == 1
            and isinstance(colour, pikepdf.Array)
            and colour[0] == pikepdf.Name.CalGray
        ):
            # Black stays black and white stays white: a 1-bit image's calibration changes nothing.
            image.ColorSpace = pikepdf.Name.DeviceGray
            conversions["CalGray of a 1-bit image written as DeviceGray (same pixels)"] = None
        if filters == ["JPXDecode"]:
            _jpx_to_jpeg(image, jpeg_quality=jpeg_quality)
            conversions[f"JPEG 2000 image layer re-encoded as JPEG q{jpeg_quality} (not accepted by the PDF/A check)"] = None
    return list(conversions)


def _jpx_to_jpeg(image: pikepdf.Stream, *, jpeg_quality: int) -> None:
    pixels = pikepdf.PdfImage(image).as_pil_image()
    if pixels.mode not in ("L", "RGB"):
        pixels = pixels.convert("RGB")
    buf = io.BytesIO()
    pixels.save(buf, format="JPEG", quality=jpeg_quality, optimize=True)
    image.write(buf.getvalue(), filter=pikepdf.Name.DCTDecode)
    image.ColorSpace = pikepdf.Name.DeviceGray if pixels.mode == "L" else pikepdf.Name.DeviceRGB
    image.BitsPerComponent = 8
    for key in ("/SMaskInData", "/Decode", "/DecodeParms"):
        if key in image:
            del image[key]


def _turn_about_centre(width_pt: float, height_pt: float, degrees: float) -> tuple[float, ...]:
    """The `cm` turning the page counterclockwise (as seen) by `degrees` about its centre."""
    phi = math.radians(degrees)
    cos, sin = math.cos(phi), math.sin(phi)
    cx, cy = width_pt / 2, height_pt / 2
    return (cos, sin, -sin, cos, cx - cos * cx + sin * cy, cy - sin * cx - cos * cy)
