"""`digitize status`: every pending batch with its state and age, recent nights' finished batches, what waits for a person, and the last night."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date, datetime, timedelta, timezone

from pydantic import BaseModel

from digitize.done_area import finished_batches
from digitize.inbox import DONE_MARKER, Readiness, scan_inbox
from digitize.night import QueuedBatch, load_last_night, queue_left, review_queue
from digitize.storage import open_store, printable_key
from digitize.config import AppSettings


# Finished batches shown without --all: those of the last week's nights.
RECENT_DAYS = 7


class ReviewCount(BaseModel):
    open: int
    oldest_s: float | None = None


class QuarantineCount(BaseModel):
    files: int
    oldest_s: float | None = None


class LastNight(BaseModel):
    run: str
    outcome: str
    message: str
    started: datetime
    seconds: float
    pages: int


class ServiceStatus(BaseModel):
    batches: list[QueuedBatch]
    review: ReviewCount
    quarantine: QuarantineCount
    last_night: LastNight | None


def service_status(settings: AppSettings, env: Mapping[str, str], *, everything: bool = False) -> ServiceStatus:
    """Pending batches and those finished in the last RECENT_DAYS days (`everything`: all ever finished)."""
    inbox, archive, review = (open_store(url, env) for url in (settings.service.inbox, settings.service.archive, settings.service.review))
    now = datetime.now(timezone.utc)
    states = scan_inbox(inbox, incomplete_after=timedelta(hours=settings.service.incomplete_after_h), now=now)
    pending = {q.batch: q for q in queue_left(states, now, settings.service.claim_lease_s)}
    batches = []
    for state in states:
        shown = printable_key(state.prefix)
        if state.state != Readiness.DONE:
            batches.append(pending[shown])
            continue
        marker = json.loads(inbox.read_bytes(state.prefix + DONE_MARKER))
        rejected = marker.get("status") == "rejected"
        detail = marker["rejected"][0]["reason"] if rejected and marker.get("rejected") else f"finished {marker.get('finished', '?')}"
        age = (now - state.since).total_seconds() if state.since else 0.0
        batches.append(QueuedBatch(station=state.station, batch=shown, state="rejected" if rejected else "done", age_s=round(age, 1), detail=detail))
    since: date | None = None if everything else (now - timedelta(days=RECENT_DAYS)).date()
    for finished in finished_batches(inbox, since=since):
        age = (now - datetime.fromisoformat(finished.finished)).total_seconds() if finished.finished != "?" else 0.0
        batches.append(QueuedBatch(
            station=finished.prefix.split("/", 1)[0], batch=printable_key(finished.prefix), state=finished.status,
            age_s=round(age, 1), detail=f"{finished.detail}; in {printable_key(finished.key)}",
        ))  # fmt: skip
    queue = review_queue(review, now)
    last = load_last_night(archive)
    last_night = None
    if last is not None:
        last_night = LastNight(
            run=last.run, outcome=str(last.outcome), message=last.message(), started=last.started,
            seconds=last.seconds, pages=last.pages,
        )  # fmt: skip
    return ServiceStatus(
        batches=batches, review=ReviewCount(open=queue.open, oldest_s=queue.oldest_open_s),
        quarantine=QuarantineCount(files=queue.quarantined, oldest_s=queue.oldest_quarantined_s), last_night=last_night,
    )  # fmt: skip
