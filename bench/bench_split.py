"""Benchmark splitting and triage: split accuracy, flag precision/recall, drawing and blank detection.

Usage: bench_split.py [--batches DIR] [--corpus-drawings DIR] [--text-pages 100] [--jobs 2]

--batches takes a folder written by tests/make_batches.py (with truth.json); by default
one is generated. --corpus-drawings adds real raster drawings (e.g. ../shared/corpus/drawings)
to the drawing set, each also turned a quarter; they are benchmark material, never fixtures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests import make_batches  # noqa: E402
from tests import scanfactory as sf  # noqa: E402

BIN = Path(sys.executable).parent


def digitize(inputs: list[Path], out: Path, jobs: int, *extra: str) -> dict:
    subprocess.run(
        [str(BIN / "digitize"), "process", *map(str, inputs), "--out", str(out), "--jobs", str(jobs), *extra],
        check=False, capture_output=True,
    )  # fmt: skip
    return json.loads((out / "report.json").read_text("utf-8"))


def split_accuracy(batches: Path, work: Path, jobs: int) -> None:
    truth = make_batches.load_truth(batches)
    hints = work / "hints.json"
    hints.write_text(json.dumps({t.file: t.hints for t in truth.values() if t.hints}))
    report = digitize([batches / t.file for t in truth.values()], work / "split", jobs, "--hints", str(hints))
    right = total = 0
    flags_expected: Counter = Counter()
    flags_found: Counter = Counter()
    flags_right: Counter = Counter()
    for batch in truth.values():
        got = {(d["code"], tuple(d["source_pages"])): set(d["flags"]) for d in report["documents"] if Path(d["input"]).name == batch.file}
        for doc in batch.documents:
            total += 1
            key = (doc.code, tuple(doc.source_pages))
            right += key in got
            flags_expected.update(doc.flags)
            flags_right.update(set(doc.flags) & got.get(key, set()))
        for flags in got.values():
            flags_found.update(flags)
    print(f"split: {right}/{total} dossiers cut at exactly the right pages with the right code ({right / total:.1%})")
    print(f"{'flag':<22} {'expected':>8} {'raised':>7} {'precision':>10} {'recall':>7}")
    for flag in sorted(set(flags_expected) | set(flags_found)):
        precision = flags_right[flag] / flags_found[flag] if flags_found[flag] else float("nan")
        recall = flags_right[flag] / flags_expected[flag] if flags_expected[flag] else float("nan")
        print(f"{flag:<22} {flags_expected[flag]:8d} {flags_found[flag]:7d} {precision:10.2f} {recall:7.2f}")


def page_set(folder: Path, *, text_pages: int, corpus: Path | None) -> dict[str, str]:
    """Single-page inputs of known kind: text (incl. forms and receipts), drawing, blank."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    kinds: dict[str, str] = {}
    docs = [d for d in sf.DOCUMENTS if d != "giay-tiep-nhan"]

    def save(name: str, img: np.ndarray, dpi: int, kind: str, bitonal: bool) -> None:
        path = folder / name
        if bitonal:
            sf.save_tiff(path.with_suffix(".tif"), [sf.to_bitonal(img)], dpi, compression="group4")
            path = path.with_suffix(".tif")
        else:
            sf.save_jpeg(path.with_suffix(".jpg"), img, dpi, quality=80)
            path = path.with_suffix(".jpg")
        kinds[path.name] = kind

    for i in range(text_pages):
        dpi = int(rng.choice([200, 300, 400]))
        if i % 10 == 0:
            clean, _ = sf.table_form_page(dpi=dpi, seed=i)
        elif i % 10 == 1:
            clean, _ = sf.receipt_page(code=make_batches.dossier_codes(1, seed=i)[0], dpi=dpi, seed=i,
                                       symbology=("qr", "code128")[i % 2])
        else:
            doc = docs[i % len(docs)]
            body = sf.DOCUMENTS[doc] + sf.VIETNAMESE_PARAGRAPHS[: int(rng.integers(0, 6))]
            clean, _ = sf.render_page(text_lines_or_paragraphs=body, dpi=dpi, seed=i, font=("serif", "sans")[i % 2])
        img = sf.scan_effects(clean, dpi=dpi, skew_deg=float(rng.uniform(-3, 3)), noise=2.0, seed=i)
        save(f"text-{i:03d}", img, dpi, "text", bitonal=bool(i % 3 == 0))
    for i in range(24):
        dpi = int(rng.choice([200, 300]))
        clean = sf.drawing_page(dpi=dpi, paper=("A4", "A3")[i % 2], seed=i)
        img = sf.scan_effects(clean, dpi=dpi, skew_deg=float(rng.uniform(-3, 3)), rotate90=i % 4, noise=2.0, seed=i)
        save(f"drawing-{i:03d}", img, dpi, "drawing", bitonal=bool(i % 3 == 0))
    for path in sorted(corpus.glob("*.jpg")) if corpus else []:
        with Image.open(path) as img:
            for turn in (0, 1):
                target = folder / f"corpus-{path.stem}-turn{turn * 90}.png"
                (img.rotate(90 * turn, expand=True) if turn else img).save(target, dpi=img.info.get("dpi", (300, 300)))
                kinds[target.name] = "drawing"
    for i in range(50):
        dpi = int(rng.choice([200, 300, 400]))
        img = sf.blank_page(dpi=dpi, seed=i, bleed_through=bool(i % 2), punch_holes=bool(i % 3 == 0))
        save(f"blank-{i:03d}", img, dpi, "blank", bitonal=bool(i % 4 == 0))
    return kinds


def classification(work: Path, jobs: int, text_pages: int, corpus: Path | None) -> None:
    pages = work / "pages"
    kinds = page_set(pages, text_pages=text_pages, corpus=corpus)
    report = digitize([pages / name for name in kinds], work / "classify", jobs)
    blank_by_input: dict[str, bool] = {}
    flags_by_input: dict[str, list[str]] = {}
    for doc in report["documents"]:
        name = Path(doc["input"]).name
        manifest = json.loads((work / "classify" / doc["manifest"]).read_text("utf-8"))
        blank_by_input[name] = all(p["blank"] for p in manifest["pages"])
        flags_by_input[name] = doc["flags"]
    by_kind: dict[str, list[str]] = {}
    for name, kind in kinds.items():
        by_kind.setdefault(kind, []).append(name)
    drawings, texts, blanks = by_kind["drawing"], by_kind["text"], by_kind["blank"]
    flagged = [n for n in drawings if "technical_drawing" in flags_by_input.get(n, [])]
    false = [n for n in texts if "technical_drawing" in flags_by_input.get(n, [])]
    found_blank = [n for n in blanks if blank_by_input.get(n)]
    dropped = [n for n in texts + drawings if blank_by_input.get(n)]
    corpus_flagged = [n for n in flagged if n.startswith("corpus-")]
    corpus_total = [n for n in drawings if n.startswith("corpus-")]
    print(f"technical drawings flagged: {len(flagged)}/{len(drawings)} ({len(flagged) / len(drawings):.1%}; target >= 95%)"
          f"  of which corpus raster drawings: {len(corpus_flagged)}/{len(corpus_total)}")
    print(f"text pages falsely flagged as drawings: {len(false)}/{len(texts)} ({len(false) / len(texts):.1%}; target <= 1%) {false}")
    print(f"blank pages detected: {len(found_blank)}/{len(blanks)} ({len(found_blank) / len(blanks):.1%}; target >= 98%)")
    print(f"text or drawing pages taken for blank (would be dropped): {len(dropped)} (target 0) {dropped}")
    if report["rejected"]:
        print(f"rejected: {report['rejected']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=Path)
    parser.add_argument("--corpus-drawings", type=Path)
    parser.add_argument("--text-pages", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="digitize-splitbench-"))
    batches = args.batches
    if batches is None:
        batches = work / "batches"
        make_batches.make(batches)
    split_accuracy(batches, work, args.jobs)
    print()
    classification(work, args.jobs, args.text_pages, args.corpus_drawings)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
