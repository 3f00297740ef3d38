"""Technical drawings: found (and near-drawings not), stored lossless, read sparsely, title block in the record."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pikepdf
import pytest

from pipeline import drawings
from tests import make_batches
from tests import scanfactory as sf

BIN = Path(sys.executable).parent
DPI = 150  # small files, fast OCR; the detector works on a 150 dpi copy anyway

DRAWINGS = ("flange-a3.png", "parts-list-a4.tif", "plan-upside-down.jpg", "gia-do-vector.pdf")
NOT_DRAWINGS = ("cong-van-stamp.jpg", "to-khai-table.png", "receipt-qr.png", "giay-chung-nhan.png")


def vector_drawing_pdf(path: Path) -> Path:
    """A CAD export as AutoCAD writes one: nothing but vector paths and text; an A3 sheet plotted
    on A4 (scaled by 1/√2), so that OCR at the 300 dpi a vector page is rasterised at stays quick."""
    w, h = 1190.55, 841.89  # A3 landscape, points
    ops = ["0.7071 0 0 0.7071 0 0 cm", "1 w", f"28 28 {w - 56:.2f} {h - 56:.2f} re S", "0.5 w"]
    # Title block: bottom right, 300 x 90 pt, three rows.
    tx, ty = w - 28 - 300, 28
    ops += [f"{tx} {ty} 300 90 re S", f"{tx} {ty + 30} m {tx + 300} {ty + 30} l S", f"{tx} {ty + 60} m {tx + 300} {ty + 60} l S",
            f"{tx + 170} {ty} m {tx + 170} {ty + 60} l S"]
    # A truss: chords and diagonals at many angles, circles (bolts) as Bézier curves, dimension lines.
    x0, y0, span, rise = 120, 300, 800, 260
    ops += [f"{x0} {y0} m {x0 + span} {y0} l S", f"{x0} {y0} m {x0 + span / 2} {y0 + rise} l {x0 + span} {y0} l S"]
    for k in range(1, 8):
        x = x0 + span * k / 8
        top = y0 + rise * (1 - abs(k - 4) / 4)
        ops.append(f"{x:.1f} {y0} m {x:.1f} {top:.1f} l S")
        nxt = x0 + span * (k + (1 if k < 4 else -1)) / 8
        ops.append(f"{x:.1f} {y0} m {nxt:.1f} {y0 + rise * (1 - abs(k + (1 if k < 4 else -1) - 4) / 4):.1f} l S")
    for cx in range(int(x0), int(x0 + span) + 1, 100):
        r, c = 9, 9 * 0.5523
        ops.append(f"{cx + r} {y0} m {cx + r} {y0 + c} {cx + c} {y0 + r} {cx} {y0 + r} c {cx - c} {y0 + r} {cx - r} {y0 + c} {cx - r} {y0} c "
                   f"{cx - r} {y0 - c} {cx - c} {y0 - r} {cx} {y0 - r} c {cx + c} {y0 - r} {cx + r} {y0 - c} {cx + r} {y0} c S")
    for dy, label in ((-60, "12000"), (-90, "6000")):
        ops += [f"{x0} {y0 + dy} m {x0 + span / (1 if dy == -60 else 2)} {y0 + dy} l S",
                f"{x0} {y0 + dy} m {x0 + 12} {y0 + dy + 4} l {x0 + 12} {y0 + dy - 4} l f"]
        ops.append(f"BT /F1 14 Tf {x0 + span / 4} {y0 + dy + 6} Td ({label}) Tj ET")
    ops += [f"BT /F1 20 Tf {tx + 12} {ty + 68} Td (GIAN THEP MAI) Tj ET",
            f"BT /F1 14 Tf {tx + 8} {ty + 38} Td (SCALE 1:50) Tj ET",
            f"BT /F1 14 Tf {tx + 178} {ty + 38} Td (DWG NO. VT-0815) Tj ET",
            f"BT /F1 14 Tf {tx + 8} {ty + 8} Td (DATE 12/03/2025) Tj ET",
            f"BT /F1 14 Tf {tx + 178} {ty + 8} Td (DRAWN NGUYEN) Tj ET"]
    pdf = pikepdf.new()
    font = pdf.make_indirect(pikepdf.Dictionary(Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type1, BaseFont=pikepdf.Name.Helvetica))
    page = pdf.add_blank_page(page_size=(w * 0.7071, h * 0.7071))
    page.Resources = pikepdf.Dictionary(Font=pikepdf.Dictionary(F1=font))
    page.Contents = pdf.make_stream("\n".join(ops).encode())
    pdf.save(path)
    return path


def _stamped_letter(dpi: int) -> np.ndarray:
    body = sf.DOCUMENTS["quyet-dinh"] + sf.VIETNAMESE_PARAGRAPHS[:2]
    page, _ = sf.render_page(text_lines_or_paragraphs=body, dpi=dpi, seed=3)
    return sf.colourize(sf.scan_effects(page, dpi=dpi, skew_deg=1.0, noise=2.0, seed=3), seed=3, dpi=dpi)


@pytest.fixture(scope="module")
def processed(tmp_path_factory) -> Path:
    """One `digitize process` run over drawings and near-drawings, shared by the tests below."""
    folder = tmp_path_factory.mktemp("drawings")
    scans = folder / "in"
    scans.mkdir()
    sf.save_png(scans / "flange-a3.png", sf.flatten_paper(sf.drawing_page(dpi=DPI, paper="A3", seed=1)), DPI)
    parts = sf.to_bitonal(sf.scan_effects(sf.parts_list_drawing_page(dpi=200, seed=4), dpi=200, skew_deg=-1.5, seed=4))
    sf.save_tiff(scans / "parts-list-a4.tif", [parts], 200, compression="group4")
    plan = sf.scan_effects(sf.drawing_page(dpi=DPI, paper="A4", seed=0), dpi=DPI, rotate90=2, skew_deg=0.8, noise=2.0, seed=5)
    sf.save_jpeg(scans / "plan-upside-down.jpg", plan, DPI, quality=85)
    vector_drawing_pdf(scans / "gia-do-vector.pdf")
    sf.save_jpeg(scans / "cong-van-stamp.jpg", _stamped_letter(DPI), DPI, quality=85, colour=True)
    sf.save_png(scans / "to-khai-table.png", sf.table_form_page(dpi=DPI, seed=2)[0], DPI)
    receipt, _ = sf.receipt_page(code=make_batches.dossier_codes(1, seed=9)[0], dpi=DPI, seed=9, symbology="qr")
    sf.save_png(scans / "receipt-qr.png", receipt, DPI)
    sf.save_png(scans / "giay-chung-nhan.png", sf.land_certificate_page(dpi=DPI, seed=6), DPI)
    out = folder / "out"
    proc = subprocess.run(
        [str(BIN / "digitize"), "process", *(str(scans / n) for n in DRAWINGS + NOT_DRAWINGS), "--out", str(out), "--jobs", "2"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _record(out: Path, input_name: str) -> tuple[dict, Path]:
    report = json.loads((out / "report.json").read_text("utf-8"))
    doc = next(d for d in report["documents"] if Path(d["input"]).name == input_name)
    return json.loads((out / doc["manifest"]).read_text("utf-8")), out / doc["pdf"]


@pytest.mark.parametrize("name", DRAWINGS)
def test_drawings_are_flagged_and_kept_lossless(processed: Path, name: str) -> None:
    manifest, _ = _record(processed, name)
    page = manifest["pages"][0]
    assert "technical_drawing" in page["flags"], page["drawing"]
    evidence = page["flags"]["technical_drawing"]
    assert {"curve_spread", "short_rules", "line_share", "frame", "title_block"} <= set(evidence)
    expected = {".png": "png", ".tif": "ccitt-g4", ".jpg": "jpeg-original", ".pdf": "png"}[Path(name).suffix]
    assert page["image_encoding"] == expected  # the default profile is compact: JPEG q80 for anything else


@pytest.mark.parametrize("name", NOT_DRAWINGS)
def test_near_drawings_are_not_flagged(processed: Path, name: str) -> None:
    manifest, _ = _record(processed, name)
    page = manifest["pages"][0]
    assert "technical_drawing" not in page["flags"], page["drawing"]
    assert page["drawing"]["curve_spread"] < 0.16


def test_a3_sheet_keeps_its_size_and_an_upside_down_sheet_is_turned(processed: Path) -> None:
    a3, _ = _record(processed, "flange-a3.png")
    assert sorted(a3["pages"][0]["size_mm"]) == pytest.approx([297, 420], abs=2)
    plan, pdf = _record(processed, "plan-upside-down.jpg")
    assert plan["pages"][0]["rotation"] == 180
    # Upright, the title block's words read; upside down, Tesseract would give none of them.
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    assert "MẶT BẰNG" in text or "Tỷ lệ" in text, text


def test_title_block_is_read_into_manifest_xmp_and_text_layer(processed: Path) -> None:
    manifest, pdf = _record(processed, "gia-do-vector.pdf")
    block = manifest["pages"][0]["title_block"]
    assert block["number"] == "VT-0815" and block["scale"] == "1:50" and block["date"] == "12/03/2025", block
    assert "GIAN THEP MAI" in block["text"]
    with pikepdf.open(pdf) as doc, doc.open_metadata() as xmp:
        assert "VT-0815" in str(xmp.get("dc:description"))
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    assert "VT-0815" in text and "12000" in text, text


def test_review_thumbnail_is_readable_with_evidence_drawn(processed: Path) -> None:
    manifest, pdf = _record(processed, "parts-list-a4.tif")
    thumbnail = pdf.parent / "page-0000.png"
    image = cv2.imread(str(thumbnail), cv2.IMREAD_UNCHANGED)
    assert max(image.shape[:2]) >= 1200
    # The evidence is drawn in colour over a gray page: the title block's red box is there.
    assert image.ndim == 3
    red = (image[..., 2] > 180) & (image[..., 1] < 60) & (image[..., 0] < 60)
    assert red.sum() > 1000


def test_title_block_fields_from_labels() -> None:
    fields = drawings.title_block_text("MẶT BẰNG TỔNG THỂ\nTỷ lệ 1:500   Số: QH-19\nNgày: 20/07/2025  Thiết kế: KTS")
    assert (fields.number, fields.title, fields.scale, fields.date, fields.author) == (
        "QH-19", "MẶT BẰNG TỔNG THỂ", "1:500", "20/07/2025", "KTS",
    )
    assert drawings.title_block_text("SHEET 1 OF 1").number is None
