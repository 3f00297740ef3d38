"""Receipts whose QR holds a portal URL, JSON or key: value lines; a printed code when the QR is unreadable;
the applicant's ID number kept in the manifest and nowhere else; scans under the Decree 30 standard."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import pytest

from pipeline import receipt, standard
from pipeline.manifest import load_manifest
from pipeline.settings import StandardSettings
from tests import scanfactory as sf
from tests.servicekit import digitize_cli, folder_env

DPI = 200
PATTERN = r"^\d{3}\.\d{2}\.\d{2}\.[A-Z]\d{2}-\d{6}-\d{4}$"
# Made-up numbers in the shape of a citizen ID (12 digits) and a branch tax code (10 + 3 digits).
URL_CODE, URL_ID = "000.00.21.H40-261128-0007", "040196001234"
JSON_CODE, JSON_ID = "000.00.21.H40-261128-0008", "2901234567-001"
KV_CODE, KV_ID = "000.00.21.H40-261128-0009", "040285009876"
PRINTED_CODE = "000.00.21.H40-261128-0010"
IDS = (URL_ID, JSON_ID, KV_ID)
PAYLOADS = {
    URL_CODE: "https://dichvucong.nghean.gov.vn/tra-cuu-ho-so?" + urllib.parse.urlencode(
        {"maHoSo": URL_CODE, "maTTHC": "1.004227", "soCCCD": URL_ID, "tenHoSo": "Đăng ký khai sinh"}
    ),
    JSON_CODE: json.dumps({"maHoSo": JSON_CODE, "maTTHC": "2.000908", "soGiayTo": JSON_ID,
                           "tenTTHC": "Cấp giấy phép xây dựng"}, ensure_ascii=False),
    KV_CODE: f"Mã hồ sơ: {KV_CODE}\nMã TTHC: 1.001612\nSố CCCD: {KV_ID}\nTên hồ sơ: Đăng ký thường trú",
}  # fmt: skip


def _text_page(seed: int, dpi: int = DPI):
    clean, _ = sf.render_page(text_lines_or_paragraphs=sf.DOCUMENTS["don-de-nghi"][:6], dpi=dpi, paper="A5", seed=seed)
    return clean


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """Receipts (URL, JSON, key: value, damaged QR) in one scan, and a 150 dpi page, through `digitize run`.

    Each receipt starts a dossier and is kept as its page 1; the first has one more page after it.
    """
    tmp = tmp_path_factory.mktemp("receipts")
    batch = tmp / "batch"
    batch.mkdir()
    pages = []
    for seed, (code, payload) in enumerate(PAYLOADS.items()):
        receipt_page, _ = sf.receipt_page(code=code, payload=payload, dpi=DPI, paper="A5", code_mm=32, seed=seed)
        pages += [receipt_page, _text_page(seed)] if code == URL_CODE else [receipt_page]
    damaged, _ = sf.receipt_page(code=PRINTED_CODE, dpi=DPI, paper="A5", seed=7, readable=False)
    pages.append(damaged)
    sf.save_pdf(batch / "ho-so.pdf", pages, DPI)
    sf.save_png(batch / "low-dpi.png", _text_page(11, dpi=150), 150)
    # The birth registration's procedure has its own retention rule; the others take the defaults.
    env = {**folder_env(tmp), "DIGITIZE_RECORDS_PROCEDURES": '{"1.004227" = {maintenance = "20 năm", rights = "Công khai"}}'}
    dropped = digitize_cli(env, "drop", batch, "--station", "st-1", "--operator", "op")
    assert dropped.returncode == 0, dropped.stdout + dropped.stderr
    ran = digitize_cli(env, "run")
    return tmp, ran


def _manifests(tmp: Path) -> dict[str, object]:
    found = {}
    for folder in ("archive", "review"):
        for path in (tmp / folder).rglob("*.json"):
            if path.name not in ("reasons.json",) and '"digitize.record/' in path.read_text(encoding="utf-8")[:200]:
                manifest = load_manifest(path.read_bytes(), origin=str(path))
                found[manifest.name] = manifest
    return found


@pytest.mark.slow  # the real nightly run, Prefect's temporary server and all
def test_receipts_with_url_json_and_key_value_payloads_split_with_their_values(night):
    tmp, ran = night
    assert ran.returncode in (0, 2), ran.stdout + ran.stderr
    manifests = _manifests(tmp)
    expected = {
        URL_CODE: ("qr", "url", "1.004227", URL_ID, "Đăng ký khai sinh"),
        JSON_CODE: ("qr", "json", "2.000908", JSON_ID, "Cấp giấy phép xây dựng"),
        KV_CODE: ("qr", "key_value", "1.001612", KV_ID, "Đăng ký thường trú"),
    }
    for code, values in expected.items():
        assert code in manifests, (code, sorted(manifests), ran.stdout)
        manifest = manifests[code]
        assert manifest.code == code
        assert len(manifest.document.source_pages) == (2 if code == URL_CODE else 1)
        r = manifest.receipt
        assert (r.code_source, r.payload_kind, r.procedure_code, r.applicant_id, r.document_name) == values
        assert "separator_unreadable" not in manifest.flags
        assert manifest.dossier.title == values[-1]
    assert (manifests[URL_CODE].dossier.maintenance, manifests[URL_CODE].dossier.rights) == ("20 năm", "Công khai")
    assert (manifests[JSON_CODE].dossier.maintenance, manifests[JSON_CODE].dossier.rights) == ("Vĩnh viễn", "Hạn chế")


@pytest.mark.slow  # the real nightly run, Prefect's temporary server and all
def test_an_unreadable_qr_falls_back_to_the_printed_code_flagged_for_review(night):
    tmp, _ = night
    manifest = _manifests(tmp)[PRINTED_CODE]
    assert manifest.code == PRINTED_CODE
    assert manifest.receipt.code_source == "text" and manifest.receipt.applicant_id is None
    assert manifest.flags["code_from_text"][0]["code"] == PRINTED_CODE
    assert any((tmp / "review").rglob(f"{PRINTED_CODE}.json"))


@pytest.mark.slow  # the real nightly run, Prefect's temporary server and all
def test_the_id_number_is_only_in_the_manifest_receipt_section(night):
    """Not in the run's output, Prefect's database (logs, artifacts), audit lines, other files or any name."""
    tmp, ran = night
    assert not any(i in ran.stdout + ran.stderr for i in IDS)
    seen = []
    for path in tmp.rglob("*"):
        assert not any(i in str(path.relative_to(tmp)) for i in IDS), path
        if not path.is_file() or path.parent.name == "batch":
            continue  # the station's own scans hold the QR, as paper does
        data = path.read_bytes()
        if not any(i.encode() in data for i in IDS):
            continue
        seen.append(path)
        manifest = json.loads(data)
        # Only the receipt section holds it: drop that and no trace is left.
        del manifest["receipt"]
        assert not any(i in json.dumps(manifest) for i in IDS), path
    assert len({p.name for p in seen}) == 3, seen  # one record manifest per receipt with an ID
    assert any((tmp / "prefect").rglob("*.db")), "Prefect's database was not where the test looks"


@pytest.mark.slow  # the real nightly run, Prefect's temporary server and all
def test_a_page_under_200_dpi_is_flagged_below_standard_with_its_resolution(night):
    tmp, _ = night
    low = _manifests(tmp)["low-dpi"]
    assert low.flags["below_standard"][0]["dpi"] == 150.0
    assert all("below_standard" not in m.flags for name, m in _manifests(tmp).items() if name != "low-dpi")


def test_colour_is_checked_only_where_the_station_profile_asks():
    bitonal_by_policy = StandardSettings(min_dpi=200, require_colour=False)
    colour_profile = StandardSettings(min_dpi=200, require_colour=True)
    assert standard.shortfall(dpi=300, dpi_inferred=False, pil_mode="1", rules=bitonal_by_policy) is None
    assert standard.shortfall(dpi=300, dpi_inferred=False, pil_mode="L", rules=colour_profile) == {
        "colour_mode": "gray", "required": "colour"}
    assert standard.shortfall(dpi=300, dpi_inferred=False, pil_mode="RGB", rules=colour_profile) is None


@pytest.mark.parametrize("payload", [
    "000.00.21.H40-261128-0007",
    "maHoSo=000.00.21.H40-261128-0007;maTTHC=1.004227",
    '{"hoso": {"maHoSo": "000.00.21.H40-261128-0007"}}',
    "Hồ sơ 000.00.21.H40-261128-0007 đã tiếp nhận",
])  # fmt: skip
def test_the_code_is_found_anywhere_in_a_payload(payload):
    assert receipt.read_payload(payload, code_pattern=PATTERN, code_source="qr").code == "000.00.21.H40-261128-0007"


def test_a_longer_number_around_a_code_is_not_a_code():
    assert receipt.read_payload("1000.00.21.H40-261128-00071", code_pattern=PATTERN, code_source="qr") is None
    assert receipt.mask(PAYLOADS[URL_CODE]).count(URL_ID) == 0
