"""Finished batches leave the nightly listing for the dated done area: crash-safe, never overwritten, swept by retention once."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

import pytest

from digitize.done_area import Moves, finished_batches, move_finished, sweep_done_area
from digitize.inbox import BATCH_MANIFEST, CLAIMS, DONE_MARKER, RETENTION_CURSOR, Readiness, scan_inbox
from digitize.storage import LocalStore, StorageError

LATE = timedelta(hours=12)


class CountingStore(LocalStore):
    """A folder store that remembers what was listed and copied, and can fail a chosen delete (a crash)."""

    def __init__(self, root) -> None:
        super().__init__(root)
        self.listed: list[str] = []
        self.copied: list[str] = []
        self.fail_delete: str | None = None

    def list(self, prefix: str = ""):
        self.listed.append(prefix)
        return super().list(prefix)

    def copy(self, source: str, dest: str) -> None:
        self.copied.append(dest)
        super().copy(source, dest)

    def delete(self, key: str) -> None:
        if self.fail_delete and key.endswith(self.fail_delete):
            raise StorageError(f"{key}: the worker died here")
        super().delete(key)


def finished_batch(inbox: LocalStore, prefix: str, *, finished: str, status: str = "done", scan: bytes = b"II*\x00 scan") -> None:
    inbox.put_bytes(prefix + "scan.tif", scan)
    inbox.put_bytes(prefix + BATCH_MANIFEST, json.dumps({"batch": prefix, "scan": len(scan)}).encode())
    inbox.put_bytes(prefix + DONE_MARKER, json.dumps({"batch": prefix, "status": status, "finished": finished, "objects": []}).encode())


def keys(store: LocalStore, prefix: str = "") -> list[str]:
    return sorted(o.key for o in LocalStore.list(store, prefix))


@pytest.fixture
def inbox(tmp_path) -> CountingStore:
    store = CountingStore(tmp_path / "inbox")
    finished_batch(store, "st/old/", finished="2026-11-20T22:10:00+00:00")
    store.put_bytes(f"st/old/{CLAIMS}20261120T220000-host-1-abc", b"{}")  # a claim that outlived its run
    store.put_bytes("st/new/scan.tif", b"II*\x00 arriving")  # batch.json not there yet
    return store


def test_a_finished_batch_moves_to_its_day_and_the_listing_never_reads_the_done_area(inbox):
    states = scan_inbox(inbox, incomplete_after=LATE)
    assert {s.prefix: s.state for s in states} == {"st/old/": Readiness.DONE, "st/new/": Readiness.WAITING}
    assert move_finished(inbox, states) == Moves(moved=1, stays={})
    assert keys(inbox, "st/") == ["st/new/scan.tif"]
    assert not (inbox.root / "st" / "old").exists(), "no empty folder is left for later listings to walk"
    assert keys(inbox, "_done/") == [
        "_done/2026/11/20/st/old/_done.json", "_done/2026/11/20/st/old/batch.json", "_done/2026/11/20/st/old/scan.tif",
    ], "the receipt and the scan move; the stale claim is deleted"
    inbox.listed.clear()
    assert [s.prefix for s in scan_inbox(inbox, incomplete_after=LATE)] == ["st/new/"]
    assert inbox.listed and not any(p.startswith("_done") or p == "" for p in inbox.listed), inbox.listed


@pytest.mark.parametrize("crash_at", ["scan.tif", BATCH_MANIFEST, DONE_MARKER])
def test_a_crash_during_the_move_is_finished_by_the_next_night_without_rewriting_the_done_area(inbox, crash_at):
    inbox.fail_delete = crash_at
    left = move_finished(inbox, scan_inbox(inbox, incomplete_after=LATE)).stays
    assert list(left) == ["st/old/"] and "the worker died here" in left["st/old/"]
    copied = {k: (LocalStore.stat(inbox, k).modified, inbox.read_bytes(k)) for k in keys(inbox, "_done/")}
    assert len(copied) == 3, "everything was copied before anything was deleted"
    # Until the marker is gone the batch is listed as done: never taken up again.
    states = scan_inbox(inbox, incomplete_after=LATE)
    assert [s.state for s in states if s.prefix == "st/old/"] == [Readiness.DONE]

    inbox.fail_delete, inbox.copied = None, []
    assert move_finished(inbox, states) == Moves(moved=1, stays={})
    assert inbox.copied == [], "nothing in the done area is written twice"
    assert {k: (LocalStore.stat(inbox, k).modified, inbox.read_bytes(k)) for k in keys(inbox, "_done/")} == copied
    assert keys(inbox, "st/") == ["st/new/scan.tif"]


def test_the_same_batch_name_finished_again_the_same_day_gets_its_own_place(inbox):
    move_finished(inbox, scan_inbox(inbox, incomplete_after=LATE))
    finished_batch(inbox, "st/old/", finished="2026-11-20T23:50:00+00:00", scan=b"II*\x00 dropped again")
    assert move_finished(inbox, scan_inbox(inbox, incomplete_after=LATE)).stays == {}
    assert keys(inbox, "_done/2026/11/20/st/old~2/") == [f"_done/2026/11/20/st/old~2/{n}" for n in (DONE_MARKER, BATCH_MANIFEST, "scan.tif")]
    assert inbox.read_bytes("_done/2026/11/20/st/old/scan.tif") == b"II*\x00 scan", "the first batch's receipt is never overwritten"
    assert [(b.prefix, b.status) for b in finished_batches(inbox, since=date(2026, 11, 20))] == [("st/old/", "done"), ("st/old~2/", "done")]
    assert finished_batches(inbox, since=date(2026, 11, 21)) == []


def test_retention_sweeps_each_day_of_the_done_area_once_and_keeps_receipts_and_rejected_scans(inbox):
    finished_batch(inbox, "st/refused/", finished="2026-11-20T22:00:00+00:00", status="rejected")
    finished_batch(inbox, "st/recent/", finished="2026-11-28T22:00:00+00:00")
    move_finished(inbox, scan_inbox(inbox, incomplete_after=LATE))
    now = datetime(2026, 11, 30, 1, 0, tzinfo=timezone.utc)
    assert sweep_done_area(inbox, 0, now=now) == [] and len(keys(inbox, "_done/")) == 9, "retention 0 keeps every original"

    assert sweep_done_area(inbox, 7, now=now) == [date(2026, 11, 20)]
    assert keys(inbox, "_done/") == sorted([
        "_done/2026/11/20/st/old/_done.json", "_done/2026/11/20/st/old/batch.json",
        *(f"_done/2026/11/20/st/refused/{n}" for n in (DONE_MARKER, BATCH_MANIFEST, "scan.tif")),
        *(f"_done/2026/11/28/st/recent/{n}" for n in (DONE_MARKER, BATCH_MANIFEST, "scan.tif")),
        RETENTION_CURSOR,
    ])  # fmt: skip
    inbox.listed.clear()
    assert sweep_done_area(inbox, 7, now=now) == [], "a swept day is not looked at again"
    assert not any(p.startswith("_done/2026/11/2") for p in inbox.listed)
    later = sweep_done_area(inbox, 7, now=now + timedelta(days=9))
    assert later == [date(2026, 11, 23) + timedelta(days=n) for n in range(9)], "days in between, by the calendar"
    assert "_done/2026/11/28/st/recent/scan.tif" not in keys(inbox, "_done/")


def test_status_shows_pending_work_and_the_last_week_and_all_of_it_when_asked(inbox, tmp_path):
    from digitize.config import app_settings
    from digitize.status import service_status

    recent = (datetime.now(timezone.utc) - timedelta(days=1)).isoformat()
    finished_batch(inbox, "st/recent/", finished=recent)
    move_finished(inbox, scan_inbox(inbox, incomplete_after=LATE))
    locations = {"service.inbox": str(tmp_path / "inbox"), "service.archive": str(tmp_path / "archive"), "service.review": str(tmp_path / "review")}
    settings = app_settings(None, {}, locations)

    shown = [(b.batch, b.state) for b in service_status(settings, {}).batches]
    assert shown == [("st/new/", "waiting"), ("st/recent/", "done")], "a batch of 2026-11-20 is not last week's"
    everything = [(b.batch, b.state) for b in service_status(settings, {}, everything=True).batches]
    assert everything == [("st/new/", "waiting"), ("st/recent/", "done"), ("st/old/", "done")]


def test_a_finished_batch_holding_an_unsafe_key_stays_quietly_for_a_person(inbox):
    (inbox.root / "st" / "old" / "evil\nname.tif").write_bytes(b"refused by name on the night it ran")
    moves = move_finished(inbox, scan_inbox(inbox, incomplete_after=LATE))
    assert moves == Moves(moved=0, stays={}), "not moved, and not reported again every night"
    assert inbox.copied == [] and "st/old/_done.json" in keys(inbox, "st/")
