"""Faults in the nightly service, with a real S3 server and real Prefect: a run killed halfway, S3 gone
for 20 s, a full or read-only work disk. Nothing is lost, nothing is archived twice, nothing partial shows."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from digitize.inbox import CLAIMS, DONE_MARKER, Claim
from digitize.prefect_server import local_prefect_server
from digitize.storage import open_store
from tests import make_batches
from tests.conftest import DIGITIZE
from tests.faultkit import (
    ArchiveReader, archive_problems, assert_night_archived_once, complete, done_markers, drop_night, fault_env, group_members,
    inbox_files, make_read_only, records, three_stations_night, wait_for,
)  # fmt: skip
from tests.servicekit import digitize_cli, service_env

pytestmark = [pytest.mark.s3, pytest.mark.slow]


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory) -> str:
    """One Prefect server for the module's runs, as in production, instead of a temporary one
    started by each `digitize run` (10 s a run on this machine)."""
    env = {**os.environ, "PREFECT_HOME": str(tmp_path_factory.mktemp("prefect")), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with local_prefect_server(port, env=env) as api:
        yield api


@pytest.fixture(scope="module")
def night(tmp_path_factory) -> list[tuple[Path, make_batches.BatchTruth]]:
    return three_stations_night(tmp_path_factory.mktemp("night"))


def _start_run(env: dict, tmp: Path, name: str, *args: str) -> tuple[subprocess.Popen, Path]:
    """`digitize run` in its own process group (with its Prefect server and page workers)."""
    log = tmp / f"{name}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(DIGITIZE), "run", *args], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, text=True,
        )  # fmt: skip
    return proc, log


KILL_POINTS = {
    # Three moments in the night, from the most to the least partial: a PDF without its
    # manifest, a record of a batch not done yet, a batch done while another is in flight.
    # Two batches run at once, so the third is always still to come.
    "object": lambda inbox, archive: records(archive),
    "record": lambda inbox, archive: [o for o in records(archive) if o.key.endswith(".json")],
    "batch": lambda inbox, archive: done_markers(inbox),
}


@pytest.mark.parametrize("kill_at", list(KILL_POINTS), ids=lambda k: f"kill-at-first-{k}")
def test_a_run_killed_halfway_loses_nothing_and_the_rerun_archives_each_dossier_once(s3, prefect_api, night, tmp_path, kill_at):
    # The default claim lease (300 s): a rerun on the same host knows the killed run's process is gone.
    env = fault_env(s3, prefect_api, tmp_path, f"kill-{kill_at}")
    inbox = drop_night(env, night)
    originals = inbox_files(inbox)
    archive = open_store(env["DIGITIZE_SERVICE_ARCHIVE"], env)

    started = time.monotonic()
    run, log = _start_run(env, tmp_path, "killed", "--jobs", "2")
    try:
        moment = wait_for(lambda: KILL_POINTS[kill_at](inbox, archive), timeout=300, proc=run, every=0.05)
        assert moment, f"the run ended or stalled before the first {kill_at}:\n{log.read_text()[-3000:]}"
        workers = group_members(run.pid)
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    killed_at = time.monotonic()
    # SIGKILL reached the whole group: the run, its forkserver and page workers, any Tesseract.
    assert len(workers) >= 3, workers
    assert wait_for(lambda: not group_members(run.pid), timeout=10), group_members(run.pid)
    done_before = sorted(done_markers(inbox))
    assert len(done_before) < len(night), "the kill came too late to test anything"
    problems, partly = archive_problems(archive, pending_ok=True)
    assert not problems, problems
    print(f"\nkilled at the first {kill_at}, after {killed_at - started:.1f} s with {len(partly)} records archived, "
          f"{len(done_before)} batches done, {len(workers)} processes in the group")  # fmt: skip

    # At once: the rerun takes over the dead run's claims, whose process is gone, without waiting for their lease.
    reader = ArchiveReader(env)
    reader.start()
    rerun_started = time.monotonic()
    rerun = digitize_cli(env, "run", "--jobs", "2")
    seen = reader.stop()
    print(f"rerun: {time.monotonic() - rerun_started:.1f} s, exit {rerun.returncode}; the reader looked {reader.looks} times")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert time.monotonic() - rerun_started < 240, "the rerun waited for the dead run's lease"
    assert reader.looks > 0 and not seen, seen
    assert_night_archived_once(env, inbox, night, originals)
    for batch in done_before:
        assert batch.removesuffix(DONE_MARKER) not in rerun.stdout, f"{batch} was done before the kill and ran again"


OUTAGE_S = 20


def _ensure_running(s3) -> None:
    """Start S3 again if a failed test left it stopped, so the module's other tests still have it."""
    if s3.proc is None or s3.proc.poll() is not None:
        s3.start()


def test_s3_down_for_20_s_during_uploads_costs_retries_not_records(s3, prefect_api, night, tmp_path):
    env = fault_env(s3, prefect_api, tmp_path, "outage")
    inbox = drop_night(env, night)
    originals = inbox_files(inbox)
    archive = open_store(env["DIGITIZE_SERVICE_ARCHIVE"], env)
    reader = ArchiveReader(env)
    reader.start()
    started = time.monotonic()
    run, log = _start_run(env, tmp_path, "outage", "--jobs", "2")
    try:
        assert wait_for(lambda: records(archive), timeout=300, proc=run, every=0.05), log.read_text()[-3000:]
        # The run is paused for the moment it takes to stop S3, so the outage starts between two
        # uploads of a batch rather than whenever the server happens to go down.
        os.killpg(run.pid, signal.SIGSTOP)
        # Records whose manifest is there are never written again; their size tells if they survive.
        archived_before = {o.key: o.size for o in records(archive) if complete(archive, o.key)}
        done_before = len(done_markers(inbox))
        s3.stop()
        down_at = time.monotonic()
        os.killpg(run.pid, signal.SIGCONT)
        print(f"\nS3 stopped with {len(archived_before)} objects of complete records archived and {done_before} batches done")
        time.sleep(OUTAGE_S)
        s3.start()
        print(f"\nS3 down for {time.monotonic() - down_at:.1f} s (restart included)")
        # The server kept its data: the stations' files and what was archived before the outage.
        assert inbox_files(inbox) == originals
        assert {key: archive.stat(key).size for key in archived_before} == archived_before
        run.wait(timeout=900)
    finally:
        _ensure_running(s3)
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    output = log.read_text()
    retries = re.findall(r"Task run failed with exception: (.*) - Retry (\d+)/(\d+) will start (.*)", output)
    print(f"first run: exit {run.returncode} after {time.monotonic() - started:.0f} s; retries:")
    for retry in retries:
        print("  ", retry)
    # The outage hit work in progress, and the tasks retried it, as an S3 failure.
    assert retries and all(r[0].startswith("StorageError(") for r in retries), output[-5000:]
    if run.returncode != 0:
        # Retries ran out before S3 came back: the run says so and fails cleanly; the next one completes.
        assert run.returncode == 75 and "failed:" in output, output[-5000:]
        again = digitize_cli(env, "run", "--jobs", "2")
        print(f"second run: exit {again.returncode}")
        assert again.returncode == 0, again.stdout + again.stderr
    seen = reader.stop()
    assert reader.looks > 0 and not seen, seen
    assert_night_archived_once(env, inbox, night, originals)


# Where the disk fills up: before the scan is down (512 KiB; the scan is ~1 MB), or after, when
# the first page image for Tesseract (~4 MB at 200 dpi) does not fit.
DISK_FULL = {"at-download": "size=512k", "during-ocr": "size=1600k"}


@pytest.mark.parametrize("where", list(DISK_FULL))
def test_a_full_work_disk_fails_the_batch_cleanly_and_the_next_run_archives_it(s3, prefect_api, night, tmp_path, work_disk, where):
    folder, mount = work_disk
    mount(DISK_FULL[where])
    # The default delays are 10, 30 and 90 s; two short ones test the same bounded retry quickly.
    env = fault_env(s3, prefect_api, tmp_path, f"full-{where}", work_dir=str(folder), retry_delays_s="[1, 1]")
    inbox = drop_night(env, night[:1])
    originals = inbox_files(inbox)

    first = digitize_cli(env, "run", "--jobs", "1")
    output = first.stdout + first.stderr
    failed = [line for line in first.stderr.splitlines() if line.startswith("failed:")]
    print(f"\n{where}: exit {first.returncode}; {failed}")
    # A clear failure: the folder and the reason, after a bounded number of retries; exit 73, the
    # disk's code (output not writable), rather than 75: waiting will not empty the disk.
    assert first.returncode == 73 and len(failed) == 1, output[-5000:]
    assert str(folder) in failed[0] and "No space left on device" in failed[0], failed
    retries = re.findall(r"Task run failed with exception: OutputError\(.*No space left on device.*\) - Retry (\d)/2", output)
    assert retries == ["1", "2"], output[-5000:]
    # Nothing lost, nothing partial: the inbox as dropped, the batch not done, nothing archived
    # or quarantined, no work files left behind.
    archive, review = (open_store(env[f"DIGITIZE_SERVICE_{name}"], env) for name in ("ARCHIVE", "REVIEW"))
    assert inbox_files(inbox) == originals and done_markers(inbox) == {}
    assert records(archive) == [] and review.list() == []
    assert list(folder.iterdir()) == []

    mount("size=256m")
    second = digitize_cli(env, "run", "--jobs", "1")
    assert second.returncode == 0, second.stdout + second.stderr
    assert_night_archived_once(env, inbox, night[:1], originals)


def test_a_read_only_work_folder_stops_the_run_before_any_batch_is_claimed(s3, prefect_api, night, tmp_path, work_disk):
    folder, mount = work_disk
    make_read_only(folder, mount, True)
    env = fault_env(s3, prefect_api, tmp_path, "read-only", work_dir=str(folder))
    inbox = drop_night(env, night[:1])
    originals = inbox_files(inbox)

    first = digitize_cli(env, "run", "--jobs", "1")
    print(f"\nexit {first.returncode}: {[line for line in first.stderr.splitlines() if line.startswith('error:')]}")
    assert first.returncode == 73, first.stdout + first.stderr
    assert f"service.work_dir {folder}: cannot write: " in first.stderr, first.stderr
    assert re.search(r"Read-only file system|Permission denied", first.stderr), first.stderr
    # Stopped before claiming: no claim, nothing done, archived or quarantined.
    assert [o.key for o in inbox.list()] == sorted(originals)
    archive, review = (open_store(env[f"DIGITIZE_SERVICE_{name}"], env) for name in ("ARCHIVE", "REVIEW"))
    assert records(archive) == [] and review.list() == []

    make_read_only(folder, mount, False)
    second = digitize_cli(env, "run", "--jobs", "1")
    assert second.returncode == 0, second.stdout + second.stderr
    assert_night_archived_once(env, inbox, night[:1], originals)


def test_a_claim_s3_kept_through_an_outage_does_not_cost_the_retry_its_batch(s3, tmp_path):
    """A batch fails while S3 is down, so its claim cannot be deleted; the task's retry, in
    the same process, must still win the batch rather than lose it to that claim until the
    lease runs out (the outage test above is usually over before the claim is deleted)."""
    env = service_env(s3, tmp_path, "claims")
    inbox = open_store(env["DIGITIZE_SERVICE_INBOX"], env)
    first = Claim(inbox, "st/b/", lease_s=300, settle_s=0.5)
    assert first.acquire()
    s3.stop()
    try:
        first.release()  # the batch's own error matters here, not this one: it does not raise
    finally:
        _ensure_running(s3)
    assert [o.key for o in inbox.list("st/b/" + CLAIMS)] == [first.key], "S3 was down: the claim is still there"
    retry = Claim(inbox, "st/b/", lease_s=300, settle_s=0.5)
    assert retry.acquire(), "the retry lost its batch to its own earlier claim"
    retry.release()
    assert inbox.list("st/b/" + CLAIMS) == []
