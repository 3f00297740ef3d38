"""Benchmark `digitize process` against OCRmyPDF on real scanner PDFs, file by file.

For each corpus scanner PDF: output bytes (and their ratio to the input's), wall time, PDF/A
verdict, and whether the scan's 1-bit images stayed 1-bit. OCRmyPDF runs with `--output-type pdfa`
(PDF/A-2b; `pdfa-1` with --pdfa 1b), and `--redo-ocr` where the input already has text.
With --pdfa 1b both outputs go through PDFBox Preflight; with 2b through pikepdf.pdfa.
Usage: bench_scanner_pdfs.py [--corpus DIR] [--pdfa 2b|1b] [--jobs 2] [--no-ocrmypdf] [--only NAME]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pikepdf
import pikepdf.pdfa

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.measure import run_all  # noqa: E402
from pipeline.pdfsource import survey  # noqa: E402

BIN = Path(sys.executable).parent
DEFAULT_CORPUS = REPO_ROOT.parent / "shared" / "corpus"
PREFLIGHT_JARS = [
    "/usr/share/java/preflight.jar", "/usr/share/java/pdfbox2.jar", "/usr/share/java/fontbox2.jar",
    "/usr/share/java/xmpbox.jar", "/usr/share/java/commons-logging.jar",
    "/usr/share/java/javax.activation.jar", "/usr/share/java/jaxb-api.jar",
]  # fmt: skip
# Images at least this wide are a page's scan, not a logo or a 1-pixel placeholder.
SCAN_WIDTH = 1000


@dataclass
class Result:
    seconds: float
    bytes: int | None
    pdfa: str
    one_bit: str


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--pdfa", choices=("2b", "1b"), default="2b")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--no-ocrmypdf", action="store_true")
    parser.add_argument("--only", action="append", default=[], help="a file name to run alone (repeatable)")
    parser.add_argument("--keep", action="store_true", help="keep the outputs for inspection")
    args = parser.parse_args()

    inputs = sorted((args.corpus / "scanner_pdfs").glob("*.pdf")) + sorted((args.corpus / "forms_tables").glob("*jbig2*.pdf"))
    if args.only:
        inputs = [p for p in inputs if p.name in args.only]
    if not inputs:
        print(f"no scanner PDFs under {args.corpus}")
        return 1
    have_ocrmypdf = not args.no_ocrmypdf and (BIN / "ocrmypdf").exists() and shutil.which("gs")
    if not have_ocrmypdf and not args.no_ocrmypdf:
        print("OCRmyPDF or Ghostscript missing (`make bench` installs them): reporting ours only.\n")
    work = Path(tempfile.mkdtemp(prefix="digitize-bench-scanner-"))
    rows = []
    for source in inputs:
        ours = _ours(source, work / "digitize" / source.stem, pdfa=args.pdfa, jobs=args.jobs)
        theirs = _ocrmypdf(source, work / "ocrmypdf", pdfa=args.pdfa, jobs=args.jobs) if have_ocrmypdf else None
        rows.append((source, ours, theirs))
        _print_row(source, ours, theirs)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"\noutputs kept in {work}")
    return 0


def _ours(source: Path, out: Path, *, pdfa: str, jobs: int) -> Result:
    run = run_all([[str(BIN / "digitize"), "process", str(source), "--out", str(out), "--pdfa", pdfa,
                    "--jobs", str(jobs)]], jobs=1)  # fmt: skip
    pdfs = [p for p in out.rglob("*.pdf") if not p.name.endswith(".original.pdf")]
    if run.returncode or not pdfs:
        rejected = (out / "report.json").read_text("utf-8") if (out / "report.json").exists() else ""
        reason = "rejected" if '"rejected"' in rejected else "failed"
        return Result(run.seconds, None, reason, "-")
    return Result(run.seconds, sum(p.stat().st_size for p in pdfs), _pdfa_verdict(pdfs, pdfa), _one_bit(source, pdfs))


def _ocrmypdf(source: Path, out_dir: Path, *, pdfa: str, jobs: int) -> Result:
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / source.name
    # A signed input is refused unless told that its signature may go; ours keeps the original beside the record.
    argv = [str(BIN / "ocrmypdf"), "-q", "-j", str(jobs), "-l", "vie+eng", "--invalidate-digital-signatures",
            "--output-type", "pdfa-1" if pdfa == "1b" else "pdfa"]  # fmt: skip
    modes = ["--redo-ocr", "--force-ocr"] if _has_text(source) else [None]
    for mode in modes:
        run = run_all([[*argv, *([mode] if mode else []), str(source), str(out)]], jobs=1, env={"OMP_THREAD_LIMIT": "1"})
        if not run.returncode and out.exists():
            # OCRmyPDF refuses --redo-ocr with Debian 12's Ghostscript 10.0.0; --force-ocr is what it offers instead.
            verdict = _pdfa_verdict([out], pdfa) + (f" ({mode})" if mode else "")
            return Result(run.seconds, out.stat().st_size, verdict, _one_bit(source, [out]))
    return Result(run.seconds, None, "failed", "-")


def _has_text(source: Path) -> bool:
    try:
        with pikepdf.open(source) as pdf:
            return any(survey(page).text_layer for page in pdf.pages)
    except pikepdf.PdfError:
        return False


def _pdfa_verdict(pdfs: list[Path], pdfa: str) -> str:
    for pdf in pdfs:
        if pdfa == "1b":
            proc = subprocess.run(
                ["java", "-cp", ":".join(PREFLIGHT_JARS), "org.apache.pdfbox.preflight.Validator_A1b", str(pdf)],
                capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            if "is a valid PDF/A-1b file" not in proc.stdout:
                return "Preflight FAIL"
        elif not pikepdf.pdfa.validate_written(pdf, "2b").passed:
            return "pikepdf.pdfa FAIL"
    return "Preflight pass" if pdfa == "1b" else "pikepdf.pdfa pass"


def _scan_bits(pdf_path: Path) -> set[int]:
    with pikepdf.open(pdf_path) as pdf:
        return {
            int(obj.get("/BitsPerComponent", 1))
            for obj in pdf.objects
            if isinstance(obj, pikepdf.Stream) and obj.get("/Subtype") == pikepdf.Name.Image
            and not obj.get("/ImageMask", False) and int(obj.get("/Width", 0)) >= SCAN_WIDTH
        }  # fmt: skip


def _one_bit(source: Path, outputs: list[Path]) -> str:
    """For an all-bitonal source: whether the output's scans are still 1-bit."""
    if _scan_bits(source) != {1}:
        return "n/a"
    bits = set().union(*(_scan_bits(p) for p in outputs))
    return "yes" if bits == {1} else f"no ({sorted(bits)} bits)"


def _print_row(source: Path, ours: Result, theirs: Result | None) -> None:
    size = source.stat().st_size
    ratio = f"{ours.bytes / size:.2f}x" if ours.bytes else "-"
    print(f"{source.name}  input {size} B")
    print(f"  digitize  {ours.bytes or '-':>9} B  {ratio:>6} of input  {ours.seconds:6.1f} s  {ours.pdfa:18}  1-bit kept: {ours.one_bit}")
    if theirs is not None:
        theirs_ratio = f"{theirs.bytes / size:.2f}x" if theirs.bytes else "-"
        print(f"  ocrmypdf  {theirs.bytes or '-':>9} B  {theirs_ratio:>6} of input  {theirs.seconds:6.1f} s  {theirs.pdfa:18}  1-bit kept: {theirs.one_bit}")


if __name__ == "__main__":
    sys.exit(main())
