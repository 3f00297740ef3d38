"""Every kind of bad input is rejected with one clear line naming the file, and never stops the others."""

from __future__ import annotations

import io
import json
import struct
import time
import zlib
from pathlib import Path

import pikepdf
import pytest
from pikepdf import Array, Dictionary, Name, String
from PIL import Image

from tests.conftest import run_digitize


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge page: a decompression bomb's calling card."""
    buf = io.BytesIO()
    Image.new("1", (8, 8), 1).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return bytes(data)


def _truncated(path: Path, keep: float) -> bytes:
    data = path.read_bytes()
    return data[: int(len(data) * keep)]


def _encrypted_pdf(source: Path) -> bytes:
    buf = io.BytesIO()
    with pikepdf.open(source) as pdf:
        pdf.save(buf, encryption=pikepdf.Encryption(owner="station", user="secret", R=6))
    return buf.getvalue()


def _scanner_pdf_with(source: Path, add) -> bytes:
    """A real scanner PDF with something added that no scanner writes."""
    buf = io.BytesIO()
    with pikepdf.open(source) as pdf:
        add(pdf)
        pdf.save(buf)
    return buf.getvalue()


def _open_action_script(pdf: pikepdf.Pdf) -> None:
    pdf.Root.OpenAction = Dictionary(Type=Name.Action, S=Name.JavaScript, JS=String("app.alert('xin chào')"))


def _named_script(pdf: pikepdf.Pdf) -> None:
    action = pdf.make_indirect(Dictionary(S=Name.JavaScript, JS=pdf.make_stream(b"this.print({bUI: false});")))
    pdf.Root.Names = Dictionary(JavaScript=Dictionary(Names=Array([String("init"), action])))


def _link_script(pdf: pikepdf.Pdf) -> None:
    link = Dictionary(
        Type=Name.Annot, Subtype=Name.Link, Rect=Array([0, 0, 100, 100]),
        A=Dictionary(S=Name.JavaScript, JS=String("this.submitForm('http://example.invalid')")),
    )  # fmt: skip
    pdf.pages[1].Annots = pdf.make_indirect(Array([pdf.make_indirect(link)]))


def _launch_on_open(pdf: pikepdf.Pdf) -> None:
    pdf.Root.OpenAction = Dictionary(S=Name.Launch, F=String("cmd.exe"), NewWindow=False)


def _attached_file(pdf: pikepdf.Pdf) -> None:
    pdf.attachments["bang-ke.xlsx"] = pikepdf.AttachedFileSpec(pdf, b"PK\x03\x04 not a scan", mime_type="application/vnd.ms-excel")


def _file_attachment_annotation(pdf: pikepdf.Pdf) -> None:
    spec = pikepdf.AttachedFileSpec(pdf, b"#!/bin/sh\n", mime_type="text/plain")
    note = Dictionary(Type=Name.Annot, Subtype=Name.FileAttachment, Rect=Array([10, 10, 30, 30]), FS=spec.obj)
    pdf.pages[0].Annots = Array([pdf.make_indirect(note)])


def _pdf_of_pages(count: int) -> bytes:
    """Tiny blank pages, cheaply: the page count alone must refuse it, before any page is read."""
    buf = io.BytesIO()
    with pikepdf.new() as pdf:
        for _ in range(count):
            pdf.add_blank_page(page_size=(72, 72))
        pdf.save(buf)
    return buf.getvalue()


def _vector_pdf(width_pt: float, height_pt: float) -> bytes:
    """A page of text and no image, which the pipeline must rasterize (at 300 dpi) to read."""
    buf = io.BytesIO()
    with pikepdf.new() as pdf:
        pdf.add_blank_page(page_size=(width_pt, height_pt))
        page = pdf.pages[0]
        font = Dictionary(Type=Name.Font, Subtype=Name.Type1, BaseFont=Name.Helvetica)
        page.Resources = Dictionary(Font=Dictionary(F1=font))
        page.Contents = pdf.make_stream(b"BT /F1 24 Tf 72 700 Td (Bien ban hop) Tj ET")
        pdf.save(buf)
    return buf.getvalue()


A3_PT = (842, 1191)


BAD_INPUTS = {
    "zero-bytes.tif": (lambda fx: b"", "empty (0 bytes)"),
    "notes.tif": (lambda fx: "Biên bản họp: không phải ảnh quét\n".encode(), "not a scan"),
    "truncated.jpg": (lambda fx: _truncated(fx / "skew-minus6-300dpi.jpg", 0.3), "cannot be decoded"),
    "truncated.tif": (lambda fx: _truncated(fx / "two-pages-tiff_lzw.tif", 0.4), "truncated"),
    "garbage.png": (lambda fx: b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "damaged"),
    "encrypted.pdf": (lambda fx: _encrypted_pdf(fx / "scanner.pdf"), "password-protected"),
    "bomb.png": (lambda fx: _png_claiming(100_000, 100_000), "decompression bomb"),
    "damaged.pdf": (lambda fx: b"%PDF-1.4\n" + b"\x00garbage" * 50, "damaged PDF"),
    "script-on-open.pdf": (lambda fx: _scanner_pdf_with(fx / "scanner.pdf", _open_action_script), "contains JavaScript"),
    "script-named.pdf": (lambda fx: _scanner_pdf_with(fx / "scanner.pdf", _named_script), "contains JavaScript"),
    "script-on-link.pdf": (lambda fx: _scanner_pdf_with(fx / "scanner.pdf", _link_script), "contains JavaScript"),
    "launch-on-open.pdf": (lambda fx: _scanner_pdf_with(fx / "scanner.pdf", _launch_on_open), "contains a Launch action"),
    "attachment.pdf": (lambda fx: _scanner_pdf_with(fx / "scanner.pdf", _attached_file), "contains embedded files"),
    "attachment-note.pdf": (
        lambda fx: _scanner_pdf_with(fx / "scanner.pdf", _file_attachment_annotation), "contains embedded files",
    ),  # fmt: skip
    "10000-pages.pdf": (lambda fx: _pdf_of_pages(10_000), "10000 pages is over the limit of 2000 pages (limits.max_pages)"),
    "too-big.png": (
        lambda fx: (fx / "no-dpi.png").read_bytes(), "over the limit of 200000 bytes (limits.max_input_bytes)",
    ),  # fmt: skip
    "a3-vector.pdf": (
        lambda fx: _vector_pdf(*A3_PT), "page of 3508x4962 pixels is over the limit of 10000000 (limits.max_page_pixels",
    ),  # fmt: skip
}
# Limits lowered for one case, as a site would in its config, so a small file can cross them.
SETTINGS_FOR = {
    "too-big.png": ["--set", "limits.max_input_bytes=200000"],
    # Above the good input's 2339x3307 pixels, below what the A3 page renders to at 300 dpi.
    "a3-vector.pdf": ["--set", "limits.max_page_pixels=10000000"],
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_is_rejected_and_the_good_one_still_processed(name, fixture_scans, tmp_path):
    make, reason = BAD_INPUTS[name]
    bad = tmp_path / "in" / name
    bad.parent.mkdir()
    bad.write_bytes(make(fixture_scans))
    before = bad.read_bytes()
    good = fixture_scans / "bitonal-g4-400dpi.tif"
    out = tmp_path / "out"
    proc = run_digitize("process", bad, good, "--out", out, "--jobs", "1", *SETTINGS_FOR.get(name, ()), check=False)
    assert proc.returncode == 65, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("rejected:")]
    assert len(lines) == 1, proc.stderr
    assert str(bad) in lines[0] and reason in lines[0], lines[0]
    # The good input is archived; the bad one leaves nothing, not even a partial file.
    assert sorted(p.name for p in (out / "records").iterdir()) == [
        "bitonal-g4-400dpi.json", "bitonal-g4-400dpi.pdf", "bitonal-g4-400dpi.txt",
    ]  # fmt: skip
    assert list((out / "manual").iterdir()) == []
    report = json.loads((out / "report.json").read_text("utf-8"))
    assert [r["input"] for r in report["rejected"]] == [str(bad)]
    assert [d["pdf"] for d in report["documents"]] == ["records/bitonal-g4-400dpi.pdf"]
    assert bad.read_bytes() == before, "processing changed an input"


def test_empty_folder_and_missing_file(tmp_path):
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    (empty / "readme.txt").write_text("no pages here")
    proc = run_digitize("process", empty, "--out", tmp_path / "out", "--jobs", "1", check=False)
    assert proc.returncode == 65
    assert f"{empty}: folder holds no page images" in proc.stderr
    assert f"skipped: {empty}/readme.txt: not a scan" in proc.stderr
    # A missing input is a typo: named before anything is written, with no output folder left behind.
    missing = run_digitize("process", empty, tmp_path / "missing.tif", "--out", tmp_path / "out2", "--jobs", "1", check=False)
    assert missing.returncode == 66 and not (tmp_path / "out2").exists()
    assert missing.stderr.strip() == f"error: {tmp_path}/missing.tif: no such file or folder"


def test_bad_setting_names_the_key(tmp_path):
    config = tmp_path / "site.toml"
    config.write_text("[output]\njpeg_quality = 7\n")
    proc = run_digitize("process", tmp_path, "--out", tmp_path / "out", "--config", config, check=False)
    assert proc.returncode == 78
    assert "output.jpeg_quality" in proc.stderr


def test_unwritable_output_fails_cleanly(fixture_scans, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the output folder should be")
    proc = run_digitize(
        "process", fixture_scans / "bitonal-g4-400dpi.tif", "--out", blocker / "records", "--jobs", "1", check=False
    )
    assert proc.returncode == 73, proc.stderr
    assert "cannot create output folder" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_page_and_pixel_limits_refuse_a_pdf_before_anything_is_rasterized(tmp_path):
    """The 10,000-page PDF and the A3 page over the pixel limit cost no rendering: pdftoppm never runs."""
    pages, vector = tmp_path / "10000-pages.pdf", tmp_path / "a3-vector.pdf"
    pages.write_bytes(_pdf_of_pages(10_000))
    vector.write_bytes(_vector_pdf(*A3_PT))
    started = time.monotonic()
    proc = run_digitize(
        "--verbose", "process", pages, vector, "--out", tmp_path / "out", "--jobs", "1",
        "--set", "limits.max_page_pixels=10000000", check=False,
    )  # fmt: skip
    seconds = time.monotonic() - started
    assert proc.returncode == 65, proc.stderr
    assert f"rejected: {pages}: 10000 pages is over the limit" in proc.stderr
    assert f"rejected: {vector}: page of 3508x4962 pixels is over the limit" in proc.stderr
    # The --verbose log names every program run: pdftoppm's version was checked, and it rendered no page.
    assert "run ['pdftoppm', '-v']" in proc.stderr and "run ['pdftoppm', '-r'" not in proc.stderr, proc.stderr
    assert seconds < 60, f"{seconds:.0f} s to refuse two inputs"


def test_pillow_bomb_guard_follows_the_configured_pixel_limit_when_rasterizing(tmp_path, monkeypatch):
    """pdftoppm's output is decoded through Pillow's process-wide guard, which in a page
    worker that has only rasterized PDF pages would still hold Pillow's default (89 Mpixels),
    refusing pages the site's limits.max_page_pixels allows. Here that guard starts far below
    the page (1748x2480 at 300 dpi) and the configured limit must win."""
    from PIL import Image

    from pipeline.settings import load_settings
    from pipeline.sources import FileKind, PageRef, load_page

    pdf = tmp_path / "a5-vector.pdf"
    pdf.write_bytes(_vector_pdf(419.52, 595.2))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    limits = load_settings().limits
    assert limits.max_page_pixels > 2 * 1748 * 2480
    page = load_page(PageRef(pdf, FileKind.PDF, 0, 0), limits)
    assert page.image.size == (1748, 2480) and page.dpi == 300
    assert Image.MAX_IMAGE_PIXELS == limits.max_page_pixels
