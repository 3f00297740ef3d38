"""Scanner PDFs as scanners write them: their pixels kept, their OCR layer replaced, JBIG2, locks, signatures, sizes."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import img2pdf
import numpy as np
import pikepdf
import pikepdf.pdfa
import pytest
from fontTools.ttLib import TTFont
from PIL import Image
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import signers

from digitize.keys import make_demo_ca
from pipeline.pdfsource import ExistingText, PdfPageKind, PdfPagePlan, plan, survey, without_invisible_text
from tests import scanfactory
from tests.conftest import DIGITIZE, pdf_text, preflight, run_digitize

RESOURCES = Path(__file__).parent / "resources"
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
INVISIBLE_WORD = "SCANNEROCRLAYER"
VISIBLE_WORDS = "Born digital letter from the agency"
DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
TEXT = [
    scanfactory.Heading("QUYẾT ĐỊNH"),
    "Về việc cấp giấy chứng nhận quyền sử dụng đất cho hộ gia đình ông Nguyễn Văn An tại xã Nghi Phong.",
]


def _bitonal(paper: str, dpi: int, seed: int = 0) -> np.ndarray:
    page, _truth = scanfactory.render_page(text_lines_or_paragraphs=TEXT, dpi=dpi, paper=paper, seed=seed)
    return scanfactory.to_bitonal(page)


def _g4_pdf(bitonal: np.ndarray, dpi: int) -> bytes:
    """A page as Kodak and Brother scanners write it: one CCITT G4 image, nothing else."""
    buf = io.BytesIO()
    Image.fromarray(bitonal).convert("1").save(buf, format="TIFF", compression="group4", dpi=(dpi, dpi))
    return img2pdf.convert(buf.getvalue())


def ccitt_with_ocr_layer(path: Path) -> Path:
    """CCITT bitonal scan with the scanner's own invisible OCR layer (render mode 3) over it."""
    with pikepdf.open(io.BytesIO(_g4_pdf(_bitonal("A5", 300), 300))) as pdf:
        page = pdf.pages[0]
        page.Resources.Font = pikepdf.Dictionary(
            F1=pikepdf.Dictionary(Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type1, BaseFont=pikepdf.Name.Helvetica)
        )
        page.contents_add(pdf.make_stream(f"BT /F1 24 Tf 3 Tr 1 0 0 1 60 300 Tm ({INVISIBLE_WORD}) Tj ET".encode()))
        pdf.save(path)
    return path


def mixed_raster(path: Path) -> Path:
    """Canon-style mixed raster: a 100 ppi JPEG background under a 200 ppi CCITT text mask."""
    mask = _bitonal("A5", 200, seed=1)
    height, width = mask.shape
    background = Image.new("RGB", (width // 2, height // 2), (236, 228, 205))
    jpeg = io.BytesIO()
    background.save(jpeg, format="JPEG", quality=80)
    with pikepdf.open(io.BytesIO(_g4_pdf(mask, 200))) as pdf:
        page = pdf.pages[0]
        (name, ccitt), = page.get_images(recursive=False).items()
        ccitt.ImageMask = True
        del ccitt["/ColorSpace"]
        bg = pdf.make_stream(jpeg.getvalue())
        bg.Type, bg.Subtype, bg.Filter = pikepdf.Name.XObject, pikepdf.Name.Image, pikepdf.Name.DCTDecode
        bg.Width, bg.Height, bg.ColorSpace, bg.BitsPerComponent = width // 2, height // 2, pikepdf.Name.DeviceRGB, 8
        page.Resources.XObject.Bg = bg
        w, h = (float(v) for v in page.mediabox[2:])
        page.Contents = pdf.make_stream(f"q {w} 0 0 {h} 0 0 cm /Bg Do Q q 0 g {w} 0 0 {h} 0 0 cm {name} Do Q".encode())
        pdf.save(path)
    return path


def owner_locked_and_signed(source: Path, path: Path, ca) -> Path:
    """An electronic copy as agencies issue them: AES with an owner lock and empty user password, then signed."""
    locked = io.BytesIO()
    with pikepdf.open(source) as pdf:
        pdf.save(locked, encryption=pikepdf.Encryption(owner="agency-owner", user="", aes=True, R=4,
                                                        allow=pikepdf.Permissions(extract=False, modify_other=False)))  # fmt: skip
    locked.seek(0)
    writer = IncrementalPdfFileWriter(locked)
    writer.encrypt("agency-owner")
    signer = signers.SimpleSigner.load_pkcs12(str(ca.agency_pkcs12), passphrase=ca.passphrase.encode())
    with open(path, "wb") as out:
        signers.sign_pdf(writer, signers.PdfSignatureMetadata(field_name="CertifiedCopy"), signer=signer, output=out)
    return path


def born_digital(path: Path) -> Path:
    """A letter written on a computer: visible text in an embedded TrueType font, no image."""
    data = DEJAVU.read_bytes()
    font = TTFont(io.BytesIO(data))
    cmap, metrics, units = font.getBestCmap(), font["hmtx"], font["head"].unitsPerEm
    widths = [round(metrics[cmap[code]][0] * 1000 / units) for code in range(32, 127)]
    head, hhea = font["head"], font["hhea"]
    with pikepdf.new() as pdf:
        pdf.add_blank_page(page_size=(420, 298))
        page = pdf.pages[0]
        fontfile = pdf.make_stream(data)
        fontfile.Length1 = len(data)
        descriptor = pdf.make_indirect(pikepdf.Dictionary(
            Type=pikepdf.Name.FontDescriptor, FontName=pikepdf.Name.DejaVuSans, Flags=32,
            FontBBox=[round(v * 1000 / units) for v in (head.xMin, head.yMin, head.xMax, head.yMax)],
            ItalicAngle=0, Ascent=round(hhea.ascent * 1000 / units), Descent=round(hhea.descent * 1000 / units),
            CapHeight=729, StemV=80, FontFile2=fontfile,
        ))  # fmt: skip
        page.Resources = pikepdf.Dictionary(Font=pikepdf.Dictionary(F1=pdf.make_indirect(pikepdf.Dictionary(
            Type=pikepdf.Name.Font, Subtype=pikepdf.Name.TrueType, BaseFont=pikepdf.Name.DejaVuSans,
            FirstChar=32, LastChar=126, Widths=widths, Encoding=pikepdf.Name.WinAnsiEncoding, FontDescriptor=descriptor,
        ))))  # fmt: skip
        page.Contents = pdf.make_stream(f"BT /F1 14 Tf 1 0 0 1 40 200 Tm ({VISIBLE_WORDS}) Tj ET".encode())
        pdf.save(path)
    return path


def mixed_sizes(path: Path) -> Path:
    """An A4 page and an A3 page in one PDF."""
    pages = [scanfactory.encode_png(_bitonal(paper, 100, seed=i), 100) for i, paper in enumerate(("A4", "A3"))]
    path.write_bytes(img2pdf.convert(pages))
    return path


def _manifest(out: Path, stem: str) -> dict:
    (found,) = [p for p in out.rglob(f"{stem}.json") if p.parent.name != ".digitize"]
    return json.loads(found.read_text("utf-8"))


def _record(out: Path, stem: str) -> Path:
    (found,) = out.rglob(f"{stem}.pdf")
    return found


def _images(pdf_path: Path) -> list[pikepdf.Object]:
    """Every image the record draws, however deep in its form XObjects."""
    found = []
    with pikepdf.open(pdf_path) as pdf:
        for obj in pdf.objects:
            if isinstance(obj, pikepdf.Stream) and obj.get("/Subtype") == pikepdf.Name.Image:
                filters = obj.get("/Filter")
                names = [str(f) for f in filters] if isinstance(filters, pikepdf.Array) else [str(filters)]
                found.append({"filter": "+".join(names), "bpc": int(obj.get("/BitsPerComponent", 1)),
                              "width": int(obj.Width)})  # fmt: skip
    return found


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return make_demo_ca(tmp_path_factory.mktemp("copy-ca"), agency="Văn phòng UBND tỉnh (test)")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, ca) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("scanner-pdfs")
    ccitt = ccitt_with_ocr_layer(folder / "ccitt-ocr.pdf")
    made = {
        "ccitt": ccitt,
        "mrc": mixed_raster(folder / "mrc.pdf"),
        "signed": owner_locked_and_signed(ccitt, folder / "signed-copy.pdf", ca),
        "born": born_digital(folder / "born-digital.pdf"),
        "sizes": mixed_sizes(folder / "a4-a3.pdf"),
        "jbig2": shutil.copy(RESOURCES / "luradocument-mrc-jbig2-p1.pdf", folder / "jbig2.pdf"),
    }
    return {key: Path(path) for key, path in made.items()}


@pytest.fixture(scope="module")
def processed(inputs, ca, tmp_path_factory) -> Path:
    """One run over every fixture, in the default PDF/A-2b, with the copy's CA as a trust root."""
    out = tmp_path_factory.mktemp("out-2b")
    run_digitize(
        "process", *inputs.values(), "--out", out, "--jobs", "2",
        "--set", f'signing.trust_roots=["{ca.root}"]',
    )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def processed_1b(inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("out-1b")
    run_digitize("process", inputs["ccitt"], inputs["mrc"], "--out", out, "--pdfa", "1b", "--jobs", "2")
    return out


def test_a_bitonal_scan_stays_its_own_ccitt_under_our_text_only(processed, inputs):
    manifest = _manifest(processed, "ccitt-ocr")
    (page,) = manifest["pages"]
    assert page["image_encoding"] == "pdf-original"
    assert page["pdf_source"]["kept"] and page["pdf_source"]["existing_text"] == "replaced"
    record = _record(processed, "ccitt-ocr")
    (image,) = _images(record)
    assert image["filter"] == "/CCITTFaxDecode" and image["bpc"] == 1
    assert record.stat().st_size <= 1.3 * inputs["ccitt"].stat().st_size + 40_000  # + our text layer's font
    text = pdf_text(record)
    assert INVISIBLE_WORD not in text, "the scanner's OCR layer must not stay beside ours"
    assert "QUY" in text.upper()


def test_mixed_raster_is_read_at_its_text_mask_resolution_and_kept_in_layers(processed):
    (page,) = _manifest(processed, "mrc")["pages"]
    assert page["pdf_source"]["finest_dpi"] == pytest.approx(200, rel=0.01)
    assert page["dpi"] >= 199  # OCR read the 200 ppi mask, not the 100 ppi background
    assert page["pdf_source"]["kept"]
    filters = sorted(image["filter"] for image in _images(_record(processed, "mrc")))
    assert filters == ["/CCITTFaxDecode", "/DCTDecode"]


def test_pdfa_1b_outputs_pass_preflight(processed_1b):
    for stem in ("ccitt-ocr", "mrc"):
        preflight(_record(processed_1b, stem))
        assert _manifest(processed_1b, stem)["pages"][0]["pdf_source"]["kept"]


def test_a_jbig2_page_keeps_its_jbig2_mask(processed):
    (page,) = _manifest(processed, "jbig2")["pages"]
    assert page["pdf_source"]["kept"], page["pdf_source"]
    assert "/JBIG2Decode" in {image["filter"] for image in _images(_record(processed, "jbig2"))}
    # The JPEG 2000 layers are the one thing re-encoded, and the manifest says so.
    assert any("JPEG 2000" in c for c in page["pdf_source"]["conversions"])
    assert pikepdf.pdfa.validate_written(_record(processed, "jbig2"), "2b").passed


def test_an_owner_locked_signed_copy_is_kept_byte_for_byte_with_its_checked_signature(processed, inputs):
    manifest = _manifest(processed, "signed-copy")
    original = manifest["original"]
    data = inputs["signed"].read_bytes()
    assert original["sha256"] == hashlib.sha256(data).hexdigest() == manifest["source"]["sha256"]
    kept = _record(processed, "signed-copy").with_name(original["file"])
    assert kept.read_bytes() == data
    (signature,) = original["signatures"]
    assert signature["field"] == "CertifiedCopy" and "Văn phòng UBND" in signature["signer"]
    assert signature["intact"] and signature["valid"] and signature["trusted"]
    assert manifest["pages"][0]["pdf_source"]["kept"]


def test_a_born_digital_page_keeps_its_text_and_is_not_read_again(processed):
    (page,) = _manifest(processed, "born-digital")["pages"]
    assert page["pdf_source"]["kind"] == "born-digital", page["pdf_source"]
    assert page["pdf_source"]["kept"], page["pdf_source"]
    assert page["pdf_source"]["ocr"] is False and page["ocr_engine"] is None
    record = _record(processed, "born-digital")
    assert VISIBLE_WORDS in pdf_text(record)
    assert VISIBLE_WORDS in record.with_suffix(".txt").read_text("utf-8")


def test_each_page_keeps_its_size_and_only_the_a3_page_is_oversized(processed):
    pages = _manifest(processed, "a4-a3")["pages"]
    assert [round(v) for v in pages[0]["size_mm"]] == [210, 297]
    assert [round(v) for v in pages[1]["size_mm"]] == [297, 420]
    assert "oversized" not in pages[0]["flags"] and "oversized" in pages[1]["flags"]


def test_a_missing_jbig2_decoder_is_a_missing_program(tmp_path, inputs):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for program in ("tesseract", "pdftoppm"):
        (bin_dir / program).symlink_to(shutil.which(program))
    proc = subprocess.run(
        [str(DIGITIZE), "process", str(inputs["ccitt"]), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PATH": str(bin_dir), "COLUMNS": "200"},
    )  # fmt: skip
    assert proc.returncode == 69, proc.stderr
    assert "jbig2dec" in proc.stderr and "apt-get install jbig2dec" in proc.stderr


def test_a_user_password_is_still_refused(tmp_path, inputs):
    locked = tmp_path / "locked.pdf"
    with pikepdf.open(inputs["ccitt"]) as pdf:
        pdf.save(locked, encryption=pikepdf.Encryption(owner="o", user="secret", R=6))
    proc = run_digitize("process", locked, "--out", tmp_path / "out", check=False)
    assert proc.returncode == 65
    assert f"{locked}: PDF is password-protected" in proc.stdout + proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name", [
    "scanner_pdfs/a_ricoh_ccitt_bitonal_invisible_ocr.pdf",
    "scanner_pdfs/a2_brother_scanner_ccitt_bitonal_invisible_ocr.pdf",
])  # fmt: skip
def test_real_bitonal_scanner_pdfs_stay_1_bit_and_small(name, tmp_path):
    source = CORPUS / name
    if not source.exists():
        pytest.skip(f"corpus file {source} is not on this machine")
    run_digitize("process", source, "--out", tmp_path, "--jobs", "2")
    record = _record(tmp_path, source.stem)
    assert {image["filter"] for image in _images(record) if image["width"] > 1000} == {"/CCITTFaxDecode"}
    assert all(image["bpc"] == 1 for image in _images(record) if image["width"] > 1000)
    assert record.stat().st_size <= 1.3 * source.stat().st_size
    for page in _manifest(tmp_path, source.stem)["pages"]:
        assert page["pdf_source"]["kept"], page["pdf_source"]


def test_survey_and_plan_say_what_each_page_is_and_what_happens_to_its_text(inputs):
    surveys = {}
    for key in ("ccitt", "mrc", "born"):
        with pikepdf.open(inputs[key]) as pdf:
            surveys[key] = survey(pdf.pages[0])
    assert surveys["ccitt"].kind is PdfPageKind.SCAN and surveys["ccitt"].invisible_text
    assert surveys["mrc"].kind is PdfPageKind.SCAN and surveys["mrc"].finest_dpi == pytest.approx(200, rel=0.01)
    assert surveys["born"].kind is PdfPageKind.BORN_DIGITAL
    scan, born = surveys["ccitt"], surveys["born"]
    assert plan(scan, ExistingText.REPLACE) == PdfPagePlan(True, True, True, "replaced")
    assert plan(scan, ExistingText.KEEP) == PdfPagePlan(True, False, False, "kept")
    assert plan(born, ExistingText.REPLACE) == PdfPagePlan(True, False, False, "kept")
    assert plan(born, ExistingText.FORCE).ocr and not plan(born, ExistingText.FORCE).keep_original


def test_only_text_that_paints_nothing_is_removed():
    with pikepdf.new() as pdf:
        content = pikepdf.parse_content_stream(pdf.make_stream(
            b"q 100 0 0 100 0 0 cm /Im0 Do Q "
            b"BT 3 Tr /F1 9 Tf (hidden) Tj ET "
            b"BT 0 Tr /F1 9 Tf (shown) Tj ET"
        ))  # fmt: skip
        kept, visible = without_invisible_text(content)
    assert visible and b"(shown)" in kept and b"(hidden)" not in kept and b"/Im0 Do" in kept


def test_a_flagged_signed_copy_keeps_its_original_when_a_clerk_approves_it(inputs, ca, tmp_path):
    """The night sends the copy to review (every page under the confidence bar); approving archives its original too."""
    from digitize.storage import LocalStore
    from tests.servicekit import batch_folder, digitize_cli, folder_env

    env = {**folder_env(tmp_path), "DIGITIZE_TRIAGE_MIN_CONFIDENCE": "100", "DIGITIZE_SIGNING_TRUST_ROOTS": f'["{ca.root}"]'}
    batch = batch_folder(tmp_path / "copies", inputs["signed"])
    assert digitize_cli(env, "drop", batch, "--station", "st").returncode == 0
    ran = digitize_cli(env, "run", "--jobs", "1")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    approved = digitize_cli(env, "review", "approve", "signed-copy", "--by", "Trần Văn Hùng")
    assert approved.returncode == 0, approved.stdout + approved.stderr
    archive = LocalStore(tmp_path / "archive")
    (original,) = [o.key for o in archive.list() if o.key.endswith("signed-copy.original.pdf")]
    (manifest_key,) = [o.key for o in archive.list() if o.key.endswith("signed-copy.json")]
    manifest = json.loads(archive.read_bytes(manifest_key))
    assert archive.read_bytes(original) == inputs["signed"].read_bytes()
    assert manifest["original"]["sha256"] == hashlib.sha256(inputs["signed"].read_bytes()).hexdigest()
    assert "low_confidence" in manifest["flags"]
