"""Peak memory of `digitize process` on a 200-page record, against a 20-page one and plain Tesseract.

Pages must stream: the peak for 200 pages should match the peak for 20, and stay under 1 GB.
--a0 instead measures one A0 drawing at 300 dpi (about 9,900 x 14,000 px), in gray and in colour,
against plain Tesseract reading the same sheet: targets < 1 GB gray, < 2 GB colour.
Usage: bench_memory.py [--pages 200] [--jobs 2] | bench_memory.py --a0
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.measure import run_all  # noqa: E402
from tests import scanfactory as sf  # noqa: E402

BIN = Path(sys.executable).parent
DPI = 300
UNIQUE_PAGES = 6  # rendered once each, then repeated: memory does not care what the words say


def scanner_pdf(path: Path, pages: int) -> Path:
    """A thick record as a scanner writes it: one 300 dpi JPEG per A4 page."""
    encoded = []
    for seed, doc in enumerate(list(sf.DOCUMENTS)[:UNIQUE_PAGES]):
        body = sf.DOCUMENTS[doc] + sf.VIETNAMESE_PARAGRAPHS
        clean, _ = sf.render_page(text_lines_or_paragraphs=body, dpi=DPI, seed=900 + seed)
        img = sf.scan_effects(clean, dpi=DPI, skew_deg=(-1) ** seed * (1 + seed), rotate90=2 * (seed % 2), noise=2.0, seed=seed)
        encoded.append(sf.encode_jpeg(img, DPI, quality=80))
    return sf.save_pdf(path, [encoded[i % len(encoded)] for i in range(pages)], DPI)


A0_PX = (14043, 9933)  # landscape, 300 dpi


def a0_sheets(work: Path) -> dict[str, Path]:
    """An A0 drawing at 300 dpi, gray and colour: A3 drawings tiled into one sheet."""
    import numpy as np
    from PIL import Image

    tiles = [sf.drawing_page(dpi=DPI, paper="A3", seed=seed) for seed in range(3)]
    th, tw = tiles[0].shape
    rows, cols = -(-A0_PX[1] // th), -(-A0_PX[0] // tw)
    sheet = np.vstack([np.hstack([tiles[(r + c) % 3] for c in range(cols)]) for r in range(rows)])[: A0_PX[1], : A0_PX[0]]
    del tiles
    gray = work / "a0-gray.png"
    Image.fromarray(sheet).save(gray, dpi=(DPI, DPI))
    colour = work / "a0-colour.png"
    # Blue line art on cream paper: a colour scan of a print.
    rgb = np.empty((*sheet.shape, 3), np.uint8)
    rgb[..., 0] = np.where(sheet < 128, 30, 245)
    rgb[..., 1] = np.where(sheet < 128, 60, 240)
    rgb[..., 2] = np.where(sheet < 128, 160, 225)
    del sheet
    Image.fromarray(rgb, "RGB").save(colour, dpi=(DPI, DPI))
    return {"gray": gray, "colour": colour}


def a0(work: Path) -> int:
    sheets = a0_sheets(work)
    baseline = run_all([["tesseract", str(sheets["gray"]), str(work / "plain"), "-l", "vie+eng", "--psm", "11", "txt"]],
                       jobs=1, env={"OMP_THREAD_LIMIT": "1"})
    print(f"plain tesseract --psm 11, A0 gray: {baseline.seconds:6.1f} s  peak RSS {baseline.peak_rss_mb:6.0f} MB")
    ok = True
    for kind, limit in (("gray", 1024), ("colour", 2048)):
        out = work / f"out-{kind}"
        run = run_all([[str(BIN / "digitize"), "process", str(sheets[kind]), "--out", str(out), "--jobs", "1"]], jobs=1)
        report = out / "report.json"
        flags = report.read_text("utf-8").count("technical_drawing") if report.exists() else "no report"
        print(f"digitize, A0 {kind:6s}: {run.seconds:6.1f} s  peak RSS {run.peak_rss_mb:6.0f} MB (target < {limit} MB)"
              f"  = {run.peak_rss_mb / baseline.peak_rss_mb:.2f} x plain tesseract  exit {run.returncode}  drawing flags {flags}")
        ok = ok and run.returncode == 0 and run.peak_rss_mb < limit
    shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--a0", action="store_true", help="one A0 drawing at 300 dpi, gray and colour")
    args = parser.parse_args()
    if args.a0:
        return a0(Path(tempfile.mkdtemp(prefix="digitize-membench-a0-")))
    work = Path(tempfile.mkdtemp(prefix="digitize-membench-"))
    small, large = 20, args.pages
    inputs = {n: scanner_pdf(work / f"record-{n}.pdf", n) for n in (small, large)}
    page_image = work / "page.jpg"
    page_image.write_bytes(sf.encode_jpeg(sf.render_page(text_lines_or_paragraphs=sf.VIETNAMESE_PARAGRAPHS, dpi=DPI)[0], DPI))

    baseline = run_all([["tesseract", str(page_image), str(work / "page"), "-l", "vie+eng", "txt"]] * args.jobs,
                       jobs=args.jobs, env={"OMP_THREAD_LIMIT": "1"})
    runs = {}
    for n, pdf in inputs.items():
        out = work / f"out-{n}"
        runs[n] = run_all([[str(BIN / "digitize"), "process", str(pdf), "--out", str(out), "--jobs", str(args.jobs)]], jobs=1)
        print(f"digitize, {n:4d} pages: {runs[n].seconds:7.1f} s  {runs[n].seconds / n:5.2f} s/page  peak RSS {runs[n].peak_rss_mb:6.0f} MB (whole process tree)")
    print(f"plain tesseract, {args.jobs} pages at once: peak RSS {baseline.peak_rss_mb:6.0f} MB")
    print(f"\npeak {large} pages / peak {small} pages = {runs[large].peak_rss_mb / runs[small].peak_rss_mb:.2f}   (flat: ~1.0)")
    print(f"peak {large} pages = {runs[large].peak_rss_mb:.0f} MB   (target < 1024 MB)")
    print(f"peak {large} pages / plain tesseract = {runs[large].peak_rss_mb / baseline.peak_rss_mb:.2f}")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if runs[large].peak_rss_mb < 1024 else 1


if __name__ == "__main__":
    sys.exit(main())
