"""Fast checks of the pure pieces: geometry, page placement, paper sizes, names and settings."""

from __future__ import annotations

import math

import pytest
from PIL import Image

from pipeline import geometry, paper
from pipeline.batch import output_stems
from pipeline.errors import ConfigError
from pipeline.pdfpage import frame_size_pt, placement_matrix
from pipeline.settings import load_settings
from tests import scanfactory as sf


@pytest.fixture(scope="module")
def page_150dpi():
    clean, _ = sf.render_page(text_lines_or_paragraphs=sf.DOCUMENTS["to-khai"], dpi=150, paper="A5", seed=3)
    return clean


@pytest.mark.parametrize("skew", [-8.0, -3.0, 0.0, 2.5, 6.0])
@pytest.mark.parametrize("turns", [0, 1, 2, 3])
def test_measure_finds_turn_and_skew(page_150dpi, skew, turns):
    scanned = sf.scan_effects(page_150dpi, dpi=150, skew_deg=skew, rotate90=turns, noise=2.0, seed=1)
    geo = geometry.measure(geometry.analysis_image(scanned, 150), max_skew_deg=10)
    assert geo.rotation == (4 - turns) % 4 * 90
    assert geo.skew_deg == pytest.approx(-skew, abs=0.3)


def test_measure_gives_up_on_an_empty_page():
    blank = sf.blank_page(dpi=150, paper="A5", seed=2)
    geo = geometry.measure(geometry.analysis_image(blank, 150), max_skew_deg=10)
    assert geo.method == "none" and geo.rotation == 0


@pytest.mark.parametrize("turns", [0, 1, 2, 3])
def test_placement_maps_the_image_onto_the_corrected_page(turns):
    width, height = 300.0, 500.0
    a, b, c, d, e, f = placement_matrix(width, height, quarter_turns=turns, skew_deg=0.0)
    page_w, page_h = frame_size_pt(300, 500, 72, turns)
    corners = [(u * a + v * c + e, u * b + v * d + f) for u in (0, 1) for v in (0, 1)]
    xs, ys = zip(*corners, strict=True)
    assert (min(xs), max(xs), min(ys), max(ys)) == pytest.approx((0, page_w, 0, page_h), abs=1e-6)


def test_placement_rotates_about_the_page_centre():
    a, b, c, d, e, f = placement_matrix(200.0, 100.0, quarter_turns=0, skew_deg=5.0)
    centre = (0.5 * a + 0.5 * c + e, 0.5 * b + 0.5 * d + f)
    assert centre == pytest.approx((100.0, 50.0))
    assert math.degrees(math.atan2(b, a)) == pytest.approx(5.0)


@pytest.mark.parametrize(
    ("size_px", "dpi"),
    [((1654, 2339), 200), ((2480, 3508), 300), ((3307, 4677), 400), ((1748, 2480), 300), ((3508, 4961), 300)],
)
def test_infer_dpi_from_paper_size(size_px, dpi):
    assert paper.infer_dpi(*size_px) == dpi
    assert paper.infer_dpi(*reversed(size_px)) == dpi


def test_output_names_keep_inputs_apart(tmp_path):
    names = output_stems([tmp_path / "a.tif", tmp_path / "a.pdf", tmp_path / "b.png", tmp_path / "folder"])
    assert names == ["a-tif", "a-pdf", "b", "folder"]


def test_settings_reject_unknown_and_bad_values(tmp_path):
    settings = load_settings()
    assert settings.ocr.languages == "vie+eng" and settings.output.pdfa == "2b"
    with pytest.raises(ConfigError, match="unknown setting 'output.colour'"):
        settings.with_overrides({"output.colour": "red"})
    bad = tmp_path / "bad.toml"
    bad.write_text("[ocr]\nlanguages = 'vie; rm -rf /'\n")
    with pytest.raises(ConfigError, match="ocr.languages"):
        load_settings(bad)
