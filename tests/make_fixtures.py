"""Generate the test fixture scans, each with its known truth, into a folder (default: a temp dir)."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from PIL import Image  # noqa: E402

from tests import scanfactory as sf  # noqa: E402


@dataclass
class Truth:
    """What a fixture page really is, for the tests to compare against."""

    file: str
    rotation: list[int]  # per page: the correction the pipeline must apply (counterclockwise)
    skew: list[float]  # per page: the skew put in (the correction is its negative)
    blank: list[bool]
    dpi: int
    text: list[str] = field(default_factory=list)


def _text(doc: str, dpi: int, seed: int, *, paper: str = "A5", font: str = "serif"):
    return sf.render_page(text_lines_or_paragraphs=sf.DOCUMENTS[doc], dpi=dpi, paper=paper, font=font, font_pt=12, seed=seed)


def make(out: Path) -> dict[str, Truth]:
    out.mkdir(parents=True, exist_ok=True)
    truths: dict[str, Truth] = {}

    def page(doc, dpi, seed, *, skew=0.0, turns=0, paper="A5"):
        clean, gt = _text(doc, dpi, seed, paper=paper)
        return sf.scan_effects(clean, dpi=dpi, skew_deg=skew, rotate90=turns, noise=2.0, seed=seed), gt

    # Skewed and turned pages, gray and colour, 200-400 dpi. rotate90=k turns the page k
    # quarters counterclockwise, so the correction is (4 - k) quarters counterclockwise.
    for seed, (name, doc, dpi, skew, turns, fmt) in enumerate((
        ("skew-6-200dpi.png", "don-de-nghi", 200, 6.0, 0, "png"),
        ("skew-minus6-300dpi.jpg", "to-khai", 300, -6.0, 0, "jpg"),
        ("turned-90-300dpi.png", "quyet-dinh", 300, 2.0, 1, "png"),
        ("turned-180-400dpi.png", "bien-ban", 400, -3.0, 2, "png"),
        ("turned-270-200dpi-colour.jpg", "thong-bao", 200, 1.5, 3, "colour-jpg"),
    )):
        img, gt = page(doc, dpi, seed, skew=skew, turns=turns)
        if fmt == "png":
            sf.save_png(out / name, sf.flatten_paper(img), dpi)
        else:
            sf.save_jpeg(out / name, img, dpi, quality=85, colour=fmt == "colour-jpg", seed=7)
        truths[name] = Truth(name, [(4 - turns) % 4 * 90], [skew], [False], dpi, [gt])

    bitonal, gt = page("quyet-dinh", 400, 11, skew=4.0)
    sf.save_tiff(out / "bitonal-g4-400dpi.tif", [sf.to_bitonal(bitonal)], 400, compression="group4")
    truths["bitonal-g4-400dpi.tif"] = Truth("bitonal-g4-400dpi.tif", [0], [4.0], [False], 400, [gt])

    # Multi-page TIFFs in every compression stations use; the second page is blank.
    text_page, gt = page("thong-bao", 200, 12, skew=-1.0)
    blank = sf.blank_page(dpi=200, paper="A5", seed=13, bleed_through=True, punch_holes=True)
    for compression in ("tiff_lzw", "jpeg", "tiff_adobe_deflate"):
        name = f"two-pages-{compression}.tif"
        sf.save_tiff(out / name, [text_page, blank], 200, compression=compression)
        truths[name] = Truth(name, [0, 0], [-1.0, 0.0], [False, True], 200, [gt, ""])

    # A scanner PDF: one JPEG image per page.
    p1, gt1 = page("to-khai", 300, 14, skew=2.5)
    p2, gt2 = page("quyet-dinh", 300, 15, turns=2)
    sf.save_pdf(out / "scanner.pdf", [sf.encode_jpeg(p, 300, quality=80) for p in (p1, p2)], 300)
    truths["scanner.pdf"] = Truth("scanner.pdf", [0, 180], [2.5, 0.0], [False, False], 300, [gt1, gt2])

    # A folder of pages whose names sort wrongly as plain strings.
    folder = out / "page-folder"
    folder.mkdir(exist_ok=True)
    texts = []
    for number, doc in ((1, "don-de-nghi"), (2, "to-khai"), (10, "bien-ban")):
        img, gt = page(doc, 200, 20 + number)
        sf.save_png(folder / f"page{number}.png", sf.flatten_paper(img), 200)
        texts.append(gt)
    truths["page-folder"] = Truth("page-folder", [0, 0, 0], [0.0] * 3, [False] * 3, 200, texts)

    # No resolution in the file: the pipeline must infer 300 dpi from the A5 page size.
    img, gt = page("quyet-dinh", 300, 30)
    Image.fromarray(sf.flatten_paper(img)).save(out / "no-dpi.png")
    truths["no-dpi.png"] = Truth("no-dpi.png", [0], [0.0], [False], 300, [gt])

    (out / "truth.json").write_text(json.dumps({k: asdict(v) for k, v in truths.items()}, ensure_ascii=False, indent=1))
    return truths


def load_truth(folder: Path) -> dict[str, Truth]:
    data = json.loads((folder / "truth.json").read_text())
    return {k: Truth(**v) for k, v in data.items()}


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("fixtures")
    for name in make(target):
        print(target / name)
