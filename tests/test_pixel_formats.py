"""Unusual but valid pixel formats are archived like any scan: readable, upright, white paper, PDF/A."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pikepdf
import pytest
from PIL import Image

from pipeline.batch import output_stems
from tests.conftest import pdf_text, preflight, run_digitize, word_accuracy

# The fixture page every variant is made from: an upright A5 decision at 300 dpi, gray.
SOURCE = "no-dpi.png"
DPI = 300


def _gray16(gray: np.ndarray) -> Image.Image:
    return Image.fromarray(gray.astype(np.uint16) * 257)  # the full 16-bit range, as scanners write it


def _cmyk(gray: np.ndarray) -> Image.Image:
    # Ink on the black plate only, as prepress software separates a gray page: a naive
    # reading of C, M and Y alone would see a blank page.
    ink = 255 - gray
    zero = np.zeros_like(ink)
    return Image.fromarray(np.stack([zero, zero, zero, ink], axis=2), "CMYK")


def _rgba(gray: np.ndarray) -> Image.Image:
    # Transparent paper whose colour is black: dropping the alpha instead of flattening
    # onto white makes the whole page black.
    rgba = np.zeros((*gray.shape, 4), np.uint8)
    rgba[..., 3] = 255 - gray
    return Image.fromarray(rgba, "RGBA")


def _palette(gray: np.ndarray) -> Image.Image:
    return Image.fromarray(np.stack([gray] * 3, axis=2)).quantize(colors=16)


# name -> (Pillow mode the file must open in, how to make it, how to save it)
VARIANTS = {
    "gray16.png": ("I;16", _gray16, {}),
    "gray16.tif": ("I;16", _gray16, {"compression": "tiff_lzw"}),
    "cmyk.jpg": ("CMYK", _cmyk, {"quality": 90}),
    "cmyk.tif": ("CMYK", _cmyk, {"compression": "tiff_lzw"}),
    "rgba.png": ("RGBA", _rgba, {}),
    "palette.png": ("P", _palette, {}),
}


@pytest.fixture(scope="module")
def variants(fixture_scans, tmp_path_factory) -> tuple[Path, Path, np.ndarray]:
    """Every variant through one real `digitize process --pdfa 1b` run."""
    folder = tmp_path_factory.mktemp("pixel-formats")
    gray = np.asarray(Image.open(fixture_scans / SOURCE).convert("L"))
    for name, (mode, make, options) in VARIANTS.items():
        make(gray).save(folder / name, dpi=(DPI, DPI), **options)
        with Image.open(folder / name) as written:
            assert written.mode == mode, f"{name} opens as {written.mode}, not the {mode} under test"
    out = tmp_path_factory.mktemp("pixel-formats-out")
    run_digitize("process", *sorted(folder.iterdir()), "--out", out, "--pdfa", "1b", "--jobs", "2")
    return folder, out, gray


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_pixel_format_is_archived_readable_upright_and_on_white_paper(name, variants, truth):
    folder, out, gray = variants
    inputs = sorted(folder.iterdir())
    stem = dict(zip(inputs, output_stems(inputs), strict=True))[folder / name]
    pdf = out / "records" / f"{stem}.pdf"
    assert pdf.exists(), sorted(p.name for p in (out / "records").iterdir())
    manifest = json.loads(pdf.with_suffix(".json").read_text("utf-8"))
    assert manifest["flags"] == {}, manifest["flags"]
    preflight(pdf)
    assert word_accuracy(truth[SOURCE].text[0], pdf_text(pdf)) >= 0.9

    (page,) = manifest["pages"]
    assert page["rotation"] == 0 and abs(page["deskew_angle"]) < 0.5, page
    assert page["pixels"] == [gray.shape[1], gray.shape[0]] and page["dpi"] == DPI and not page["dpi_inferred"]
    # The stored image is the page as scanned: same pixels (within JPEG's loss), paper white,
    # ink where the ink was, not inverted, not blackened by a dropped alpha channel.
    with pikepdf.open(pdf) as record:
        (image,) = record.pages[0].get_images(recursive=False).values()
        stored = np.asarray(pikepdf.PdfImage(image).as_pil_image().convert("L"), dtype=np.int16)
        width_pt, height_pt = (float(v) for v in record.pages[0].mediabox[2:])
    assert stored.shape == gray.shape
    assert np.abs(stored - gray).mean() < 3, f"mean difference {np.abs(stored - gray).mean():.1f} levels"
    assert np.median(stored) > 200, "the paper must stay white"
    # A portrait A5 page, as the source is.
    assert (round(width_pt), round(height_pt)) == (round(gray.shape[1] * 72 / DPI), round(gray.shape[0] * 72 / DPI))
