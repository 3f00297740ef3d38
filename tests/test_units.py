"""Fast checks of the pure pieces: geometry, page placement, paper sizes, names and settings."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest

from pipeline import geometry, paper
from pipeline.batch import output_stems
from pipeline.errors import ConfigError
from pipeline.pdfpage import frame_size_pt, placement_matrix
from pipeline.settings import load_settings
from tests import scanfactory as sf


@pytest.fixture(scope="module")
def page_150dpi():
    clean, _ = sf.render_page(text_lines_or_paragraphs=sf.DOCUMENTS["to-khai"], dpi=150, paper="A5", seed=3)
    return clean


@pytest.mark.parametrize("skew", [-8.0, -3.0, 0.0, 2.5, 6.0])
@pytest.mark.parametrize("turns", [0, 1, 2, 3])
def test_measure_finds_turn_and_skew(page_150dpi, skew, turns):
    scanned = sf.scan_effects(page_150dpi, dpi=150, skew_deg=skew, rotate90=turns, noise=2.0, seed=1)
    geo = geometry.measure(geometry.analysis_image(scanned, 150), max_skew_deg=10)
    assert geo.rotation == (4 - turns) % 4 * 90
    assert geo.skew_deg == pytest.approx(-skew, abs=0.3)


def test_measure_gives_up_on_an_empty_page():
    blank = sf.blank_page(dpi=150, paper="A5", seed=2)
    geo = geometry.measure(geometry.analysis_image(blank, 150), max_skew_deg=10)
    assert geo.method == "none" and geo.rotation == 0


@pytest.mark.parametrize("turns", [0, 1, 2, 3])
def test_placement_maps_the_image_onto_the_corrected_page(turns):
    width, height = 300.0, 500.0
    a, b, c, d, e, f = placement_matrix(width, height, quarter_turns=turns, skew_deg=0.0)
    page_w, page_h = frame_size_pt(300, 500, 72, turns)
    corners = [(u * a + v * c + e, u * b + v * d + f) for u in (0, 1) for v in (0, 1)]
    xs, ys = zip(*corners, strict=True)
    assert (min(xs), max(xs), min(ys), max(ys)) == pytest.approx((0, page_w, 0, page_h), abs=1e-6)


def test_placement_rotates_about_the_page_centre():
    a, b, c, d, e, f = placement_matrix(200.0, 100.0, quarter_turns=0, skew_deg=5.0)
    centre = (0.5 * a + 0.5 * c + e, 0.5 * b + 0.5 * d + f)
    assert centre == pytest.approx((100.0, 50.0))
    assert math.degrees(math.atan2(b, a)) == pytest.approx(5.0)


@pytest.mark.parametrize(
    ("size_px", "dpi"),
    [((1654, 2339), 200), ((2480, 3508), 300), ((3307, 4677), 400), ((1748, 2480), 300), ((3508, 4961), 300)],
)
def test_infer_dpi_from_paper_size(size_px, dpi):
    assert paper.infer_dpi(*size_px) == dpi
    assert paper.infer_dpi(*reversed(size_px)) == dpi


def test_output_names_keep_inputs_apart(tmp_path):
    names = output_stems([tmp_path / "a.tif", tmp_path / "a.pdf", tmp_path / "b.png", tmp_path / "folder"])
    assert names == ["a-tif", "a-pdf", "b", "folder"]


def test_settings_reject_unknown_and_bad_values(tmp_path):
    settings = load_settings()
    assert settings.ocr.languages == "vie+eng" and settings.output.pdfa == "2b"
    with pytest.raises(ConfigError, match="unknown setting 'output.colour'"):
        settings.with_overrides({"output.colour": "red"})
    bad = tmp_path / "bad.toml"
    bad.write_text("[ocr]\nlanguages = 'vie; rm -rf /'\n")
    with pytest.raises(ConfigError, match="ocr.languages"):
        load_settings(bad)


def _page(index, *, separator=None, blank=False, flags=None):
    from pipeline.page import PageResult

    return PageResult(index, "scan.tif", index, flags=flags or {}, blank=blank, separator=separator)


def _receipt(code):
    return {"kind": "receipt", "code": code, "evidence": "QR"}


@pytest.fixture(scope="module")
def rules():
    return load_settings()


def _cut(pages, rules, **hints):
    from pipeline.split import split

    return [(d.code, d.pages, sorted(d.flags)) for d in split(pages, rules=rules.split, triage=rules.triage, **hints)]


def test_split_without_separators_is_one_unflagged_document(rules):
    pages = [_page(0), _page(1, blank=True), _page(2)]
    assert _cut(pages, rules) == [(None, [0, 2], [])]


def test_split_by_receipts_keeps_them_as_first_page(rules):
    pages = [_page(0), _page(1, separator=_receipt("A")), _page(2), _page(3, separator=_receipt("B"))]
    assert _cut(pages, rules) == [(None, [0], ["unassigned_pages"]), ("A", [1, 2], []), ("B", [3], [])]


def test_split_can_drop_receipts_and_keep_blanks(rules):
    custom = rules.with_overrides({"split.keep_receipt": False, "split.drop_blank": False})
    pages = [_page(0, separator=_receipt("A")), _page(1), _page(2, blank=True)]
    assert _cut(pages, custom) == [("A", [1, 2], [])]


def test_a_receipt_on_two_sheets_is_one_dossier(rules):
    pages = [_page(0, separator=_receipt("A")), _page(1, separator=_receipt("A")), _page(2)]
    assert _cut(pages, rules) == [("A", [0, 1, 2], [])]


def test_generic_separator_sheets_are_dropped(rules):
    sep = {"kind": "generic", "code": None, "evidence": "QR SEP"}
    pages = [_page(0, separator=sep), _page(1), _page(2, separator=sep), _page(3)]
    assert _cut(pages, rules) == [(None, [1], []), (None, [3], [])]


def test_hints_win_and_disagreements_are_flagged(rules):
    from pipeline.split import DossierHint

    pages = [_page(0, separator=_receipt("A")), _page(1), _page(2, separator=_receipt("B")), _page(3)]
    hints = [DossierHint("A", 0, 2), DossierHint("B", 3, 3)]
    assert _cut(pages, rules, hints=hints) == [("A", [0, 1, 2], ["split_mismatch"]), ("B", [3], ["split_mismatch"])]
    agreeing = [DossierHint("A", 0, 1), DossierHint("B", 2, 3)]
    assert _cut(pages, rules, hints=agreeing) == [("A", [0, 1], []), ("B", [2, 3], [])]


def test_thick_record_counts_pages_in_the_pdf(rules):
    custom = rules.with_overrides({"triage.thick_record_pages": 2})
    pages = [_page(0), _page(1), _page(2), _page(3, blank=True)]
    assert _cut(pages, custom) == [(None, [0, 1, 2], ["thick_record"])]


@pytest.mark.parametrize("dpi", [150, 200, 300, 400, 600])
def test_oversized_is_judged_by_physical_size_whatever_the_dpi(rules, dpi):
    from pipeline.triage import oversized

    def size(paper_name):
        short, long = paper.PAPER_SIZES_MM[paper_name][0]
        px = (round(short / 25.4 * dpi), round(long / 25.4 * dpi))
        return paper.size_mm(*px, dpi)

    assert oversized(size("A3"), rules.triage)
    assert oversized(size("A2"), rules.triage)
    assert not oversized(size("A4"), rules.triage)
    assert not oversized(size("Legal"), rules.triage)


def test_syllable_share_tells_vietnamese_from_gibberish():
    from pipeline.vietnamese import syllable_share

    share, vietnamese = syllable_share("Ủy ban nhân dân huyện Diễn Châu đã tiếp nhận hồ sơ của công dân")
    assert share == 1.0 and vietnamese > 0.5
    garbled, _ = syllable_share("Ủy bạn nhn dâñ hyuện Dlễn Chàu đã tlếp nhậm hồ sợ cùa cộng dân")
    assert garbled < 0.75
    _, english = syllable_share("The committee received the application on Monday")
    assert english == 0.0


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("../etc/passwd", "'..' component"), ("st/../../x", "'..' component"), ("st/./b.tif", "'.' or '..' component"),
        ("/abs/path.tif", "an absolute path"), ("st/b/\x00.tif", "a control character"),
        ("st/b/a\nb.tif", "a control character"), ("st/b/\x7f.tif", "a control character"),
        ("st//b.tif", "an empty component"), ("st/b/" + "x" * 1000, "longer than 900 bytes"),
        ("st/" + "ả" * 100 + "/x.tif", "a component longer than 255 bytes"), ("a\\..\\b", "a backslash"),
    ],
)  # fmt: skip
def test_unsafe_object_keys_are_refused(key, problem, tmp_path):
    from digitize.storage import LocalStore, UnsafeKey, check_key

    with pytest.raises(UnsafeKey, match="unsafe object key: ") as refused:
        check_key(key)
    assert problem in str(refused.value)
    # One printable line, whatever the key holds.
    assert str(refused.value).isprintable() and len(str(refused.value)) < 250
    store = LocalStore(tmp_path / "store")
    with pytest.raises(UnsafeKey):
        store.put_bytes(key, b"x")
    assert not any((tmp_path).parent.glob("passwd")) and list((tmp_path / "store").rglob("*")) == []


def test_an_archived_record_is_never_overwritten(tmp_path):
    """The same pages of the same scan are the same record; other pages under its code take the
    next free name, and approving a review item never replaces a record already archived."""
    from digitize.archive import place
    from digitize.review import ReviewError, ReviewItem, approve
    from digitize.storage import LocalStore

    archive, review = LocalStore(tmp_path / "archive"), LocalStore(tmp_path / "review")
    code = "000.00.21.H40-261126-0042"
    first = {"source": {"sha256": "a" * 64}, "document": {"source_pages": [0, 1]}}
    assert place(archive, "2026/11/", code, first).name == code
    archive.put_bytes(f"2026/11/{code}.json", json.dumps(first).encode())
    same = place(archive, "2026/11/", code, first)
    assert same.identical and same.existing == f"2026/11/{code}.json"
    other_pages = place(archive, "2026/11/", code, {**first, "document": {"source_pages": [0]}})
    assert (other_pages.name, other_pages.identical) == (f"{code}-2", False)
    archive.put_bytes(f"2026/11/{code}-2.json", b"{}")
    other_scan = place(archive, "2026/11/", code, {**first, "source": {"sha256": "b" * 64}})
    assert (other_scan.name, other_scan.existing) == (f"{code}-3", f"2026/11/{code}.json")

    # Two review items written as -2 before either was approved: the second must not replace the first.
    # Their manifests are real record manifests (tests/resources), told apart by name.
    real = json.loads((Path(__file__).parent / "resources" / "record-3-receipt.json").read_text("utf-8"))
    real["output"].update(pdf_sha256=hashlib.sha256(b"%PDF").hexdigest(), text_sha256=hashlib.sha256(b"text").hexdigest())
    for batch, n in (("st/a/", 1), ("st/b/", 2)):
        body = json.dumps({**real, "name": f"item-{n}"}).encode()
        for ext, data in ((".pdf", b"%PDF"), (".txt", b"text"), (".json", body)):
            review.put_bytes(f"{batch}{code}-2/{code}-2{ext}", data)
    archive.delete(f"2026/11/{code}-2.json")
    def item(batch: str) -> ReviewItem:
        return ReviewItem(f"{batch}{code}-2/", f"{code}-2", code, "2026/11/", {}, {}, False)

    # A PDF that is not the one its manifest names (a replace half done) is not archived.
    review.put_bytes(f"st/a/{code}-2/{code}-2.pdf", b"%PDF changed")
    with pytest.raises(ReviewError, match="does not match its manifest"):
        approve(review, archive, item("st/a/"), by="test")
    review.put_bytes(f"st/a/{code}-2/{code}-2.pdf", b"%PDF")
    approve(review, archive, item("st/a/"), by="test")
    with pytest.raises(ReviewError, match="never overwritten"):
        approve(review, archive, item("st/b/"), by="test")
    archived = json.loads(archive.read_bytes(f"2026/11/{code}-2.json"))
    assert archived["name"] == "item-1" and archived["review"][-1]["by"] == "test"  # the manifest says who approved it


def test_a_holders_heartbeat_during_a_newcomers_settle_window_does_not_hand_over_the_batch(tmp_path):
    """The claim's own time never moves: only its `.alive` beside it is renewed."""
    import threading

    from digitize.inbox import Claim
    from digitize.storage import LocalStore

    store = LocalStore(tmp_path / "inbox")
    holder = Claim(store, "st/b/", lease_s=300, settle_s=0)
    assert holder.acquire()
    try:
        newcomer = Claim(store, "st/b/", lease_s=300, settle_s=0.3)
        beat = threading.Timer(0.1, holder._write, args=(holder.alive_key,))  # the holder's beat lands mid-settle
        beat.start()
        assert not newcomer.acquire(), "the batch's holder must keep it"
        beat.join()
        assert store.exists(holder.alive_key)
    finally:
        holder.release()
    assert store.list("st/b/") == [], "a released claim leaves neither itself nor its heartbeat"
