"""`digitize export`: the Decree 30 Annex VI XML and one signed PDF/A per component document, from the archive's store."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
from pathlib import Path

import pikepdf
import pikepdf.pdfa
import pytest
from lxml import etree

from digitize.config import load_app_settings
from digitize.export import ANNEX_SCHEMA, ExportError, annex_fields, export_dossiers
from digitize.keys import load_record_signer
from digitize.storage import LocalStore, open_store
from pipeline.errors import UsageError
from pipeline.manifest import load_manifest
from tests.conftest import DIGITIZE, THREE_DOCUMENT_AGENCY, THREE_DOCUMENT_CODE, preflight

CODE = THREE_DOCUMENT_CODE
MONTH = "2026/11/"


def _archive(record_folder: Path, archive: Path, *, change=None) -> Path:
    """A folder archive holding the record as the nightly service files it: <yyyy>/<mm>/<code>.pdf|.json|.txt."""
    target = archive / MONTH
    target.mkdir(parents=True)
    for ext in (".pdf", ".txt", ".json"):
        shutil.copy(record_folder / f"{CODE}{ext}", target / f"{CODE}{ext}")
    if change:
        manifest = json.loads((target / f"{CODE}.json").read_text("utf-8"))
        change(manifest)
        (target / f"{CODE}.json").write_text(json.dumps(manifest, ensure_ascii=False), "utf-8")
    return archive


def _export(env: dict, ca, *args) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DIGITIZE), "export", *map(str, args), "--set", f"signing.pkcs12={ca.agency_pkcs12}"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip


@pytest.fixture(scope="module")
def exported(three_document_dossier, tmp_path_factory):
    record, ca, env = three_document_dossier
    root = tmp_path_factory.mktemp("export")
    archive = _archive(record, root / "archive")
    proc = _export(env, ca, CODE, "--to", root / "out", "--archive", archive)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root / "out" / CODE, ca


def test_one_folder_per_dossier_with_its_xml_and_a_pdf_per_document(exported):
    folder, _ = exported
    assert sorted(p.name for p in folder.iterdir() if p.suffix in (".pdf", ".xml")) == [
        f"{CODE}.01.pdf", f"{CODE}.02.pdf", f"{CODE}.03.pdf", f"{CODE}.xml",
    ]  # fmt: skip
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")], "a staging folder was left behind"


def test_the_xml_validates_and_holds_the_dossier_and_documents(exported):
    folder, _ = exported
    with ANNEX_SCHEMA.open("rb") as fh:
        schema = etree.XMLSchema(etree.parse(fh))
    xml = etree.parse(str(folder / f"{CODE}.xml"))
    assert schema.validate(xml), schema.error_log
    root = xml.getroot()
    assert root.findtext("FileCode") == CODE
    assert (root.findtext("DocTotal"), root.findtext("PageTotal"), root.findtext("Reliability")) == ("3", "4", "digitized")
    assert root.findtext("StartDate") == root.findtext("EndDate") == "2023-09-01"
    documents = root.findall("Document")
    assert [d.findtext("FileName") for d in documents] == [f"{CODE}.{n:02d}.pdf" for n in (1, 2, 3)]
    assert [d.findtext("PageAmount") for d in documents] == ["1", "1", "2"]
    decision = documents[2]
    assert (decision.findtext("CodeNumber"), decision.findtext("CodeNotation")) == ("123", "QĐ-UBND")
    assert decision.findtext("IssuedDate") == dt.date(2023, 9, 1).isoformat()
    assert decision.findtext("TypeName") == "Quyết định"
    assert documents[0].find("CodeNumber") is None  # nothing read, nothing written


def test_each_document_pdf_is_signed_pdfa_1b_and_verifies(exported):
    folder, ca = exported
    pdfs = sorted(folder.glob("*.pdf"))
    for pdf, pages in zip(pdfs, (1, 1, 2), strict=True):
        with pikepdf.open(pdf) as doc, doc.open_metadata() as xmp, doc.open_outline() as outline:
            assert len(doc.pages) == pages
            assert xmp["dc:identifier"] == CODE and xmp["dc:creator"] == [THREE_DOCUMENT_AGENCY]
            assert [item.title for item in outline.root] == [xmp["dc:title"]]
        preflight(pdf)
    proc = subprocess.run([str(DIGITIZE), "verify", *map(str, pdfs), "--trust", ca.root], capture_output=True, text=True, timeout=300)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all(line.startswith("OK") and "PDF/A-1b" in line and "checksums match" in line for line in lines[:3]), proc.stdout


def test_a_record_lacking_a_required_field_is_named_in_one_line(three_document_dossier, tmp_path):
    record, ca, env = three_document_dossier
    archive = _archive(record, tmp_path / "archive", change=lambda m: m["dossier"].update(creator=None))
    proc = _export(env, ca, CODE, "--to", tmp_path / "out", "--archive", archive)
    assert proc.returncode == 65, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {CODE}: Creator: required, but missing (output.agency was not set when it was processed)"]
    assert not (tmp_path / "out" / CODE).exists()


def test_a_field_of_the_wrong_type_is_refused(three_document_dossier, tmp_path):
    record, _, _ = three_document_dossier
    archive = _archive(record, tmp_path / "archive", change=lambda m: m["documents"][2].update(code_number="12a"))
    manifest = load_manifest((archive / MONTH / f"{CODE}.json").read_bytes(), origin="test")
    with pytest.raises(ExportError, match=rf"^{re.escape(CODE)}: Document\.2\.CodeNumber: String should match pattern") as caught:
        annex_fields(manifest, code=CODE)
    assert caught.value.exit_code == 65


def test_documents_that_no_longer_fit_the_record_are_refused(three_document_dossier, tmp_path):
    """After a review split the record has fewer pages than its documents were read from."""
    record, ca, env = three_document_dossier
    archive = _archive(record, tmp_path / "archive", change=lambda m: m["documents"][2].update(last_page=4, page_amount=3))
    settings = load_app_settings().with_overrides({"signing.pkcs12": str(ca.agency_pkcs12)})
    report = export_dossiers([CODE], archive=LocalStore(archive), to=tmp_path / "out", signer=load_record_signer(settings, env))
    assert not report.exported
    assert [str(exc) for exc in report.failed] == [
        f"{CODE}: its documents cover 5 pages, the record has 4 (changed in review after they were read)"
    ]
    assert not any((tmp_path / "out").iterdir()), "a staging folder was left behind"


def test_unknown_codes_and_unsafe_codes(three_document_dossier, tmp_path):
    record, ca, env = three_document_dossier
    archive = _archive(record, tmp_path / "archive")
    proc = _export(env, ca, "000.00.21.H40-230901-9999", "--to", tmp_path / "out", "--archive", archive)
    assert proc.returncode == 66
    assert proc.stderr.strip() == f"error: 000.00.21.H40-230901-9999: no record of that dossier code in {archive}"
    for unsafe in ("../etc", "a/b", ""):
        with pytest.raises(UsageError, match="not a dossier code") as caught:
            export_dossiers([unsafe], archive=LocalStore(archive), to=tmp_path / "out", signer=None)
        assert caught.value.exit_code == 64


@pytest.mark.s3
def test_export_reads_an_s3_archive(three_document_dossier, s3, tmp_path):
    record, ca, env = three_document_dossier
    store = open_store("s3://export-archive", s3.env)
    for ext in (".pdf", ".txt", ".json"):
        store.upload(f"{MONTH}{CODE}{ext}", record / f"{CODE}{ext}")
    proc = _export({**env, **s3.env}, ca, CODE, "--to", tmp_path / "out", "--archive", "s3://export-archive")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(list((tmp_path / "out" / CODE).glob(f"{CODE}.??.pdf"))) == 3
