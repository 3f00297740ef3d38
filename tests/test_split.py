"""Splitting batches into dossiers and triage, end to end on generated batches with known truth."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pikepdf
import pikepdf.pdfa
import pytest
from PIL import Image

from tests import make_batches
from tests.conftest import run_digitize


@pytest.fixture(scope="session")
def batches(tmp_path_factory) -> tuple[Path, dict[str, make_batches.BatchTruth]]:
    folder = tmp_path_factory.mktemp("batches")
    return folder, make_batches.make(folder)


@pytest.fixture(scope="session")
def split_run(batches, tmp_path_factory):
    """Every batch through one real run, with the stations' hints where a batch has them."""
    folder, truth = batches
    hints = tmp_path_factory.mktemp("hints") / "hints.json"
    hints.write_text(json.dumps({t.file: t.hints for t in truth.values() if t.hints}))
    out = tmp_path_factory.mktemp("dossiers")
    checksums = {t.file: _digest(folder / t.file) for t in truth.values()}
    proc = run_digitize("process", *(folder / t.file for t in truth.values()), "--out", out, "--jobs", "2", "--hints", hints)
    report = json.loads((out / "report.json").read_text("utf-8"))
    return out, report, proc, checksums


def _digest(path: Path) -> str:
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()


def _documents(report: dict, file: str) -> list[dict]:
    return [d for d in report["documents"] if Path(d["input"]).name == file]


def test_every_dossier_is_split_at_the_right_pages_with_the_right_code(batches, split_run):
    _, truth = batches
    _, report, _, _ = split_run
    assert report["rejected"] == []
    for batch in truth.values():
        got = [(d["code"], d["source_pages"], sorted(d["flags"])) for d in _documents(report, batch.file)]
        expected = [(d.code, d.source_pages, d.flags) for d in batch.documents]
        assert got == expected, batch.file


def test_clean_dossiers_are_records_and_flagged_ones_go_to_manual(split_run):
    out, report, _, _ = split_run
    for doc in report["documents"]:
        name = doc["name"]
        if doc["flags"]:
            folder = out / "manual" / name
            assert doc["pdf"] == f"manual/{name}/{name}.pdf"
            reasons = json.loads((folder / "reasons.json").read_text("utf-8"))
            assert sorted(reasons["flags"]) == doc["flags"]
            for flag, evidence in reasons["flags"].items():
                assert evidence, f"{name}: {flag} without evidence"
            flagged_pages = {item["page"] for items in reasons["flags"].values() for item in items if "page" in item}
            for page, thumbnail in reasons["thumbnails"].items():
                with Image.open(folder / thumbnail) as image:
                    # A flagged page's picture is large enough to read (issue #13); a dossier's
                    # first page shown for a dossier-wide flag stays small.
                    assert image.format == "PNG"
                    assert max(image.size) >= 1200 if int(page) in flagged_pages else image.width <= 300
            assert {int(p) for p in reasons["thumbnails"]} >= flagged_pages
        else:
            assert doc["pdf"] == f"records/{name}.pdf"
        pdf = out / doc["pdf"]
        for ext in (".json", ".txt"):
            assert pdf.with_suffix(ext).exists()
        with pikepdf.open(pdf) as opened:
            assert len(opened.pages) == len(doc["source_pages"])
        assert pikepdf.pdfa.validate_written(pdf, "2b").passed


def test_dossiers_are_named_by_code_and_codeless_ones_after_the_input(split_run):
    _, report, _, _ = split_run
    names = [d["name"] for d in _documents(report, "sep-sheets-300dpi-g4.tif")]
    assert names == ["sep-sheets-300dpi-g4", "sep-sheets-300dpi-g4-2", "sep-sheets-300dpi-g4-3"]
    coded = [d for d in report["documents"] if d["code"]]
    assert coded and all(d["name"] == d["code"] for d in coded)


def test_blank_pages_leave_the_pdf_but_not_the_record(batches, split_run):
    folder, truth = batches
    out, report, _, checksums = split_run
    for batch in truth.values():
        blanks = [i for i, kind in enumerate(batch.kinds) if kind == "blank"]
        docs = _documents(report, batch.file)
        assert sorted(i for d in docs for i in d["removed_blank_pages"]) == blanks, batch.file
        for doc in docs:
            manifest = json.loads((out / doc["manifest"]).read_text("utf-8"))
            listed = {p["source_index"]: p for p in manifest["pages"]}
            for index in doc["removed_blank_pages"]:
                assert listed[index]["blank"] and not listed[index]["in_pdf"]
        # No text page is ever dropped: every non-blank, non-separator page is in a dossier.
        kept = {i for d in docs for i in d["source_pages"]}
        content = {i for i, kind in enumerate(batch.kinds) if kind not in ("blank", "sep")}
        assert content <= kept, batch.file
        # Removal is reversible because the scan itself is untouched.
        assert _digest(folder / batch.file) == checksums[batch.file]


def test_flag_evidence_names_the_page_and_the_measured_values(split_run):
    out, report, proc, _ = split_run
    drawings = [d for d in report["documents"] if "technical_drawing" in d["flags"]]
    manifest = json.loads((out / drawings[0]["manifest"]).read_text("utf-8"))
    (evidence, *_) = manifest["flags"]["technical_drawing"]
    assert {"page", "line_share", "mark_density"} <= set(evidence)
    oversized = next(d for d in report["documents"] if "oversized" in d["flags"])
    manifest = json.loads((out / oversized["manifest"]).read_text("utf-8"))
    assert max(manifest["flags"]["oversized"][0]["size_mm"]) == pytest.approx(420, abs=3)
    counts = report["flag_counts"]
    assert counts["technical_drawing"] == 2 and counts["split_mismatch"] == 2
    assert "Flags: " in proc.stdout and "technical_drawing 2" in proc.stdout


def test_thresholds_from_the_command_line_raise_thick_record_and_low_confidence(batches, tmp_path):
    folder, _ = batches
    proc = run_digitize(
        "process", folder / "no-separator", "--out", tmp_path, "--jobs", "1",
        "--set", "triage.thick_record_pages=2", "--set", "triage.min_confidence=99.5",
    )  # fmt: skip
    (doc,) = json.loads((tmp_path / "report.json").read_text("utf-8"))["documents"]
    manifest = json.loads((tmp_path / doc["manifest"]).read_text("utf-8"))
    assert manifest["flags"]["thick_record"] == [{"pages": 3, "threshold": 2}]
    low = manifest["flags"]["low_confidence"]
    assert len(low) == 3 and all(item["ocr_confidence"] < 99.5 for item in low)
    assert "thick_record 1" in proc.stdout


def test_an_undecodable_page_is_flagged_and_the_rest_archived(batches, tmp_path):
    folder, _ = batches
    pages = tmp_path / "station-folder"
    pages.mkdir()
    good = sorted((folder / "no-separator").glob("*.png"))[:2]
    for i, page in enumerate(good):
        (pages / f"page{i + 1}.png").write_bytes(page.read_bytes())
    data = good[0].read_bytes()
    (pages / "page3.png").write_bytes(data[: len(data) // 3])
    out = tmp_path / "out"
    run_digitize("process", pages, "--out", out, "--jobs", "1")
    (doc,) = json.loads((out / "report.json").read_text("utf-8"))["documents"]
    assert doc["flags"] == ["unreadable_page"]
    assert doc["source_pages"] == [0, 1]
    reasons = json.loads((out / "manual" / doc["name"] / "reasons.json").read_text("utf-8"))
    assert reasons["flags"]["unreadable_page"][0]["page"] == 2
