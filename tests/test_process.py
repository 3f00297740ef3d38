"""End to end: generated scans through the real `digitize process`, checked against their truth."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import unicodedata
from pathlib import Path

import numpy as np
import pikepdf
import pikepdf.pdfa
import pytest
from PIL import Image, ImageChops

from tests.conftest import pdf_text, preflight, run_digitize, word_accuracy


def _manifest(out: Path, name: str) -> dict:
    stem = Path(name).stem if Path(name).suffix else name
    return json.loads((out / f"{stem}.json").read_text("utf-8"))


def test_every_input_becomes_a_record(processed, truth):
    out, proc = processed
    assert "12 of 12 inputs archived" in proc.stdout
    for name in truth:
        stem = Path(name).stem if Path(name).suffix else name
        for ext in (".pdf", ".json", ".txt"):
            assert (out / f"{stem}{ext}").stat().st_size > 0, f"{stem}{ext} missing"
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_orientation_skew_and_blank_match_truth(processed, truth):
    out, _ = processed
    for name, expected in truth.items():
        pages = _manifest(out, name)["pages"]
        assert len(pages) == len(expected.rotation), name
        for page, rotation, skew, blank in zip(pages, expected.rotation, expected.skew, expected.blank, strict=True):
            where = f"{name} page {page['source_index']}"
            assert page["rotation"] == rotation, where
            assert page["blank"] == blank, where
            if not blank:
                # The correction levels the page: it undoes the skew that was put in.
                assert abs(page["deskew_angle"] + skew) <= 0.3, f"{where}: {page['deskew_angle']} vs {-skew}"


def test_every_pdfa_1b_output_passes_preflight(processed, truth):
    out, _ = processed
    for pdf in sorted(out.glob("*.pdf")):
        assert "valid PDF/A-1b" in preflight(pdf)


def test_text_layer_reads_back_per_page(processed, truth):
    out, _ = processed
    scores = []
    for name, expected in truth.items():
        stem = Path(name).stem if Path(name).suffix else name
        with pikepdf.open(out / f"{stem}.pdf") as pdf:
            assert len(pdf.pages) == len(expected.text)
        for number, text in enumerate(expected.text, start=1):
            if not text:
                continue
            layer = subprocess.run(
                ["pdftotext", "-f", str(number), "-l", str(number), str(out / f"{stem}.pdf"), "-"],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            score = word_accuracy(text, layer)
            assert score >= 0.90, f"{name} page {number}: word accuracy {score:.3f}"
            scores.append(score)
    assert sum(scores) / len(scores) >= 0.97


def test_manifest_records_what_drove_each_decision(processed, fixture_scans):
    out, _ = processed
    manifest = _manifest(out, "scanner.pdf")
    assert manifest["schema"] == "digitize.record/1"
    assert manifest["source"]["sha256"] == hashlib.sha256((fixture_scans / "scanner.pdf").read_bytes()).hexdigest()
    assert manifest["output"]["pdf_sha256"] == hashlib.sha256((out / "scanner.pdf").read_bytes()).hexdigest()
    assert {m["name"] for m in manifest["ocr"]["models"]} >= {"vie.traineddata", "eng.traineddata", "digitize.config"}
    assert all(m["pinned"] for m in manifest["ocr"]["models"]), "installed models differ from ocr_models/manifest.json"
    page = manifest["pages"][0]
    for key in ("source_index", "pixels", "dpi", "dpi_inferred", "size_mm", "rotation", "deskew_angle",
                "blank", "ocr_confidence", "characters", "image_encoding"):
        assert key in page, key
    assert page["size_mm"] == pytest.approx([148, 210], abs=1.5)
    assert 80 < page["ocr_confidence"] <= 100
    assert {"load", "orient", "deskew", "ocr", "encode", "assemble"} <= set(manifest["timings_s"])


def test_missing_dpi_is_inferred_and_said_so(processed):
    out, _ = processed
    page = _manifest(out, "no-dpi.png")["pages"][0]
    assert page["dpi_inferred"] is True
    assert page["dpi"] == 300
    assert _manifest(out, "skew-6-200dpi.png")["pages"][0]["dpi_inferred"] is False


def test_folder_pages_come_in_natural_order(processed, truth):
    out, _ = processed
    pages = _manifest(out, "page-folder")["pages"]
    assert [p["source_file"] for p in pages] == ["page1.png", "page2.png", "page10.png"]
    text = (out / "page-folder.txt").read_text("utf-8").split("\f")
    for page_text, expected in zip(text, truth["page-folder"].text, strict=True):
        assert word_accuracy(expected, page_text) > 0.9


def test_text_sidecar_is_nfc(processed):
    out, _ = processed
    for txt in out.glob("*.txt"):
        text = txt.read_text("utf-8")
        assert text == unicodedata.normalize("NFC", text)
    assert "Nghệ An" in (out / "scanner.txt").read_text("utf-8")


def test_jpeg_input_is_stored_without_reencoding(processed, fixture_scans):
    out, _ = processed
    original = (fixture_scans / "skew-minus6-300dpi.jpg").read_bytes()
    with pikepdf.open(out / "skew-minus6-300dpi.pdf") as pdf:
        (image,) = pdf.pages[0].get_images().values()
        assert pikepdf.PdfImage(image).filters == ["/DCTDecode"]
        assert image.read_raw_bytes() == original


def test_scanner_pdf_jpeg_pages_pass_through(processed, fixture_scans):
    out, _ = processed
    with pikepdf.open(fixture_scans / "scanner.pdf") as source, pikepdf.open(out / "scanner.pdf") as record:
        for src_page, out_page in zip(source.pages, record.pages, strict=True):
            (src_image,) = src_page.get_images().values()
            (out_image,) = out_page.get_images().values()
            assert out_image.read_raw_bytes() == src_image.read_raw_bytes()


def test_bitonal_pages_stay_lossless_g4(processed, fixture_scans):
    out, _ = processed
    with pikepdf.open(out / "bitonal-g4-400dpi.pdf") as pdf:
        (image,) = pdf.pages[0].get_images().values()
        assert pikepdf.PdfImage(image).filters == ["/CCITTFaxDecode"]
        stored = pikepdf.PdfImage(image).as_pil_image().convert("1")
    source = Image.open(fixture_scans / "bitonal-g4-400dpi.tif").convert("1")
    assert ImageChops.difference(stored.convert("L"), source.convert("L")).getbbox() is None


def test_compact_stores_lossless_gray_as_jpeg(processed):
    out, _ = processed
    manifest = _manifest(out, "skew-6-200dpi.png")
    assert manifest["pages"][0]["image_encoding"].startswith("jpeg-q")
    with pikepdf.open(out / "skew-6-200dpi.pdf") as pdf:
        (image,) = pdf.pages[0].get_images().values()
        assert pikepdf.PdfImage(image).filters == ["/DCTDecode"]
        assert image.ColorSpace == pikepdf.Name.DeviceGray


def test_archival_profile_keeps_lossless_input_lossless(fixture_scans, tmp_path):
    run_digitize("process", fixture_scans / "no-dpi.png", "--out", tmp_path, "--profile", "archival", "--jobs", "1")
    with pikepdf.open(tmp_path / "no-dpi.pdf") as pdf:
        (image,) = pdf.pages[0].get_images().values()
        assert pikepdf.PdfImage(image).filters == ["/FlateDecode"]
        stored = pikepdf.PdfImage(image).as_pil_image()
    source = Image.open(fixture_scans / "no-dpi.png")
    assert ImageChops.difference(stored.convert("L"), source.convert("L")).getbbox() is None
    assert pikepdf.pdfa.validate_written(tmp_path / "no-dpi.pdf", "2b").passed


def test_rendered_page_is_upright_and_text_sits_on_the_words(processed, tmp_path):
    """Render the archived page; the invisible words' boxes must cover dark ink, level lines."""
    out, _ = processed
    pdf = out / "turned-180-400dpi.pdf"
    subprocess.run(["pdftoppm", "-r", "72", "-gray", "-png", str(pdf), str(tmp_path / "r")], check=True)
    (png,) = tmp_path.glob("r*.png")
    page = np.asarray(Image.open(png)).astype(float)
    bbox = subprocess.run(["pdftotext", "-bbox", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    boxes = [tuple(map(float, m)) for m in re.findall(r'xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)"', bbox)]
    assert len(boxes) > 50
    inside = np.mean([page[int(y0):int(y1) + 1, int(x0):int(x1) + 1].mean() for x0, y0, x1, y1 in boxes])
    mask = np.ones_like(page, dtype=bool)
    for x0, y0, x1, y1 in boxes:
        mask[int(y0):int(y1) + 1, int(x0):int(x1) + 1] = False
    outside = page[mask].mean()
    # Words are darker than the paper around them only if the layer sits on them.
    assert inside < outside - 20, (inside, outside)


def test_rerun_is_idempotent(fixture_scans, tmp_path):
    source = fixture_scans / "bitonal-g4-400dpi.tif"
    run_digitize("process", source, "--out", tmp_path, "--jobs", "1")
    first = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    second = run_digitize("process", source, "--out", tmp_path, "--jobs", "1")
    assert "up to date" in second.stdout
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == first


def test_sample_scans_read_back_with_95_percent_word_accuracy(sample_records):
    repo = Path(__file__).resolve().parents[1]
    for pdf in sorted(sample_records.glob("*.pdf")):
        truth = (repo / "sample_scans" / f"{pdf.stem}.gt.txt").read_text("utf-8")
        score = word_accuracy(truth, pdf_text(pdf))
        assert score >= 0.95, f"{pdf.name}: {score:.3f}"
        assert pikepdf.pdfa.validate_written(pdf, "2b").passed, pdf.name
