"""A PDF input's page as its scanner wrote it: what it holds, and its own content kept for the record."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum

import pikepdf

# An image covering this share of the page is the scan (or, in mixed raster, one of its layers).
PAGE_SIZED_SHARE = 0.5
# Smaller images (a logo, a signature stamp) do not decide the page's resolution.
LAYER_SHARE = 0.25
# Text render modes that paint nothing: 3 invisible, 7 clip only. Scanners write their OCR in mode 3.
INVISIBLE_RENDER_MODES = {3, 7}
_SHOW_TEXT = {"Tj", "TJ", "'", '"'}
_PAINT_PATH = {"S", "s", "f", "F", "f*", "B", "B*", "b", "b*", "sh"}
# Form XObjects nest; a crafted file could nest them without end.
MAX_FORM_DEPTH = 8


class ExistingText(StrEnum):
    """What to do with the text a PDF input already holds (setting `ocr.existing_text`)."""

    REPLACE = "replace"  # drop a scanner's invisible OCR layer for ours; keep a born-digital page's own text
    KEEP = "keep"  # keep any text layer the page has, and OCR only pages with none
    FORCE = "force"  # OCR every page, born-digital ones too; pages that are not plain scans are drawn as images


class PdfPageKind(StrEnum):
    SCAN = "scan"  # page-sized images, text (if any) only invisible
    BORN_DIGITAL = "born-digital"  # visible text, no page-sized image
    OTHER = "other"  # anything else: a scan with visible text on it, vector art, ...


@dataclass(frozen=True)
class PdfPageSurvey:
    """What a PDF page draws, measured from its content stream without rendering it."""

    kind: PdfPageKind
    finest_dpi: float | None  # of its image layers and their masks, as placed on the page
    invisible_text: bool
    visible_text: bool
    encodings: tuple[str, ...]  # the filters of the images drawn, e.g. CCITTFaxDecode, JBIG2Decode

    @property
    def text_layer(self) -> bool:
        return self.invisible_text or self.visible_text


@dataclass
class _Walk:
    page_area: float
    finest_dpi: float | None = None
    page_sized_image: bool = False
    invisible_text: bool = False
    visible_text: bool = False
    encodings: set[str] = field(default_factory=set)

    def image(self, image: pikepdf.Object | pikepdf.PdfInlineImage, ctm: pikepdf.Matrix) -> None:
        width_pt, height_pt = math.hypot(ctm.a, ctm.b), math.hypot(ctm.c, ctm.d)
        area = abs(ctm.a * ctm.d - ctm.b * ctm.c)
        if width_pt <= 0 or height_pt <= 0:
            return
        if area >= PAGE_SIZED_SHARE * self.page_area:
            self.page_sized_image = True
        layers = [image]
        if isinstance(image, pikepdf.Stream):
            layers += [mask for mask in (image.get("/SMask"), image.get("/Mask")) if isinstance(mask, pikepdf.Stream)]
        for layer in layers:
            self.encodings.update(filters_of(layer))
            if area < LAYER_SHARE * self.page_area:
                continue
            width_px, height_px = _pixel_size(layer)
            if not width_px or not height_px:
                continue
            dpi = max(width_px * 72 / width_pt, height_px * 72 / height_pt)
            self.finest_dpi = max(self.finest_dpi or 0.0, dpi)


def survey(page: pikepdf.Page) -> PdfPageSurvey:
    box = page.cropbox
    page_area = abs(float(box[2]) - float(box[0])) * abs(float(box[3]) - float(box[1]))
    walk = _Walk(page_area=page_area)
    _walk_content(pikepdf.parse_content_stream(page), page.obj.get("/Resources"), pikepdf.Matrix(), walk, depth=0)
    if walk.page_sized_image and not walk.visible_text:
        kind = PdfPageKind.SCAN
    elif walk.visible_text and not walk.page_sized_image:
        kind = PdfPageKind.BORN_DIGITAL
    else:
        kind = PdfPageKind.OTHER
    return PdfPageSurvey(
        kind=kind,
        finest_dpi=round(walk.finest_dpi, 2) if walk.finest_dpi else None,
        invisible_text=walk.invisible_text,
        visible_text=walk.visible_text,
        encodings=tuple(sorted(walk.encodings)),
    )


def _walk_content(instructions, resources: pikepdf.Object | None, ctm: pikepdf.Matrix, walk: _Walk, *, depth: int) -> None:
    saved: list[tuple[pikepdf.Matrix, int]] = []
    render_mode = 0
    xobjects = resources.get("/XObject", {}) if isinstance(resources, pikepdf.Dictionary) else {}
    for operands, operator in instructions:
        op = str(operator)
        if op == "q":
            saved.append((ctm, render_mode))
        elif op == "Q" and saved:
            ctm, render_mode = saved.pop()
        elif op == "cm" and len(operands) == 6:
            ctm = pikepdf.Matrix(*(float(v) for v in operands)) @ ctm
        elif op == "Tr" and operands:
            render_mode = int(operands[0])
        elif op in _SHOW_TEXT:
            if render_mode in INVISIBLE_RENDER_MODES:
                walk.invisible_text = True
            else:
                walk.visible_text = True
        elif op == "INLINE IMAGE":
            walk.image(operands[0], ctm)
        elif op == "Do" and operands:
            xobject = xobjects.get(operands[0]) if hasattr(xobjects, "get") else None
            if not isinstance(xobject, pikepdf.Stream):
                continue
            subtype = xobject.get("/Subtype")
            if subtype == pikepdf.Name.Image:
                walk.image(xobject, ctm)
            elif subtype == pikepdf.Name.Form and depth < MAX_FORM_DEPTH:
                matrix = pikepdf.Matrix(*(float(v) for v in xobject.get("/Matrix", [1, 0, 0, 1, 0, 0])))
                _walk_content(
                    pikepdf.parse_content_stream(xobject), xobject.get("/Resources"), matrix @ ctm, walk, depth=depth + 1
                )


def filters_of(image: pikepdf.Object | pikepdf.PdfInlineImage) -> list[str]:
    if isinstance(image, pikepdf.PdfInlineImage):
        return [str(f).lstrip("/") for f in image.filters] or ["inline"]
    found = image.get("/Filter")
    if found is None:
        return ["uncompressed"]
    if isinstance(found, pikepdf.Array):
        return [str(f).lstrip("/") for f in found]
    return [str(found).lstrip("/")]


def _pixel_size(image: pikepdf.Object | pikepdf.PdfInlineImage) -> tuple[int, int]:
    if isinstance(image, pikepdf.PdfInlineImage):
        return image.width, image.height
    return int(image.get("/Width", 0)), int(image.get("/Height", 0))


def without_invisible_text(instructions) -> tuple[bytes, bool]:
    """The content stream with every text object that paints nothing left out, and whether
    any visible text remains. A scanner's OCR layer goes; the page's pixels and marks stay."""
    kept: list = []
    text_object: list = []
    in_text = visible_in_object = visible_anywhere = False
    render_mode, saved = 0, []
    for operands, operator in instructions:
        op = str(operator)
        if op == "q":
            saved.append(render_mode)
        elif op == "Q" and saved:
            render_mode = saved.pop()
        elif op == "Tr" and operands:
            render_mode = int(operands[0])
        if op == "BT":
            in_text, visible_in_object, text_object = True, False, []
        if in_text:
            text_object.append((operands, operator))
            if op in _SHOW_TEXT and render_mode not in INVISIBLE_RENDER_MODES:
                visible_in_object = True
            if op == "ET":
                in_text = False
                if visible_in_object:
                    kept.extend(text_object)
                    visible_anywhere = True
                else:
                    # Tr set inside the dropped object must still hold after it.
                    kept.append(([render_mode], pikepdf.Operator("Tr")))
            continue
        kept.append((operands, operator))
    return pikepdf.unparse_content_stream(kept), visible_anywhere


def images_in(resources: pikepdf.Object | None, *, depth: int = 0) -> Iterator[pikepdf.Stream]:
    """Every image stream a content's resources reach: images, their masks, images in nested forms."""
    if not isinstance(resources, pikepdf.Dictionary) or depth > MAX_FORM_DEPTH:
        return
    for xobject in resources.get("/XObject", {}).values():
        if not isinstance(xobject, pikepdf.Stream):
            continue
        if xobject.get("/Subtype") == pikepdf.Name.Image:
            yield xobject
            for mask in (xobject.get("/SMask"), xobject.get("/Mask")):
                if isinstance(mask, pikepdf.Stream):
                    yield mask
        elif xobject.get("/Subtype") == pikepdf.Name.Form:
            yield from images_in(xobject.get("/Resources"), depth=depth + 1)


@dataclass(frozen=True)
class PdfPagePlan:
    """What is done with one PDF page, from its survey and `ocr.existing_text`."""

    keep_original: bool  # draw its own content in the record, rather than a rendering
    drop_invisible_text: bool
    ocr: bool
    existing_text: str  # what becomes of the text it holds: none, replaced, kept, visible kept, ...


def plan(survey: PdfPageSurvey, existing_text: ExistingText) -> PdfPagePlan:
    if survey.kind is PdfPageKind.BORN_DIGITAL and existing_text is not ExistingText.FORCE:
        return PdfPagePlan(keep_original=True, drop_invisible_text=False, ocr=False, existing_text="kept")
    if survey.kind is PdfPageKind.SCAN:
        if not survey.invisible_text:
            return PdfPagePlan(keep_original=True, drop_invisible_text=False, ocr=True, existing_text="none")
        if existing_text is ExistingText.KEEP:
            return PdfPagePlan(keep_original=True, drop_invisible_text=False, ocr=False, existing_text="kept")
        return PdfPagePlan(keep_original=True, drop_invisible_text=True, ocr=True, existing_text="replaced")
    if existing_text is ExistingText.FORCE:
        return PdfPagePlan(
            keep_original=False, drop_invisible_text=False, ocr=True,
            existing_text="replaced" if survey.text_layer else "none",
        )  # fmt: skip
    # Anything else (a scan with visible text stamped or typed on it, vector art) keeps its content and
    # its visible text; an invisible layer still gives way to ours, which is drawn over it all.
    if survey.invisible_text:
        existing = "visible kept, invisible replaced" if survey.visible_text else "replaced"
    else:
        existing = "visible kept" if survey.visible_text else "none"
    return PdfPagePlan(keep_original=True, drop_invisible_text=survey.invisible_text, ocr=True, existing_text=existing)
