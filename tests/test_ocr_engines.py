"""The OCR-engine seam: a second engine reads chosen pages of a real run, and the manifest says which read what."""

from __future__ import annotations

import hashlib
import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pikepdf
import pikepdf.pdfa
import pytest

from pipeline._exec import tesseract
from pipeline.batch import process_inputs
from pipeline.ocr import TESSERACT, Orientation, PageImage, PageText
from pipeline.settings import load_settings
from pipeline.sources import PageRef
from tests.conftest import pdf_text, preflight, word_accuracy

# Words no Tesseract reading of the fixtures can produce.
FAKE_WORDS = "Zyxwv Quokka Jabberwock Fnord"


# Identity ToUnicode, as Tesseract writes it: each 2-byte code is the character's UTF-16 code.
TO_UNICODE = b"""/CIDInit /ProcSet findresource begin 12 dict begin begincmap
/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def
/CMapName /Adobe-Identity-UCS def /CMapType 2 def
1 begincodespacerange <0000> <FFFF> endcodespacerange
1 beginbfrange <0000> <FFFF> <0000> endbfrange
endcmap CMapName currentdict /CMap defineresource pop end end
"""


def text_layer(words: str, *, width_px: int, height_px: int, dpi: float, glyphless_ttf: Path, out: Path) -> Path:
    """A text layer made to the contract in pipeline/ocr.py, without Tesseract: `words` in
    Tesseract's embedded GlyphLessFont (its one blank glyph serves every character)."""
    width, height = width_px * 72.0 / dpi, height_px * 72.0 / dpi
    pdf = pikepdf.new()
    program = glyphless_ttf.read_bytes()
    descriptor = pikepdf.Dictionary(
        Type=pikepdf.Name.FontDescriptor, FontName=pikepdf.Name.GlyphLessFont, Flags=5,
        FontBBox=[0, 0, 500, 1000], ItalicAngle=0, Ascent=1000, Descent=-1, CapHeight=1000, StemV=80,
        FontFile2=pdf.make_stream(program, Length1=len(program)),
    )  # fmt: skip
    cid_font = pikepdf.Dictionary(
        Type=pikepdf.Name.Font, Subtype=pikepdf.Name.CIDFontType2, BaseFont=pikepdf.Name.GlyphLessFont,
        CIDSystemInfo=pikepdf.Dictionary(Registry="Adobe", Ordering="Identity", Supplement=0),
        FontDescriptor=descriptor, DW=500, CIDToGIDMap=pdf.make_stream(b"\x00\x01" * 65536),
    )  # fmt: skip
    font = pdf.make_indirect(pikepdf.Dictionary(
        Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type0, BaseFont=pikepdf.Name.GlyphLessFont,
        Encoding=pikepdf.Name("/Identity-H"), DescendantFonts=[cid_font], ToUnicode=pdf.make_stream(TO_UNICODE),
    ))  # fmt: skip
    codes = words.encode("utf-16-be").hex().upper()
    content = f"BT 3 Tr /F1 12 Tf 72 {height - 72:.2f} Td <{codes}> Tj ET".encode()
    page = pikepdf.Page(pikepdf.Dictionary(
        Type=pikepdf.Name.Page, MediaBox=[0, 0, round(width, 4), round(height, 4)],
        Resources=pikepdf.Dictionary(Font=pikepdf.Dictionary(F1=font)), Contents=pdf.make_stream(content),
    ))  # fmt: skip
    pdf.pages.append(page)
    pdf.save(out)
    return out


@dataclass(frozen=True)
class FakeReader:
    """A second engine: reads every page as the same few words. Module-level, so it pickles into workers."""

    model: Path
    glyphless_ttf: Path
    name: str = "fake-reader"

    def version(self) -> str:
        return "0.1"

    def model_files(self, languages: str) -> list[Path]:
        return [self.model]

    def orientation(self, gray: np.ndarray, *, dpi: float, work: Path, timeout: float) -> Orientation | None:
        return None

    def read_page(self, page: PageImage, *, dpi: float, work: Path, languages: str, timeout: float) -> PageText:
        height, width = page.shape
        layer = text_layer(
            FAKE_WORDS, width_px=width, height_px=height, dpi=dpi, glyphless_ttf=self.glyphless_ttf,
            out=work.with_suffix(".fake.pdf"),
        )
        return PageText(unicodedata.normalize("NFC", FAKE_WORDS), layer, 99.0, len(FAKE_WORDS.split()))


@pytest.mark.parametrize("flavour", ["2b", "1b"])
def test_a_second_engine_reads_the_chosen_page_and_the_manifest_says_which_engine_read_each(
    fixture_scans, truth, tmp_path, flavour
):
    model = tmp_path / "fake-reader.model"
    model.write_bytes(b"weights of a reader that always reads the same words\n")
    fake = FakeReader(model, tesseract.info().tessdata_dir / "pdf.ttf")
    config = tmp_path / "site.toml"
    config.write_text(f'[output]\npdfa = "{flavour}"\n')

    def choose(ref: PageRef):
        return fake if ref.path.name == "page2.png" else TESSERACT

    out = tmp_path / "out"
    report = process_inputs(
        [fixture_scans / "page-folder"], out, load_settings(config), jobs=2, choose_engine=choose
    )  # fmt: skip
    (doc,) = report.documents
    assert doc.source_pages == [0, 1, 2] and doc.pdf is not None, report
    manifest = json.loads(doc.manifest.read_text("utf-8"))
    tesseract_version = manifest["ocr"]["engine"].removeprefix("tesseract ")
    tesseract_models = {m["name"]: m["sha256"] for m in manifest["ocr"]["models"]}
    assert [p["ocr_engine"] for p in manifest["pages"]] == [
        {"name": "tesseract", "version": tesseract_version, "models": tesseract_models},
        {"name": "fake-reader", "version": "0.1", "models": {model.name: hashlib.sha256(model.read_bytes()).hexdigest()}},
        {"name": "tesseract", "version": tesseract_version, "models": tesseract_models},
    ]  # fmt: skip

    # The text layer of page 2 is the fake engine's, the others Tesseract's, in the PDF and the sidecar.
    for pages in (pdf_text(doc.pdf).split("\f"), doc.manifest.with_suffix(".txt").read_text("utf-8").split("\f")):
        assert pages[1].split() == FAKE_WORDS.split()
        for index in (0, 2):
            assert word_accuracy(truth["page-folder"].text[index], pages[index]) > 0.9
            assert not set(FAKE_WORDS.split()) & set(pages[index].split())
        assert word_accuracy(truth["page-folder"].text[1], pages[1]) == 0.0
    assert manifest["pages"][1]["words"] == 4 and manifest["pages"][1]["ocr_confidence"] == 99.0

    assert pikepdf.pdfa.validate_written(doc.pdf, flavour).passed
    if flavour == "1b":
        preflight(doc.pdf)
        return
    # Rerun with the same routing: nothing new. Routed otherwise: the input is read again.
    again = process_inputs([fixture_scans / "page-folder"], out, load_settings(config), jobs=1, choose_engine=choose)
    assert [d.up_to_date for d in again.documents] == [True]
    default = process_inputs([fixture_scans / "page-folder"], out, load_settings(config), jobs=2)
    assert [d.up_to_date for d in default.documents] == [False]
    pages = json.loads(default.documents[0].manifest.read_text("utf-8"))["pages"]
    assert [p["ocr_engine"]["name"] for p in pages] == ["tesseract"] * 3


def test_a_blank_page_names_no_engine(tmp_path):
    """No engine reads a blank page, so its record names none."""
    from PIL import Image

    blank = tmp_path / "blank.png"
    Image.new("L", (1240, 1754), 255).save(blank, dpi=(150, 150))
    report = process_inputs([blank], tmp_path / "out", load_settings(), jobs=1)
    manifest = json.loads(report.documents[0].manifest.read_text("utf-8"))
    assert [p["ocr_engine"] for p in manifest["pages"]] == [None]
    assert manifest["pages"][0]["blank"] is True
