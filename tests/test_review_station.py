"""The review station as a clerk uses it: a real nightly run makes the items, Chromium drives the pages."""

from __future__ import annotations

import base64
import http.cookiejar
import io
import json
import re
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from PIL import Image

from digitize.config import app_settings
from digitize.inbox import Readiness, parse_manifest, scan_inbox
from digitize.keys import load_record_signer, make_demo_ca
from digitize.storage import LocalStore, open_store
from tests.conftest import DIGITIZE, REPO
from tests.servicekit import batch_folder, digitize_cli, folder_env

pytestmark = [pytest.mark.slow]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = REPO / "test-output"
CLERK, CLERK_PASSWORD = "lan", "mat-khau-cua-lan"
BOSS, BOSS_PASSWORD = "giam-sat", "mat-khau-giam-sat"
DRAWING_WORDS = "Bản vẽ kỹ thuật: nét xiên, cung tròn trên 61% tờ giấy"


class Station:
    """A review station over the stores of one real night: its URL, environment and stores."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        ca = make_demo_ca(tmp / "ca", agency="Bộ phận một cửa huyện Nghi Lộc (test)")
        self.env = {
            **folder_env(tmp), "DIGITIZE_SIGNING_PASSPHRASE": ca.passphrase, "DIGITIZE_SIGNING_PKCS12": str(ca.agency_pkcs12),
            "DIGITIZE_OUTPUT_AGENCY": '"Bộ phận một cửa (test)"', "DIGITIZE_SIGNING_TRUST_ROOTS": f'["{ca.root}"]',
            "DIGITIZE_REVIEW_USERS_FILE": str(tmp / "users.json"),
        }  # fmt: skip
        samples = REPO / "sample_scans"
        # Station nghi-loc: an A3 drawing, and a 4-page dossier made "thick" so that it waits for a person.
        self.nghi_loc = batch_folder(tmp / "nghi-loc-desk", samples / "ban-ve-a3-200dpi.jpg", samples / "ho-so-scanner.pdf")
        # Station dien-chau: the same drawing scanned again (another file, the same name), and two bad scans.
        dien_chau = tmp / "dien-chau-desk"
        dien_chau.mkdir()
        Image.open(samples / "ban-ve-a3-200dpi.jpg").save(dien_chau / "ban-ve-a3-200dpi.jpg", quality=90, dpi=(200, 200))
        (dien_chau / "empty.tif").write_bytes(b"")
        (dien_chau / "don-de-nghi.png").write_bytes((samples / "don-de-nghi-200dpi-skew.png").read_bytes())
        for folder, station in ((self.nghi_loc, "nghi-loc"), (dien_chau, "dien-chau")):
            dropped = digitize_cli(self.env, "drop", folder, "--station", station, "--allow-bad")
            assert dropped.returncode == 0, dropped.stderr
        inbox = LocalStore(tmp / "inbox")
        (key,) = [o.key for o in inbox.list("dien-chau/") if o.key.endswith("batch.json")]
        manifest = json.loads(inbox.read_bytes(key))
        for entry in manifest["files"]:
            if entry["name"] == "don-de-nghi.png":
                entry["sha256"] = "0" * 64  # a station's faulty disk: the night quarantines a copy
        inbox.put_bytes(key, json.dumps(manifest).encode())
        run = digitize_cli({**self.env, "DIGITIZE_TRIAGE_THICK_RECORD_PAGES": "1"}, "run", "--jobs", "2")
        assert run.returncode == 0, run.stderr
        for name, role, password in ((CLERK, "reviewer", CLERK_PASSWORD), (BOSS, "supervisor", BOSS_PASSWORD)):
            added = subprocess.run([str(DIGITIZE), "review", "add-user", name, "--role", role],
                                   input=password + "\n", capture_output=True, text=True, env=self.env, timeout=60)  # fmt: skip
            assert added.returncode == 0, added.stderr
        assert password not in (tmp / "users.json").read_text()
        self.review, self.archive, self.inbox = LocalStore(tmp / "review"), LocalStore(tmp / "archive"), inbox

    def serve(self) -> None:
        from digitize.web.app import Stores, create_app

        import uvicorn

        settings = app_settings(None, self.env, {})
        stores = Stores(*(open_store(u, self.env) for u in (settings.service.review, settings.service.archive, settings.service.inbox)))
        app = create_app(settings, stores=stores, users_file=self.tmp / "users.json",
                         signer=lambda: load_record_signer(settings, self.env))  # fmt: skip
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))  # a free port
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True).start()
        for _ in range(100):
            if self.server.started:
                return
            time.sleep(0.1)
        raise AssertionError("the review station did not start")

    def item(self, station: str, name: str) -> str:
        (prefix,) = [o.key[: -len("_item.json")] for o in self.review.list(f"{station}/") if o.key.endswith(f"/{name}/_item.json")]
        return prefix


@pytest.fixture(scope="module")
def station(tmp_path_factory):
    station = Station(tmp_path_factory.mktemp("review-station"))
    station.serve()
    yield station
    station.server.should_exit = True


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        ])  # fmt: skip
        yield chromium
        chromium.close()


@pytest.fixture
def clerk(station, browser):
    """A signed-in clerk's page, in the default language."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000}, locale="vi-VN")
    page = context.new_page()
    page.goto(station.url + "/")
    assert page.url.endswith("/login")
    assert page.locator("html").get_attribute("lang") == "vi"
    page.fill("input[name=user]", CLERK)
    page.fill("input[name=password]", CLERK_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(station.url + "/")
    yield page
    context.close()


def _open_item(page, station: Station, prefix: str) -> None:
    page.goto(f"{station.url}/item?p={urllib.parse.quote(prefix)}")
    page.wait_for_load_state("networkidle")


def _confirm_and_submit(page, form: str) -> None:
    page.check(f"{form} input[name=confirm]")
    with page.expect_navigation(timeout=300_000):
        page.click(f"{form} button")


@pytest.mark.browser
def test_clerk_signs_in_reads_the_queue_and_an_item_zooms_and_approves_into_the_signed_archive(station, clerk):
    drawing = station.item("nghi-loc", "ban-ve-a3-200dpi")
    # The CLI names clashing items in full, and takes the full name.
    clash = digitize_cli(station.env, "review", "show", "ban-ve-a3-200dpi", "--to", station.tmp / "shown")
    assert clash.returncode == 65 and "give the full <station>/<batch>/<name>" in clash.stderr, clash.stderr
    assert digitize_cli(station.env, "review", "show", drawing.rstrip("/"), "--to", station.tmp / "shown").returncode == 0

    page = clerk
    assert DRAWING_WORDS in page.content(), "flags in plain Vietnamese"
    rows = page.locator("table.queue tbody tr")
    assert rows.count() == 3  # two drawings and the thick dossier
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "review-queue-vi.png", full_page=True)

    page.select_option("select[name=station]", "nghi-loc")
    page.click("form.filters button")
    page.click("a.item-link:text('ban-ve-a3-200dpi')")
    page.wait_for_load_state("networkidle")
    assert "Trang 1: " in page.content() or "⚑" in page.content()
    assert page.locator("section.page.flagged").count() == 1
    image = page.locator("section.page img.page-image").first
    natural = image.evaluate("img => img.naturalWidth")
    shown = image.bounding_box()["width"]
    assert natural >= 1000 and shown >= 1000, (natural, shown)
    # Upright as scanned: its title block is bottom right (it was once turned 180° by text-line evidence).
    assert "Độ phân giải 200 dpi" in page.content() and "Xoay 0°" in page.content()
    # The drawing's evidence picture, linked from its page: readable, the measured evidence drawn in colour.
    assert "/evidence?p=" in page.content()
    drawing = station.item("nghi-loc", "ban-ve-a3-200dpi")
    status, png, _ = _http(station, f"/evidence?p={urllib.parse.quote(drawing)}&page=0", auth=(CLERK, CLERK_PASSWORD))
    assert status == 200 and max(Image.open(io.BytesIO(png)).size) >= 1200 and Image.open(io.BytesIO(png)).mode == "RGB"
    page.screenshot(path=SCREENSHOTS / "review-item-vi.png")
    page.click("#zoom-in")
    assert image.bounding_box()["width"] == pytest.approx(shown * 1.25, rel=0.02)

    _confirm_and_submit(page, "#approve")
    assert "Đã thực hiện: Duyệt và lưu trữ" in page.content()
    assert page.locator("a.item-link:text('ban-ve-a3-200dpi')").count() == 1  # only the other station's drawing is left

    (pdf_key,) = [o.key for o in station.archive.list() if o.key.endswith("/ban-ve-a3-200dpi.pdf")]
    assert "nghi-loc" in pdf_key
    verified = digitize_cli(station.env, "verify", pdf_key)
    assert verified.returncode == 0 and "1 of 1 records verified" in verified.stdout, verified.stdout
    manifest = json.loads(station.archive.read_bytes(pdf_key.replace(".pdf", ".json")))
    assert manifest["review"][-1]["action"] == "approve" and manifest["review"][-1]["by"] == CLERK
    audit = "".join(station.archive.read_bytes(o.key).decode() for o in station.archive.list("audit/"))
    assert '"event": "review_approve"' in audit and f'"by": "{CLERK}"' in audit


@pytest.mark.browser
def test_clerk_replaces_a_page_from_an_upload(station, clerk):
    drawing = station.item("dien-chau", "ban-ve-a3-200dpi")
    _open_item(clerk, station, drawing)
    clerk.fill("#replace input[name=pages]", "1")
    clerk.set_input_files("#replace input[name=rescan]", REPO / "sample_scans" / "quyet-dinh-bitonal-g4.tif")
    clerk.fill("#replace input[name=note]", "quét lại khổ A4")
    _confirm_and_submit(clerk, "#replace")
    assert "Đã thực hiện: Thay trang" in clerk.content(), clerk.inner_text("main")
    reasons = json.loads(station.review.read_bytes(drawing + "reasons.json"))
    assert "oversized" not in reasons["flags"] and "technical_drawing" not in reasons["flags"], reasons
    assert {r["flag"] for r in reasons["resolved"]} >= {"oversized", "technical_drawing"}
    shown = digitize_cli(station.env, "review", "show", drawing.rstrip("/"), "--to", station.tmp / "shown-after")
    assert shown.returncode == 0 and "oversized" not in shown.stdout and "technical_drawing" not in shown.stdout, shown.stdout
    manifest = json.loads(station.review.read_bytes(drawing + "ban-ve-a3-200dpi.json"))
    assert manifest["review"][-1]["by"] == CLERK and manifest["signature"], "re-assembled and signed again"
    assert any(o.key.startswith(drawing + "previous/") for o in station.review.list(drawing))


@pytest.mark.browser
def test_clerk_splits_a_dossier_in_two(station, clerk):
    (thick,) = [o.key[: -len("_item.json")] for o in station.review.list("nghi-loc/") if o.key.endswith("_item.json") and "H40" in o.key]
    _open_item(clerk, station, thick)
    count = clerk.locator("section.page").count()
    assert count >= 3, "the sample dossier has a receipt and at least two pages"
    clerk.fill("#split input[name=at]", "3")
    clerk.fill("#split input[name=new_name]", "tach-ra")
    _confirm_and_submit(clerk, "#split")
    assert "Đã thực hiện: Tách hồ sơ" in clerk.content()
    assert clerk.locator("section.page").count() == count - 2  # the new item's pages
    new = thick.rsplit("/", 2)[0] + "/tach-ra/"
    assert station.review.exists(new + "tach-ra.pdf") and station.review.exists(new + "_item.json")
    _open_item(clerk, station, thick)
    assert clerk.locator("section.page").count() == 2
    verified = digitize_cli(station.env, "verify", "--archive", station.tmp / "review", new + "tach-ra.pdf")
    assert verified.returncode == 0, verified.stdout


def _page_count(store: LocalStore, key: str) -> int:
    import pikepdf

    with pikepdf.open(store.root / key) as pdf:
        return len(pdf.pages)


@pytest.mark.browser
def test_clerk_moves_a_page_to_another_dossier(station, clerk):
    (thick,) = [o.key[: -len("_item.json")] for o in station.review.list("nghi-loc/") if o.key.endswith("_item.json") and "H40" in o.key]
    drawing = station.item("dien-chau", "ban-ve-a3-200dpi")
    source_pdf, target_pdf = thick + thick.rstrip("/").rsplit("/", 1)[1] + ".pdf", drawing + "ban-ve-a3-200dpi.pdf"
    source_count, target_count = _page_count(station.review, source_pdf), _page_count(station.review, target_pdf)
    assert source_count >= 2, "the thick dossier keeps a page"
    moved_text = station.review.read_bytes(source_pdf.replace(".pdf", ".txt")).decode().split("\f")[0]

    _open_item(clerk, station, thick)
    clerk.fill("#move input[name=pages]", "1")
    clerk.select_option("#move select[name=target]", drawing)
    clerk.fill("#move input[name=note]", "trang này thuộc hồ sơ bản vẽ")
    _confirm_and_submit(clerk, "#move")
    assert "Đã thực hiện: Chuyển trang sang hồ sơ khác" in clerk.content(), clerk.inner_text("main")
    assert clerk.locator("section.page").count() == source_count - 1

    assert _page_count(station.review, source_pdf) == source_count - 1
    assert _page_count(station.review, target_pdf) == target_count + 1
    target_texts = station.review.read_bytes(target_pdf.replace(".pdf", ".txt")).decode().rstrip("\n").split("\f")
    assert target_texts[-1] == moved_text, "the page's text went with it"
    verified = digitize_cli(station.env, "verify", "--archive", station.tmp / "review", source_pdf, target_pdf)
    assert verified.returncode == 0 and "2 of 2 records verified" in verified.stdout, verified.stdout

    for prefix, action, other in ((thick, "move", ("to_item", drawing)), (drawing, "move_in", ("from_item", thick))):
        (entry,) = [json.loads(station.review.read_bytes(o.key)) for o in station.review.list(prefix + "actions/") if o.key.endswith(f"-{action}.json")]
        assert entry["by"] == CLERK and entry[other[0]] == other[1] and "bản vẽ" in entry["note"], entry
        assert (entry.get("pages_moved") or entry.get("from_pages")) == [1]
        manifest = json.loads(station.review.read_bytes(prefix + prefix.rstrip("/").rsplit("/", 1)[1] + ".json"))
        assert manifest["review"][-1]["action"] == action and manifest["signature"], "recorded and signed again"
        assert any(o.key.startswith(prefix + "previous/") for o in station.review.list(prefix))
    _open_item(clerk, station, drawing)
    assert clerk.locator("section.page").count() == target_count + 1
    assert "Nhận trang từ hồ sơ khác" in clerk.inner_text("section.history")
    audit = "".join(station.archive.read_bytes(o.key).decode() for o in station.archive.list("audit/"))
    assert '"event": "review_move"' in audit and '"event": "review_move_in"' in audit


def test_moving_pages_out_of_range_or_every_page_is_refused_in_one_line(station):
    drawing = station.item("dien-chau", "ban-ve-a3-200dpi").rstrip("/")
    (thick,) = [o.key[: -len("/_item.json")] for o in station.review.list("nghi-loc/") if o.key.endswith("_item.json") and "H40" in o.key]
    count = _page_count(station.review, f"{thick}/{thick.rsplit('/', 1)[1]}.pdf")
    before = {o.key for o in station.review.list()}
    for pages, reason in ((str(count + 98), f"not within 1..{count}"), (",".join(map(str, range(1, count + 1))), "a dossier keeps at least one")):
        refused = digitize_cli(station.env, "review", "move", thick, drawing, "--pages", pages)
        assert refused.returncode == 65, (refused.returncode, refused.stderr)
        assert refused.stderr.count("\n") == 1 and reason in refused.stderr, refused.stderr
    bad = digitize_cli(station.env, "review", "move", thick, drawing, "--pages", "one")
    assert bad.returncode == 64 and bad.stderr.count("\n") == 1 and "--pages 'one'" in bad.stderr, bad.stderr
    assert {o.key for o in station.review.list()} == before, "a refused move changes nothing"


@pytest.mark.browser
def test_clerk_sends_a_dossier_back_for_rescanning(station, clerk):
    drawing = station.item("dien-chau", "ban-ve-a3-200dpi")
    _open_item(clerk, station, drawing)
    clerk.fill("#send-back input[name=pages]", "1")
    clerk.fill("#send-back input[name=note]", "Bản vẽ bị mờ, quét lại ở 300 dpi")
    _confirm_and_submit(clerk, "#send-back")
    assert "Đã thực hiện: Gửi trạm quét lại" in clerk.content()
    (request_key,) = [o.key for o in station.inbox.list("dien-chau/_requests/")]
    request = json.loads(station.inbox.read_bytes(request_key))
    assert request["by"] == CLERK and request["pages"] == [1] and "300 dpi" in request["note"]
    # The night does not take the request for a batch, and the station sees it on its next drop.
    states = scan_inbox(station.inbox, incomplete_after=timedelta(hours=12))
    assert all("_requests" not in s.prefix for s in states)
    again = batch_folder(station.tmp / "dien-chau-next", REPO / "sample_scans" / "giay-tiep-nhan-300dpi-skew.jpg")
    dropped = digitize_cli(station.env, "drop", again, "--station", "dien-chau")
    assert dropped.returncode == 0 and "rescan requested: ban-ve-a3-200dpi pages 1" in dropped.stdout, dropped.stdout


@pytest.mark.browser
def test_clerk_releases_a_quarantined_scan(station, clerk):
    clerk.click("text=Đầu vào bị cách ly")
    row = clerk.locator("tr", has_text="don-de-nghi.png")
    assert "checksum does not match batch.json" in row.inner_text()
    assert "empty.tif" in clerk.content()  # listed too, with no copy to release
    row.locator("form[action='/quarantine/release'] input[name=confirm]").check()
    with clerk.expect_navigation():
        row.locator("form[action='/quarantine/release'] button").click()
    assert "Đã thực hiện: Cho xử lý lại" in clerk.content()
    assert clerk.locator("tr", has_text="don-de-nghi.png").count() == 0
    (released,) = [s for s in scan_inbox(station.inbox, incomplete_after=timedelta(hours=12)) if "/released-" in s.prefix]
    assert released.state == Readiness.READY and released.manifest.files[0].name == "don-de-nghi.png"
    parse_manifest(station.inbox.read_bytes(released.prefix + "batch.json"), "released batch")
    assert station.review.exists(next(o.key for o in station.review.list("rejected/") if o.key.endswith("don-de-nghi.png")))


def _http(station: Station, path: str, *, auth: tuple[str, str] | None = None, data: bytes | None = None,
          opener: urllib.request.OpenerDirector | None = None) -> tuple[int, bytes, str]:  # fmt: skip
    headers = {"Authorization": "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()} if auth else {}
    if data is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    request = urllib.request.Request(station.url + path, data=data, headers=headers)
    try:
        with (opener or urllib.request.build_opener()).open(request, timeout=120) as response:
            return response.status, response.read(), response.url
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.url


def test_anonymous_requests_unsafe_keys_and_forged_forms_are_refused_and_basic_auth_reads(station):
    # Anonymous: the login page for a browser, 401 for a script or an image.
    status, body, url = _http(station, "/")
    assert status == 200 and url.endswith("/login") and b'name="password"' in body
    for path in ("/api/queue", f"/preview?p={urllib.parse.quote(station.item('dien-chau', 'ban-ve-a3-200dpi'))}&page=1"):
        assert _http(station, path)[0] == 401
    assert _http(station, "/api/queue", auth=(CLERK, "wrong password"))[0] == 401

    # HTTP Basic: the queue, and a page preview at least 1,000 px wide.
    status, body, _ = _http(station, "/api/queue", auth=(CLERK, CLERK_PASSWORD))
    queue = json.loads(body)
    assert status == 200 and queue["items"] and any(q["input"].endswith("empty.tif") for q in queue["quarantine"])
    prefix = queue["items"][0]["item"]
    status, png, _ = _http(station, f"/preview?p={urllib.parse.quote(prefix)}&page=1", auth=(CLERK, CLERK_PASSWORD))
    assert status == 200 and Image.open(io.BytesIO(png)).width >= 1000

    # Another store's paths: every '../' is refused before anything is read.
    for path in ("/item?p=" + urllib.parse.quote("../inbox/nghi-loc/"), "/item?p=" + urllib.parse.quote("nghi-loc/../../archive/"),
                 "/preview?page=1&p=" + urllib.parse.quote("../../etc/"), "/item?p=%2Fetc%2F"):  # fmt: skip
        status, body, _ = _http(station, path, auth=(CLERK, CLERK_PASSWORD))
        assert status == 400 and (b"unsafe item name" in body), (path, status, body[:200])

    # CSRF: a signed-in session's forms need its token.
    jar = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    _, login_page, _ = _http(station, "/login", opener=browser)
    token = re.search(rb'name="csrf" value="([^"]+)"', login_page).group(1).decode()
    form = urllib.parse.urlencode({"user": CLERK, "password": CLERK_PASSWORD, "csrf": "forged"}).encode()
    assert _http(station, "/login", data=form, opener=browser)[0] == 403
    form = urllib.parse.urlencode({"user": CLERK, "password": CLERK_PASSWORD, "csrf": token}).encode()
    status, queue_page, _ = _http(station, "/login", data=form, opener=browser)
    assert status == 200 and b"table" in queue_page
    item = station.item("dien-chau", "ban-ve-a3-200dpi")
    forged = urllib.parse.urlencode({"p": item, "confirm": "yes", "csrf": token}).encode()  # the pre-sign-in token
    assert _http(station, "/item/approve", data=forged, opener=browser)[0] == 403
    assert _http(station, "/item/approve", data=urllib.parse.urlencode({"p": item, "confirm": "yes"}).encode(), opener=browser)[0] == 403
    assert _http(station, "/item/approve", data=forged, auth=(CLERK, CLERK_PASSWORD))[0] == 403  # scripts only read
    assert not station.review.exists(item + "_archived.json")

    # A supervisor sees every reviewer's actions.
    status, body, _ = _http(station, "/actions", auth=(BOSS, BOSS_PASSWORD))
    assert status == 200
