"""A night that tells the truth: its final state, its summary, `digitize status`, and claims left by a crash.

Each night is the real `digitize run` against one real Prefect server; the run's state and
artifacts are read back through Prefect's REST API, as the dashboard reads them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest

from digitize.inbox import BATCH_MANIFEST, CLAIMS, Claim, machine_identity
from digitize.keys import make_demo_ca
from digitize.prefect_server import local_prefect_server
from digitize.storage import LocalStore
from tests.servicekit import batch_folder, digitize_cli, folder_env

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
RECEIPT = REPO / "sample_scans" / "giay-tiep-nhan-300dpi-skew.jpg"
RECEIPT_CODE = "000.00.21.H40-261126-0042"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory) -> tuple[str, Path]:
    """The module's Prefect server: its API URL and the file its own log goes to."""
    home = tmp_path_factory.mktemp("prefect")
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    with local_prefect_server(free_port(), env=env, log=home / "server.log") as api:
        yield api, home / "server.log"


@pytest.fixture(scope="module")
def prefect_api(prefect_server) -> str:
    return prefect_server[0]


def api_call(api: str, path: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{api}{path}", data=data, headers={"content-type": "application/json"})
    return json.load(urllib.request.urlopen(request, timeout=30))


def night_env(tmp: Path, api: str, **settings: str) -> dict[str, str]:
    extra = {f"DIGITIZE_{key.upper()}": value for key, value in settings.items()}
    return {**folder_env(tmp), "PREFECT_API_URL": api, **extra}


def last_night(tmp: Path) -> dict:
    return json.loads((tmp / "archive" / "audit" / "last-night.json").read_text("utf-8"))


def run_state(api: str, run_id: str) -> dict:
    return api_call(api, f"/flow_runs/{run_id}")["state"]


def summary(api: str, run_id: str) -> str:
    artifacts = api_call(api, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}, "key": {"any_": ["nightly-summary"]}}})
    assert len(artifacts) == 1, artifacts
    return artifacts[0]["data"]


def drop(env: dict, folder: Path, station: str) -> str:
    proc = digitize_cli(env, "drop", folder, "--station", station)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (prefix,) = [p for p in (Path(env["DIGITIZE_SERVICE_INBOX"]) / station).iterdir() if p.name.startswith(folder.name)]
    return f"{station}/{prefix.name}/"


def test_a_night_with_a_rejected_scan_ends_needs_attention_with_its_counts(prefect_api, tmp_path):
    env = night_env(tmp_path, prefect_api)
    first = drop(env, batch_folder(tmp_path / "desk-1", RECEIPT), "vinh")
    second = drop(env, batch_folder(tmp_path / "desk-2", REPO / "sample_scans" / "ban-ve-a3-200dpi.jpg",
                                    REPO / "sample_scans" / "don-de-nghi-200dpi-skew.png"), "dien-chau")  # fmt: skip
    # What a station's faulty disk looks like: a scan that does not match its batch.json.
    inbox = LocalStore(tmp_path / "inbox")
    manifest = json.loads(inbox.read_bytes(second + BATCH_MANIFEST))
    for entry in manifest["files"]:
        if entry["name"] == "don-de-nghi-200dpi-skew.png":
            entry["sha256"] = "0" * 64
    inbox.put_bytes(second + BATCH_MANIFEST, json.dumps(manifest).encode())
    (tmp_path / "inbox" / "hung" / "late").mkdir(parents=True)
    (tmp_path / "inbox" / "hung" / "late" / "scan-1.jpg").write_bytes(RECEIPT.read_bytes())

    proc = digitize_cli(env, "run", "--jobs", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Needs attention: 2 batches, 2 pages, 2 dossiers; rejected inputs: 1" in proc.stdout, proc.stdout
    night = last_night(tmp_path)
    state = run_state(prefect_api, night["run"])
    print(f"\nstate {state['type']} {state['name']!r}: {state['message']}")
    assert (state["type"], state["name"]) == ("COMPLETED", "Needs attention")
    assert "rejected inputs: 1" in state["message"]

    text = summary(prefect_api, night["run"])
    assert "# Tonight's digitization: Needs attention" in text
    assert "| dien-chau | 1 | 1 | 1 | oversized 1, technical_drawing 1 | 1 |" in text, text
    assert "| vinh | 1 | 1 | 1 | - | 0 |" in text, text
    assert "| hung | hung/late/ | waiting |" in text, text
    assert "- dossiers to review: **1**" in text and "- quarantined inputs: **1**" in text, text
    assert "don-de-nghi-200dpi-skew.png: checksum does not match batch.json" in text

    # Each batch is a flow run of its own, tagged with its station and batch, so the dashboard can
    # filter by either; the summary links each run.
    batch_runs = {
        run["id"]: run for run in api_call(prefect_api, "/flow_runs/filter", {"flows": {"name": {"any_": ["process-batch"]}}})
    }  # fmt: skip
    assert sorted(tag for run in batch_runs.values() for tag in run["tags"]) == sorted(
        ["station:dien-chau", f"batch:{second.rstrip('/')}", "station:vinh", f"batch:{first.rstrip('/')}"]
    )
    assert {run["state"]["name"] for run in batch_runs.values()} == {"Done"}
    assert {b["run"] for b in night["batches"]} == set(batch_runs)
    for run in batch_runs:
        assert f"/runs/flow-run/{run})" in text, text
    # Each batch run's table names each dossier and where it went, whole.
    tables = api_call(prefect_api, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": list(batch_runs)}, "type": {"any_": ["table"]}}})
    rows = [row for t in tables for row in json.loads(t["data"])]
    assert {row["dossier"]: row["where"] for row in rows}[RECEIPT_CODE] == f"archive: {datetime.now(timezone.utc):%Y/%m}/{RECEIPT_CODE}.pdf"


def test_a_night_whose_batch_fails_ends_failed_and_still_writes_its_summary(prefect_api, tmp_path):
    ca = make_demo_ca(tmp_path / "ca", agency="test")
    # Signing needs the timestamp server, which is down: the batch fails (after no retries).
    env = night_env(
        tmp_path, prefect_api, signing_pkcs12=str(ca.agency_pkcs12), signing_passphrase=ca.passphrase,
        signing_timestamp_url=f"http://127.0.0.1:{free_port()}/", service_retry_delays_s="[]",
    )  # fmt: skip
    prefix = drop(env, batch_folder(tmp_path / "desk", RECEIPT), "vinh")
    proc = digitize_cli(env, "run", "--jobs", "1")
    assert proc.returncode == 75, proc.stdout + proc.stderr
    assert f"failed: {prefix}: " in proc.stderr and "cannot sign" in proc.stderr, proc.stderr
    night = last_night(tmp_path)
    state = run_state(prefect_api, night["run"])
    assert state["type"] == "FAILED" and f"1 batches failed: {prefix}" in state["message"], state
    text = summary(prefect_api, night["run"])
    assert "# Tonight's digitization: Failed" in text
    assert f"| {prefix} | failed | " in text and "cannot sign" in text, text
    assert not (tmp_path / "inbox" / prefix / "_done.json").exists(), "a failed batch stays for the next night"


def test_a_night_with_nothing_to_do_says_so_and_status_shows_the_waiting_batch(prefect_api, tmp_path):
    env = night_env(tmp_path, prefect_api)
    waiting = tmp_path / "inbox" / "vinh" / "desk-3"
    waiting.mkdir(parents=True)
    (waiting / "page-1.jpg").write_bytes(RECEIPT.read_bytes())  # batch.json not there yet

    status = digitize_cli(env, "status", "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert [(b["station"], b["batch"], b["state"]) for b in report["batches"]] == [("vinh", "vinh/desk-3/", "waiting")]
    assert report["batches"][0]["age_s"] >= 0
    assert report["review"]["open"] == 0 and report["quarantine"]["files"] == 0 and report["last_night"] is None

    proc = digitize_cli(env, "run", "--jobs", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Nothing to do: nothing to do: no batch was ready (1 still arriving)" in proc.stdout, proc.stdout
    state = run_state(prefect_api, last_night(tmp_path)["run"])
    assert (state["type"], state["name"]) == ("COMPLETED", "Nothing to do"), state
    after = json.loads(digitize_cli(env, "status", "--json").stdout)
    assert after["last_night"]["outcome"] == "Nothing to do"


def _fake_claim(inbox: LocalStore, prefix: str, body: dict) -> str:
    key = f"{prefix}{CLAIMS}20260101T000000000000-{body['host']}-{body['pid']}-feedbeef"
    inbox.put_bytes(key, json.dumps(body).encode())
    return key


def test_a_batch_held_by_a_live_run_elsewhere_is_named_then_waited_for(prefect_api, tmp_path):
    env = night_env(tmp_path, prefect_api, service_claim_lease_s="8")
    prefix = drop(env, batch_folder(tmp_path / "desk", RECEIPT), "vinh")
    inbox = LocalStore(tmp_path / "inbox")
    elsewhere = {"host": "scanner-room-2", "pid": 4242, "pid_start": "1", "boot_id": "x", "at": datetime.now(timezone.utc).isoformat()}
    _fake_claim(inbox, prefix, elsewhere)

    refused = digitize_cli(env, "run", "--jobs", "1", "--no-wait")
    assert refused.returncode == 75, refused.stdout + refused.stderr
    assert f"not taken: {prefix}: held by scanner-room-2 pid 4242 since" in refused.stderr, refused.stderr
    assert "lease runs out in" in refused.stderr
    assert not list((tmp_path / "archive").rglob("*.pdf"))

    # By default the run waits: the other run never renews its claim, so the lease runs out and this run takes the batch.
    _fake_claim(inbox, prefix, {**elsewhere, "at": datetime.now(timezone.utc).isoformat()})
    started = time.monotonic()
    waited = digitize_cli(env, "run", "--jobs", "1")
    assert waited.returncode == 0, waited.stdout + waited.stderr
    print(f"\nwaited and took the batch over in {time.monotonic() - started:.1f} s")
    assert len(list((tmp_path / "archive").rglob(f"{RECEIPT_CODE}.pdf"))) == 1


# The first night on a machine: its batch runs start together, and each finds no limit yet.
MAKE_THE_LIMIT_AT_ONCE = """
import threading
from concurrent.futures import ThreadPoolExecutor
from flows.batch import tesseract_slots
together = threading.Barrier(8)
def batch_run(_):
    together.wait()
    tesseract_slots(1)
with ThreadPoolExecutor(8) as runs:
    list(runs.map(batch_run, range(8)))
"""


def test_batch_runs_starting_together_make_the_machines_tesseract_limit_without_a_server_error(prefect_server, tmp_path):
    """Eight batch runs on a new machine all make its `tesseract-<host>` limit at once. They must
    end up with one limit at the core count, and the server's log, which the supervisor reads,
    must show no failed insert."""
    api, server_log = prefect_server
    name = f"tesseract-{socket.gethostname()}"
    if any(limit["name"] == name for limit in api_call(api, "/v2/concurrency_limits/filter", {})):  # made by an earlier night here
        urllib.request.urlopen(urllib.request.Request(f"{api}/v2/concurrency_limits/{name}", method="DELETE"), timeout=30).close()
    logged_before = server_log.stat().st_size
    made = subprocess.run(
        [sys.executable, "-c", MAKE_THE_LIMIT_AT_ONCE], env={**os.environ, "PREFECT_API_URL": api}, cwd=REPO,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    limits = [limit for limit in api_call(api, "/v2/concurrency_limits/filter", {}) if limit["name"] == name]
    assert [limit["limit"] for limit in limits] == [os.cpu_count()], limits
    with server_log.open("rb") as log:
        log.seek(logged_before)
        logged = log.read().decode("utf-8", "replace")
    assert "Encountered exception" not in logged and "IntegrityError" not in logged, logged


def test_the_claim_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path):
    """Same host, same boot: a process id that no longer exists holds nothing, whatever its lease."""
    inbox = LocalStore(tmp_path / "inbox")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    body = {
        "host": socket.gethostname(), **machine_identity(), "pid": dead.pid, "pid_start": "0", "boot_id": _boot_id(),
        "at": datetime.now(timezone.utc).isoformat(),
    }  # fmt: skip
    # A machine cloned from this one (same host name, its own machine id) is not judged by our /proc.
    clone = _fake_claim(inbox, "st/c/", {**body, "machine_id": "0" * 32})
    assert not Claim(inbox, "st/c/", lease_s=300, settle_s=0).acquire(), "another machine's claim holds until its lease"
    assert inbox.exists(clone)
    stale = _fake_claim(inbox, "st/b/", body)
    newcomer = Claim(inbox, "st/b/", lease_s=300, settle_s=0)
    assert newcomer.acquire(), "a dead process's claim must not hold the batch for the lease"
    assert not inbox.exists(stale)
    # A live process on this host (this one) keeps its batch, and is named as its holder.
    rival = Claim(inbox, "st/b/", lease_s=300, settle_s=0)
    assert not rival.acquire()
    assert rival.holder is not None and rival.holder.pid == os.getpid() and rival.holder.lease_left_s > 290
    newcomer.release()


def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
