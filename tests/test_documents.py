"""Component documents: where each starts in a dossier, its bookmark, and the Annex VI fields read from its pages."""

from __future__ import annotations

import datetime as dt
import json

import pikepdf
import pytest

from pipeline.documents import PageFacts, find_starts, fold, read_documents
from pipeline.manifest import load_manifest
from pipeline.settings import DEFAULT_CONFIG, load_settings
from tests.conftest import THREE_DOCUMENT_AGENCY, THREE_DOCUMENT_CODE


@pytest.fixture(scope="module")
def record(three_document_dossier):
    folder, _, _ = three_document_dossier
    return folder / f"{THREE_DOCUMENT_CODE}.pdf", load_manifest((folder / f"{THREE_DOCUMENT_CODE}.json").read_bytes(), origin="test")


def test_each_document_starts_where_its_first_page_is(record):
    _, manifest = record
    documents = manifest.documents
    assert [(d.first_page, d.last_page) for d in documents] == [(0, 0), (1, 1), (2, 3)]
    assert [d.started_by for d in documents] == ["first_page", "id_card", "national_heading"]
    assert [d.ordinal for d in documents] == [1, 2, 3]
    assert [d.page_amount for d in documents] == [1, 1, 2]
    assert documents[2].source_pages == manifest.document.source_pages[2:4]


def test_each_document_gets_a_bookmark_with_its_title(record):
    pdf_path, manifest = record
    with pikepdf.open(pdf_path) as pdf, pdf.open_outline() as outline:
        pages = {page.objgen: n for n, page in enumerate(pdf.pages)}
        marks = [(item.title, pages[item.destination[0].objgen]) for item in outline.root]
    assert marks == [(d.title, d.first_page) for d in manifest.documents]
    assert fold(marks[0][0]) == fold("ĐƠN ĐỀ NGHỊ XÁC NHẬN TÌNH TRẠNG HÔN NHÂN")
    assert "CĂN CƯỚC CÔNG DÂN" in fold(marks[1][0]).replace("CAN CUOC CONG DAN", "CĂN CƯỚC CÔNG DÂN")
    assert fold(marks[2][0]).startswith("QUYET DINH: VE VIEC CAP GIAY CHUNG NHAN")


def test_the_decision_fields_are_read_from_its_header(record):
    _, manifest = record
    decision = manifest.documents[2]
    assert decision.type_name == "Quyết định"
    assert (decision.code_number, decision.code_notation) == ("123", "QĐ-UBND")
    assert decision.issued_date == dt.date(2023, 9, 1)
    assert fold(decision.issued_place) == "NGHE AN"
    assert fold(decision.organ_name) == "UY BAN NHAN DAN TINH NGHE AN"
    assert fold(decision.subject) == fold("Về việc cấp giấy chứng nhận quyền sử dụng đất")
    assert decision.language == "vi"


def test_the_application_and_card_have_no_number_or_date_made_up(record):
    _, manifest = record
    application, card = manifest.documents[:2]
    assert application.type_name == "Đơn" and card.type_name == "Căn cước công dân"
    # The birth date and "số căn cước công dân 0401..." in the application's text are neither.
    for doc in (application, card):
        assert (doc.code_number, doc.code_notation, doc.issued_date, doc.organ_name) == (None, None, None, None)


def test_the_dossier_fields(record):
    _, manifest = record
    dossier = manifest.dossier
    defaults = load_settings().records
    assert dossier.file_code == THREE_DOCUMENT_CODE
    assert dossier.creator == THREE_DOCUMENT_AGENCY
    assert (dossier.maintenance, dossier.rights) == (defaults.maintenance, defaults.rights)
    assert (dossier.start_date, dossier.end_date) == (dt.date(2023, 9, 1), dt.date(2023, 9, 1))
    assert (dossier.doc_total, dossier.page_total, dossier.reliability) == (3, 4, "digitized")
    assert dossier.title == manifest.documents[0].title


def test_retention_and_access_follow_the_procedure_code(tmp_path):
    site = tmp_path / "site.toml"
    site.write_text('[records.procedures."1.004227"]\nmaintenance = "20 năm"\nrights = "Công khai"\n', "utf-8")
    records = load_settings(site).records
    assert records.rule_for("1.004227").maintenance == "20 năm"
    assert records.rule_for("1.004227").rights == "Công khai"
    assert records.rule_for("2.000001").maintenance == records.maintenance == "Vĩnh viễn"
    assert records.rule_for(None).rights == "Hạn chế"
    assert DEFAULT_CONFIG.is_file()


def test_a_new_paper_size_or_a_drawing_starts_a_document():
    body = "Điều 2. Quyết định này có hiệu lực kể từ ngày ký."
    a4, a3 = (210.0, 297.0), (420.0, 297.0)
    pages = [PageFacts(text=body, size_mm=a4), PageFacts(text=body, size_mm=a4), PageFacts(text=body, size_mm=a3),
             PageFacts(text="", size_mm=a4, drawing=True), PageFacts(text="", size_mm=a4, drawing=True),
             PageFacts(text=body, size_mm=(211.0, 296.0))]  # fmt: skip
    assert find_starts(pages) == [0, 2, 3]
    documents = read_documents(pages, source_pages=range(10, 16))
    assert [(d.type_name, d.started_by, d.source_pages) for d in documents] == [
        ("Văn bản", "first_page", [10, 11]), ("Văn bản", "page_size", [12]), ("Bản vẽ", "drawing", [13, 14, 15]),
    ]  # fmt: skip


def test_manifests_without_documents_still_load_and_dump_unchanged(record):
    _, manifest = record
    data = json.loads(manifest.model_dump_json(by_alias=True))
    for key in ("documents", "dossier"):
        data.pop(key)
    again = load_manifest(json.dumps(data), origin="old")
    assert again.documents is None and "documents" not in again.model_dump(by_alias=True)


def test_a_dossier_split_in_review_has_its_documents_and_bookmarks_read_again(three_document_dossier, tmp_path):
    """A clerk cuts the decision off the dossier: each part's manifest and outline list only its own documents."""
    from digitize.keys import load_record_signer
    from digitize.config import load_app_settings
    from digitize.review import REVIEW_ITEM, find, split_item
    from digitize.storage import LocalStore

    folder, ca, env = three_document_dossier
    review = LocalStore(tmp_path / "review")
    prefix = f"st/b1/{THREE_DOCUMENT_CODE}/"
    for ext in (".pdf", ".txt", ".json"):
        review.upload(prefix + THREE_DOCUMENT_CODE + ext, folder / f"{THREE_DOCUMENT_CODE}{ext}")
    review.put_bytes(prefix + REVIEW_ITEM, json.dumps({"name": THREE_DOCUMENT_CODE, "code": THREE_DOCUMENT_CODE, "archive_folder": "2026/11/"}).encode())
    review.put_bytes(prefix + "reasons.json", json.dumps({"flags": {}, "thumbnails": {}}).encode())
    settings = load_app_settings().with_overrides({"signing.pkcs12": str(ca.agency_pkcs12), "output.agency": THREE_DOCUMENT_AGENCY})
    split_item(review, find(review, THREE_DOCUMENT_CODE), at=3, new_name="quyet-dinh", settings=settings, by="clerk",
               signer=load_record_signer(settings, env))  # fmt: skip
    before = load_manifest((folder / f"{THREE_DOCUMENT_CODE}.json").read_bytes(), origin="test")
    for name, types, sources in (
        (THREE_DOCUMENT_CODE, ["Đơn", "Căn cước công dân"], before.document.source_pages[:2]),
        ("quyet-dinh", ["Quyết định"], before.document.source_pages[2:]),
    ):
        item_prefix = f"st/b1/{name}/"
        manifest = load_manifest(review.read_bytes(f"{item_prefix}{name}.json"), origin=name)
        assert [d.type_name for d in manifest.documents] == types
        assert [p for d in manifest.documents for p in d.source_pages] == sources
        assert manifest.dossier.doc_total == len(types) and manifest.dossier.page_total == len(sources)
        review.download(f"{item_prefix}{name}.pdf", tmp_path / f"{name}.pdf")
        with pikepdf.open(tmp_path / f"{name}.pdf") as pdf, pdf.open_outline() as outline:
            assert [entry.title for entry in outline.root] == [d.title for d in manifest.documents]
