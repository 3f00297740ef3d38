"""Every kind of bad input is rejected with one clear line naming the file, and never stops the others."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import pikepdf
import pytest
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


BAD_INPUTS = {
    "zero-bytes.tif": (lambda fx: b"", "empty (0 bytes)"),
    "notes.tif": (lambda fx: "Biên bản họp: không phải ảnh quét\n".encode(), "not a scan"),
    "truncated.jpg": (lambda fx: _truncated(fx / "skew-minus6-300dpi.jpg", 0.3), "cannot be decoded"),
    "truncated.tif": (lambda fx: _truncated(fx / "two-pages-tiff_lzw.tif", 0.4), "truncated"),
    "garbage.png": (lambda fx: b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "damaged"),
    "encrypted.pdf": (lambda fx: _encrypted_pdf(fx / "scanner.pdf"), "password-protected"),
    "bomb.png": (lambda fx: _png_claiming(100_000, 100_000), "decompression bomb"),
    "damaged.pdf": (lambda fx: b"%PDF-1.4\n" + b"\x00garbage" * 50, "damaged PDF"),
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
    proc = run_digitize("process", bad, good, "--out", out, "--jobs", "1", check=False)
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
    proc = run_digitize("process", empty, tmp_path / "missing.tif", "--out", tmp_path / "out", "--jobs", "1", check=False)
    assert proc.returncode != 0
    assert f"{empty}: folder holds no page images" in proc.stderr
    assert "missing.tif: no such file or folder" in proc.stderr


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
