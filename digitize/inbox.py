"""The stations' inbox: batch manifests, which batches are ready, and claiming one exactly once."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from digitize.storage import MAX_NAME_BYTES, StorageError, Store, StoredObject, key_problem, printable_key
from pipeline.errors import InputError

BATCH_MANIFEST = "batch.json"
DONE_MARKER = "_done.json"
CLAIMS = "_claims/"
ALIVE = ".alive"  # a claim's heartbeat, beside it
SCHEMA = "digitize.batch/1"
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


@dataclass(frozen=True)
class BatchState:
    prefix: str  # "<station>/<batch>/"
    state: str  # ready, waiting, incomplete, done, invalid, refused
    detail: str
    manifest: BatchManifest | None = None


def scan_inbox(store: Store, *, incomplete_after: timedelta, now: datetime | None = None) -> list[BatchState]:
    """Every batch in the inbox and whether it can be processed now."""
    now = now or datetime.now(timezone.utc)
    by_batch: dict[str, dict[str, StoredObject]] = {}
    for obj in store.list():
        parts = obj.key.split("/")
        if len(parts) < 3:
            continue
        prefix = f"{parts[0]}/{parts[1]}/"
        by_batch.setdefault(prefix, {})[obj.key[len(prefix):]] = obj
    states = []
    for prefix, objects in sorted(by_batch.items()):
        states.append(_judge(store, prefix, objects, now, incomplete_after))
    return states


def _judge(store: Store, prefix: str, objects: dict[str, StoredObject], now: datetime, incomplete_after: timedelta) -> BatchState:
    problem = key_problem(prefix + BATCH_MANIFEST)
    if problem:
        # Nothing can be read, claimed or marked under such a prefix; a person must remove it.
        return BatchState(prefix, "refused", f"unsafe object key: {problem}; nothing under it is read")
    if DONE_MARKER in objects:
        return BatchState(prefix, "done", "processed")
    oldest = min(o.modified for o in objects.values())
    late = now - oldest > incomplete_after
    if BATCH_MANIFEST not in objects:
        if late:
            return BatchState(prefix, "incomplete", f"no {BATCH_MANIFEST} after {now - oldest}")
        return BatchState(prefix, "waiting", f"no {BATCH_MANIFEST} yet")
    try:
        manifest = parse_manifest(store.read_bytes(prefix + BATCH_MANIFEST), f"{store.url}/{prefix}{BATCH_MANIFEST}")
    except InputError as exc:
        return BatchState(prefix, "invalid", exc.reason)
    missing = [f.name for f in manifest.files if f.name not in objects or objects[f.name].size != f.bytes]
    if missing:
        state = "incomplete" if late else "waiting"
        return BatchState(prefix, state, f"{len(missing)} listed files missing or of the wrong size: {', '.join(missing[:5])}", manifest)
    return BatchState(prefix, "ready", f"{len(manifest.files)} files", manifest)


class Claim:
    """Owning a batch, exactly once across runs and machines, on any store.

    Each claimant writes its own claim object once, waits for concurrent claims to land,
    and the earliest live claim (by the store's own clock, then key) wins. The heartbeat
    renews a separate `.alive` object, so the claim's own time never moves: a holder's
    beat during a newcomer's settle window cannot make the newcomer look earlier. A claim
    whose last sign of life is older than the lease belongs to a run that died, and is
    ignored, so a crashed batch is taken up again.
    """

    def __init__(self, store: Store, prefix: str, *, lease_s: float, settle_s: float) -> None:
        self.store, self.prefix = store, prefix
        self.lease_s, self.settle_s = lease_s, settle_s
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        self.key = f"{prefix}{CLAIMS}{stamp}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.alive_key = self.key + ALIVE
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def _write(self, key: str) -> None:
        body = {"host": socket.gethostname(), "pid": os.getpid(), "at": datetime.now(timezone.utc).isoformat()}
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
        # ours, from a failed attempt at this batch that is now being retried.
        contenders = [c for c in live if c.key not in _ABANDONED]
        for claim in live:
            if claim.key in _ABANDONED:
                _delete_claim(self.store, claim.key)
        winner = min(contenders, key=lambda c: (c.modified, c.key))
        return winner.key == self.key and not self.store.exists(self.prefix + DONE_MARKER)

    def _beat(self) -> None:
        while not self._stop.wait(self.lease_s / 4):
            try:
                self._write(self.alive_key)
            except Exception:  # a missed beat only shortens the lease; the next may land
                continue

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
