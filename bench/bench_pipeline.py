"""Benchmark `digitize process` against plain Tesseract and OCRmyPDF on the same pages, same parallelism.

Prints wall-time ratios, output-size ratios, peak memory and word accuracy (where a
.gt.txt sits beside a page) per page class. The floor is plain Tesseract on the same pages
turned upright: the OCR the pipeline cannot avoid. `--corpus DIR` adds real pages with a
transcript (NAME.txt or NAME.gold.txt beside NAME.tif), e.g. ../shared/corpus/ocr_ground_truth.
Usage: bench_pipeline.py [--pages DIR] [--corpus DIR] [--jobs 2] [--no-ocrmypdf]
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

from PIL import Image  # noqa: E402

from bench import pageset  # noqa: E402
from bench.measure import pdf_text, run_all  # noqa: E402
from bench.measure import word_accuracy as _word_accuracy  # noqa: E402

BIN = Path(sys.executable).parent
PAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=Path, help="folder of page images (default: generate the standard set)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--no-ocrmypdf", action="store_true")
    parser.add_argument("--corpus", type=Path, help="real pages with transcripts to add")
    parser.add_argument("--keep", action="store_true", help="keep the outputs for inspection")
    parser.add_argument("--results", type=Path, default=REPO_ROOT / "bench" / "results")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="digitize-bench-"))
    pages_dir = args.pages
    if pages_dir is None:
        pages_dir = work / "pages"
        pageset.make(pages_dir)
    if args.corpus:
        _add_corpus(args.corpus, Path(pages_dir))
    pages = sorted(p for p in Path(pages_dir).iterdir() if p.suffix.lower() in PAGE_SUFFIXES)
    print(f"{len(pages)} pages from {pages_dir}, {args.jobs} at a time\n")
    truth = {p: p.parent / f"{p.stem}.gt.txt" for p in pages}
    truth = {p: t.read_text("utf-8") for p, t in truth.items() if t.exists()}

    ours_dir, tess_dir, omp_dir, floor_dir, upright_dir = (
        work / name for name in ("digitize", "tesseract", "ocrmypdf", "floor", "upright")
    )
    for folder in (ours_dir, tess_dir, omp_dir, floor_dir, upright_dir):
        folder.mkdir()
    upright = {p: _upright(p, upright_dir) for p in pages}
    runs = {}
    runs["tesseract"] = run_all(
        [["tesseract", str(p), str(tess_dir / p.stem), "-l", "vie+eng", "txt"] for p in pages],
        jobs=args.jobs, env={"OMP_THREAD_LIMIT": "1"},
    )  # fmt: skip
    runs["floor"] = run_all(
        [["tesseract", str(upright[p]), str(floor_dir / p.stem), "-l", "vie+eng", "txt"] for p in pages],
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
        "floor": {p: _read(floor_dir / f"{p.stem}.txt") for p in pages},
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
    _per_class(pages, truth, texts)
    _stage_costs(ours_dir, report)
    print(f"\ninput: {input_bytes / 1e6:.2f} MB in {len(pages)} pages")
    print(f"wall time   digitize / tesseract = {ours / runs['tesseract'].seconds:.3f}   (raw pages)")
    print(f"wall time   digitize / floor     = {ours / runs['floor'].seconds:.3f}   (upright pages; target <= 1.15)")
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


def word_accuracy(truth: str, found: str) -> float:
    """pdftotext joins a word broken at a line's end, Tesseract's text does not: join both sides."""
    return _word_accuracy(truth, found, joined=True)


def _add_corpus(corpus: Path, pages_dir: Path) -> None:
    """Copy each real page that has a transcript, with it as its .gt.txt."""
    for image in sorted(corpus.glob("*.tif")):
        transcript = next((t for t in (image.with_suffix(".txt"), image.with_suffix(".gold.txt")) if t.exists()), None)
        if transcript is not None:
            shutil.copyfile(image, pages_dir / image.name)
            shutil.copyfile(transcript, pages_dir / f"{image.stem}.gt.txt")


def _upright(page: Path, folder: Path) -> Path:
    """The page turned upright and levelled by the turn and skew it was given, as the floor's Tesseract reads it."""
    turns, skew = pageset.quarter_turns(page.name), pageset.skew(page.name)
    if not turns and not skew:
        return page
    with Image.open(page) as image:
        dpi = image.info.get("dpi", (300, 300))
        bitonal = image.mode == "1"
        turned = image.convert("L" if bitonal else image.mode).rotate(-90 * turns, expand=True)
        if skew:
            turned = turned.rotate(-skew, resample=Image.BICUBIC, fillcolor="white" if turned.mode == "RGB" else 255)
        if bitonal:
            turned = turned.point(lambda v: 255 if v > 127 else 0).convert("1")
        out = folder / f"{page.stem}.{'tif' if bitonal else 'png'}"
        turned.save(out, dpi=dpi, **({"compression": "group4"} if bitonal else {}))
    return out


def _per_class(pages: list[Path], truth: dict[Path, str], texts: dict[str, dict[Path, str]]) -> None:
    classes = sorted({pageset.page_class(p.name) for p in truth})
    print(f"\nword accuracy per page class (mean / min):\n{'class':<10} {'pages':>5} " + " ".join(f"{t:>17}" for t in texts))
    for kind in classes:
        members = [p for p in truth if pageset.page_class(p.name) == kind]
        cells = []
        for tool in texts:
            scores = [word_accuracy(truth[p], texts[tool][p]) for p in members]
            cells.append(f"{sum(scores) / len(scores):8.4f} {min(scores):8.4f}")
        print(f"{kind:<10} {len(members):>5} " + " ".join(cells))
    corpus = [p for p in truth if pageset.page_class(p.name) == "corpus"]
    for p in corpus:
        print(f"  {p.name}: " + ", ".join(f"{tool} {word_accuracy(truth[p], texts[tool][p]):.4f}" for tool in texts))


def _stage_costs(ours_dir: Path, report: dict) -> None:
    """Every stage's seconds summed over the pages, against the OCR stage (target: the rest <= 15% of OCR)."""
    totals: dict[str, float] = {}
    for doc in report["documents"]:
        manifest = json.loads((ours_dir / doc["manifest"]).read_text("utf-8"))
        for stage, seconds in manifest["timings_s"].items():  # the pages' stages summed, and the record's
            totals[stage] = totals.get(stage, 0.0) + seconds
    ocr = totals.get("ocr", 0.0) or float("nan")
    rest = sum(v for k, v in totals.items() if k != "ocr")
    print("\nstage seconds (summed over pages): " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(totals.items())))
    print(f"everything but the OCR pass / OCR = {rest / ocr:.3f}   (target <= 0.15)")


def _read(path: Path) -> str:
    return path.read_text("utf-8") if path.exists() else ""


def _bytes(folder: Path, suffix: str) -> int:
    return sum(p.stat().st_size for p in folder.glob(f"*{suffix}"))


if __name__ == "__main__":
    sys.exit(main())
