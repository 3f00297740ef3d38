"""The stations' inbox: batch manifests, which batches are ready, and claiming one exactly once."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from enum import StrEnum
from datetime import datetime, timedelta, timezone

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from digitize.storage import MAX_NAME_BYTES, StorageError, Store, StoredObject, key_problem, printable_key
from pipeline.errors import InputError

BATCH_MANIFEST = "batch.json"
DONE_MARKER = "_done.json"
CLAIMS = "_claims/"
ALIVE = ".alive"  # a claim's heartbeat, beside it
SCHEMA = "digitize.batch/1"
# Where finished batches go, by the day they finished: _done/<yyyy>/<mm>/<dd>/<station>/<batch>/.
# Not a station id (those start with a letter or digit), so the nightly listing can pass it by.
DONE_AREA = "_done/"
# How far retention has swept the done area: the days up to this one hold no more originals.
RETENTION_CURSOR = DONE_AREA + "_retention.json"
# Requests from the review station to a station (`<station>/_requests/<id>.json`): not a batch.
REQUESTS = "_requests"
# A station id is the first part of every key of its batches, and a folder name in the review area.
STATION_ID = r"^[a-z0-9][a-z0-9._-]{0,63}$"

log = logging.getLogger(__name__)


class ManifestFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)
    # Counted by the station at drop time; absent in batch.json written before it was.
    pages: int | None = Field(default=None, ge=1)

    @field_validator("name")
    @classmethod
    def _plain_file_name(cls, name: str) -> str:
        # The name becomes a file in the work folder and the last part of an object key.
        if "/" in name:
            raise ValueError(f"'{printable_key(name)}' is a path, not a file name")
        if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
            raise ValueError(f"'{printable_key(name)}' is longer than {MAX_NAME_BYTES} bytes")
        problem = key_problem(name)
        if problem:
            raise ValueError(f"'{printable_key(name)}' has {problem}")
        return name


class ManifestHint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    file: str
    code: str
    first_page: int = Field(ge=0)
    last_page: int = Field(ge=0)


class BadFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    reason: str


def station_problem(station: str) -> str | None:
    """Why `station` cannot be a station id, or None when it can."""
    if re.fullmatch(STATION_ID, station):
        return None
    return "a station id is 1 to 64 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit"


class BatchManifest(BaseModel):
    """batch.json, written by the station after every page file."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_: str = Field(alias="schema", pattern=r"^digitize\.batch/1$")
    station: str = Field(pattern=STATION_ID)
    operator: str
    scanned_at: datetime
    files: list[ManifestFile] = Field(min_length=1)
    dossiers: list[ManifestHint] = []
    # Files the station knew to be bad and dropped anyway (`digitize drop --allow-bad`).
    bad_files: list[BadFile] = []

    @model_validator(mode="after")
    def _each_file_once(self) -> BatchManifest:
        # A file listed twice would be archived twice.
        names = [f.name for f in self.files]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"files: {', '.join(map(repr, twice))} listed more than once")
        return self


def parse_manifest(data: bytes, where: str) -> BatchManifest:
    try:
        return BatchManifest.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(document)"
        message = first["msg"].removeprefix("Value error, ")
        raise InputError(where, f"bad batch manifest: {field}: {message}") from None


class Readiness(StrEnum):
    """Where a batch stands in the inbox, as seen by one listing."""

    READY = "ready"  # batch.json and every file it lists are there
    WAITING = "waiting"  # still arriving
    INCOMPLETE = "incomplete"  # still not all there after service.incomplete_after_h
    INVALID = "invalid"  # batch.json cannot be used; the next run quarantines it
    DONE = "done"
    REFUSED = "refused"  # under an unsafe key: nothing is read


@dataclass(frozen=True)
class BatchState:
    prefix: str  # "<station>/<batch>/"
    state: Readiness
    detail: str
    manifest: BatchManifest | None = None
    # The oldest object's time: when the batch began to arrive.
    since: datetime | None = None
    # The claims under the batch, each with its last sign of life.
    claims: tuple[tuple[str, datetime], ...] = ()
    # batch.json's checksum: with the prefix, what makes a batch run's idempotency key.
    manifest_sha256: str = ""

    @property
    def station(self) -> str:
        return self.manifest.station if self.manifest else self.prefix.split("/", 1)[0]

    @property
    def takeable(self) -> bool:
        """A run takes it up: complete, to be quarantined, or overdue with what did arrive."""
        return self.state in (Readiness.READY, Readiness.INVALID) or (
            self.state == Readiness.INCOMPLETE and self.manifest is not None
        )

    def live_claims(self, now: datetime, lease_s: float) -> int:
        """Claims renewed within the lease: runs that may be working on the batch."""
        return sum((now - last).total_seconds() < lease_s for _, last in self.claims)


def scan_inbox(store: Store, *, incomplete_after: timedelta, now: datetime | None = None) -> list[BatchState]:
    """Every batch in the inbox and whether it can be processed now.

    Lists each station's folder, never the done area: the cost is what is pending (and what
    finished since the last night, until that night moves it away), not the years behind it.
    """
    now = now or datetime.now(timezone.utc)
    by_batch: dict[str, dict[str, StoredObject]] = {}
    for station in store.children():
        if not station.endswith("/") or station == DONE_AREA:
            continue
        for obj in store.list(station):
            parts = obj.key.split("/")
            if len(parts) < 3 or parts[1] == REQUESTS:
                continue
            prefix = f"{parts[0]}/{parts[1]}/"
            by_batch.setdefault(prefix, {})[obj.key[len(prefix):]] = obj
    states = []
    for prefix, objects in sorted(by_batch.items()):
        if all(name.startswith(CLAIMS) for name in objects):
            continue  # a claim left behind by a run that lost a race with a move: no batch
        states.append(_judge(store, prefix, objects, now, incomplete_after))
    return states


def _judge(store: Store, prefix: str, objects: dict[str, StoredObject], now: datetime, incomplete_after: timedelta) -> BatchState:
    problem = key_problem(prefix + BATCH_MANIFEST)
    if problem:
        # Nothing can be read, claimed or marked under such a prefix; a person must remove it.
        return BatchState(prefix, Readiness.REFUSED, f"unsafe object key: {problem}; nothing under it is read")
    since = min(o.modified for o in objects.values())
    claims = _claims(objects)
    if DONE_MARKER in objects:
        return BatchState(prefix, Readiness.DONE, "processed", since=since)
    late = now - since > incomplete_after
    if BATCH_MANIFEST not in objects:
        if late:
            return BatchState(prefix, Readiness.INCOMPLETE, f"no {BATCH_MANIFEST} after {now - since}", since=since, claims=claims)
        return BatchState(prefix, Readiness.WAITING, f"no {BATCH_MANIFEST} yet", since=since, claims=claims)
    raw = store.read_bytes(prefix + BATCH_MANIFEST)
    checksum = hashlib.sha256(raw).hexdigest()
    try:
        manifest = parse_manifest(raw, f"{store.url}/{prefix}{BATCH_MANIFEST}")
    except InputError as exc:
        return BatchState(prefix, Readiness.INVALID, exc.reason, since=since, claims=claims, manifest_sha256=checksum)
    missing = [f.name for f in manifest.files if f.name not in objects or objects[f.name].size != f.bytes]
    if missing:
        state = Readiness.INCOMPLETE if late else Readiness.WAITING
        detail = f"{len(missing)} listed files missing or of the wrong size: {', '.join(missing[:5])}"
        return BatchState(prefix, state, detail, manifest, since=since, claims=claims, manifest_sha256=checksum)
    return BatchState(prefix, Readiness.READY, f"{len(manifest.files)} files", manifest, since=since, claims=claims, manifest_sha256=checksum)


def _claims(objects: dict[str, StoredObject]) -> tuple[tuple[str, datetime], ...]:
    """Each claim's key and its last sign of life (the claim, or its heartbeat if later)."""
    found = []
    for name, obj in objects.items():
        if name.startswith(CLAIMS) and not name.endswith(ALIVE):
            beat = objects.get(name + ALIVE)
            found.append((obj.key, max(obj.modified, beat.modified) if beat else obj.modified))
    return tuple(sorted(found))


@dataclass(frozen=True)
class ClaimHolder:
    """Who holds a batch, for the night's report: a run elsewhere, and how long its lease still runs."""

    host: str
    pid: int
    since: str
    lease_left_s: float

    def __str__(self) -> str:
        return f"held by {self.host} pid {self.pid} since {self.since}; its lease runs out in {self.lease_left_s:.0f} s unless renewed"


def _read_first_line(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _boot_id() -> str:
    return _read_first_line("/proc/sys/kernel/random/boot_id")


def machine_identity() -> dict[str, str]:
    """What tells this machine and process space from others that share its host name (cloned
    images, containers on one kernel): its machine id and its pid namespace."""
    try:
        pid_namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        pid_namespace = ""
    return {"machine_id": _read_first_line("/etc/machine-id"), "pid_namespace": pid_namespace}


def _process_start(pid: int) -> str | None:
    """The process's start time since boot, in clock ticks, or None when there is no such process.

    With the boot id it tells this process from a later one that was given the same pid."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()[19]


def _gone(body: dict) -> bool:
    """Whether the claim's process is known to be dead: it ran on this host, and this boot
    has no such process (or the host was rebooted since). Another host's claim is never
    judged here: only its lease can tell."""
    here = machine_identity()
    if body.get("host") != socket.gethostname() or not body.get("boot_id") or not _boot_id():
        return False
    if not here["machine_id"] or any(body.get(key) != value for key, value in here.items()):
        return False  # another machine or container under the same name: only the lease can tell
    if body["boot_id"] != _boot_id():
        return True
    return _process_start(int(body["pid"])) != body.get("pid_start")


class ClaimLife(StrEnum):
    """What a batch's claims say of the run that works on it, for one that no longer reports."""

    LIVE = "live"  # a claim renewed within the lease, by a process not known to be gone
    DEAD = "dead"  # only claims whose process is gone or that went silent past the lease
    NONE = "none"  # no claim: not started yet (a run holds its claim across its retries), or finished


def claim_life(store: Store, prefix: str, lease_s: float, *, run: str) -> ClaimLife:
    """Whether batch run `run` still holds `prefix`, from its claims in the store (judged as Claim
    judges rivals: renewed within the lease, by a process not known to be gone).

    A dead claim is a run that died holding the batch (its machine or worker killed): it never
    released it. The store is the judge because the batch's data is written there: a worker cut
    off from Prefect but still reaching S3 keeps its claim alive, and is not replaced while it
    may still write."""
    objects = {o.key[len(prefix):]: o for o in store.list(prefix + CLAIMS)}
    now = max([datetime.now(timezone.utc), *(o.modified for o in objects.values())])
    life = ClaimLife.NONE
    for key, last in _claims(objects):
        try:
            body = json.loads(store.read_bytes(key))
        except (StorageError, ValueError):  # released meanwhile, or unreadable
            continue
        if body.get("run") != run:
            continue
        if (now - last).total_seconds() < lease_s and not _gone(body):
            return ClaimLife.LIVE
        life = ClaimLife.DEAD
    return life


class Claim:
    """Owning a batch, exactly once across runs and machines, on any store.

    Each claimant writes its own claim object once, waits for concurrent claims to land,
    and the earliest live claim (by the store's own clock, then key) wins. The heartbeat
    renews a separate `.alive` object, so the claim's own time never moves: a holder's
    beat during a newcomer's settle window cannot make the newcomer look earlier. A claim
    whose last sign of life is older than the lease belongs to a run that died, and is
    ignored, so a crashed batch is taken up again. A claim records its host, process id,
    process start and boot id, so a run on the same host takes over at once a claim whose
    process is gone (killed, or the machine rebooted), rather than after the lease.
    """

    def __init__(self, store: Store, prefix: str, *, lease_s: float, settle_s: float, run: str = "") -> None:
        self.store, self.prefix, self.run = store, prefix, run
        self.lease_s, self.settle_s = lease_s, settle_s
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        self.key = f"{prefix}{CLAIMS}{stamp}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.alive_key = self.key + ALIVE
        # Who won instead, when acquire() returns False with the batch not done.
        self.holder: ClaimHolder | None = None
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def _write(self, key: str) -> None:
        body = {
            "host": socket.gethostname(), **machine_identity(), "pid": os.getpid(), "pid_start": _process_start(os.getpid()),
            "boot_id": _boot_id(), "at": datetime.now(timezone.utc).isoformat(), "run": self.run,
        }  # fmt: skip
        self.store.put_bytes(key, json.dumps(body).encode())

    def acquire(self) -> bool:
        if self.store.exists(self.prefix + DONE_MARKER):
            return False
        try:
            won = self._contest()
        except BaseException:
            # S3 failed mid-contest; the claim may have landed. Gone or abandoned, it must not
            # outlive this attempt as a rival of the next one.
            _delete_claim(self.store, self.key)
            raise
        if not won:
            _delete_claim(self.store, self.key)
            return False
        self._heartbeat = threading.Thread(target=self._beat, daemon=True, name=f"claim {self.prefix}")
        self._heartbeat.start()
        return True

    def _contest(self) -> bool:
        self._write(self.key)
        time.sleep(self.settle_s)
        mine = self.store.stat(self.key)
        objects = {o.key: o for o in self.store.list(self.prefix + CLAIMS)}
        claims = [o for key, o in objects.items() if not key.endswith(ALIVE)]

        def last_sign_of_life(claim: StoredObject) -> datetime:
            beat = objects.get(claim.key + ALIVE)
            return max(claim.modified, beat.modified) if beat else claim.modified

        live = [c for c in claims if (mine.modified - last_sign_of_life(c)).total_seconds() < self.lease_s]
        # A claim this process gave up but could not delete (S3 was down) is not a rival: it is
        # ours, from a failed attempt at this batch that is now being retried. Nor is the claim
        # of a process on this host that is gone.
        rivals = {c.key: self._body(c.key) for c in live if c.key not in (self.key, *_ABANDONED)}
        dead = {key for key, body in rivals.items() if body is not None and _gone(body)}
        for claim in live:
            if claim.key in _ABANDONED or claim.key in dead:
                log.warning("claim %s: %s; taken over", claim.key, "its process is gone" if claim.key in dead else "abandoned by this process")
                _delete_claim(self.store, claim.key)
        contenders = [c for c in live if c.key == self.key or (c.key in rivals and c.key not in dead)]
        winner = min(contenders, key=lambda c: (c.modified, c.key))
        if winner.key != self.key:
            body = rivals[winner.key] or {}
            left = self.lease_s - (mine.modified - last_sign_of_life(winner)).total_seconds()
            self.holder = ClaimHolder(str(body.get("host", "?")), int(body.get("pid", 0)), str(body.get("at", "?")), max(0.0, left))
            return False
        return not self.store.exists(self.prefix + DONE_MARKER)

    def _body(self, key: str) -> dict | None:
        try:
            return json.loads(self.store.read_bytes(key))
        except (StorageError, ValueError, OSError):  # deleted meanwhile, or unreadable: judge by the lease
            return None

    def _beat(self) -> None:
        while not self._stop.wait(self.lease_s / 4):
            try:
                self._write(self.alive_key)
            except Exception as exc:  # a missed beat only shortens the lease; the next may land
                log.warning("claim %s: heartbeat not written (%s); retrying", self.key, exc)

    def release(self) -> None:
        """Stop renewing the claim and delete it. Never raises: a claim left behind expires with
        its lease, and this process ignores it at once (see acquire)."""
        self._stop.set()
        if self._heartbeat:
            self._heartbeat.join()
        _delete_claim(self.store, self.key)


# Claims this process released but could not delete. Without this, a task retried after an S3
# outage would lose its batch to its own earlier claim until the lease ran out, and report the
# batch as claimed elsewhere.
_ABANDONED: set[str] = set()


def _delete_claim(store: Store, key: str) -> None:
    try:
        if store.exists(key + ALIVE):
            store.delete(key + ALIVE)
        store.delete(key)
        _ABANDONED.discard(key)
    except StorageError as exc:  # the batch's own outcome matters, not its claim's clean-up
        _ABANDONED.add(key)
        log.warning("claim %s not deleted (%s); it expires with its lease", key, exc)


def apply_retention(inbox: Store, states: list[BatchState], retention_days: float) -> None:
    """Remove originals of batches done more than `retention_days` ago (0 keeps them for ever)."""
    if retention_days <= 0:
        return
    cutoff = datetime.now(timezone.utc) - timedelta(days=retention_days)
    for state in states:
        done = inbox.stat(state.prefix + DONE_MARKER) if state.state == Readiness.DONE else None
        if done is None or done.modified > cutoff:
            continue
        # batch.json and the done marker stay: they are the batch's record of what was received.
        # An object under an unsafe key is left for a person: no key of it may be acted on.
        originals = [
            o for o in inbox.list(state.prefix)
            if not o.key.endswith((BATCH_MANIFEST, DONE_MARKER)) and key_problem(o.key) is None
        ]  # fmt: skip
        # A rejected batch's scans were never archived: they are all there is of them.
        if not originals or json.loads(inbox.read_bytes(state.prefix + DONE_MARKER)).get("status") == "rejected":
            continue
        for obj in originals:
            inbox.delete(obj.key)
