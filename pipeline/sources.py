"""Scan inputs: recognise a file or folder, list its pages, and decode one page at a time."""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import pikepdf
from PIL import Image, UnidentifiedImageError

from pipeline import paper, pdfsource
from pipeline._exec import jbig2dec, pdftoppm
from pipeline.errors import (
    ActiveContent,
    CorruptInput,
    EmptyInput,
    EncryptedInput,
    InputError,
    InputTooLarge,
    MissingInput,
    UnsupportedInput,
)
from pipeline.pdfsource import PdfPageSurvey
from pipeline.settings import LimitSettings

PAGE_IMAGE_SUFFIXES = {".tif", ".tiff", ".jpg", ".jpeg", ".png"}
# Rasterizing a PDF page that has no image of its own: a resolution OCR reads well.
DEFAULT_RASTER_DPI = 300
# Below this, OCR reads a page worse than a finer rendering of the same coarse image.
MIN_RASTER_DPI = 150


class FileKind(StrEnum):
    PDF = "pdf"
    TIFF = "tiff"
    JPEG = "jpeg"
    PNG = "png"


class InputKind(StrEnum):
    FILE = "file"
    FOLDER = "folder"


@dataclass(frozen=True)
class PageRef:
    """Where one page of an input lives: enough for a worker process to decode it alone."""

    path: Path
    kind: FileKind
    frame: int  # page within that file: TIFF frame or PDF page
    index: int  # page within the whole input, 0-based


@dataclass(frozen=True)
class ScanInput:
    path: Path
    kind: InputKind
    files: tuple[Path, ...]
    pages: tuple[PageRef, ...]


@dataclass
class ScanPage:
    """A decoded page: mode '1', 'L' or 'RGB', with its resolution."""

    ref: PageRef
    image: Image.Image
    dpi: float
    dpi_inferred: bool
    # The original JPEG stream when the page can be stored without re-encoding.
    jpeg: bytes | None = None
    # What a PDF input's page draws; its own content may be kept for the record (pipeline/pdfpage.py).
    pdf_survey: PdfPageSurvey | None = None

    @property
    def bitonal(self) -> bool:
        return self.image.mode == "1"


_MAGIC = (
    (b"%PDF-", FileKind.PDF),
    (b"II*\x00", FileKind.TIFF),
    (b"MM\x00*", FileKind.TIFF),
    (b"\xff\xd8\xff", FileKind.JPEG),
    (b"\x89PNG\r\n\x1a\n", FileKind.PNG),
)


def sniff(path: Path) -> FileKind:
    """Recognise a file by its first bytes, never by its name."""
    with open(path, "rb") as fh:
        head = fh.read(1024)
    if not head:
        raise EmptyInput(path, "file is empty (0 bytes)")
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    # Some scanners put junk before the PDF header; PDF readers accept up to 1 KiB of it.
    if b"%PDF-" in head:
        return FileKind.PDF
    if head.startswith((b"II+\x00", b"MM\x00+")):
        raise UnsupportedInput(path, "BigTIFF is not supported; export as ordinary TIFF")
    raise UnsupportedInput(path, "not a scan: expected PDF, TIFF, JPEG or PNG content")


def _natural_key(path: Path) -> list[object]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


@dataclass(frozen=True)
class FolderContents:
    """A folder given to `digitize process`: its page images are one input; each PDF and
    multi-page TIFF in it is an input of its own; anything else is skipped, and said so."""

    page_images: tuple[Path, ...]
    own_inputs: tuple[Path, ...]
    skipped: tuple[Path, ...]


def folder_contents(folder: Path, limits: LimitSettings) -> FolderContents:
    page_images, own_inputs, skipped = [], [], []
    for path in sorted((p for p in folder.iterdir() if p.is_file()), key=_natural_key):
        suffix = path.suffix.lower()
        if suffix == ".pdf":
            own_inputs.append(path)
        elif suffix in (".tif", ".tiff") and _multi_page_tiff(path, limits):
            own_inputs.append(path)
        elif suffix in PAGE_IMAGE_SUFFIXES and not path.name.startswith("."):
            page_images.append(path)
        else:
            skipped.append(path)
    return FolderContents(tuple(page_images), tuple(own_inputs), tuple(skipped))


def _multi_page_tiff(path: Path, limits: LimitSettings) -> bool:
    """Whether a TIFF holds more than one page; one that cannot be read stays a page image, to be rejected with its folder."""
    try:
        if sniff(path) is not FileKind.TIFF:
            return False
        with _open_image(path, limits) as img:
            img.seek(1)
            return True
    except (InputError, EOFError, OSError, ValueError, SyntaxError):
        return False


@dataclass(frozen=True)
class ExpandedInputs:
    inputs: tuple[Path, ...]
    skipped: tuple[Path, ...]  # files in a folder input that are not scans


def expand_inputs(paths: Sequence[Path], limits: LimitSettings) -> ExpandedInputs:
    """The inputs as `digitize process` takes them: a folder's PDFs and multi-page TIFFs become
    inputs of their own, after the folder; its page images stay the folder's one input."""
    inputs, skipped = [], []
    for path in map(Path, paths):
        if not path.is_dir():
            inputs.append(path)
            continue
        contents = folder_contents(path, limits)
        if contents.page_images or not contents.own_inputs:
            inputs.append(path)  # a folder of nothing is rejected as empty, by name
        inputs.extend(contents.own_inputs)
        skipped.extend(contents.skipped)
    return ExpandedInputs(tuple(inputs), tuple(skipped))


def open_input(path: Path, limits: LimitSettings) -> ScanInput:
    """Check an input and list its pages, without decoding any pixels.

    A folder's pages are its page images; its PDFs and multi-page TIFFs are inputs of their own
    (see expand_inputs).
    """
    path = Path(path)
    if path.is_dir():
        files = folder_contents(path, limits).page_images
        if not files:
            raise EmptyInput(path, "folder holds no page images (.tif, .jpg, .png)")
        pages: list[PageRef] = []
        for file in files:
            kind = _check_file(file, limits)
            if kind is FileKind.PDF:
                raise UnsupportedInput(file, "a PDF inside a page folder; process it on its own")
            pages.extend(_list_pages(file, kind, first_index=len(pages), limits=limits))
            _check_page_count(path, len(pages), limits)
        return ScanInput(path, InputKind.FOLDER, tuple(files), tuple(pages))
    if not path.exists():
        raise MissingInput(path, "no such file or folder")
    kind = _check_file(path, limits)
    pages = _list_pages(path, kind, first_index=0, limits=limits)
    _check_page_count(path, len(pages), limits)
    return ScanInput(path, InputKind.FILE, (path,), tuple(pages))


def _check_file(path: Path, limits: LimitSettings) -> FileKind:
    size = path.stat().st_size
    if size > limits.max_input_bytes:
        raise InputTooLarge(
            path, f"{size} bytes is over the limit of {limits.max_input_bytes} bytes (limits.max_input_bytes)"
        )
    return sniff(path)


def _check_page_count(path: Path, count: int, limits: LimitSettings) -> None:
    if count > limits.max_pages:
        raise _too_many_pages(path, count, limits)
    if count == 0:
        raise EmptyInput(path, "no pages")


def _too_many_pages(path: Path, count: int | None, limits: LimitSettings) -> InputTooLarge:
    """`count` None: counting stopped at the limit."""
    over = f"{count} pages is over" if count is not None else "over"
    return InputTooLarge(path, f"{over} the limit of {limits.max_pages} pages (limits.max_pages)")


def _list_pages(path: Path, kind: FileKind, *, first_index: int, limits: LimitSettings) -> list[PageRef]:
    if kind is FileKind.PDF:
        with open_pdf(path) as pdf:
            count = len(pdf.pages)
            # Counted first: a PDF over the page limit is refused before anything in it is read.
            _check_page_count(path, count, limits)
            _refuse_active_content(path, pdf)
    elif kind is FileKind.TIFF:
        with _open_image(path, limits) as img:
            count = _frame_count(path, img, limits)
    else:
        with _open_image(path, limits) as img:
            count = 1
    return [PageRef(path, kind, frame, first_index + frame) for frame in range(count)]


def _frame_count(path: Path, img: Image.Image, limits: LimitSettings) -> int:
    # Walking the IFD chain is cheap, but a crafted file can loop or claim millions of frames.
    count = 0
    try:
        while True:
            count += 1
            if count > limits.max_pages:
                raise _too_many_pages(path, None, limits)
            img.seek(count)
    except EOFError:
        return count
    except (OSError, ValueError, SyntaxError) as exc:
        raise CorruptInput(path, f"TIFF page {count + 1} is unreadable: {exc}") from None


def open_pdf(path: Path) -> pikepdf.Pdf:
    """Open a PDF input for reading. An owner lock (encryption with an empty user password) only
    restricts what a reader may do and opens without a password; a user password is refused."""
    try:
        return pikepdf.open(path, password="")
    except pikepdf.PasswordError:
        raise EncryptedInput(
            path, "PDF is password-protected: it needs a user password to open; ask for an unlocked copy"
        ) from None
    except pikepdf.PdfError as exc:
        raise CorruptInput(path, f"damaged PDF: {exc}") from None


# What a PDF can carry besides pages, found by the keys that name it, and how staff are told.
_SCRIPTS = "contains JavaScript"
_ATTACHMENTS = "contains embedded files"
_LAUNCH = "contains a Launch action (starts a program)"


def _refuse_active_content(path: Path, pdf: pikepdf.Pdf) -> None:
    """Refuse a PDF that could act when opened or that carries other files.

    A scanner's PDF has neither, and an archive copy must not: scripts and launch actions
    run in the reader of whoever opens the record in fifty years, and an embedded file is
    content nobody OCRed or reviewed. Every object is looked at, referenced or not, so
    nothing hides in the document's open action, its name trees, an annotation or a form field.
    """
    for obj in pdf.objects:
        found = _active(obj)
        if found:
            raise ActiveContent(path, f"PDF {found}; a scan must not carry active content or attachments")


def _active(obj: pikepdf.Object) -> str | None:
    if isinstance(obj, pikepdf.Array):
        children = list(obj)
    elif isinstance(obj, pikepdf.Dictionary | pikepdf.Stream):
        keys = set(obj.keys())
        action = obj.get("/S")
        if action == pikepdf.Name.JavaScript or keys & {"/JS", "/JavaScript"}:
            return _SCRIPTS
        if (
            keys & {"/EF", "/EmbeddedFiles"}
            or obj.get("/Type") == pikepdf.Name.EmbeddedFile
            or obj.get("/Subtype") == pikepdf.Name.FileAttachment
        ):
            return _ATTACHMENTS
        if action == pikepdf.Name.Launch:
            return _LAUNCH
        children = list(obj.values())
    else:
        return None
    # Indirect objects are visited on their own by the caller; only direct ones nest here.
    for child in children:
        if isinstance(child, pikepdf.Dictionary | pikepdf.Array) and not child.is_indirect:
            found = _active(child)
            if found:
                return found
    return None


def _open_image(path: Path, limits: LimitSettings) -> Image.Image:
    _follow_pixel_limit(limits)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputTooLarge(
            path, f"image has more than {limits.max_page_pixels} pixels (limits.max_page_pixels, decompression bomb guard)"
        ) from None
    except UnidentifiedImageError:
        raise CorruptInput(path, "damaged or truncated image file: its pixels cannot be read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise CorruptInput(path, f"unreadable image: {exc}") from None
    _check_pixels(path, img.size, limits)
    return img


def _follow_pixel_limit(limits: LimitSettings) -> None:
    """Pillow's own bomb guard is process-wide, and pdftoppm's output is decoded through
    it: in a worker that has only rasterized PDF pages it would still hold Pillow's default."""
    Image.MAX_IMAGE_PIXELS = limits.max_page_pixels


def _check_pixels(path: Path, size: tuple[int, int], limits: LimitSettings) -> None:
    width, height = size
    if width * height > limits.max_page_pixels:
        raise InputTooLarge(
            path,
            f"page of {width}x{height} pixels is over the limit of {limits.max_page_pixels} "
            "(limits.max_page_pixels, decompression bomb guard)",
        )
    if width < 16 or height < 16:
        raise UnsupportedInput(path, f"page of {width}x{height} pixels is too small to be a scan")


def load_page(ref: PageRef, limits: LimitSettings) -> ScanPage:
    """Decode one page. Raises an InputError naming the file and page when it cannot."""
    try:
        if ref.kind is FileKind.PDF:
            return _load_pdf_page(ref, limits)
        return _load_image_page(ref, limits)
    except InputError:
        raise
    except pikepdf.DependencyError:
        # pikepdf decodes JBIG2 with jbig2dec: its absence is the machine's fault, not the scan's.
        raise jbig2dec.missing() from None
    except (OSError, SyntaxError, ValueError, EOFError, pikepdf.PdfError) as exc:
        raise CorruptInput(ref.path, f"page {ref.frame + 1} cannot be decoded: {exc}") from None


def _load_image_page(ref: PageRef, limits: LimitSettings) -> ScanPage:
    with _open_image(ref.path, limits) as img:
        if ref.frame:
            img.seek(ref.frame)
            _check_pixels(ref.path, img.size, limits)
        dpi = img.info.get("dpi")
        jpeg = None
        if ref.kind is FileKind.JPEG and img.mode in ("L", "RGB"):
            jpeg = ref.path.read_bytes()
        img.load()
        return _finish(ref, img, dpi, jpeg)


def _load_pdf_page(ref: PageRef, limits: LimitSettings) -> ScanPage:
    with open_pdf(ref.path) as pdf:
        page = pdf.pages[ref.frame]
        survey = pdfsource.survey(page)
        width_in = float(page.mediabox[2] - page.mediabox[0]) / 72
        height_in = float(page.mediabox[3] - page.mediabox[1]) / 72
        # A scanner's invisible OCR layer does not stop its one image being the page.
        sole = _sole_image(page, ignore_text=not survey.visible_text) if _untransformed(page) else None
        if sole is not None and _fills(page, pikepdf.PdfImage(sole)):
            pdf_image = pikepdf.PdfImage(sole)
            _check_pixels(ref.path, (pdf_image.width, pdf_image.height), limits)
            dpi = max(pdf_image.width, pdf_image.height) / max(width_in, height_in)
            jpeg = None
            if (
                pdf_image.filters == ["/DCTDecode"]
                and pdf_image.colorspace in ("/DeviceGray", "/DeviceRGB")
                and pdf_image.bits_per_component == 8
            ):
                jpeg = sole.read_raw_bytes()
            try:
                return _finish(ref, pdf_image.as_pil_image(), (dpi, dpi), jpeg, survey)
            except pikepdf.UnsupportedImageTypeError:
                pass  # an encoding pikepdf cannot hand over as pixels (CCITT byte-aligned rows): poppler renders it
        box = page.cropbox
        width_in = abs(float(box[2] - box[0])) / 72
        height_in = abs(float(box[3] - box[1])) / 72
    # OCR reads the page at its finest image layer's resolution (a mixed-raster text mask, not its
    # coarse background), to the nearest whole dpi, never coarser; a page of vectors only at a
    # resolution OCR reads well.
    dpi = max(MIN_RASTER_DPI, round(survey.finest_dpi)) if survey.finest_dpi else DEFAULT_RASTER_DPI
    _check_pixels(ref.path, (round(width_in * dpi), round(height_in * dpi)), limits)
    _follow_pixel_limit(limits)
    img = pdftoppm.rasterize(ref.path, page=ref.frame, dpi=dpi, timeout=limits.rasterize_timeout_s)
    return _finish(ref, img, (dpi, dpi), None, survey)


def _fills(page: pikepdf.Page, image: pikepdf.PdfImage) -> bool:
    """Whether the image's pixels have the page's proportions, so its resolution is the page's."""
    width, height = float(page.mediabox[2] - page.mediabox[0]), float(page.mediabox[3] - page.mediabox[1])
    return abs(image.width / image.height - width / height) <= 0.01 * width / height


def _untransformed(page: pikepdf.Page) -> bool:
    """Whether the page shows its media box as it is: no turn, no crop, no unit scale."""
    return (
        int(page.obj.get("/Rotate", 0)) % 360 == 0
        and "/UserUnit" not in page.obj
        and [float(v) for v in page.cropbox] == [float(v) for v in page.mediabox]
    )


# Text, inline images, shadings and painted paths: anything that would be lost by
# keeping only the page's image.
_MARKS_BESIDES_THE_IMAGE = {"BT", "BI", "sh", "S", "s", "f", "F", "f*", "B", "B*", "b", "b*"}


def _sole_image(page: pikepdf.Page, *, ignore_text: bool) -> pikepdf.Object | None:
    """The page's image when the page is nothing but one drawn image, as scanners write them;
    `ignore_text`: besides text that paints nothing, a scanner's OCR layer."""
    images = page.get_images(recursive=False)
    if len(images) != 1:
        return None
    drawn = 0
    for operands, operator in pikepdf.parse_content_stream(page):
        op = str(operator)
        if op in _MARKS_BESIDES_THE_IMAGE and not (ignore_text and op == "BT"):
            return None
        if op == "Do":
            drawn += 1
        # Its pixels are the page only when drawn upright: a flipped or turned image is rendered instead.
        if op == "cm" and not (float(operands[0]) > 0 and float(operands[3]) > 0 and operands[1] == 0 and operands[2] == 0):
            return None
    if drawn != 1:
        return None
    return next(iter(images.values()))


def _finish(
    ref: PageRef,
    img: Image.Image,
    dpi: tuple[float, float] | None,
    jpeg: bytes | None,
    pdf_survey: PdfPageSurvey | None = None,
) -> ScanPage:
    img, lossless_change = _normalize_mode(img)
    if lossless_change:
        jpeg = None
    if img.mode == "L" and jpeg is None and _only_black_and_white(img):
        img = img.convert("1")
    xdpi, ydpi = (float(dpi[0]), float(dpi[1])) if dpi else (0.0, 0.0)
    # A PDF page's size is its page box, so its resolution is measured, however coarse, not guessed.
    measured = ref.kind is FileKind.PDF and xdpi > 0 and ydpi > 0
    if measured or (paper.plausible_dpi(xdpi) and paper.plausible_dpi(ydpi)):
        if abs(xdpi - ydpi) > 0.01 * max(xdpi, ydpi):
            # Non-square pixels: resample once so every later step can assume square ones.
            scale_y = xdpi / ydpi
            img = img.resize((img.width, round(img.height * scale_y)), Image.Resampling.LANCZOS)
            jpeg = None
        return ScanPage(ref, img, xdpi, dpi_inferred=False, jpeg=jpeg, pdf_survey=pdf_survey)
    return ScanPage(
        ref, img, paper.infer_dpi(img.width, img.height), dpi_inferred=True, jpeg=jpeg, pdf_survey=pdf_survey
    )


def _only_black_and_white(img: Image.Image) -> bool:
    histogram = img.histogram()
    return sum(histogram[1:255]) == 0


def _normalize_mode(img: Image.Image) -> tuple[Image.Image, bool]:
    """Bring any pixel format to '1', 'L' or 'RGB'. Returns the image and whether it changed."""
    mode = img.mode
    if mode in ("1", "L", "RGB"):
        return img, False
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        return Image.fromarray(np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8), "L"), True
    if mode in ("LA", "RGBA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        page = Image.new("RGB", rgba.size, (255, 255, 255))
        page.paste(rgba, mask=rgba.getchannel("A"))
        return page, True
    if mode == "P":
        palette_gray = img.convert("RGB")
        return palette_gray, True
    return img.convert("RGB"), True
