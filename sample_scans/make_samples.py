"""Regenerate the synthetic sample scans (and their .gt.txt ground truth) in this folder or OUTDIR."""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests import scanfactory as sf  # noqa: E402


def make(outdir: Path) -> list[Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def emit(path: Path, gt: str) -> None:
        written.extend([path, sf.write_ground_truth(path, gt)])

    # 1. Grey PNG, 200 dpi, skewed +3.5 degrees.
    page, gt = sf.render_page(text_lines_or_paragraphs=sf.DOCUMENTS["don-de-nghi"], dpi=200, font="serif",
                              font_pt=13, seed=101)
    img = sf.flatten_paper(sf.scan_effects(page, dpi=200, skew_deg=3.5, noise=2.0, seed=101))
    emit(sf.save_png(outdir / "don-de-nghi-200dpi-skew.png", img, 200), gt)

    # 2. A reception receipt: colour JPEG, 300 dpi, skewed -2 degrees, dossier code as a QR, red seal.
    page, gt = sf.receipt_page(code="000.00.21.H40-261126-0042", dpi=300, code_mm=22.0, seed=102)
    img = sf.scan_effects(page, dpi=300, skew_deg=-2.0, noise=2.0, seed=102)
    emit(sf.save_jpeg(outdir / "giay-tiep-nhan-300dpi-skew.jpg", img, 300, quality=80, colour=True, seed=102), gt)

    # 3. Grey PNG, 300 dpi, fed upside down (180 degrees) with 1 degree of skew.
    page, gt = sf.render_page(text_lines_or_paragraphs=sf.DOCUMENTS["to-khai"], dpi=300, font="serif",
                              font_pt=12.5, seed=103)
    img = sf.flatten_paper(sf.scan_effects(page, dpi=300, skew_deg=1.0, rotate90=2, noise=2.0, seed=103))
    emit(sf.save_png(outdir / "to-khai-upside-down-300dpi.png", img, 300), gt)

    # 4. Bitonal CCITT G4 TIFF, 300 dpi, skewed -1.5 degrees.
    page, gt = sf.render_page(text_lines_or_paragraphs=sf.DOCUMENTS["quyet-dinh"], dpi=300, font="serif",
                              font_pt=13, seed=104)
    img = sf.scan_effects(page, dpi=300, skew_deg=-1.5, noise=1.0, seed=104)
    emit(sf.save_tiff(outdir / "quyet-dinh-bitonal-g4.tif", [sf.to_bitonal(img)], 300, compression="group4"), gt)

    # 5. Grey LZW TIFF, 400 dpi, turned a quarter (90 degrees counter-clockwise) with 0.8 degrees of skew.
    page, gt = sf.render_page(text_lines_or_paragraphs=sf.DOCUMENTS["bien-ban"], dpi=400, font="sans",
                              font_pt=12, seed=105)
    img = sf.flatten_paper(sf.scan_effects(page, dpi=400, skew_deg=0.8, rotate90=1, noise=1.5, seed=105))
    emit(sf.save_tiff(outdir / "bien-ban-400dpi-sideways.tif", [img], 400, compression="tiff_lzw"), gt)

    # 6. A dossier as a scanner PDF at 300 dpi (JPEG pages): its receipt with a Code 128, a text page,
    #    a skewed text page, and a blank back with bleed-through and punch holes.
    p0, gt0 = sf.receipt_page(code="000.00.21.H40-261126-0043", dpi=300, symbology="code128", code_mm=12.0, seed=109)
    p1, gt1 = sf.render_page(text_lines_or_paragraphs=sf.DOCUMENTS["thong-bao"] + sf.ENGLISH_LINES[3:5],
                             dpi=300, font="serif", font_pt=12, seed=106)
    p2, gt2 = sf.render_page(text_lines_or_paragraphs=sf.DOCUMENTS["to-khai"][3:]
                             + [sf.VIETNAMESE_PARAGRAPHS[1]], dpi=300, font="serif", font_pt=12, seed=107)
    pages = [
        sf.scan_effects(p0, dpi=300, skew_deg=0.8, noise=2.0, seed=109),
        sf.scan_effects(p1, dpi=300, skew_deg=0.3, noise=2.0, seed=106),
        sf.scan_effects(p2, dpi=300, skew_deg=-4.0, noise=2.0, dark_border=True, seed=107),
        sf.blank_page(dpi=300, seed=108, bleed_through=True, punch_holes=True),
    ]
    pdf = sf.save_pdf(outdir / "ho-so-scanner.pdf", [sf.encode_jpeg(p, 300, quality=75) for p in pages], 300)
    emit(pdf, "\f".join([gt0, gt1, gt2, ""]))

    # 7. A technical drawing on A3 at 200 dpi: routed to manual handling, not archived blindly.
    drawing = sf.scan_effects(sf.drawing_page(dpi=200, paper="A3", seed=110), dpi=200, skew_deg=1.2, noise=2.0, seed=110)
    path = sf.save_jpeg(outdir / "ban-ve-a3-200dpi.jpg", drawing, 200, quality=80)
    written.append(path)

    return written


def main(argv: list[str]) -> int:
    outdir = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent
    total = 0
    for path in make(outdir):
        size = path.stat().st_size
        total += size
        print(f"{size:>10,}  {path}")
    print(f"{total:>10,}  total")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
