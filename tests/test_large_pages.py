"""Large sheets are measured a band or a table at a time: the answers must not depend on the band."""

from __future__ import annotations

import numpy as np
from PIL import Image

from pipeline import blank, drawings, geometry, ocr_input
from pipeline.settings import load_settings
from tests import scanfactory as sf

DPI = 150


def test_the_ink_table_gives_the_per_pixel_comparison_for_every_paper_and_gray_level():
    contrast = load_settings().blank.ink_contrast
    levels = np.arange(256, dtype=np.uint8)
    paper, gray = (np.ascontiguousarray(grid) for grid in np.meshgrid(levels, levels))
    per_pixel = gray.astype(np.float32) < contrast * np.maximum(paper.astype(np.float32), 1.0)
    assert ((gray < blank._ink_below(paper, contrast)) == per_pixel).all()


def test_label_lookups_in_bands_match_one_lookup(monkeypatch):
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 500, (301, 97)).astype(np.int32)
    table = (rng.random(500) < 0.4).astype(np.uint8)
    monkeypatch.setattr(drawings, "LOOKUP_BAND_PX", 97 * 7 + 5)  # bands that do not divide the rows
    assert (drawings._lookup(table, labels) == table[labels]).all()


def test_the_colour_dropout_does_not_depend_on_the_band(monkeypatch):
    page, _ = sf.render_page(text_lines_or_paragraphs=sf.VIETNAMESE_PARAGRAPHS[:2], dpi=DPI, paper="A5")
    rgb = sf.colourize(page, seed=1, dpi=DPI)
    height, width = page.shape
    # A red seal cut by band edges, over black text.
    rgb = sf.stamp_seal(rgb, centre=(width // 3, height // 4), dpi=DPI, seed=2)
    image = Image.fromarray(rgb, "RGB")
    gray = geometry.gray_pixels(image)
    monkeypatch.setattr(ocr_input, "DROPOUT_BAND_PX", width * height)
    whole = ocr_input.prepare(image, gray, dpi=DPI, quarter_turns=0, skew_deg=0.0)
    monkeypatch.setattr(ocr_input, "DROPOUT_BAND_PX", width * 13 + 1)
    banded = ocr_input.prepare(image, gray, dpi=DPI, quarter_turns=0, skew_deg=0.0)
    assert whole.colour_dropout and whole.seals
    assert banded.colour_dropout and banded.seals == whole.seals
    assert (banded.image == whole.image).all()
