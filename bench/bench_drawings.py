"""Drawing detection on real material: per file, pages flagged `technical_drawing`, with the evidence.

Usage: bench_drawings.py [--drawings DIR ...] [--not-drawings DIR ...] [--jobs 2]

Every page of every file under --drawings should be flagged; no page under --not-drawings
(text pages, forms, tables, receipts) may be. Defaults: ../shared/corpus/drawings against the
corpus's forms_tables, vietnamese, ocr_ground_truth, skew_rotation and the repo's sample_scans,
whose only drawing (ban-ve-*) is counted as one. Runs the real `digitize process`; benchmark
material, never fixtures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CORPUS = REPO_ROOT.parent / "shared" / "corpus"
BIN = Path(sys.executable).parent
SCANS = (".pdf", ".jpg", ".jpeg", ".png", ".tif", ".tiff")
# Files of the must-not-flag folders that are drawings all the same.
KNOWN_DRAWINGS = ("ban-ve-",)


def scans(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in SCANS)


def run(files: list[Path], out: Path, jobs: int) -> dict[str, list[dict]]:
    """Per input file, its page records in page order."""
    proc = subprocess.run(
        [str(BIN / "digitize"), "process", *map(str, files), "--out", str(out), "--jobs", str(jobs)],
        capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode not in (0, 65):  # 65: some input refused, reported below
        sys.exit(f"digitize process failed ({proc.returncode}): {proc.stderr[-2000:]}")
    report = json.loads((out / "report.json").read_text("utf-8"))
    pages: dict[str, list[dict]] = {}
    for doc in report["documents"]:
        manifest = json.loads((out / doc["manifest"]).read_text("utf-8"))
        pages.setdefault(Path(doc["input"]).name, []).extend(manifest["pages"])
    for rejected in report.get("rejected", []):
        print(f"  refused: {rejected}")
    return {name: sorted(records, key=lambda p: p["source_frame"]) for name, records in pages.items()}


def evidence(page: dict) -> str:
    ev = page.get("drawing") or {}
    keys = ("curve_spread", "short_rules", "line_share", "inner_rules")
    found = " ".join(f"{k}={ev[k]}" for k in keys if ev.get(k) is not None)
    block = " title-block" if ev.get("title_block") else ""
    return found + block


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drawings", type=Path, nargs="*", default=[CORPUS / "drawings"])
    parser.add_argument("--not-drawings", type=Path, nargs="*", default=[
        CORPUS / "forms_tables", CORPUS / "vietnamese", CORPUS / "ocr_ground_truth", CORPUS / "skew_rotation",
        REPO_ROOT / "sample_scans",
    ])  # fmt: skip
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    expected: dict[str, bool] = {}
    files: list[Path] = []
    for folder, drawing in [(f, True) for f in args.drawings] + [(f, False) for f in args.not_drawings]:
        for path in scans(folder):
            files.append(path)
            expected[path.name] = drawing or path.name.startswith(KNOWN_DRAWINGS)
    with tempfile.TemporaryDirectory(prefix="digitize-drawbench-") as work:
        pages = run(files, Path(work) / "out", args.jobs)
    hits = misses = false = true_negative = 0
    print(f"{'file':<52} {'kind':<8} {'flagged':>8}  evidence (per page)")
    for name, drawing in expected.items():
        records = pages.get(name, [])
        flagged = [p for p in records if "technical_drawing" in p["flags"]]
        content = [p for p in records if not p["blank"]]
        if drawing:
            hits += len(flagged)
            misses += len(content) - len(flagged)
        else:
            false += len(flagged)
            true_negative += len(content) - len(flagged)
        mark = "ok" if (len(flagged) == len(content)) == drawing or (not drawing and not flagged) else "WRONG"
        print(f"{name[:52]:<52} {'drawing' if drawing else 'other':<8} {len(flagged):>3}/{len(content):<4} {mark:<5}"
              f" {' | '.join(evidence(p) for p in content[:3])}")
    print(f"\ndrawing pages flagged: {hits}/{hits + misses} ({hits / max(1, hits + misses):.0%}; target >= 90%)")
    print(f"other pages flagged: {false}/{false + true_negative} (target 0)")
    return 0 if false == 0 and hits >= 0.9 * (hits + misses) else 1


if __name__ == "__main__":
    sys.exit(main())
