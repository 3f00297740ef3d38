"""History: what an empty night costs in an inbox that holds 30,000 finished batches, against an empty inbox.

Usage: bench_history.py [--batches 30000] [--days 365] [--stations 20] [--store s3|folder|both]
                        [--old-layout 3000] [--repeats 21] [--first-sweep] [--review-items 3000]

The inbox is a real `weed mini` S3 server on loopback (tests/s3server.py), or a folder. The
history is written straight into it, in parallel, as the product leaves finished batches:
`_done/<yyyy>/<mm>/<dd>/<station>/<batch>/` with batch.json, its scan (kept: retention 0 is the
default) and _done.json, spread over `--days` days. An empty night is the inbox work of
flows/nightly.py's night with nothing pending: the listing, retention in place, moving finished
batches, the done area's retention sweep, the queue listing for the summary, the review queue
and the last night's report. It is timed `--repeats` times (median), in turns with the same
night on an empty inbox of the same server, with retention 0 and with retention 30 days
(`--first-sweep` also times retention's first sweep, which looks at every day once). `--old-layout N`
also leaves N finished batches where they were before this change (in their station's folder),
times the listing as every night paid it then, and times the one-time move of them into the
done area. `--review-items N` fills the review area with N items people already archived
(about a tenth of the dossiers, as the product leaves them) beside 20 open ones, and times what
the review station and the night read there: the queue, opening an item, the night's counts,
against a review area holding only the open items. It prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from digitize.done_area import move_finished, sweep_done_area  # noqa: E402
from digitize.inbox import BATCH_MANIFEST, DONE_AREA, DONE_MARKER, apply_retention, scan_inbox  # noqa: E402
from digitize.night import load_last_night, queue_left, review_queue  # noqa: E402
from digitize.review import ACTIONS, ARCHIVED, REVIEW_ITEM, item_at, list_items  # noqa: E402
from digitize.storage import Store, open_store  # noqa: E402
from tests.s3server import WeedMini  # noqa: E402

LATE = timedelta(hours=12)
LEASE_S = 300.0
SCAN = b"II*\x00" + bytes(2044)  # the kept original; its size does not change what a listing costs


def batch_objects(n: int, *, days: int, stations: int, now: datetime, in_place: bool) -> list[tuple[str, bytes]]:
    """One finished batch's objects, as batchjob.run_claimed_batch and the move leave them."""
    finished = now - timedelta(days=1 + n % days, minutes=n % 600)
    station = f"station-{n % stations:02d}"
    prefix = f"{station}/scans-{n:06d}-{n * 2654435761 % 16**12:012x}/"
    key = prefix if in_place else f"{DONE_AREA}{finished:%Y/%m/%d}/{prefix}"
    manifest = {
        "schema": "digitize.batch/1", "station": station, "operator": "bench", "scanned_at": finished.isoformat(),
        "files": [{"name": "scan-001.tif", "sha256": "0" * 64, "bytes": len(SCAN), "pages": 12}], "dossiers": [],
    }  # fmt: skip
    marker = {
        "batch": prefix, "station": station, "status": "done", "finished": finished.isoformat(),
        "objects": [{"store": "archive", "key": f"{finished:%Y/%m}/000.00.21.H40-{n:06d}.pdf", "input": "scan-001.tif"}],
        "rejected": [], "already_archived": [],
    }  # fmt: skip
    return [(key + "scan-001.tif", SCAN), (key + BATCH_MANIFEST, json.dumps(manifest).encode()), (key + DONE_MARKER, json.dumps(marker).encode())]


def review_objects(n: int, *, stations: int, archived: bool) -> list[tuple[str, bytes]]:
    """One review item as batchjob leaves it, and, when `archived`, as approving it leaves it."""
    station = f"station-{n % stations:02d}"
    batch = f"{station}/scans-{n:06d}-{n * 2654435761 % 16**12:012x}/"
    name = f"000.00.21.H40-{n:06d}"
    prefix = f"{batch}{name}/"
    item = {"name": name, "code": name, "batch": batch, "archive_folder": f"2026/11/{station}/"}
    reasons = {"flags": {"technical_drawing": [{"page": 1, "line_density": 0.2}]}, "thumbnails": {"0": "page-0.png"}}
    objects = [
        (prefix + "page-0.png", SCAN), (prefix + f"{name}.pdf", SCAN), (prefix + f"{name}.txt", b"text"),
        (prefix + "reasons.json", json.dumps(reasons).encode()), (prefix + f"{name}.json", b"{}"),
        (prefix + REVIEW_ITEM, json.dumps(item).encode()),
    ]  # fmt: skip
    if archived:
        decision = json.dumps({"action": "approve", "by": "bench", "at": "2026-11-01T00:00:00+00:00"}).encode()
        objects += [(f"{prefix}{ACTIONS}20261101T000000000000-approve.json", decision), (prefix + ARCHIVED, decision)]
    return objects


def fill(store: Store, count: int, objects: Callable[[int], list[tuple[str, bytes]]], *, start: int = 0, threads: int = 32) -> float:
    """Write objects(n) for n in start..start+count, in parallel; the seconds it took."""
    began = time.monotonic()

    def put(n: int) -> None:
        for key, data in objects(n):
            store.put_bytes(key, data)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, range(start, start + count)))
    return time.monotonic() - began


def empty_night(inbox: Store, archive: Store, review: Store, retention_days: float) -> None:
    """The inbox work of flows.nightly._night when nothing is pending."""
    states = scan_inbox(inbox, incomplete_after=LATE)
    apply_retention(inbox, states, retention_days)
    move_finished(inbox, states)
    sweep_done_area(inbox, retention_days)
    now = datetime.now(timezone.utc)
    queue_left(scan_inbox(inbox, incomplete_after=LATE), now, LEASE_S)
    review_queue(review, now)
    load_last_night(archive)


def interleaved(repeats: int, actions: dict[str, object]) -> dict[str, float]:
    """Median seconds of each action, timed in turns so that the machine's load falls on all alike."""
    times: dict[str, list[float]] = {name: [] for name in actions}
    for action in actions.values():
        action()  # warm: connections, buckets, the first cursor
    for _ in range(repeats):
        for name, action in actions.items():
            began = time.perf_counter()
            action()
            times[name].append(time.perf_counter() - began)
    return {name: statistics.median(found) for name, found in times.items()}


def measure(name: str, open_location, args) -> None:
    """`open_location(name)` opens a store: "inbox-empty" and "inbox" share one server, archive and review."""
    empty, inbox, archive, review = (open_location(n) for n in ("inbox-empty", "inbox", "archive", "review"))
    print(f"\n== {name} ==")
    now = datetime.now(timezone.utc)

    def finished(in_place: bool) -> Callable[[int], list[tuple[str, bytes]]]:
        return lambda n: batch_objects(n, days=args.days, stations=args.stations, now=now, in_place=in_place)

    took = fill(inbox, args.batches, finished(in_place=False))
    print(f"filled {args.batches} finished batches ({3 * args.batches} objects) into {DONE_AREA} in {took:.0f} s")
    if args.first_sweep:
        began = time.monotonic()
        sweep_done_area(inbox, 30)
        print(f"first retention sweep over {args.days} days of history (once, when retention is turned on): {time.monotonic() - began:.1f} s")
    for retention in (0, 30):
        nights = interleaved(args.repeats, {
            "empty": lambda: empty_night(empty, archive, review, retention),
            "history": lambda: empty_night(inbox, archive, review, retention),
        })  # fmt: skip
        print(
            f"empty night, retention {retention:2d} days: {nights['empty'] * 1000:6.1f} ms with an empty inbox, "
            f"{nights['history'] * 1000:6.1f} ms with {args.batches} finished batches: {nights['history'] / nights['empty']:.2f}x"
        )  # fmt: skip
    if args.old_layout:
        old = open_location("inbox-old")
        fill(old, args.old_layout, finished(in_place=True))
        listing = interleaved(args.repeats, {"old": lambda: scan_inbox(old, incomplete_after=LATE)})["old"]
        per_batch = listing / args.old_layout
        print(
            f"before this change ({args.old_layout} finished batches left in their station folders): listing {listing:.2f} s, "
            f"{per_batch * 1000:.2f} ms a batch: {per_batch * args.batches:.0f} s for {args.batches}, listed twice a night"
        )  # fmt: skip
        states = scan_inbox(old, incomplete_after=LATE)
        began = time.monotonic()
        move_finished(old, states)
        moved = time.monotonic() - began
        print(f"the one night that moves those {args.old_layout} into {DONE_AREA}: {moved:.1f} s ({moved / args.old_layout * 1000:.0f} ms a batch)")
        after = interleaved(args.repeats, {"empty": lambda: empty_night(empty, archive, review, 0), "after": lambda: empty_night(old, archive, review, 0)})
        print(f"the nights after: {after['after'] * 1000:.1f} ms, {after['after'] / after['empty']:.2f}x the empty inbox")
    if args.review_items:
        measure_review(open_location, args)


OPEN_ITEMS = 20


def measure_review(open_location, args) -> None:
    """The review area's cost with `--review-items` archived items of history, against none."""
    fresh, full = open_location("review-empty"), open_location("review-history")
    def items(archived: bool) -> Callable[[int], list[tuple[str, bytes]]]:
        return lambda n: review_objects(n, stations=args.stations, archived=archived)

    for store in (fresh, full):
        fill(store, OPEN_ITEMS, items(archived=False))
    took = fill(full, args.review_items, items(archived=True), start=OPEN_ITEMS)
    print(f"filled {args.review_items} archived review items ({8 * args.review_items} objects) beside {OPEN_ITEMS} open ones in {took:.0f} s")
    one = list_items(fresh)[0].prefix
    reads = {}
    for label, store in (("empty", fresh), ("history", full)):
        reads[label] = downloads(store, lambda store=store: (list_items(store), item_at(store, one)))
    tasks = {
        "the queue (list_items)": lambda store: list_items(store),
        "opening an item (item_at)": lambda store: item_at(store, one),
        "the night's counts (review_queue)": lambda store: review_queue(store, datetime.now(timezone.utc)),
    }
    for task, action in tasks.items():
        took = interleaved(args.repeats, {"empty": lambda: action(fresh), "history": lambda: action(full)})
        print(
            f"{task:36s} {took['empty'] * 1000:7.1f} ms with {OPEN_ITEMS} open items only, "
            f"{took['history'] * 1000:7.1f} ms beside {args.review_items} archived: {took['history'] / took['empty']:.2f}x"
        )  # fmt: skip
    print(f"downloads for the queue and one item: {reads['empty']} with no history, {reads['history']} with it")


def downloads(store: Store, action) -> int:
    """How many objects `action` reads from `store`."""
    count = 0
    read = store.read_bytes

    def counted(key: str) -> bytes:
        nonlocal count
        count += 1
        return read(key)

    store.read_bytes = counted
    try:
        action()
    finally:
        del store.read_bytes
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=30_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--stations", type=int, default=20)
    parser.add_argument("--store", choices=("s3", "folder", "both"), default="both")
    parser.add_argument("--old-layout", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--first-sweep", action="store_true", help="also time retention's first sweep over the whole history")
    parser.add_argument("--review-items", type=int, default=3000, help="archived items in the review area (0: skip)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp:
        if args.store in ("s3", "both"):
            server = WeedMini(Path(tmp) / "weed")
            server.start()
            try:
                measure("S3 (weed mini)", lambda name: open_store(f"s3://{name}", server.env), args)
            finally:
                server.stop()
        if args.store in ("folder", "both"):
            measure("folder store", lambda name: open_store(str(Path(tmp) / name), {}), args)


if __name__ == "__main__":
    main()
