"""Faults in the nightly service, with a real S3 server and real Prefect: a run killed halfway, S3 gone
for 20 s, a full or read-only work disk. Nothing is lost, nothing is archived twice, nothing partial shows."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from digitize.drop import drop
from digitize.inbox import BATCH_MANIFEST, CLAIMS, DONE_AREA, DONE_MARKER, Claim
from digitize.prefect_server import local_prefect_server
from digitize.storage import Store, open_store
from pipeline.errors import DigitizeError
from tests import make_batches
from tests.conftest import DIGITIZE
from tests.servicekit import digitize_cli, service_env

pytestmark = [pytest.mark.s3, pytest.mark.slow]

# An archived record: <yyyy>/<mm>/<code>.pdf|.txt|.json. Anything else under the archive
# (a temporary name, a stray part) is something a reader should never see.
RECORD = re.compile(r"^\d{4}/\d{2}/(?P<code>[^/]+)\.(?P<ext>pdf|txt|json)$")
# Beside the records: the nightly audit log, one object per run, and the index of archived scans.
AUDIT_LOG = re.compile(r"^audit/\d{4}/\d{2}/\d{2}/[^/]+\.jsonl$")
SOURCE_INDEX = re.compile(r"^sources/[0-9a-f]{64}\.json$")
NIGHT_REPORT = "audit/last-night.json"
BATCH_RUN_RESULT = re.compile(r"^audit/batch-runs/[0-9a-f-]{36}\.json$")


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


def _env(s3, prefect_api: str, tmp: Path, bucket: str, **settings: str) -> dict[str, str]:
    """The service's environment on `s3` and `prefect_api`, with DIGITIZE_SERVICE_<KEY> `settings`."""
    extra = {f"DIGITIZE_SERVICE_{key.upper()}": value for key, value in settings.items()}
    return {**service_env(s3, tmp, bucket), "PREFECT_API_URL": prefect_api, **extra}


@pytest.fixture(scope="module")
def night(tmp_path_factory) -> list[tuple[Path, make_batches.BatchTruth]]:
    """Three stations' batches, each one scanner PDF of two 2-page dossiers, with their truth."""
    root = tmp_path_factory.mktemp("night")
    batches = []
    for spec in make_batches.small_batches(3):
        folder = root / spec["name"].removesuffix(".pdf")
        batches.append((folder, make_batches.make(folder, [spec])[spec["name"]]))
    return batches


def _drop(env: dict, night) -> Store:
    """Each batch dropped as a station does, batch.json last, listing its dossiers' codes and pages."""
    inbox = open_store(env["DIGITIZE_SERVICE_INBOX"], env)
    for n, (folder, truth) in enumerate(night):
        hints = [
            {"file": truth.file, "code": d.code, "first_page": d.source_pages[0], "last_page": d.source_pages[-1]}
            for d in truth.documents
        ]  # fmt: skip
        drop(folder, inbox, station=f"station-{n % 2 + 1}", operator="test", hints=hints)
    return inbox


def _codes_dropped(inbox: Store) -> Counter:
    """The dossier codes the stations' batch.json files announce."""
    codes: Counter = Counter()
    for obj in inbox.list():
        if obj.key.endswith("/" + BATCH_MANIFEST):
            codes.update(h["code"] for h in json.loads(inbox.read_bytes(obj.key))["dossiers"])
    return codes


def _records(archive: Store) -> list:
    """Every object under the archive but the audit log and the index of scans."""
    return [
        o for o in archive.list()
        if not (AUDIT_LOG.match(o.key) or SOURCE_INDEX.match(o.key) or BATCH_RUN_RESULT.match(o.key) or o.key == NIGHT_REPORT)
    ]  # fmt: skip


def _complete(archive: Store, key: str) -> bool:
    """Whether the record `key` belongs to has its manifest, which goes last."""
    return archive.exists(key.rsplit(".", 1)[0] + ".json")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _archive_problems(archive: Store, *, pending_ok: bool = False) -> tuple[list[str], Counter]:
    """What is wrong in the archive now, and the codes of its complete records.

    A record is complete when its manifest is there and its PDF and text match the manifest's
    checksums and sizes. `pending_ok`: a PDF or text whose manifest is not there yet is a
    record still being written (manifests go last), not a fault.
    """
    problems, records = [], {}
    for obj in _records(archive):
        match = RECORD.match(obj.key)
        if not match:
            problems.append(f"{obj.key}: not a record (temporary or stray object)")
            continue
        records.setdefault(match["code"], {})[match["ext"]] = obj.key
    complete: Counter = Counter()
    for code, parts in sorted(records.items()):
        if "json" not in parts:
            if not pending_ok:
                problems.append(f"{code}: {sorted(parts)} without a manifest")
            continue
        manifest = json.loads(archive.read_bytes(parts["json"]))
        output = manifest["output"]
        for ext, sha_field, size_field in (("pdf", "pdf_sha256", "pdf_bytes"), ("txt", "text_sha256", None)):
            if ext not in parts:
                problems.append(f"{code}: manifest without its .{ext}")
                continue
            data = archive.read_bytes(parts[ext])
            if _sha256(data) != output[sha_field] or (size_field and len(data) != output[size_field]):
                problems.append(f"{code}.{ext}: does not match its manifest")
        complete[manifest["code"]] += 1
    return problems, complete


class ArchiveReader(threading.Thread):
    """Someone reading the archive while the service writes to it: every manifest it reads must
    describe the PDF next to it. A manifest that stays the same while the PDF beside it does not
    match it is a record a reader saw half-replaced."""

    def __init__(self, env: dict) -> None:
        super().__init__(daemon=True, name="archive reader")
        self.archive = open_store(env["DIGITIZE_SERVICE_ARCHIVE"], env)
        self.seen: list[str] = []
        self.looks = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            try:
                self._look()
                self.looks += 1
            except DigitizeError:
                time.sleep(0.2)  # S3 is down, or a record changed under us: nothing seen, nothing wrong
            time.sleep(0.02)  # leave the two cores to the run

    def _look(self) -> None:
        for obj in _records(self.archive):
            if not RECORD.match(obj.key):
                self.seen.append(f"{obj.key}: not a record (temporary or stray object)")
            if not obj.key.endswith(".json"):
                continue
            before = self.archive.read_bytes(obj.key)
            pdf_key = obj.key.removesuffix(".json") + ".pdf"
            pdf = self.archive.read_bytes(pdf_key) if self.archive.exists(pdf_key) else None
            if self.archive.read_bytes(obj.key) != before:
                continue  # replaced while we looked: a reader would read it again
            if pdf is None or _sha256(pdf) != json.loads(before)["output"]["pdf_sha256"]:
                self.seen.append(f"{obj.key}: manifest visible with {'no' if pdf is None else 'another'} PDF")

    def stop(self) -> list[str]:
        self._done.set()
        self.join(timeout=60)
        return sorted(set(self.seen))


def _start_run(env: dict, tmp: Path, name: str, *args: str) -> tuple[subprocess.Popen, Path]:
    """`digitize run` in its own process group (with its Prefect server and page workers)."""
    log = tmp / f"{name}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(DIGITIZE), "run", *args], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, text=True,
        )  # fmt: skip
    return proc, log


def _wait_for(what, *, timeout: float, proc: subprocess.Popen | None = None, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            return None
        time.sleep(every)
    return None


def _group_members(pgid: int) -> list[str]:
    """Processes of process group `pgid` still alive (zombies do not count)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(text[: text.rindex(")") + 1])
    return alive


def _done_markers(inbox: Store) -> dict[str, dict]:
    return {o.key: json.loads(inbox.read_bytes(o.key)) for o in inbox.list() if o.key.endswith("/" + DONE_MARKER)}


def _assert_night_archived_once(env: dict, inbox: Store, night, originals: dict[str, bytes]) -> Counter:
    """Every dossier the stations announced is in the archive exactly once, whole, and accounted for."""
    archive = open_store(env["DIGITIZE_SERVICE_ARCHIVE"], env)
    review = open_store(env["DIGITIZE_SERVICE_REVIEW"], env)
    problems, archived = _archive_problems(archive)
    assert not problems, problems
    dropped = _codes_dropped(inbox)
    truth = Counter(d.code for _, t in night for d in t.documents)
    assert dropped == truth and set(dropped.values()) == {1}, dropped
    assert archived == dropped, f"archived {sorted(archived)} but the stations sent {sorted(dropped)}"
    # Nothing went to manual review or quarantine instead (no duplicate_code, no rejection).
    assert review.list() == [], [o.key for o in review.list()]
    # Every batch is done once, and the done markers account for each record once: uploaded by
    # that batch's run, or found already archived (by a run killed after archiving it).
    done = _done_markers(inbox)
    assert len(done) == len(night), sorted(done)
    accounted: Counter = Counter()
    for marker in done.values():
        assert marker["rejected"] == [], marker
        for obj in marker["objects"]:
            assert _sha256(archive.read_bytes(obj["key"])) == obj["sha256"], obj
        keys = [o["key"] for o in marker["objects"]]
        for found in marker.get("already_archived", []):
            keys += [found["key"]] if "key" in found else [r["key"] for r in found["records"]]
        accounted.update({RECORD.match(k)["code"] for k in keys})
    assert accounted == archived, accounted
    # The index of archived scans names only records that are there.
    for obj in archive.list():
        if SOURCE_INDEX.match(obj.key):
            for record in json.loads(archive.read_bytes(obj.key))["records"]:
                assert record["store"] == "archive" and archive.exists(record["key"]), (obj.key, record)
    # The stations' files are as they dropped them.
    assert {k: v for k, v in _inbox_files(inbox).items() if k in originals} == originals
    return archived


def _inbox_files(inbox: Store) -> dict[str, bytes]:
    """The stations' scans and batch.json files (not the service's claims and done markers), under
    the keys they were dropped at, also once a later night moved their batch to the done area."""
    return {
        o.key.split("/", 4)[4] if o.key.startswith(DONE_AREA) else o.key: inbox.read_bytes(o.key)
        for o in inbox.list() if "/_" not in o.key
    }  # fmt: skip


KILL_POINTS = {
    # Three moments in the night, from the most to the least partial: a PDF without its
    # manifest, a record of a batch not done yet, a batch done while another is in flight.
    # Two batches run at once, so the third is always still to come.
    "object": lambda inbox, archive: _records(archive),
    "record": lambda inbox, archive: [o for o in _records(archive) if o.key.endswith(".json")],
    "batch": lambda inbox, archive: _done_markers(inbox),
}


@pytest.mark.parametrize("kill_at", list(KILL_POINTS), ids=lambda k: f"kill-at-first-{k}")
def test_a_run_killed_halfway_loses_nothing_and_the_rerun_archives_each_dossier_once(s3, prefect_api, night, tmp_path, kill_at):
    # The default claim lease (300 s): a rerun on the same host knows the killed run's process is gone.
    env = _env(s3, prefect_api, tmp_path, f"kill-{kill_at}")
    inbox = _drop(env, night)
    originals = _inbox_files(inbox)
    archive = open_store(env["DIGITIZE_SERVICE_ARCHIVE"], env)

    started = time.monotonic()
    run, log = _start_run(env, tmp_path, "killed", "--jobs", "2")
    try:
        moment = _wait_for(lambda: KILL_POINTS[kill_at](inbox, archive), timeout=300, proc=run, every=0.05)
        assert moment, f"the run ended or stalled before the first {kill_at}:\n{log.read_text()[-3000:]}"
        workers = _group_members(run.pid)
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    killed_at = time.monotonic()
    # SIGKILL reached the whole group: the run, its forkserver and page workers, any Tesseract.
    assert len(workers) >= 3, workers
    assert _wait_for(lambda: not _group_members(run.pid), timeout=10), _group_members(run.pid)
    done_before = sorted(_done_markers(inbox))
    assert len(done_before) < len(night), "the kill came too late to test anything"
    problems, partly = _archive_problems(archive, pending_ok=True)
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
    _assert_night_archived_once(env, inbox, night, originals)
    for batch in done_before:
        assert batch.removesuffix(DONE_MARKER) not in rerun.stdout, f"{batch} was done before the kill and ran again"


OUTAGE_S = 20


def _ensure_running(s3) -> None:
    """Start S3 again if a failed test left it stopped, so the module's other tests still have it."""
    if s3.proc is None or s3.proc.poll() is not None:
        s3.start()


def test_s3_down_for_20_s_during_uploads_costs_retries_not_records(s3, prefect_api, night, tmp_path):
    env = _env(s3, prefect_api, tmp_path, "outage")
    inbox = _drop(env, night)
    originals = _inbox_files(inbox)
    archive = open_store(env["DIGITIZE_SERVICE_ARCHIVE"], env)
    reader = ArchiveReader(env)
    reader.start()
    started = time.monotonic()
    run, log = _start_run(env, tmp_path, "outage", "--jobs", "2")
    try:
        assert _wait_for(lambda: _records(archive), timeout=300, proc=run, every=0.05), log.read_text()[-3000:]
        # The run is paused for the moment it takes to stop S3, so the outage starts between two
        # uploads of a batch rather than whenever the server happens to go down.
        os.killpg(run.pid, signal.SIGSTOP)
        # Records whose manifest is there are never written again; their size tells if they survive.
        archived_before = {o.key: o.size for o in _records(archive) if _complete(archive, o.key)}
        done_before = len(_done_markers(inbox))
        s3.stop()
        down_at = time.monotonic()
        os.killpg(run.pid, signal.SIGCONT)
        print(f"\nS3 stopped with {len(archived_before)} objects of complete records archived and {done_before} batches done")
        time.sleep(OUTAGE_S)
        s3.start()
        print(f"\nS3 down for {time.monotonic() - down_at:.1f} s (restart included)")
        # The server kept its data: the stations' files and what was archived before the outage.
        assert _inbox_files(inbox) == originals
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
    _assert_night_archived_once(env, inbox, night, originals)


@pytest.fixture
def work_disk(tmp_path):
    """A work folder on a file system of its own (a tmpfs), to fill up or make read-only.

    Mounting needs root (CI runs as root, like this machine); elsewhere the test is skipped,
    saying why. Returns the folder and `mount(options)`, which mounts or remounts it.
    """
    folder = tmp_path / "work"
    folder.mkdir()
    mounted = False

    def mount(options: str) -> None:
        nonlocal mounted
        argv = ["mount", "-t", "tmpfs", "-o", ("remount," if mounted else "") + options, "digitize-work", str(folder)]
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode != 0 and not mounted:
            pytest.skip(f"a tmpfs cannot be mounted here (uid {os.getuid()}): {proc.stderr.strip()}")
        assert proc.returncode == 0, proc.stderr
        mounted = True

    yield folder, mount
    if mounted:
        subprocess.run(["umount", str(folder)], check=False)


# Where the disk fills up: before the scan is down (512 KiB; the scan is ~1 MB), or after, when
# the first page image for Tesseract (~4 MB at 200 dpi) does not fit.
DISK_FULL = {"at-download": "size=512k", "during-ocr": "size=1600k"}


@pytest.mark.parametrize("where", list(DISK_FULL))
def test_a_full_work_disk_fails_the_batch_cleanly_and_the_next_run_archives_it(s3, prefect_api, night, tmp_path, work_disk, where):
    folder, mount = work_disk
    mount(DISK_FULL[where])
    # The default delays are 10, 30 and 90 s; two short ones test the same bounded retry quickly.
    env = _env(s3, prefect_api, tmp_path, f"full-{where}", work_dir=str(folder), retry_delays_s="[1, 1]")
    inbox = _drop(env, night[:1])
    originals = _inbox_files(inbox)

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
    assert _inbox_files(inbox) == originals and _done_markers(inbox) == {}
    assert _records(archive) == [] and review.list() == []
    assert list(folder.iterdir()) == []

    mount("size=256m")
    second = digitize_cli(env, "run", "--jobs", "1")
    assert second.returncode == 0, second.stdout + second.stderr
    _assert_night_archived_once(env, inbox, night[:1], originals)


def test_a_read_only_work_folder_stops_the_run_before_any_batch_is_claimed(s3, prefect_api, night, tmp_path, work_disk):
    folder, mount = work_disk
    if os.getuid() == 0:
        mount("ro,size=64m")  # root writes through permissions; a read-only file system stops it
    else:
        folder.chmod(0o555)
    env = _env(s3, prefect_api, tmp_path, "read-only", work_dir=str(folder))
    inbox = _drop(env, night[:1])
    originals = _inbox_files(inbox)

    first = digitize_cli(env, "run", "--jobs", "1")
    print(f"\nexit {first.returncode}: {[line for line in first.stderr.splitlines() if line.startswith('error:')]}")
    assert first.returncode == 73, first.stdout + first.stderr
    assert f"service.work_dir {folder}: cannot write: " in first.stderr, first.stderr
    assert re.search(r"Read-only file system|Permission denied", first.stderr), first.stderr
    # Stopped before claiming: no claim, nothing done, archived or quarantined.
    assert [o.key for o in inbox.list()] == sorted(originals)
    archive, review = (open_store(env[f"DIGITIZE_SERVICE_{name}"], env) for name in ("ARCHIVE", "REVIEW"))
    assert _records(archive) == [] and review.list() == []

    if os.getuid() == 0:
        mount("rw")
    else:
        folder.chmod(0o755)
    second = digitize_cli(env, "run", "--jobs", "1")
    assert second.returncode == 0, second.stdout + second.stderr
    _assert_night_archived_once(env, inbox, night[:1], originals)


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
