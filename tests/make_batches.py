"""Generate scan batches split into dossiers by separator sheets, each with its expected documents."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402

from tests import scanfactory as sf  # noqa: E402


@dataclass
class ExpectedDocument:
    code: str | None  # None: no code; named after the input
    source_pages: list[int]  # 0-based input pages in the document, receipts included, blanks and SEP sheets not
    flags: list[str]  # sorted


@dataclass
class BatchTruth:
    file: str  # input file or folder name
    kinds: list[str]  # per page: "receipt:<code>", "receipt-unreadable", "sep", "text", "blank", "drawing", ...
    documents: list[ExpectedDocument]
    hints: list[dict] | None = None  # a station's manifest: [{"code", "first_page", "last_page"}] (0-based, inclusive)


_PAGE_FLAGS = {"drawing": ("technical_drawing",), "drawing-a3": ("technical_drawing", "oversized"),
               "receipt-unreadable": ("separator_unreadable",)}
THICK_RECORD_PAGES = 100


def expected_documents(kinds: list[str], hints: list[dict] | None = None) -> list[ExpectedDocument]:
    """The splitting rules, from the page kinds alone.

    A readable receipt starts a dossier with its code (and is its first page); a "sep" sheet starts a
    document without code and belongs to none; an unreadable receipt is an ordinary page that flags its
    document. Pages before the first receipt/sep of an input that has any separator (unreadable
    receipts included) form an "unassigned_pages" document; an input without any is one document.
    Blank pages belong to no document. With hints the manifest's ranges win, and each document whose
    pages differ from what the sheets say gets "split_mismatch".
    """
    def document(code, pages, extra=()):
        flags = set(extra)
        for i in pages:
            flags.update(_PAGE_FLAGS.get(kinds[i], ()))
        if len(pages) > THICK_RECORD_PAGES:
            flags.add("thick_record")
        return ExpectedDocument(code, list(pages), sorted(flags))

    content = [i for i, k in enumerate(kinds) if k != "blank"]
    if not any(k.startswith("receipt") or k == "sep" for k in kinds):
        return [document(None, content)] if content else []
    lead: list[int] = []
    groups: list[tuple[str | None, list[int]]] = []
    for i, kind in enumerate(kinds):
        if kind.startswith("receipt:"):
            groups.append((kind.split(":", 1)[1], [i]))
        elif kind == "sep":
            groups.append((None, []))
        elif kind == "blank":
            continue
        elif groups:
            groups[-1][1].append(i)
        else:
            lead.append(i)
    by_sheets = ([(None, lead, ("unassigned_pages",))] if lead else []) + [(c, p, ()) for c, p in groups if p]
    if hints is None:
        return [document(*g) for g in by_sheets]
    sheet_pages = {c: p for c, p, _ in by_sheets if c is not None}
    docs = []
    for h in hints:
        pages = [i for i in range(h["first_page"], h["last_page"] + 1) if kinds[i] not in ("blank", "sep")]
        docs.append(document(h["code"], pages, ("split_mismatch",) if sheet_pages.get(h["code"]) != pages else ()))
    return docs


def dossier_codes(n: int, *, seed: int = 2025) -> list[str]:
    """Distinct codes shaped like 000.00.21.H40-261126-0042 (unit . district . H + province - yymmdd - number)."""
    rng = np.random.default_rng(seed)
    codes: list[str] = []
    while len(codes) < n:
        unit, district = rng.choice([0, 1, 2, 10]), rng.integers(10, 40)
        province = rng.choice([1, 29, 40, 42, 44])
        yy, mm, dd = rng.choice([25, 26]), rng.integers(1, 13), rng.integers(1, 29)
        code = f"{unit:03d}.00.{district:02d}.H{province:02d}-{yy:02d}{mm:02d}{dd:02d}-{rng.integers(1, 9999):04d}"
        if code not in codes:
            codes.append(code)
    return codes


_TEXT_DOCS = [d for d in sf.DOCUMENTS if d != "giay-tiep-nhan"]  # a receipt's text without its code is not a receipt


def _page(spec: tuple, *, dpi: int, seed: int) -> tuple[np.ndarray, str]:
    """Render one scanned page from its spec; returns the page and its kind."""
    rng = np.random.default_rng(seed)
    kind, opts = spec[0], dict(spec[1:]) if len(spec) > 1 else {}
    skew = float(np.round(rng.uniform(-3, 3), 2))

    def scan(clean, **kw):
        return sf.scan_effects(clean, dpi=dpi, skew_deg=skew, noise=2.0, seed=seed, **kw)

    if kind == "receipt":
        clean, _ = sf.receipt_page(code=opts["code"], dpi=dpi, symbology=opts.get("symbology", "qr"),
                                   code_mm=opts.get("code_mm", 25.0), seed=seed)
        img, label = scan(clean), f"receipt:{opts['code']}"
    elif kind == "unreadable":
        clean, _ = sf.receipt_page(code=None, dpi=dpi, code_mm=opts.get("code_mm", 25.0), seed=seed, readable=False)
        img, label = scan(clean), "receipt-unreadable"
    elif kind == "sep":
        img, label = scan(sf.separator_sheet(dpi=dpi, seed=seed)), "sep"
    elif kind == "text":
        doc = opts.get("doc") or _TEXT_DOCS[seed % len(_TEXT_DOCS)]
        clean, _ = sf.render_page(text_lines_or_paragraphs=sf.DOCUMENTS[doc], dpi=dpi, paper="A4",
                                  font=str(rng.choice(["serif", "sans"])), font_pt=12, seed=seed)
        img, label = scan(clean, bleed_through=bool(opts.get("bleed", False))), "text"
    elif kind == "table":
        clean, _ = sf.table_form_page(dpi=dpi, seed=seed)
        img, label = scan(clean), "table"
    elif kind == "drawing":
        paper = opts.get("paper", "A4")
        clean = sf.drawing_page(dpi=dpi, paper=paper, seed=seed - seed % 3 + opts.get("variant", seed % 3))
        img, label = scan(clean), "drawing-a3" if paper == "A3" else "drawing"
    elif kind == "blank":
        img = sf.blank_page(dpi=dpi, seed=seed, bleed_through=bool(opts.get("bleed", False)),
                            punch_holes=bool(opts.get("punch", False)))
        label = "blank"
    else:
        raise ValueError(kind)
    if opts.get("bitonal"):
        img = sf.to_bitonal(img)
    return img, label


def _receipt(code, symbology="qr", code_mm=25.0):
    return ("receipt", ("code", code), ("symbology", symbology), ("code_mm", code_mm))


def _batches() -> list[dict]:
    c = dossier_codes(13)
    return [
        # Receipts with 25 mm QR codes, a bleed-through blank and a table form (no drawing: no flag).
        dict(name="qr-receipts-300dpi.pdf", fmt="pdf", dpi=300, pages=[
            _receipt(c[0]), ("text", ("doc", "don-de-nghi")), ("blank", ("bleed", True)), _receipt(c[1]),
            ("text", ("doc", "quyet-dinh")), ("table",)]),
        # 20 mm QR codes at 200 dpi, bitonal G4; two pages before the first receipt are unassigned.
        dict(name="small-qr-200dpi-g4.tif", fmt="tiff-g4", dpi=200, pages=[
            ("text", ("doc", "to-khai")), ("text", ("doc", "bien-ban")), _receipt(c[2], code_mm=20.0),
            ("text", ("doc", "thong-bao")), ("blank", ("punch", True)), _receipt(c[3], code_mm=20.0),
            ("text", ("doc", "don-de-nghi"))]),
        # Code 128 receipts, a folder of PNGs; one page bitonal, one mechanical drawing.
        dict(name="code128-receipts", fmt="png-folder", dpi=300, pages=[
            _receipt(c[4], "code128", 12.0), ("drawing", ("variant", 1)), ("text", ("doc", "quyet-dinh")),
            _receipt(c[5], "code128", 14.0), ("text", ("doc", "to-khai"), ("bitonal", True))]),
        # Two drawings, one of them A3, in the first dossier.
        dict(name="drawings-a3-200dpi.pdf", fmt="pdf", dpi=200, pages=[
            _receipt(c[6]), ("text", ("doc", "thong-bao")), ("drawing", ("paper", "A3"), ("variant", 2)),
            ("drawing", ("variant", 0)), _receipt(c[7], code_mm=30.0), ("text", ("doc", "bien-ban"))]),
        # Generic separator sheets only, bitonal G4.
        dict(name="sep-sheets-300dpi-g4.tif", fmt="tiff-g4", dpi=300, pages=[
            ("text", ("doc", "don-de-nghi")), ("sep",), ("text", ("doc", "to-khai")),
            ("text", ("doc", "quyet-dinh")), ("sep",), ("blank", ("bleed", True), ("punch", True)),
            ("text", ("doc", "bien-ban"))]),
        # A receipt whose code cannot be read stays in the current dossier.
        dict(name="unreadable-receipt-200dpi.pdf", fmt="pdf", dpi=200, pages=[
            _receipt(c[8], code_mm=22.0), ("text", ("doc", "to-khai")), ("unreadable", ("code_mm", 22.0)),
            ("text", ("doc", "thong-bao"), ("bleed", True)), _receipt(c[9], code_mm=22.0),
            ("text", ("doc", "quyet-dinh"))]),
        # No separator at all: one document.
        dict(name="no-separator", fmt="png-folder", dpi=200, pages=[
            ("text", ("doc", "bien-ban")), ("text", ("doc", "don-de-nghi"), ("bitonal", True)),
            ("blank", ("bleed", True), ("punch", True)), ("text", ("doc", "thong-bao"))]),
        # A station manifest whose first range is one page too long (it swallows the second receipt).
        dict(name="manifest-hints-300dpi.tif", fmt="tiff-lzw", dpi=300, pages=[
            _receipt(c[10]), ("text", ("doc", "to-khai")), ("text", ("doc", "bien-ban")), _receipt(c[11]),
            ("text", ("doc", "don-de-nghi")), _receipt(c[12]), ("text", ("doc", "thong-bao"))],
            hints=[{"code": c[10], "first_page": 0, "last_page": 3}, {"code": c[11], "first_page": 4, "last_page": 4},
                   {"code": c[12], "first_page": 5, "last_page": 6}]),
    ]


def small_batches(count: int, *, dossiers: int = 2, seed: int = 77) -> list[dict]:
    """`count` one-file batches of `dossiers` two-page dossiers (a QR receipt, then a text page), at 200 dpi:
    cheap to OCR, for tests of the service rather than of the split. Every dossier code is distinct."""
    codes = iter(dossier_codes(count * dossiers, seed=seed))
    texts = ["don-de-nghi", "quyet-dinh", "to-khai", "bien-ban", "thong-bao"]
    return [
        dict(name=f"night-{b + 1}.pdf", fmt="pdf", dpi=200, pages=[
            spec for d in range(dossiers) for spec in (_receipt(next(codes)), ("text", ("doc", texts[(b + d) % len(texts)])))])
        for b in range(count)
    ]  # fmt: skip


def _write(path: Path, fmt: str, pages: list[np.ndarray], dpi: int) -> None:
    if fmt == "pdf":
        sf.save_pdf(path, [sf.encode_jpeg(p, dpi, quality=80) for p in pages], dpi)
    elif fmt == "tiff-g4":
        sf.save_tiff(path, pages, dpi, compression="group4")
    elif fmt == "tiff-lzw":
        sf.save_tiff(path, [sf.flatten_paper(p) for p in pages], dpi, compression="tiff_lzw")
    elif fmt == "png-folder":
        path.mkdir(exist_ok=True)
        for i, p in enumerate(pages):
            sf.save_png(path / f"scan_{i + 1:04d}.png", sf.flatten_paper(p), dpi)
    else:
        raise ValueError(fmt)


def make(out: Path, batches: list[dict] | None = None) -> dict[str, BatchTruth]:
    """Write `batches` (default: the split test set above) into `out`, with truth.json."""
    out.mkdir(parents=True, exist_ok=True)
    truths: dict[str, BatchTruth] = {}
    for b, batch in enumerate(_batches() if batches is None else batches):
        pages, kinds = [], []
        for i, spec in enumerate(batch["pages"]):
            img, kind = _page(spec, dpi=batch["dpi"], seed=1000 + 100 * b + i)
            pages.append(img)
            kinds.append(kind)
        _write(out / batch["name"], batch["fmt"], pages, batch["dpi"])
        hints = batch.get("hints")
        truths[batch["name"]] = BatchTruth(batch["name"], kinds, expected_documents(kinds, hints), hints)
    (out / "truth.json").write_text(json.dumps({k: asdict(v) for k, v in truths.items()}, ensure_ascii=False, indent=1))
    return truths


def load_truth(folder: Path) -> dict[str, BatchTruth]:
    data = json.loads((Path(folder) / "truth.json").read_text())
    return {k: BatchTruth(**{**v, "documents": [ExpectedDocument(**d) for d in v["documents"]]}) for k, v in data.items()}


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("batches")
    for name in make(target):
        print(target / name)
