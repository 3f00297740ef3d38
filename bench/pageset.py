"""Generate the benchmark page set: skewed and turned Vietnamese pages, 200-400 dpi, gray, bitonal, colour."""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

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
    return written


if __name__ == "__main__":
    for path in make(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("bench/results/pages")):
        print(path)
