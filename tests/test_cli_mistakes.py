"""Staff mistakes at the station and on the command line: each gets one clear line and its exit code,
through the real `digitize` console script, and nothing is dropped without a word."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from digitize.inbox import BATCH_MANIFEST, parse_manifest
from digitize.storage import open_store
from tests.conftest import REPO, run_digitize
from tests.servicekit import batch_folder, digitize_cli, folder_env, service_env

SAMPLES = REPO / "sample_scans"
PNG = SAMPLES / "don-de-nghi-200dpi-skew.png"
PDF = SAMPLES / "ho-so-scanner.pdf"  # 4 pages
TIFF = SAMPLES / "quyet-dinh-bitonal-g4.tif"


def _lines(text: str, start: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith(start)]


def _station_folder(tmp_path: Path) -> Path:
    """Two good scans, a note, a text file posing as a PDF and a PDF cut short in the middle."""
    folder = batch_folder(tmp_path / "ho-so", PNG, PDF)
    (folder / "notes.txt").write_text("hồ sơ số 12\n", "utf-8")
    (folder / "fake.pdf").write_text("not a pdf\n")
    (folder / "cut.pdf").write_bytes(PDF.read_bytes()[:3000])
    return folder


# --- digitize drop ------------------------------------------------------------------------------


def test_drop_refuses_bad_scans_and_names_each_with_the_pipelines_reason(tmp_path):
    env = folder_env(tmp_path)
    folder = _station_folder(tmp_path)
    proc = digitize_cli(env, "drop", folder, "--station", "dien-chau-01")
    assert proc.returncode == 65, proc.stdout + proc.stderr
    assert _lines(proc.stderr, "skipped: ") == [f"skipped: {folder}/notes.txt: not a scan (PDF, TIFF, JPEG or PNG)"]
    bad = _lines(proc.stderr, "bad scan: ")
    assert bad[0].startswith(f"bad scan: {folder}/cut.pdf: page 1 cannot be rendered: ") and len(bad) == 2, proc.stderr
    assert bad[1] == f"bad scan: {folder}/fake.pdf: not a scan: expected PDF, TIFF, JPEG or PNG content"
    assert _lines(proc.stderr, "error: ") == [
        f"error: {folder}: 2 bad scan(s) (cut.pdf, fake.pdf); nothing uploaded (--allow-bad uploads them anyway)"
    ]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "inbox").exists() or not any((tmp_path / "inbox").rglob("*")), "something was uploaded"


def test_drop_allow_bad_uploads_and_lists_bad_files_and_page_counts(tmp_path):
    env = folder_env(tmp_path)
    folder = _station_folder(tmp_path)
    proc = digitize_cli(env, "drop", folder, "--station", "dien-chau-01", "--allow-bad")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(_lines(proc.stderr, "bad scan: ")) == 2 and len(_lines(proc.stderr, "skipped: ")) == 1
    inbox = open_store(env["DIGITIZE_SERVICE_INBOX"], env)
    (key,) = [o.key for o in inbox.list() if o.key.endswith(BATCH_MANIFEST)]
    manifest = parse_manifest(inbox.read_bytes(key), key)
    assert {f.name: f.pages for f in manifest.files} == {
        "cut.pdf": None, "fake.pdf": None, "don-de-nghi-200dpi-skew.png": 1, "ho-so-scanner.pdf": 4,
    }  # fmt: skip
    assert [(b.name, b.reason.split(":")[0]) for b in manifest.bad_files] == [
        ("cut.pdf", "page 1 cannot be rendered"), ("fake.pdf", "not a scan"),
    ]  # fmt: skip
    assert not inbox.exists(key.replace(BATCH_MANIFEST, "notes.txt")), "a note was uploaded"


def test_batch_manifest_without_pages_or_bad_files_still_parses():
    old = {
        "schema": "digitize.batch/1", "station": "st", "operator": "x", "scanned_at": "2026-11-01T00:00:00+00:00",
        "files": [{"name": "a.png", "sha256": "0" * 64, "bytes": 1}],
    }  # fmt: skip
    manifest = parse_manifest(json.dumps(old).encode(), "old")
    assert manifest.files[0].pages is None and manifest.bad_files == []


@pytest.mark.parametrize(
    ("args", "code", "line"),
    [
        (["--station", "dien chau/01"], 64, "error: --station 'dien chau/01': a station id is 1 to 64 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit"),
        (["--station", "-x"], 64, "error: --station '-x': a station id is"),
    ],
)  # fmt: skip
def test_drop_refuses_a_bad_station_id(tmp_path, args, code, line):
    env = folder_env(tmp_path)
    folder = batch_folder(tmp_path / "b", PNG)
    proc = digitize_cli(env, "drop", folder, *args)
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines()[0].startswith(line), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_drop_names_a_missing_folder_and_a_file_given_for_a_folder(tmp_path):
    env = folder_env(tmp_path)
    missing = digitize_cli(env, "drop", tmp_path / "nope", "--station", "st")
    assert missing.returncode == 66 and missing.stderr.strip() == f"error: {tmp_path}/nope: no such folder", missing.stderr
    a_file = digitize_cli(env, "drop", PNG, "--station", "st")
    assert a_file.returncode == 64, a_file.stderr
    assert a_file.stderr.strip() == f"error: {PNG}: not a folder; drop takes the folder that holds one batch's scans"
    assert not (tmp_path / "inbox").exists() or not any((tmp_path / "inbox").rglob("*"))


# --- S3 credentials and reach --------------------------------------------------------------------


@pytest.mark.s3
def test_run_with_wrong_credentials_is_one_line_and_exit_77(s3, tmp_path):
    env = {**service_env(s3, tmp_path, "denied"), "MINIO_SECRET_KEY": "not-the-secret-0123456789"}
    proc = digitize_cli(env, "run", "--jobs", "1")
    assert proc.returncode == 77, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    (line,) = _lines(proc.stderr, "error: ")
    assert line.startswith("error: s3://denied-inbox: ") and "SignatureDoesNotMatch" in line, proc.stderr
    drop = digitize_cli(env, "drop", batch_folder(tmp_path / "b", PNG), "--station", "st")
    assert drop.returncode == 77 and "Traceback" not in drop.stderr, drop.stderr
    assert len(_lines(drop.stderr, "error: ")) == 1


def test_unreachable_s3_endpoint_is_one_line_after_the_retries(tmp_path):
    import socket

    with socket.socket() as sock:  # a free port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **folder_env(tmp_path), "MINIO_ENDPOINT": f"127.0.0.1:{port}", "MINIO_ACCESS_KEY": "a",
        "MINIO_SECRET_KEY": "b", "MINIO_SECURE": "false",
    }  # fmt: skip
    proc = digitize_cli(env, "drop", batch_folder(tmp_path / "b", PNG), "--station", "st", "--inbox", "s3://inbox")
    assert proc.returncode == 75, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: cannot reach S3 endpoint 127.0.0.1:{port}: Connection refused (s3://inbox: bucket check)"
    )
    assert "Retrying" not in proc.stderr and "urllib3" not in proc.stderr and "Traceback" not in proc.stderr


# --- digitize process ----------------------------------------------------------------------------


def test_process_takes_a_folders_pdfs_and_multi_page_tiffs_as_inputs_and_names_skipped_files(tmp_path):
    from PIL import Image

    folder = batch_folder(tmp_path / "desk", PNG, PDF, TIFF)
    with Image.open(PNG) as page:
        gray = page.convert("L")
        gray.save(folder / "two-pages.tif", save_all=True, append_images=[gray], dpi=(200, 200))
    (folder / "notes.txt").write_text("ghi chú\n", "utf-8")
    out = tmp_path / "out"
    proc = run_digitize("process", folder, "--out", out, "--jobs", "2", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _lines(proc.stderr, "skipped: ") == [f"skipped: {folder}/notes.txt: not a scan (PDF, TIFF, JPEG or PNG)"]
    report = json.loads((out / "report.json").read_text("utf-8"))
    inputs = {Path(d["input"]).name: d["source_pages"] for d in report["documents"]}
    # The page images (the PNG and the one-page TIFF) stay one input, the folder; the others are their own.
    assert set(inputs) == {"desk", "ho-so-scanner.pdf", "two-pages.tif"}, report
    assert inputs["desk"] == [0, 1] and inputs["two-pages.tif"] == [0, 1]
    assert report["rejected"] == []


def test_process_names_a_missing_input_and_leaves_no_output_folder(tmp_path):
    out = tmp_path / "out"
    proc = run_digitize("process", PNG, tmp_path / "nope.pdf", "--out", out, check=False)
    assert proc.returncode == 66, proc.stderr
    assert proc.stderr.strip() == f"error: {tmp_path}/nope.pdf: no such file or folder"
    assert not out.exists()


def test_unknown_language_names_the_right_model(tmp_path):
    proc = run_digitize("process", PNG, "--out", tmp_path / "out", "--lang", "vi", check=False)
    assert proc.returncode == 78, proc.stderr
    assert proc.stderr.strip() == "error: Tesseract has no language 'vi'; did you mean 'vie'? (--lang, ocr.languages)"
    assert not (tmp_path / "out").exists()


def test_version_prints_the_package_version():
    from importlib.metadata import version

    proc = run_digitize("--version")
    assert proc.stdout.strip() == f"digitize {version('digitize')}"


LONG_CODE = "000.00.21.H40-261126-0043-BO-SUNG-HO-SO-CHUYEN-NHUONG"


def test_summary_table_never_breaks_a_dossier_code(tmp_path):
    hints = tmp_path / "hints.json"
    hints.write_text(json.dumps({PNG.name: [{"code": LONG_CODE, "first_page": 0, "last_page": 0}]}))
    env = {**folder_env(tmp_path), "COLUMNS": "100"}
    proc = digitize_cli(env, "process", PNG, "--out", tmp_path / "out", "--jobs", "1", "--hints", hints)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert LONG_CODE in proc.stdout, proc.stdout
    assert max(len(ln) for ln in proc.stdout.splitlines()) <= 100


def _review_item(review: Path, *, code: str, flags: dict) -> None:
    item = review / "st" / "b-1" / code
    item.mkdir(parents=True)
    (item / "_item.json").write_text(json.dumps({"name": code, "code": code, "batch": "st/b-1/", "archive_folder": "2026/11"}))
    (item / "reasons.json").write_text(json.dumps({"flags": flags, "thumbnails": {}}))


def test_review_shows_pages_counted_from_1(tmp_path):
    env = {**folder_env(tmp_path), "COLUMNS": "100"}
    flags = {"low_confidence": [{"page": 0, "confidence": 41.5}, {"page": 2, "confidence": 50.0}],
             "unassigned_pages": [{"pages": [0, 1]}], "thick_record": [{"pages": 120, "threshold": 100}]}  # fmt: skip
    _review_item(tmp_path / "review", code=LONG_CODE, flags=flags)
    listing = digitize_cli(env, "review", "list")
    assert listing.returncode == 0, listing.stderr
    (row,) = [ln for ln in listing.stdout.splitlines() if LONG_CODE in ln]
    assert "│ 1, 3 " in row, listing.stdout
    shown = digitize_cli(env, "review", "show", LONG_CODE, "--to", tmp_path / "look")
    assert shown.returncode == 0, shown.stderr
    assert 'low_confidence: {"page": 1, "confidence": 41.5}; {"page": 3, "confidence": 50.0}' in shown.stdout
    assert 'unassigned_pages: {"pages": [1, 2]}' in shown.stdout
    assert 'thick_record: {"pages": 120, "threshold": 100}' in shown.stdout, "a count is not a page number"
    stored = json.loads((tmp_path / "review" / "st" / "b-1" / LONG_CODE / "reasons.json").read_text())
    assert stored["flags"] == flags, "the stored evidence stays 0-based"


# --- manifests -----------------------------------------------------------------------------------


def test_record_manifest_carries_the_batch_provenance_in_utf8(tmp_path):
    env = folder_env(tmp_path)
    folder = batch_folder(tmp_path / "ho-so", PNG)
    dropped = digitize_cli(env, "drop", folder, "--station", "dien-chau-01", "--operator", "Nguyễn Thị Lan")
    assert dropped.returncode == 0, dropped.stderr
    run = digitize_cli(env, "run", "--jobs", "1")
    assert run.returncode == 0, run.stdout + run.stderr
    archive = tmp_path / "archive"
    (manifest_path,) = [p for p in archive.rglob("*.json") if p.name == f"{PNG.stem}.json" and "sources" not in p.parts]
    raw = manifest_path.read_bytes()
    assert "Nguyễn Thị Lan".encode() in raw and b"\\u" not in raw
    source = json.loads(raw)["source"]
    batch = source["provenance"]["batch"]
    assert source["provenance"] == {
        "station": "dien-chau-01", "operator": "Nguyễn Thị Lan", "batch": batch, "key": f"{batch}{PNG.name}",
    }  # fmt: skip
    assert batch.startswith("dien-chau-01/ho-so-") and "path" not in source
    assert str(tmp_path) not in raw.decode() and "/tmp" not in raw.decode(), "a work-folder path in the manifest"
