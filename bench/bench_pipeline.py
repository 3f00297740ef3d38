"""Benchmark `digitize process` against plain Tesseract and OCRmyPDF on the same pages, same parallelism.

Prints wall-time ratios, output-size ratios, peak memory and word accuracy (where a
.gt.txt sits beside a page). Usage: bench_pipeline.py [--pages DIR] [--jobs 2] [--no-ocrmypdf]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench import pageset  # noqa: E402
from bench.measure import pdf_text, run_all, word_accuracy  # noqa: E402

BIN = Path(sys.executable).parent
PAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=Path, help="folder of page images (default: generate the standard set)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--no-ocrmypdf", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the outputs for inspection")
    parser.add_argument("--results", type=Path, default=REPO_ROOT / "bench" / "results")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="digitize-bench-"))
    pages_dir = args.pages
    if pages_dir is None:
        pages_dir = work / "pages"
        pageset.make(pages_dir)
    pages = sorted(p for p in Path(pages_dir).iterdir() if p.suffix.lower() in PAGE_SUFFIXES)
    print(f"{len(pages)} pages from {pages_dir}, {args.jobs} at a time\n")
    truth = {p: p.parent / f"{p.stem}.gt.txt" for p in pages}
    truth = {p: t.read_text("utf-8") for p, t in truth.items() if t.exists()}

    ours_dir, tess_dir, omp_dir = (work / name for name in ("digitize", "tesseract", "ocrmypdf"))
    for folder in (ours_dir, tess_dir, omp_dir):
        folder.mkdir()
    runs = {}
    runs["tesseract"] = run_all(
        [["tesseract", str(p), str(tess_dir / p.stem), "-l", "vie+eng", "txt"] for p in pages],
        jobs=args.jobs, env={"OMP_THREAD_LIMIT": "1"},
    )  # fmt: skip
    runs["digitize"] = run_all(
        [[str(BIN / "digitize"), "process", *map(str, pages), "--out", str(ours_dir), "--jobs", str(args.jobs)]], jobs=1
    )
    have_ocrmypdf = not args.no_ocrmypdf and shutil.which(str(BIN / "ocrmypdf")) and shutil.which("gs")
    if have_ocrmypdf:
        runs["ocrmypdf"] = run_all(
            [
                [str(BIN / "ocrmypdf"), "-q", "-j", "1", "-l", "vie+eng", "--rotate-pages", "--deskew",
                 "--output-type", "pdfa", str(p), str(omp_dir / f"{p.stem}.pdf")]
                for p in pages
            ],
            jobs=args.jobs, env={"OMP_THREAD_LIMIT": "1"},
        )  # fmt: skip
    elif not args.no_ocrmypdf:
        print("OCRmyPDF or Ghostscript missing: `make bench` installs them. Comparing with Tesseract only.\n")

    report = json.loads((ours_dir / "report.json").read_text("utf-8"))
    ours_pdf = {Path(d["input"]).name: ours_dir / d["pdf"] for d in report["documents"]}
    texts = {
        "digitize": {p: pdf_text(ours_pdf[p.name]) for p in pages},
        "tesseract": {p: _read(tess_dir / f"{p.stem}.txt") for p in pages},
    }
    if have_ocrmypdf:
        texts["ocrmypdf"] = {p: pdf_text(omp_dir / f"{p.stem}.pdf") for p in pages}
    input_bytes = sum(p.stat().st_size for p in pages)
    sizes = {
        "digitize": sum(pdf.stat().st_size for pdf in ours_pdf.values()),
        "ocrmypdf": _bytes(omp_dir, ".pdf") if have_ocrmypdf else None,
    }

    print(f"{'tool':<10} {'wall s':>8} {'s/page':>7} {'peak MB':>8} {'out MB':>7} {'acc mean':>9} {'acc min':>8}")
    results = {"pages": len(pages), "jobs": args.jobs, "input_bytes": input_bytes, "tools": {}}
    for tool, run in runs.items():
        scores = [word_accuracy(truth[p], texts[tool][p]) for p in truth]
        mean = sum(scores) / len(scores) if scores else float("nan")
        low = min(scores) if scores else float("nan")
        size = sizes.get(tool)
        print(
            f"{tool:<10} {run.seconds:8.1f} {run.seconds / len(pages):7.2f} {run.peak_rss_mb:8.0f} "
            f"{(size or 0) / 1e6:7.2f} {mean:9.4f} {low:8.4f}"
        )
        results["tools"][tool] = {
            "seconds": round(run.seconds, 2), "peak_rss_mb": round(run.peak_rss_mb), "output_bytes": size,
            "accuracy_mean": round(mean, 4), "accuracy_min": round(low, 4), "failures": run.returncode,
            "accuracy_per_page": {p.name: round(word_accuracy(truth[p], texts[tool][p]), 4) for p in truth},
        }  # fmt: skip
    ours = runs["digitize"].seconds
    print(f"\ninput: {input_bytes / 1e6:.2f} MB in {len(pages)} pages")
    print(f"wall time   digitize / tesseract = {ours / runs['tesseract'].seconds:.3f}   (target <= 1.3)")
    if have_ocrmypdf:
        print(f"wall time   digitize / ocrmypdf  = {ours / runs['ocrmypdf'].seconds:.3f}   (target <= 0.25)")
        print(f"output size digitize / ocrmypdf  = {sizes['digitize'] / sizes['ocrmypdf']:.3f}   (target <= 0.5)")
    low_pages = {
        tool: [f"{p.name} {word_accuracy(truth[p], texts[tool][p]):.3f}" for p in truth if word_accuracy(truth[p], texts[tool][p]) < 0.9]
        for tool in runs
    }
    for tool, lows in low_pages.items():
        if lows:
            print(f"pages below 0.90 word accuracy with {tool}: {', '.join(lows)}")
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "bench_pipeline.json").write_text(json.dumps(results, indent=2))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"outputs kept in {work}")
    return 0


def _read(path: Path) -> str:
    return path.read_text("utf-8") if path.exists() else ""


def _bytes(folder: Path, suffix: str) -> int:
    return sum(p.stat().st_size for p in folder.glob(f"*{suffix}"))


if __name__ == "__main__":
    sys.exit(main())
