"""The copy of a page that OCR reads: upright, levelled only when Tesseract needs it, inks it must not read dropped, low resolutions raised."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from pipeline import geometry

# Tesseract finds its own text lines on pages skewed up to about 3° and reads them as well as
# levelled ones (8071_093.3B turned 1-3°: 0.970-0.973 raw, 0.972 levelled; at 5°: 0.83 raw),
# while resampling a small skew away costs words (eurotext: 0.924 raw, 0.879 levelled).
OCR_TOLERATED_SKEW_DEG = 2.0
# Under this resolution Tesseract's x-heights get too small; such pages are read at TARGET_DPI
# (bicubic). Measured on three VietOCR pages brought down to 100 and 150 dpi, against Tesseract
# on the 300 dpi originals: as they are 0.897 mean, at 200 dpi 0.917, at 300 dpi 0.903, at 400 0.902.
LOW_DPI = 200.0
TARGET_DPI = 200.0
# Colour dropout: a pixel whose channels spread by more than this is coloured ink, not black.
COLOUR_SPREAD = 60
# A seal is a red ring or disc about 30-50 mm across (round seals of Vietnamese agencies).
SEAL_MM = (20.0, 70.0)
SEAL_MIN_RED_SHARE = 0.04  # of the seal's bounding box
# The colour dropout goes this many pixels at a time.
DROPOUT_BAND_PX = 1 << 20


@dataclass(frozen=True)
class Seal:
    """A red seal found on the page, in mm from the stored page's top-left corner."""

    box_mm: tuple[float, float, float, float]  # left, top, width, height
    red_share: float


@dataclass(frozen=True)
class OcrInput:
    image: np.ndarray  # 8-bit gray, upright
    dpi: float  # the resolution handed to the engine with it
    scale: float  # OCR pixels per stored pixel
    residual_skew_deg: float  # skew left in the OCR copy: the text layer is drawn turned by it
    colour_dropout: bool
    seals: tuple[Seal, ...]


def prepare(
    image: Image.Image, gray: np.ndarray, *, dpi: float, quarter_turns: int, skew_deg: float
) -> OcrInput:
    """The OCR copy of a page: `gray` is `image` as gray; the stored image is never touched."""
    seals: tuple[Seal, ...] = ()
    dropped = False
    if image.mode == "RGB":
        rgb = np.asarray(image)
        without_colour: np.ndarray | None = None
        # A band of rows at a time: channels and masks of a whole A0 sheet would be ~1 GB.
        band = max(1, DROPOUT_BAND_PX // rgb.shape[1])
        for top in range(0, rgb.shape[0], band):
            rows = slice(top, top + band)
            # OpenCV's per-pixel max is ~10x numpy's over the channel axis.
            red, green, blue = cv2.split(rgb[rows])
            coloured = _coloured_ink(red, green, blue)
            if coloured.any():
                # Black ink under a red seal or blue signature stays dark in every channel; the
                # coloured ink is light in its own, so the brightest channel drops it.
                without_colour = gray.copy() if without_colour is None else without_colour
                np.copyto(without_colour[rows], cv2.max(cv2.max(red, green), blue), where=coloured)
        if without_colour is not None:
            seals = find_seals(rgb, dpi=dpi)
            gray = without_colour
            dropped = True
        del rgb
    residual = skew_deg if abs(skew_deg) <= OCR_TOLERATED_SKEW_DEG else 0.0
    upright = geometry.level_image(gray, quarter_turns=quarter_turns, skew_deg=skew_deg - residual, fill=255)
    scale = 1.0
    if dpi < LOW_DPI:
        scale = TARGET_DPI / dpi
        upright = cv2.resize(upright, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    return OcrInput(upright, dpi * scale, scale, residual, dropped, seals)


def _coloured_ink(red: np.ndarray, green: np.ndarray, blue: np.ndarray) -> np.ndarray:
    """Red or blue ink: one channel well above both others (saturating uint8 differences)."""
    reddish = cv2.subtract(red, cv2.max(green, blue)) > COLOUR_SPREAD
    bluish = cv2.subtract(blue, cv2.max(red, green)) > COLOUR_SPREAD // 2
    return reddish | bluish


def find_seals(rgb: np.ndarray, *, dpi: float) -> tuple[Seal, ...]:
    """Red seals: red ink gathered into a roughly square region of a seal's size."""
    scale = min(1.0, 50.0 / dpi)  # 50 dpi is plenty to see a 40 mm ring
    small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else rgb
    r, g, b = cv2.split(small)
    red = (cv2.subtract(r, cv2.max(g, b)) > COLOUR_SPREAD // 2).astype(np.uint8)
    px_per_mm = dpi * scale / 25.4
    close = max(3, int(round(3 * px_per_mm)) | 1)
    joined = cv2.morphologyEx(red, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (close, close)))
    count, _, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
    found = []
    for left, top, width, height, _area in stats[1:]:
        w_mm, h_mm = width / px_per_mm, height / px_per_mm
        if not (SEAL_MM[0] <= w_mm <= SEAL_MM[1] and SEAL_MM[0] <= h_mm <= SEAL_MM[1]):
            continue
        if max(w_mm, h_mm) > 1.5 * min(w_mm, h_mm):
            continue
        share = float(red[top : top + height, left : left + width].mean())
        if share < SEAL_MIN_RED_SHARE:
            continue
        box = tuple(round(float(v) / px_per_mm, 1) for v in (left, top, width, height))
        found.append(Seal(box, round(share, 3)))
    return tuple(found)
