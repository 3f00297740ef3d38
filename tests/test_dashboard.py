"""Supervisors' view: the Prefect UI in headless Chromium shows a finished run's batch table."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from digitize.prefect_server import local_prefect_server
from tests.conftest import DIGITIZE

pytestmark = [pytest.mark.browser, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--virtual-time-budget=20000", "--window-size=1400,1000",
]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def prefect_server(tmp_path):
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    with local_prefect_server(_free_port(), env=env) as api:
        yield api, env


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    browser = shutil.which("chromium")
    assert browser, "chromium is not installed; `make test` installs it"
    return subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120)


def test_finished_run_batch_table_is_shown_in_the_prefect_ui(prefect_server, tmp_path):
    api, env = prefect_server
    env = {
        **env, "PREFECT_API_URL": api, "DIGITIZE_SERVICE_INBOX": str(tmp_path / "inbox"),
        "DIGITIZE_SERVICE_ARCHIVE": str(tmp_path / "archive"), "DIGITIZE_SERVICE_REVIEW": str(tmp_path / "review"),
        "DIGITIZE_SERVICE_CLAIM_SETTLE_S": "0",
    }  # fmt: skip
    batch = tmp_path / "desk-7"
    batch.mkdir()
    shutil.copy(REPO / "sample_scans" / "giay-tiep-nhan-300dpi-skew.jpg", batch)
    # A batch still arriving from another station: the summary's queue shows it.
    arriving = tmp_path / "inbox" / "dien-chau" / "desk-2"
    arriving.mkdir(parents=True)
    shutil.copy(REPO / "sample_scans" / "ban-ve-a3-200dpi.jpg", arriving)
    for args in (["drop", str(batch), "--station", "vinh"], ["run", "--jobs", "1"]):
        proc = subprocess.run([str(DIGITIZE), *args], env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr

    query = json.dumps({"artifacts": {"type": {"any_": ["table"]}}}).encode()
    request = urllib.request.Request(f"{api}/artifacts/filter", data=query, headers={"content-type": "application/json"})
    (artifact,) = json.load(urllib.request.urlopen(request, timeout=10))
    page = f"{api.removesuffix('/api')}/artifacts/artifact/{artifact['id']}"

    dom = _chromium("--dump-dom", page, profile=tmp_path / "chrome-dom").stdout
    assert "000.00.21.H40-261126-0042" in dom, "the batch table's dossier code is not on the page"
    assert "OCR confidence" in dom and f"archive: {time.strftime('%Y/%m', time.gmtime())}/000.00.21.H40-261126-0042.pdf" in dom, "where the record went"
    screenshots = REPO / "test-output"
    screenshots.mkdir(exist_ok=True)
    shot = screenshots / "dashboard-batch-table.png"
    _chromium(f"--screenshot={shot}", page, profile=tmp_path / "chrome-shot")
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")

    # The night's summary: a table per station, and the queue left in the inbox.
    query = json.dumps({"artifacts": {"key": {"any_": ["nightly-summary"]}}}).encode()
    request = urllib.request.Request(f"{api}/artifacts/filter", data=query, headers={"content-type": "application/json"})
    (night,) = json.load(urllib.request.urlopen(request, timeout=10))
    page = f"{api.removesuffix('/api')}/artifacts/artifact/{night['id']}"
    dom = _chromium("--dump-dom", page, profile=tmp_path / "chrome-night").stdout
    for shown in ("Per station", "vinh", "Left in the inbox", "dien-chau/desk-2/", "waiting", "Waiting for a person", "pages per hour"):
        assert shown in dom, f"{shown!r} is not on the summary page"
    shot = screenshots / "dashboard-night-summary.png"
    _chromium(f"--screenshot={shot}", page, profile=tmp_path / "chrome-night-shot")
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


def test_serve_registers_the_nightly_schedule_with_its_server(tmp_path):
    """`digitize serve` starts a Prefect server when none is configured and serves the cron deployment."""
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DIGITIZE_SERVICE_INBOX": str(tmp_path / "inbox"),
    }  # fmt: skip
    env.pop("PREFECT_API_URL", None)
    serving = subprocess.Popen(
        [str(DIGITIZE), "serve", "--jobs", "1", "--port", str(port)], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        deployments = []
        while time.monotonic() < deadline and not deployments:
            time.sleep(2)
            try:
                request = urllib.request.Request(f"{api}/deployments/filter", data=b"{}", headers={"content-type": "application/json"})
                deployments = json.load(urllib.request.urlopen(request, timeout=5))
            except OSError:
                continue
        assert deployments, "no deployment registered"
        (deployment,) = deployments
        assert deployment["name"] == "nightly"
        (schedule,) = deployment["schedules"]
        assert schedule["schedule"]["cron"] == "0 22 * * *"
        assert schedule["schedule"]["timezone"] == "Asia/Ho_Chi_Minh"
    finally:
        os.killpg(serving.pid, 15)
        serving.wait(timeout=120)
