"""Peak memory of `digitize process` on a 200-page record, against a 20-page one and plain Tesseract.

Pages must stream: the peak for 200 pages should match the peak for 20, and stay under 1 GB.
Usage: bench_memory.py [--pages 200] [--jobs 2]
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
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
