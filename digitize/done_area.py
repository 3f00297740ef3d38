"""Finished batches leave the nightly listing: moved to the inbox's dated done area, where retention sweeps each day once."""

from __future__ import annotations

import itertools
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from digitize.inbox import BATCH_MANIFEST, CLAIMS, DONE_AREA, DONE_MARKER, RETENTION_CURSOR, BatchState, Readiness
from digitize.storage import Store, StorageDenied, StorageError, StoredObject, key_problem, printable_key
from pipeline.errors import DigitizeError

log = logging.getLogger(__name__)
# Batches moved at once to the done area (the first night after an upgrade moves all history).
MOVES_AT_ONCE = 8


class NotMoved(Exception):
    """A finished batch that stays where it is, and why; the next night tries again."""


class UnsafeLeftovers(NotMoved):
    """A finished batch holding objects under unsafe keys: refused by name on the night it ran,
    and left where it is, unread, for a person to remove; not reported again every night."""


@dataclass(frozen=True)
class Moves:
    moved: int
    stays: dict[str, str]  # batch prefix: why it stays in the inbox


@dataclass(frozen=True)
class FinishedBatch:
    """A batch in the done area, from its receipt."""

    prefix: str  # "<station>/<batch>/", as it was in the inbox
    key: str  # where it is now: "_done/<yyyy>/<mm>/<dd>/<station>/<batch>/"
    status: str  # "done" or "rejected"
    finished: str
    detail: str


def finished_at(marker: bytes, fallback: datetime) -> datetime:
    try:
        return datetime.fromisoformat(json.loads(marker)["finished"]).astimezone(timezone.utc)
    except (ValueError, KeyError, TypeError):
        return fallback


def move_finished(inbox: Store, states: list[BatchState]) -> Moves:
    """Move every finished batch of the listing into the done area, and say which stay where
    they are and why; a store error never stops the night (the batch is still done)."""

    def move(prefix: str) -> str | None:
        try:
            move_batch(inbox, prefix)
        except UnsafeLeftovers as exc:
            log.info("finished batch %s stays in the inbox: %s", printable_key(prefix), exc)
            return ""
        except (NotMoved, DigitizeError) as exc:  # S3, a refusal, or a full disk while copying
            if isinstance(exc, StorageError) and _gone(inbox, prefix):
                return None  # another machine's night moved it meanwhile
            log.warning("finished batch %s stays in the inbox: %s", printable_key(prefix), exc)
            return str(exc)
        return None

    finished = [s.prefix for s in states if s.state == Readiness.DONE]
    # A move is a dozen small requests, each mostly waiting: several batches at once.
    with ThreadPoolExecutor(MOVES_AT_ONCE) as pool:
        outcomes = list(pool.map(move, finished))
    return Moves(
        moved=outcomes.count(None), stays={p: why for p, why in zip(finished, outcomes, strict=True) if why},
    )  # fmt: skip


def _gone(inbox: Store, prefix: str) -> bool:
    try:
        return not inbox.exists(prefix + DONE_MARKER)
    except (StorageError, StorageDenied):
        return False


def move_batch(inbox: Store, prefix: str) -> str:
    """Copy the batch to `_done/<day it finished>/<prefix>`, then delete it from the inbox.

    S3 cannot rename, so this is copy then delete, and safe to repeat after a crash at any
    point: the done marker is deleted last, so until the batch is all gone it is still listed
    as done (never taken up again) and the next night finishes the move; an object already in
    the done area is never written again. Returns the batch's key in the done area.
    """
    objects = {o.key[len(prefix):]: o for o in inbox.list(prefix)}
    unsafe = [name for name in objects if key_problem(prefix + name)]
    if unsafe:
        raise UnsafeLeftovers(f"{len(unsafe)} objects under unsafe keys ({printable_key(unsafe[0])}); a person must remove them")
    marker = inbox.read_bytes(prefix + DONE_MARKER)
    receipt = {DONE_MARKER: marker}
    if BATCH_MANIFEST in objects:
        receipt[BATCH_MANIFEST] = inbox.read_bytes(prefix + BATCH_MANIFEST)
    day = finished_at(marker, objects[DONE_MARKER].modified)
    dest = _destination(inbox, f"{DONE_AREA}{day:%Y/%m/%d}/{prefix}", receipt)
    claims = sorted(name for name in objects if name.startswith(CLAIMS))
    kept = [name for name in objects if name not in claims and name != DONE_MARKER]
    # batch.json first: it tells this batch's place in the done area from another's of the same
    # name; the marker last: its copy says the batch is all there.
    for name in sorted(kept, key=lambda n: n != BATCH_MANIFEST) + [DONE_MARKER]:
        there = inbox.stat(dest + name)
        if there is None:
            inbox.copy(prefix + name, dest + name)
        elif there.size != objects[name].size:
            raise NotMoved(f"{dest}{name} already holds another object")
    for name in [n for n in kept if n != BATCH_MANIFEST] + claims + [BATCH_MANIFEST, DONE_MARKER]:
        if name in objects:
            inbox.delete(prefix + name)
    for folder in sorted({name.rsplit("/", 1)[0] + "/" for name in objects if "/" in name}, key=len, reverse=True) + [""]:
        inbox.forget_folder(prefix + folder)
    return dest


def _destination(inbox: Store, base: str, receipt: dict[str, bytes]) -> str:
    """The first of `base`, `base~2`, ... whose receipt is this batch's or not there yet: the
    same folder dropped again (same batch name) and finished the same day gets its own place."""
    for n in itertools.count(1):
        dest = base if n == 1 else f"{base.rstrip('/')}~{n}/"
        if all(not inbox.exists(dest + name) or inbox.read_bytes(dest + name) == data for name, data in receipt.items()):
            return dest
    raise AssertionError("unreachable")


def finished_batches(inbox: Store, *, since: date | None) -> list[FinishedBatch]:
    """The batches in the done area that finished on `since` or later (None: all), newest first."""
    days = _days(inbox)
    batches = []
    for day in sorted((d for d in days if since is None or d >= since), reverse=True):
        objects = inbox.list(f"{DONE_AREA}{day:%Y/%m/%d}/")
        for obj in objects:
            if not obj.key.endswith("/" + DONE_MARKER):
                continue
            key = obj.key.removesuffix(DONE_MARKER)
            marker = json.loads(inbox.read_bytes(obj.key))
            status = marker.get("status", "done")
            rejected = marker.get("rejected") or []
            detail = rejected[0]["reason"] if status == "rejected" and rejected else f"{len(marker.get('objects', []))} objects archived"
            prefix = "/".join(key.split("/")[4:])
            batches.append(FinishedBatch(prefix=prefix, key=key, status=status, finished=str(marker.get("finished", "?")), detail=detail))
    return batches


def _days(inbox: Store) -> list[date]:
    """The days the done area holds, from its year, month and day folders (never their batches)."""
    found = []
    for year in inbox.children(DONE_AREA):
        for month in inbox.children(DONE_AREA + year) if year.endswith("/") else []:
            for day in inbox.children(DONE_AREA + year + month) if month.endswith("/") else []:
                try:
                    found.append(date(int(year[:-1]), int(month[:-1]), int(day.rstrip("/"))))
                except ValueError:
                    continue
    return found


def sweep_done_area(inbox: Store, retention_days: float, *, now: datetime | None = None) -> list[date]:
    """Delete the originals of batches that finished more than `retention_days` ago, one day
    at a time, each day once: a cursor remembers the last day swept, so a night looks at the
    days that came due since, not at all the years kept. batch.json and the done marker stay
    (the receipt), and so do a rejected batch's scans: they were never archived."""
    if retention_days <= 0:
        return []
    now = now or datetime.now(timezone.utc)
    due = (now - timedelta(days=retention_days)).date() - timedelta(days=1)
    swept_to = _cursor(inbox)
    if swept_to is None:
        days = sorted(d for d in _days(inbox) if d <= due)  # once, the first time retention runs
    else:
        days = [swept_to + timedelta(days=n) for n in range(1, (due - swept_to).days + 1)]
    for day in days:
        _sweep_day(inbox, f"{DONE_AREA}{day:%Y/%m/%d}/")
        inbox.put_bytes(RETENTION_CURSOR, json.dumps({"swept_to": day.isoformat()}).encode())
    if swept_to is None or swept_to < due:
        inbox.put_bytes(RETENTION_CURSOR, json.dumps({"swept_to": due.isoformat()}).encode())
    return days


def _cursor(inbox: Store) -> date | None:
    if not inbox.exists(RETENTION_CURSOR):
        return None
    return date.fromisoformat(json.loads(inbox.read_bytes(RETENTION_CURSOR))["swept_to"])


def _sweep_day(inbox: Store, day_prefix: str) -> None:
    by_batch: dict[str, list[StoredObject]] = {}
    for obj in inbox.list(day_prefix):
        parts = obj.key[len(day_prefix):].split("/")
        if len(parts) >= 3:
            by_batch.setdefault(f"{day_prefix}{parts[0]}/{parts[1]}/", []).append(obj)
    for prefix, objects in by_batch.items():
        names = {o.key[len(prefix):] for o in objects}
        if DONE_MARKER not in names or json.loads(inbox.read_bytes(prefix + DONE_MARKER)).get("status") == "rejected":
            continue  # a move still under way, or scans that are all there is of them
        for obj in objects:
            if not obj.key.endswith(("/" + BATCH_MANIFEST, "/" + DONE_MARKER)) and key_problem(obj.key) is None:
                inbox.delete(obj.key)
