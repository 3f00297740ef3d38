"""The nightly service against a real S3 server and real Prefect: drop, run, archive exactly once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from digitize.inbox import DONE_MARKER
from digitize.storage import LocalStore, open_store
from pipeline import atomic
from tests.conftest import DIGITIZE
from tests.servicekit import batch_folder, digitize_cli, folder_env, service_env, snapshot

pytestmark = [pytest.mark.s3, pytest.mark.slow]


def records(store) -> dict[str, tuple[int, str]]:
    """Every object but the archive's audit log and night reports."""
    return {k: v for k, v in snapshot(store).items() if not k.startswith("audit/")}


def test_five_batches_from_two_stations_land_exactly_once(s3, fixture_scans, tmp_path):
    env = service_env(s3, tmp_path, "night")
    fx = fixture_scans
    batches = {
        ("dien-chau-01", "a"): [fx / "bitonal-g4-400dpi.tif", fx / "skew-6-200dpi.png"],
        ("dien-chau-01", "b"): [fx / "scanner.pdf"],
        ("vinh-02", "c"): [fx / "no-dpi.png"],
        ("vinh-02", "d"): [fx / "turned-90-300dpi.png"],
    }
    for (station, name), sources in batches.items():
        proc = digitize_cli(env, "drop", batch_folder(tmp_path / name, *sources), "--station", station)
        assert proc.returncode == 0 and "dropped" in proc.stdout, proc.stderr
    # A fifth batch whose station stopped mid-upload: its page is there, batch.json is not.
    inbox = open_store(env["DIGITIZE_SERVICE_INBOX"], env)
    partial = tmp_path / "partial.png"
    shutil.copy(fx / "turned-180-400dpi.png", partial)
    inbox.upload("vinh-02/e-partial/turned-180-400dpi.png", partial)

    first = digitize_cli(env, "run", "--jobs", "2")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "waiting: vinh-02/e-partial/" in first.stdout
    archive = open_store(env["DIGITIZE_SERVICE_ARCHIVE"], env)
    # Records only: not the archive's index of received scans (sources/), nor its audit log and night reports.
    manifests = [o.key for o in archive.list() if o.key.endswith(".json") and not o.key.startswith(("sources/", "audit/"))]
    names = Counter(Path(key).name for key in manifests)
    expected = {"bitonal-g4-400dpi.json", "skew-6-200dpi.json", "scanner.json", "no-dpi.json", "turned-90-300dpi.json"}
    assert set(names) == expected and all(n == 1 for n in names.values()), names
    for key in manifests:
        manifest = json.loads(archive.read_bytes(key))
        pdf = tmp_path / "check.pdf"
        archive.download(key[: -len(".json")] + ".pdf", pdf)
        assert atomic.sha256_file(pdf) == manifest["output"]["pdf_sha256"], key
    done = [o.key for o in inbox.list() if o.key.endswith(DONE_MARKER)]
    assert len(done) == 4 and not any(k.startswith("vinh-02/e-partial/") for k in done)
    # Originals are kept.
    assert inbox.exists("vinh-02/e-partial/turned-180-400dpi.png")
    assert len([o for o in inbox.list() if o.key.endswith((".tif", ".png", ".pdf"))]) == 6

    stores = {name: open_store(env[f"DIGITIZE_SERVICE_{name.upper()}"], env) for name in ("archive", "review")}
    before = {name: records(store) for name, store in stores.items()}
    second = digitize_cli(env, "run", "--jobs", "2")
    assert second.returncode == 0, second.stderr
    assert "Nothing to do" in second.stdout, second.stdout
    # Only the night's own report and audit log are new: no record or review item changed.
    assert {name: records(store) for name, store in stores.items()} == before

    # The S3 secret appears nowhere: not in output, objects, or Prefect's database and logs.
    secret = env["MINIO_SECRET_KEY"].encode()
    assert secret not in (first.stdout + first.stderr + second.stdout + second.stderr).encode()
    for store in (inbox, *stores.values()):
        for obj in store.list():
            assert secret not in store.read_bytes(obj.key), obj.key
    for path in Path(env["PREFECT_HOME"]).rglob("*"):
        if path.is_file():
            assert secret not in path.read_bytes(), path


def test_two_runs_at_once_produce_each_dossier_once(s3, fixture_scans, tmp_path):
    env = service_env(s3, tmp_path, "race")
    for station, name, source in (
        ("st-a", "one", "bitonal-g4-400dpi.tif"), ("st-a", "two", "no-dpi.png"), ("st-b", "three", "skew-6-200dpi.png"),
    ):  # fmt: skip
        assert digitize_cli(env, "drop", batch_folder(tmp_path / name, fixture_scans / source), "--station", station).returncode == 0
    runs = []
    for n in (1, 2):
        run_env = {**env, "PREFECT_HOME": str(tmp_path / f"prefect-{n}")}
        runs.append(subprocess.Popen([str(DIGITIZE), "run", "--jobs", "1"], env=run_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [run.communicate(timeout=900) for run in runs]
    assert all(run.returncode == 0 for run in runs), outputs
    archive = open_store(env["DIGITIZE_SERVICE_ARCHIVE"], env)
    names = Counter(Path(o.key).name for o in archive.list() if o.key.endswith(".json") and not o.key.startswith(("sources/", "audit/")))
    assert names == Counter({"bitonal-g4-400dpi.json": 1, "no-dpi.json": 1, "skew-6-200dpi.json": 1})
    inbox = open_store(env["DIGITIZE_SERVICE_INBOX"], env)
    assert len([o for o in inbox.list() if o.key.endswith(DONE_MARKER)]) == 3
    # Each batch was processed by one run only: the two runs' tables share no batch.
    processed = [{line.split()[1] for line in out.splitlines() if line.startswith("│ st-")} for out, _ in outputs]
    assert processed[0].isdisjoint(processed[1]) and len(processed[0] | processed[1]) == 3, outputs


def test_nightly_flow_publishes_the_dashboard_artifacts(fixture_scans, tmp_path):
    """In-process, under Prefect's test harness, on the embedded folder store."""
    from prefect.client.orchestration import get_client
    from prefect.testing.utilities import prefect_test_harness

    from digitize.config import app_settings
    from digitize.drop import drop
    from flows.nightly import nightly

    settings = app_settings(None, {}, {
        "service.inbox": str(tmp_path / "inbox"), "service.archive": str(tmp_path / "archive"),
        "service.review": str(tmp_path / "review"), "service.claim_settle_s": 0.0,
    })  # fmt: skip
    drop(batch_folder(tmp_path / "b", fixture_scans / "bitonal-g4-400dpi.tif"), LocalStore(tmp_path / "inbox"), station="st", operator="test")
    with prefect_test_harness():
        report = nightly(settings, 1)
        assert [b.outcome for b in report.batches] == ["done"]

        async def artifacts():
            async with get_client() as client:
                return await client.read_artifacts()

        import asyncio

        found = {a.key: a for a in asyncio.run(artifacts())}
    assert {"nightly-summary", "nightly-progress"} <= set(found)
    table = next(a for key, a in found.items() if key and key.startswith("batch-st-"))
    assert "bitonal-g4-400dpi" in str(table.data)
    assert "pages per hour" in found["nightly-summary"].data


def test_staff_review_replace_and_approve_a_flagged_dossier(fixture_scans, tmp_path):
    """A drawing goes to manual review; staff swap in a re-scan, approve it, and every act is recorded."""
    repo = Path(__file__).resolve().parents[1]
    env = folder_env(tmp_path)
    batch = batch_folder(tmp_path / "plans", repo / "sample_scans" / "ban-ve-a3-200dpi.jpg")
    assert digitize_cli(env, "drop", batch, "--station", "st").returncode == 0
    assert digitize_cli(env, "run", "--jobs", "1").returncode == 0
    listing = digitize_cli(env, "review", "list")
    assert "ban-ve-a3-200dpi" in listing.stdout and "technical_drawing" in listing.stdout, listing.stdout

    shown = digitize_cli(env, "review", "show", "ban-ve-a3-200dpi", "--to", tmp_path / "look")
    assert shown.returncode == 0 and (tmp_path / "look" / "ban-ve-a3-200dpi" / "reasons.json").exists()

    rescan = fixture_scans / "bitonal-g4-400dpi.tif"
    replaced = digitize_cli(env, "review", "replace", "ban-ve-a3-200dpi", rescan, "--pages", "1", "--by", "Nguyễn Thị Lan")
    assert replaced.returncode == 0, replaced.stderr
    review = LocalStore(tmp_path / "review")
    (item_pdf,) = [o.key for o in review.list() if o.key.endswith("/ban-ve-a3-200dpi.pdf") and "/previous/" not in o.key]
    prefix = item_pdf[: -len("ban-ve-a3-200dpi.pdf")]
    local = tmp_path / "replaced.pdf"
    review.download(item_pdf, local)
    import pikepdf.pdfa

    assert pikepdf.pdfa.validate_written(local, "2b").passed
    assert "Quyết định" in review.read_bytes(prefix + "ban-ve-a3-200dpi.txt").decode()
    assert [o for o in review.list(prefix + "previous/")], "the replaced PDF must be kept"
    manifest = json.loads(review.read_bytes(prefix + "ban-ve-a3-200dpi.json"))
    assert manifest["replacements"][0]["by"] == "Nguyễn Thị Lan"
    assert manifest["output"]["pdf_sha256"] == atomic.sha256_file(local)

    approved = digitize_cli(env, "review", "approve", "ban-ve-a3-200dpi", "--by", "Trần Văn Hùng")
    assert approved.returncode == 0, approved.stderr
    archive = LocalStore(tmp_path / "archive")
    archived = [o.key for o in archive.list() if o.key.endswith("ban-ve-a3-200dpi.pdf")]
    assert len(archived) == 1
    actions = [json.loads(review.read_bytes(o.key)) for o in review.list(prefix + "actions/")]
    assert sorted((a["action"], a["by"]) for a in actions) == [("approve", "Trần Văn Hùng"), ("replace", "Nguyễn Thị Lan")]
    assert review.exists(item_pdf), "nothing in the review area is deleted"
    assert "ban-ve-a3-200dpi" not in digitize_cli(env, "review", "list").stdout
    again = digitize_cli(env, "review", "approve", "ban-ve-a3-200dpi", "--by", "Trần Văn Hùng")
    assert again.returncode != 0 and "ban-ve-a3-200dpi: already archived" in again.stderr, again.stdout + again.stderr

    # Archived items pile up in the review area over the years: listing the open ones must not read them.
    from digitize.review import list_items

    read = []
    review.read_bytes = lambda key: read.append(key) or LocalStore.read_bytes(review, key)
    assert list_items(review) == [] and read == [], read
    assert [i.name for i in list_items(review, include_archived=True)] == ["ban-ve-a3-200dpi"]


def test_retention_removes_only_old_originals_and_keeps_the_batch_record(tmp_path):
    from datetime import datetime, timedelta, timezone

    from digitize.config import app_settings
    from digitize.inbox import scan_inbox
    from digitize.inbox import apply_retention

    inbox = LocalStore(tmp_path / "inbox")
    for batch in ("st/old/", "st/new/"):
        inbox.put_bytes(batch + "scan.tif", b"II*\x00 scan")
        inbox.put_bytes(batch + "batch.json", b"{}")
        inbox.put_bytes(batch + DONE_MARKER, b"{}")
    month_ago = (datetime.now(timezone.utc) - timedelta(days=30)).timestamp()
    os.utime(tmp_path / "inbox" / "st" / "old" / DONE_MARKER, (month_ago, month_ago))
    states = scan_inbox(inbox, incomplete_after=timedelta(hours=1))
    keep_all = app_settings(None, {}, {})
    apply_retention(inbox, states, keep_all.service.retention_days)
    assert len(inbox.list()) == 6, "retention 0 keeps every original"
    apply_retention(inbox, states, 7)
    assert sorted(o.key for o in inbox.list()) == [
        "st/new/_done.json", "st/new/batch.json", "st/new/scan.tif", "st/old/_done.json", "st/old/batch.json",
    ]


def test_bad_files_are_quarantined_and_the_rest_of_the_batch_proceeds(fixture_scans, tmp_path):
    env = folder_env(tmp_path)
    batch = batch_folder(tmp_path / "desk", fixture_scans / "bitonal-g4-400dpi.tif", fixture_scans / "no-dpi.png")
    (batch / "empty.tif").write_bytes(b"")
    # The station would refuse the empty file; allowed, it reaches the nightly run, which quarantines it.
    assert digitize_cli(env, "drop", batch, "--station", "st", "--allow-bad").returncode == 0
    inbox = LocalStore(tmp_path / "inbox")
    (manifest_key,) = [o.key for o in inbox.list() if o.key.endswith("batch.json")]
    manifest = json.loads(inbox.read_bytes(manifest_key))
    for entry in manifest["files"]:
        if entry["name"] == "no-dpi.png":
            entry["sha256"] = "0" * 64  # what a station's faulty disk or a tampered file looks like
    inbox.put_bytes(manifest_key, json.dumps(manifest).encode())
    originals = {o.key: inbox.read_bytes(o.key) for o in inbox.list()}

    run = digitize_cli(env, "run", "--jobs", "1")
    assert run.returncode == 0, run.stderr
    assert "no-dpi.png: checksum does not match batch.json" in run.stderr
    assert "empty.tif: file is empty (0 bytes)" in run.stderr
    archive = LocalStore(tmp_path / "archive")
    assert [Path(o.key).name for o in archive.list() if o.key.endswith(".pdf")] == ["bitonal-g4-400dpi.pdf"]
    review = LocalStore(tmp_path / "review")
    quarantine = sorted(o.key.split("/")[-1] for o in review.list("rejected/"))
    assert quarantine == ["empty.tif", "empty.tif.reason.json", "no-dpi.png", "no-dpi.png.reason.json"]
    done = json.loads(inbox.read_bytes(manifest_key.replace("batch.json", DONE_MARKER)))
    assert sorted(r["input"] for r in done["rejected"]) == ["empty.tif", "no-dpi.png"]
    assert all(inbox.read_bytes(key) == data for key, data in originals.items()), "inputs must never change"
