"""The Decree 30 copy stamp: visible text top right of page 1 (or the nearest free area), extractable, PDF/A, verified."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
from datetime import datetime
from pathlib import Path

import numpy as np
import pikepdf
import pikepdf.pdfa
import pytest

from digitize.keys import make_demo_ca
from pipeline._exec import pdftoppm
from tests import scanfactory as sf
from tests.conftest import preflight, run_digitize
from tests.servicekit import digitize_cli

DPI = 200
AGENCY = "UBND huyện Nghi Lộc"
ISO_VN = re.compile(r"\b(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\+07:00\b")


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return make_demo_ca(tmp_path_factory.mktemp("ca"), agency=AGENCY)


@pytest.fixture(scope="module")
def signed(ca, tmp_path_factory) -> dict[str, Path]:
    """A letter whose top right is paper, and a receipt whose QR is there, signed as PDF/A-1b and 2b."""
    tmp = tmp_path_factory.mktemp("stamp")
    letter, _ = sf.render_page(text_lines_or_paragraphs=sf.DOCUMENTS["don-de-nghi"][:5], dpi=DPI, paper="A4", seed=2)
    receipt, _ = sf.receipt_page(code="000.00.21.H40-261128-0042", dpi=DPI, paper="A5", seed=3)
    inputs = [sf.save_png(tmp / "letter.png", letter, DPI), sf.save_png(tmp / "receipt.png", receipt, DPI)]
    env = {**os.environ, "DIGITIZE_SIGNING_PASSPHRASE": ca.passphrase}
    records = {}
    for flavour, chosen in (("1b", inputs), ("2b", inputs[:1])):
        out = tmp / flavour
        proc = digitize_cli(
            env, "process", *chosen, "--out", out, "--pdfa", flavour, "--jobs", "2",
            "--set", f"signing.pkcs12={ca.agency_pkcs12}", "--set", f'output.agency="{AGENCY}"',
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        for pdf in (out / "records").glob("*.pdf"):
            records[f"{'receipt' if pdf.stem.startswith('000') else 'letter'}-{flavour}"] = pdf
    return records


def _stamp(pdf: Path) -> dict:
    return json.loads(pdf.with_suffix(".json").read_text(encoding="utf-8"))["signature"]["stamp"]


def _words(pdf: Path) -> list[tuple[str, float, float, float, float]]:
    """pdftotext's words on page 1 with their boxes (points, from the top left)."""
    html = subprocess.run(["pdftotext", "-bbox", "-f", "1", "-l", "1", str(pdf), "-"], capture_output=True,
                          text=True, check=True).stdout  # fmt: skip
    found = re.findall(r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">([^<]*)</word>', html)
    return [(w, float(a), float(b), float(c), float(d)) for a, b, c, d, w in found]


def test_the_stamp_text_is_top_right_of_page_one_with_an_iso_time_in_vietnam(signed):
    pdf = signed["letter-1b"]
    stamp = _stamp(pdf)
    assert stamp["placement"] == "top_right" and stamp["page"] == 0
    with pikepdf.open(pdf) as doc:
        width, height = (float(v) for v in doc.pages[0].mediabox[2:])
    words = _words(pdf)
    time_words = [w for w in words if ISO_VN.fullmatch(w[0])]
    assert len(time_words) == 1, words[:12]
    signed_at = datetime.fromisoformat(json.loads(pdf.with_suffix(".json").read_text())["signature"]["signed_at"])
    assert datetime.fromisoformat(time_words[0][0]) == signed_at  # the same moment, written in +07:00
    stamp_words = [w for w in words if w[1] >= stamp["box"][0] - 1 and w[4] <= height - stamp["box"][1] + 1]
    text = " ".join(w[0] for w in stamp_words)
    assert text.startswith("SAO Y") and AGENCY in text, text
    for _, x0, y0, x1, y1 in stamp_words:
        assert x0 > width * 0.6 and y1 < height * 0.15  # top right, in pdftotext's top-left coordinates


def test_the_stamp_moves_off_ink_and_the_manifest_says_where(signed):
    pdf = signed["receipt-1b"]
    stamp = _stamp(pdf)
    assert stamp["placement"] == "moved"
    manifest = json.loads(pdf.with_suffix(".json").read_text())
    unsigned = pdf.read_bytes()[: manifest["signature"]["unsigned_bytes"]]
    # What the page showed before the stamp, under the stamp's box: paper only.
    scratch = pdf.parent.parent / "unsigned-page.pdf"
    scratch.write_bytes(unsigned)
    dpi = 100
    image = np.asarray(pdftoppm.rasterize(scratch, page=0, dpi=dpi, timeout=60).convert("L"))
    with pikepdf.open(scratch) as doc:
        height = float(doc.pages[0].mediabox[3])
    x0, y0, x1, y1 = (v * dpi / 72 for v in stamp["box"])
    under = image[int(height * dpi / 72 - y1) : int(height * dpi / 72 - y0), int(x0) : int(x1)]
    assert under.size and under.min() > 128, under.min()
    assert "SAO Y" in subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True).stdout


@pytest.mark.parametrize("record", ["letter-1b", "receipt-1b"])
def test_stamped_pdfa_1b_passes_preflight(signed, record):
    preflight(signed[record])


def test_stamped_pdfa_2b_passes_pikepdf_validation(signed):
    """pikepdf's validator does not cover interactive forms, so (as `digitize verify` does) it judges the
    revision the signature covers; the stamp's font and appearance are checked by Preflight on 1b."""
    pdf = signed["letter-2b"]
    assert _stamp(pdf)["placement"] == "top_right"
    signature = json.loads(pdf.with_suffix(".json").read_text())["signature"]
    report = pikepdf.pdfa.validate_written(io.BytesIO(pdf.read_bytes()[: signature["unsigned_bytes"]]), "2b")
    assert report.passed, [f.message for f in report.findings[:3]]
    with pikepdf.open(pdf) as doc, doc.open_metadata() as xmp:
        assert (xmp["pdfaid:part"], xmp["pdfaid:conformance"]) == ("2", "B")


def test_stamped_records_verify(signed, ca):
    pdfs = [signed["letter-1b"], signed["receipt-1b"], signed["letter-2b"]]
    proc = run_digitize("verify", *pdfs, "--trust", ca.root)
    assert "3 of 3 records verified" in proc.stdout, proc.stdout


def test_an_invisible_signature_shows_nothing_and_records_no_stamp(signed, ca, tmp_path):
    """signing.appearance = "invisible": the signature as before the stamp, on the same unsigned revision."""
    from pyhanko.sign.signers import SimpleSigner

    from pipeline.signing import RecordSigner, sign_record

    pdf = signed["letter-1b"]
    signature = json.loads(pdf.with_suffix(".json").read_text())["signature"]
    unsigned = tmp_path / "unsigned.pdf"
    unsigned.write_bytes(pdf.read_bytes()[: signature["unsigned_bytes"]])
    signer = RecordSigner(
        signer=SimpleSigner.load_pkcs12(str(ca.agency_pkcs12), passphrase=ca.passphrase.encode()),
        agency=AGENCY, reason="{code}", location="{agency}", appearance="invisible",
    )  # fmt: skip
    record = sign_record(unsigned, tmp_path / "invisible.pdf", signer=signer, code="x")
    assert "stamp" not in record
    text = subprocess.run(["pdftotext", str(tmp_path / "invisible.pdf"), "-"], capture_output=True, text=True).stdout
    assert "SAO Y" not in text and not ISO_VN.search(text)
    with pikepdf.open(tmp_path / "invisible.pdf") as doc:
        (widget,) = [a for a in doc.pages[0].get("/Annots", []) if a.get("/FT") == "/Sig"] or [doc.Root.AcroForm.Fields[0]]
        assert [float(v) for v in widget.Rect] == [0, 0, 0, 0]
    preflight(tmp_path / "invisible.pdf")
