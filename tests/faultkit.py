"""What the fault tests share: a night's batches dropped on S3, and checks that nothing was lost,
nothing archived twice and nothing partial ever visible."""

from __future__ import annotations

import hashlib
import os
import json
import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from digitize.drop import drop
from digitize.inbox import BATCH_MANIFEST, DONE_AREA, DONE_MARKER
from digitize.storage import Store, open_store
from pipeline.errors import DigitizeError
from tests import make_batches
from tests.servicekit import service_env

# An archived record: <yyyy>/<mm>/<code>.pdf|.txt|.json. Anything else under the archive
# (a temporary name, a stray part) is something a reader should never see.
RECORD = re.compile(r"^\d{4}/\d{2}/(?P<code>[^/]+)\.(?P<ext>pdf|txt|json)$")
# Beside the records: the nightly audit log, one object per run, and the index of archived scans.
AUDIT_LOG = re.compile(r"^audit/\d{4}/\d{2}/\d{2}/[^/]+\.jsonl$")
SOURCE_INDEX = re.compile(r"^sources/[0-9a-f]{64}\.json$")
NIGHT_REPORT = "audit/last-night.json"
BATCH_RUN_RESULT = re.compile(r"^audit/batch-runs/[0-9a-f-]{36}\.json$")


def fault_env(s3, prefect_api: str, tmp: Path, bucket: str, **settings: str) -> dict[str, str]:
    """The service's environment on `s3` and `prefect_api`, with DIGITIZE_SERVICE_<KEY> `settings`."""
    extra = {f"DIGITIZE_SERVICE_{key.upper()}": value for key, value in settings.items()}
    return {**service_env(s3, tmp, bucket), "PREFECT_API_URL": prefect_api, **extra}


def three_stations_night(root: Path) -> list[tuple[Path, make_batches.BatchTruth]]:
    """Three stations' batches, each one scanner PDF of two 2-page dossiers, with their truth."""
    batches = []
    for spec in make_batches.small_batches(3):
        folder = root / spec["name"].removesuffix(".pdf")
        batches.append((folder, make_batches.make(folder, [spec])[spec["name"]]))
    return batches


def drop_night(env: dict, night) -> Store:
    """Each batch dropped as a station does, batch.json last, listing its dossiers' codes and pages."""
    inbox = open_store(env["DIGITIZE_SERVICE_INBOX"], env)
    for n, (folder, truth) in enumerate(night):
        hints = [
            {"file": truth.file, "code": d.code, "first_page": d.source_pages[0], "last_page": d.source_pages[-1]}
            for d in truth.documents
        ]  # fmt: skip
        drop(folder, inbox, station=f"station-{n % 2 + 1}", operator="test", hints=hints)
    return inbox


def codes_dropped(inbox: Store) -> Counter:
    """The dossier codes the stations' batch.json files announce."""
    codes: Counter = Counter()
    for obj in inbox.list():
        if obj.key.endswith("/" + BATCH_MANIFEST):
            codes.update(h["code"] for h in json.loads(inbox.read_bytes(obj.key))["dossiers"])
    return codes


def records(archive: Store) -> list:
    """Every object under the archive but the audit log and the index of scans."""
    return [
        o for o in archive.list()
        if not (AUDIT_LOG.match(o.key) or SOURCE_INDEX.match(o.key) or BATCH_RUN_RESULT.match(o.key) or o.key == NIGHT_REPORT)
    ]  # fmt: skip


def complete(archive: Store, key: str) -> bool:
    """Whether the record `key` belongs to has its manifest, which goes last."""
    return archive.exists(key.rsplit(".", 1)[0] + ".json")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def archive_problems(archive: Store, *, pending_ok: bool = False) -> tuple[list[str], Counter]:
    """What is wrong in the archive now, and the codes of its complete records.

    A record is complete when its manifest is there and its PDF and text match the manifest's
    checksums and sizes. `pending_ok`: a PDF or text whose manifest is not there yet is a
    record still being written (manifests go last), not a fault.
    """
    problems, found = [], {}
    for obj in records(archive):
        match = RECORD.match(obj.key)
        if not match:
            problems.append(f"{obj.key}: not a record (temporary or stray object)")
            continue
        found.setdefault(match["code"], {})[match["ext"]] = obj.key
    complete: Counter = Counter()
    for code, parts in sorted(found.items()):
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
            if sha256(data) != output[sha_field] or (size_field and len(data) != output[size_field]):
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
        for obj in records(self.archive):
            if not RECORD.match(obj.key):
                self.seen.append(f"{obj.key}: not a record (temporary or stray object)")
            if not obj.key.endswith(".json"):
                continue
            before = self.archive.read_bytes(obj.key)
            pdf_key = obj.key.removesuffix(".json") + ".pdf"
            pdf = self.archive.read_bytes(pdf_key) if self.archive.exists(pdf_key) else None
            if self.archive.read_bytes(obj.key) != before:
                continue  # replaced while we looked: a reader would read it again
            if pdf is None or sha256(pdf) != json.loads(before)["output"]["pdf_sha256"]:
                self.seen.append(f"{obj.key}: manifest visible with {'no' if pdf is None else 'another'} PDF")

    def stop(self) -> list[str]:
        self._done.set()
        self.join(timeout=60)
        return sorted(set(self.seen))


def wait_for(what, *, timeout: float, proc: subprocess.Popen | None = None, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            return None
        time.sleep(every)
    return None


def processes() -> Iterator[tuple[int, str, list[str]]]:
    """Every process: its pid, "pid (name)", and the fields of /proc/<pid>/stat after the name
    (state, parent, process group, ...)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        yield int(stat.parent.name), text[: text.rindex(")") + 1], text[text.rindex(")") + 2 :].split()


def group_members(pgid: int) -> list[str]:
    """Processes of process group `pgid` still alive (zombies do not count)."""
    return [name for _, name, fields in processes() if int(fields[2]) == pgid and fields[0] != "Z"]


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (a worker, its flow runs, their page workers, Tesseract)."""
    children: dict[int, list[int]] = {}
    for child, _, fields in processes():
        children.setdefault(int(fields[1]), []).append(child)
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo += children.get(found[-1], [])
    return found


def make_read_only(folder: Path, mount, read_only: bool) -> None:
    """The work folder read-only or writable again (`mount` from the work_disk fixture)."""
    if os.getuid() == 0:
        mount("ro,size=64m" if read_only else "rw")  # root writes through permissions; a read-only file system stops it
    else:
        folder.chmod(0o555 if read_only else 0o755)


def done_markers(inbox: Store) -> dict[str, dict]:
    return {o.key: json.loads(inbox.read_bytes(o.key)) for o in inbox.list() if o.key.endswith("/" + DONE_MARKER)}


def assert_night_archived_once(env: dict, inbox: Store, night, originals: dict[str, bytes]) -> Counter:
    """Every dossier the stations announced is in the archive exactly once, whole, and accounted for."""
    archive = open_store(env["DIGITIZE_SERVICE_ARCHIVE"], env)
    review = open_store(env["DIGITIZE_SERVICE_REVIEW"], env)
    problems, archived = archive_problems(archive)
    assert not problems, problems
    dropped = codes_dropped(inbox)
    truth = Counter(d.code for _, t in night for d in t.documents)
    assert dropped == truth and set(dropped.values()) == {1}, dropped
    assert archived == dropped, f"archived {sorted(archived)} but the stations sent {sorted(dropped)}"
    # Nothing went to manual review or quarantine instead (no duplicate_code, no rejection).
    assert review.list() == [], [o.key for o in review.list()]
    # Every batch is done once, and the done markers account for each record once: uploaded by
    # that batch's run, or found already archived (by a run killed after archiving it).
    done = done_markers(inbox)
    assert len(done) == len(night), sorted(done)
    accounted: Counter = Counter()
    for marker in done.values():
        assert marker["rejected"] == [], marker
        for obj in marker["objects"]:
            assert sha256(archive.read_bytes(obj["key"])) == obj["sha256"], obj
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
    assert {k: v for k, v in inbox_files(inbox).items() if k in originals} == originals
    return archived


def inbox_files(inbox: Store) -> dict[str, bytes]:
    """The stations' scans and batch.json files (not the service's claims and done markers), under
    the keys they were dropped at, also once a later night moved their batch to the done area."""
    return {
        o.key.split("/", 4)[4] if o.key.startswith(DONE_AREA) else o.key: inbox.read_bytes(o.key)
        for o in inbox.list() if "/_" not in o.key
    }  # fmt: skip
