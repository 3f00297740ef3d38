"""Generate the benchmark page set: skewed and turned Vietnamese pages, 200-400 dpi, gray, bitonal, colour."""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from tests import scanfactory as sf  # noqa: E402

DOCS = list(sf.DOCUMENTS)
# (dpi, how the station saved it, skew in degrees, quarter turns counterclockwise): each
# kind of file meets every turn, 200-400 dpi, and both ends of the ±6° skew range.
PAGES = [
    (200, "gray-png", 6.0, 0), (300, "gray-png", -6.0, 1), (400, "gray-png", 3.0, 2), (300, "gray-png", -2.0, 3),
    (300, "bitonal-g4", -6.0, 0), (400, "bitonal-g4", 6.0, 1), (200, "bitonal-g4", -3.5, 2), (300, "bitonal-g4", 1.0, 3),
    (300, "colour-jpeg", 5.0, 0), (200, "colour-jpeg", -4.5, 1), (300, "colour-jpeg", 2.0, 2), (400, "colour-jpeg", -6.0, 3),
    (300, "colour-tiff", -5.0, 0), (400, "colour-tiff", 4.0, 1), (200, "colour-tiff", -1.0, 2), (300, "colour-tiff", 6.0, 3),
]


# Harder pages, one class each: a 100 dpi office scan, a red seal over the text, bold capital headings.
EXTRA = ["lowdpi", "sealed", "headings"]
HEADING_TITLES = [sf.Heading(t) for t in sf.TITLES.values()] + [sf.Heading(h) for h in (
    "ỦY BAN NHÂN DÂN TỈNH NGHỆ AN", "CHỈ THỊ VỀ VIỆC TĂNG CƯỜNG CÔNG TÁC QUẢN LÝ", "BÁO CÁO KẾT QUẢ THỰC HIỆN",
    "GIẤY CHỨNG NHẬN QUYỀN SỬ DỤNG ĐẤT", "TỜ TRÌNH ĐỀ NGHỊ PHÊ DUYỆT", "KẾ HOẠCH TRIỂN KHAI NHIỆM VỤ NĂM",
)]  # fmt: skip


def page_class(name: str) -> str:
    """bitonal, gray, colour, low-dpi, sealed, headings, or corpus (a real page), from a page's file name."""
    for tag, kind in (("lowdpi", "low-dpi"), ("sealed", "sealed"), ("headings", "headings"), ("bitonal", "bitonal"),
                      ("gray", "gray"), ("colour", "colour")):  # fmt: skip
        if f"-{tag}" in name:
            return kind
    return "corpus"


def quarter_turns(name: str) -> int:
    """The counterclockwise quarter turns a generated page was given (0 for the others)."""
    for turns in (1, 2, 3):
        if f"-turn{turns * 90}" in name:
            return turns
    return 0


def skew(name: str) -> float:
    """The skew in degrees (counterclockwise) a page was given, from its name."""
    match = re.search(r"-skew([+-][\d.]+)", name)
    return float(match.group(1)) if match else (1.0 if any(f"-{kind}" in name for kind in EXTRA) else 0.0)


def make_extra(out: Path) -> list[Path]:
    written = []
    for seed, kind in enumerate(EXTRA, start=len(PAGES)):
        doc = DOCS[seed % len(DOCS)]
        if kind == "headings":
            clean, truth = sf.render_page(text_lines_or_paragraphs=HEADING_TITLES, dpi=300, font_pt=14, seed=500 + seed)
        else:
            body = sf.DOCUMENTS[doc] + sf.VIETNAMESE_PARAGRAPHS[seed % 12:]
            clean, truth = sf.render_page(text_lines_or_paragraphs=body, dpi=300, font_pt=12, seed=500 + seed)
        img = sf.scan_effects(clean, dpi=300, skew_deg=1.0, noise=2.0, seed=500 + seed)
        name = f"{seed:02d}-{doc}-{kind}"
        if kind == "lowdpi":
            small = cv2.resize(img, None, fx=1 / 3, fy=1 / 3, interpolation=cv2.INTER_AREA)
            path = sf.save_png(out / f"{name}-100dpi.png", small, 100)
        elif kind == "sealed":
            rgb = sf.colourize(img, seed=seed, stamp_text="")
            rows = np.flatnonzero((clean < 128).sum(axis=1) > 3)
            centre = (clean.shape[1] * 2 // 3, int(rows[len(rows) // 2]))
            path = sf.save_jpeg(out / f"{name}-300dpi.jpg", sf.stamp_seal(rgb, centre=centre, dpi=300, seed=seed), 300, quality=85)
        else:
            path = sf.save_png(out / f"{name}-300dpi.png", sf.flatten_paper(img), 300)
        sf.write_ground_truth(path, truth)
        written.append(path)
    return written


def make(out: Path) -> list[Path]:
    """Write each page as a scanner would (PNG gray, G4 TIFF bitonal, JPEG colour) with a .gt.txt."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for seed, (dpi, mode, skew, turns) in enumerate(PAGES):
        doc = DOCS[seed % len(DOCS)]
        # A full page, as most dossier pages are: the document, then more paragraphs to the margin.
        body = sf.DOCUMENTS[doc] + sf.VIETNAMESE_PARAGRAPHS[seed:] + sf.VIETNAMESE_PARAGRAPHS[:seed]
        clean, truth = sf.render_page(text_lines_or_paragraphs=body, dpi=dpi, font=("serif", "sans")[seed % 2], font_pt=12, seed=500 + seed)
        img = sf.scan_effects(clean, dpi=dpi, skew_deg=skew, rotate90=turns, noise=2.0, seed=500 + seed)
        name = f"{seed:02d}-{doc}-{dpi}dpi-{mode}-skew{skew:+.1f}-turn{turns * 90}"
        if mode == "gray-png":
            path = sf.save_png(out / f"{name}.png", sf.flatten_paper(img), dpi)
        elif mode == "bitonal-g4":
            path = sf.save_tiff(out / f"{name}.tif", [sf.to_bitonal(img)], dpi, compression="group4")
        elif mode == "colour-jpeg":
            path = sf.save_jpeg(out / f"{name}.jpg", img, dpi, quality=85, colour=True, seed=seed)
        else:
            path = sf.save_tiff(out / f"{name}.tif", [img], dpi, compression="tiff_adobe_deflate", colour=True, seed=seed)
        sf.write_ground_truth(path, truth)
        written.append(path)
    return written + make_extra(out)


if __name__ == "__main__":
    for path in make(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("bench/results/pages")):
        print(path)
