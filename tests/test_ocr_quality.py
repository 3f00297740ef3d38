"""OCR quality on pages made to be hard: a red seal over text, a 100 dpi scan, bold capital Vietnamese headings, a small skew.

One pipeline run over all of them (module-scoped); plain Tesseract on the same pages is the yardstick.
"""

from __future__ import annotations

import json
import subprocess
import unicodedata
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.batch import process_inputs
from pipeline.settings import load_settings
from tests import scanfactory as sf
from tests.conftest import pdf_text, word_accuracy

SEAL_WORDS = {"PHƯỜNG", "BẾN", "THỦY", "THÀNH", "PHỐ", "VINH"}
TITLES = [
    "GIẤY TIẾP NHẬN HỒ SƠ VÀ HẸN TRẢ KẾT QUẢ", "THÔNG BÁO BỔ SUNG HỒ SƠ", "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM",
    "BIÊN BẢN KIỂM TRA HIỆN TRẠNG SỬ DỤNG ĐẤT", "QUYẾT ĐỊNH", "ỦY BAN NHÂN DÂN TỈNH NGHỆ AN",
    "CHỈ THỊ VỀ VIỆC TĂNG CƯỜNG CÔNG TÁC QUẢN LÝ", "BÁO CÁO KẾT QUẢ THỰC HIỆN", "GIẤY CHỨNG NHẬN QUYỀN SỬ DỤNG ĐẤT",
    "TỜ TRÌNH ĐỀ NGHỊ PHÊ DUYỆT", "KẾ HOẠCH TRIỂN KHAI NHIỆM VỤ NĂM", "CÔNG VĂN GỬI CÁC PHÒNG BAN",
]  # fmt: skip


def _body(seed: int, dpi: int) -> tuple[np.ndarray, str]:
    lines = [sf.Heading(sf.TITLES["thong-bao"]), *sf.VIETNAMESE_PARAGRAPHS[2:5]]
    return sf.render_page(text_lines_or_paragraphs=lines, dpi=dpi, paper="A5", seed=seed)


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """Each page's file and its ground truth."""
    folder = tmp_path_factory.mktemp("ocr-quality")
    made: dict[str, tuple[Path, str]] = {}
    page, truth = _body(3, 300)
    rgb = sf.colourize(sf.scan_effects(page, dpi=300, noise=2, seed=3), seed=3, stamp_text="")
    rows = np.flatnonzero((page < 128).sum(axis=1) > 3)
    # Over the middle of the body text, where the seal covers words on several lines.
    centre = (page.shape[1] * 2 // 3, int(rows[len(rows) // 2]))
    made["unsealed"] = (sf.save_png(folder / "unsealed.png", rgb, 300), truth)
    made["sealed"] = (sf.save_png(folder / "sealed.png", sf.stamp_seal(rgb, centre=centre, dpi=300), 300), truth)
    page, truth = _body(5, 300)
    low = cv2.resize(sf.scan_effects(page, dpi=300, noise=2, seed=5), None, fx=1 / 3, fy=1 / 3, interpolation=cv2.INTER_AREA)
    made["low-dpi"] = (sf.save_png(folder / "low-dpi.png", low, 100), truth)
    page, truth = sf.render_page(text_lines_or_paragraphs=[sf.Heading(t) for t in TITLES], dpi=200, font_pt=14, seed=1)
    made["headings"] = (sf.save_png(folder / "headings.png", sf.scan_effects(page, dpi=200, noise=2, seed=1), 200), truth)
    page, truth = _body(7, 300)
    skewed = sf.to_bitonal(sf.scan_effects(page, dpi=300, skew_deg=1.3, noise=2, seed=7))
    made["skewed"] = (sf.save_tiff(folder / "skewed.tif", [skewed], 300), truth)
    return made


@pytest.fixture(scope="module")
def records(pages, tmp_path_factory) -> dict[str, tuple[str, str, dict]]:
    """name -> (pdftotext of its record, its .txt sidecar, its manifest page record), from one run."""
    out = tmp_path_factory.mktemp("ocr-quality-out")
    report = process_inputs([path for path, _ in pages.values()], out, load_settings(), jobs=2)
    found = {}
    for doc in report.documents:
        name = Path(doc.input).stem
        manifest = json.loads(doc.manifest.read_text("utf-8"))
        found[name] = (pdf_text(doc.pdf), doc.manifest.with_suffix(".txt").read_text("utf-8"), manifest["pages"][0])
    assert set(found) == set(pages), report
    return found


def plain_tesseract(image: Path) -> str:
    return subprocess.run(
        ["tesseract", str(image), "-", "-l", "vie+eng"], capture_output=True, text=True, check=True,
        env={"OMP_THREAD_LIMIT": "1", "PATH": "/usr/bin:/bin"},
    ).stdout  # fmt: skip


def _words(text: str) -> list[str]:
    return unicodedata.normalize("NFC", text).split()


def test_the_text_layer_gives_the_sidecar_words(records):
    for name, (layer, sidecar, _) in records.items():
        a, b = sorted(_words(layer)), sorted(_words(sidecar))
        common = sum(min(a.count(w), b.count(w)) for w in set(a))
        assert common >= 0.99 * max(len(a), len(b)), (name, set(a) ^ set(b))


def test_text_under_a_red_seal_reads_as_without_it_and_the_seal_is_recorded(pages, records):
    truth = pages["sealed"][1]
    sealed, unsealed = records["sealed"][0], records["unsealed"][0]
    print(f"under the seal {word_accuracy(truth, sealed):.3f}, without it {word_accuracy(truth, unsealed):.3f}")
    assert word_accuracy(truth, sealed) >= word_accuracy(truth, unsealed) - 0.02
    assert not SEAL_WORDS & set(_words(sealed)), "seal text in the text layer"
    assert len(_words(sealed)) <= len(_words(unsealed)) + 2, "seal junk in the text layer"
    sealed_input, unsealed_input = records["sealed"][2]["ocr_input"], records["unsealed"][2]["ocr_input"]
    assert sealed_input["colour_dropout"] and len(sealed_input["seals"]) == 1, sealed_input
    assert unsealed_input["seals"] == []
    left, top, width, height = sealed_input["seals"][0]["box_mm"]
    assert 30 <= width <= 45 and 30 <= height <= 45, sealed_input


def test_a_100_dpi_page_is_read_at_200_dpi_and_stored_as_it_came(pages, records):
    path, truth = pages["low-dpi"]
    layer, _, page = records["low-dpi"]
    assert page["ocr_input"]["scale"] == 2 and page["ocr_input"]["dpi"] == 200, page["ocr_input"]
    stored = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert page["pixels"] == [stored.shape[1], stored.shape[0]] and page["dpi"] == 100
    ours, plain = word_accuracy(truth, layer), word_accuracy(truth, plain_tesseract(path))
    print(f"100 dpi page: ours {ours:.3f}, plain Tesseract {plain:.3f}")
    assert ours >= plain - 0.01 and ours >= 0.85


def test_bold_capital_headings_keep_their_marks(pages, records):
    truth = pages["headings"][1]
    layer, sidecar, page = records["headings"]
    print(f"headings: ours {word_accuracy(truth, layer):.3f}")
    assert word_accuracy(truth, layer) >= 0.97 and word_accuracy(truth, sidecar) >= 0.97
    second = page["ocr_second_pass"]
    assert second["reason"] and second["lines_changed"] >= 1, second


def test_a_small_skew_is_left_to_tesseract_and_the_layer_turned_to_match(pages, records):
    path, truth = pages["skewed"]
    layer, _, page = records["skewed"]
    assert abs(page["deskew_angle"]) > 1.0 and page["ocr_input"]["residual_skew_deg"] == page["deskew_angle"]
    assert word_accuracy(truth, layer) >= word_accuracy(truth, plain_tesseract(path)) - 0.01
