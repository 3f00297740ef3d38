"""What a night did, typed: each batch's outcome, the queue left behind, and the summary supervisors read."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from digitize.inbox import BatchState, Readiness
from digitize.storage import Store, printable_key
from pipeline.errors import DigitizeError

# The last night's report, beside the audit log in the archive, for `digitize status`; each run overwrites it.
LAST_NIGHT = "audit/last-night.json"
# Each batch run's result, by its Prefect flow run id, for the night that dispatched it: the run
# may have worked on another machine. Read by key only, so the folder's size costs no night anything.
BATCH_RUNS = "audit/batch-runs/"
SCHEMA = "digitize.night/1"


class BatchOutcome(StrEnum):
    DONE = "done"  # archived, flagged or quarantined, and marked done
    REJECTED = "rejected"  # batch.json unusable: quarantined whole, marked done
    HELD = "held"  # a live run elsewhere holds its claim
    DONE_ELSEWHERE = "done elsewhere"  # another run finished it first
    FAILED = "failed"  # failed after its retries; stays undone for the next run


class NightOutcome(StrEnum):
    """The night's final state, as the dashboard names it."""

    COMPLETED = "Completed"
    NEEDS_ATTENTION = "Needs attention"
    NOTHING_TO_DO = "Nothing to do"
    FAILED = "Failed"


class DossierRow(BaseModel):
    """One dossier of a batch, as its table on the dashboard shows it."""

    model_config = ConfigDict(frozen=True)
    dossier: str
    pages: int
    flags: list[str]
    where: str  # "archive: <key>", "review: <key>", or where the same pages were archived before
    mean_ocr_confidence: float | None = None


class BatchResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    batch: str
    station: str
    outcome: BatchOutcome
    dossiers: list[DossierRow] = []
    pages: int = 0
    flags: dict[str, int] = {}
    rejected: list[str] = []  # "<input>: <reason>", each quarantined under rejected/
    already_archived: list[str] = []
    seconds: float = 0.0
    detail: str = ""  # who holds it, or why it failed
    lease_left_s: float | None = None  # HELD: until the holder's lease runs out, unless renewed
    exit_code: int | None = None  # FAILED: the failure's exit code
    run: str = ""  # the batch's own flow run on the dashboard, when it had one

    @classmethod
    def failed(cls, batch: str, station: str, why: BaseException | str, *, run: str = "") -> BatchResult:
        """A batch that failed: the exception's message and exit code, or a reason given as text."""
        exit_code = why.exit_code if isinstance(why, DigitizeError) else DigitizeError.exit_code
        detail = why if isinstance(why, str) else str(why) or type(why).__name__
        return cls(batch=batch, station=station, outcome=BatchOutcome.FAILED, detail=detail, exit_code=exit_code, run=run)


class QueuedBatch(BaseModel):
    """A batch left in the inbox after the night, or seen by `digitize status`."""

    model_config = ConfigDict(frozen=True)
    station: str
    batch: str
    state: str
    age_s: float
    detail: str = ""


class ReviewQueue(BaseModel):
    """What waits for a person: flagged dossiers to handle and quarantined inputs."""

    model_config = ConfigDict(frozen=True)
    open: int = 0
    oldest_open_s: float | None = None
    quarantined: int = 0
    oldest_quarantined_s: float | None = None
    unavailable: str = ""  # why the review store could not be listed


class StationRow(BaseModel):
    model_config = ConfigDict(frozen=True)
    station: str
    batches: int
    pages: int
    dossiers: int
    flagged: dict[str, int]
    rejected: int
    seconds: float


class NightReport(BaseModel):
    model_config = ConfigDict(frozen=True)
    schema_: str = Field(SCHEMA, alias="schema")
    run: str
    started: datetime
    seconds: float
    batches: list[BatchResult]
    queue: list[QueuedBatch]
    review: ReviewQueue
    # Batches finished on earlier nights, moved out of the listing into the done area tonight;
    # and those that stay in the inbox, with why (absent in reports of nights before the move).
    moved_to_done: int = 0
    stays_in_inbox: dict[str, str] = {}

    @property
    def handled(self) -> list[BatchResult]:
        return [b for b in self.batches if b.outcome in (BatchOutcome.DONE, BatchOutcome.REJECTED)]

    @property
    def pages(self) -> int:
        return sum(b.pages for b in self.handled)

    @property
    def rejected_inputs(self) -> int:
        return sum(len(b.rejected) for b in self.handled)

    def attention(self) -> list[str]:
        """What a person must look at that is not an ordinary flagged dossier."""
        counts: Counter = Counter()
        counts["rejected inputs"] = self.rejected_inputs
        counts["batches rejected"] = sum(b.outcome == BatchOutcome.REJECTED for b in self.batches)
        counts["batches held by other runs"] = sum(b.outcome == BatchOutcome.HELD for b in self.batches)
        for queued in self.queue:
            if queued.state in (Readiness.INCOMPLETE, Readiness.REFUSED):
                counts[f"batches {queued.state}"] += 1
        return [f"{what}: {n}" for what, n in counts.items() if n]

    @property
    def outcome(self) -> NightOutcome:
        if any(b.outcome == BatchOutcome.FAILED for b in self.batches):
            return NightOutcome.FAILED
        if self.attention():
            return NightOutcome.NEEDS_ATTENTION
        if not self.handled:
            return NightOutcome.NOTHING_TO_DO
        return NightOutcome.COMPLETED

    def message(self) -> str:
        """One line for the run's state message: the counts behind the outcome."""
        failed = [b for b in self.batches if b.outcome == BatchOutcome.FAILED]
        parts = [f"{len(self.handled)} batches, {self.pages} pages, {sum(len(b.dossiers) for b in self.handled)} dossiers"]
        if failed:
            parts.append(f"{len(failed)} batches failed: " + "; ".join(f"{b.batch}: {b.detail}" for b in failed))
        parts += self.attention()
        if not self.handled and not failed:
            waiting = sum(q.state == Readiness.WAITING for q in self.queue)
            parts = [f"nothing to do: no batch was ready ({waiting} still arriving)"]
        return "; ".join(parts)

    def stations(self) -> list[StationRow]:
        rows = []
        for station in sorted({b.station for b in self.handled}):
            mine = [b for b in self.handled if b.station == station]
            flagged: Counter = Counter()
            for batch in mine:
                flagged.update(batch.flags)
            rows.append(StationRow(
                station=station, batches=len(mine), pages=sum(b.pages for b in mine),
                dossiers=sum(len(b.dossiers) for b in mine), flagged=dict(sorted(flagged.items())),
                rejected=sum(len(b.rejected) for b in mine), seconds=round(sum(b.seconds for b in mine), 1),
            ))  # fmt: skip
        return rows

    def markdown(self, run_url: Callable[[str], str] = lambda run: "") -> str:
        """The nightly summary artifact; `run_url` gives a batch run's page on the dashboard."""
        hours = max(self.seconds, 1e-9) / 3600
        lines = [
            f"# Tonight's digitization: {self.outcome}", "",
            f"{self.message()}", "",
            f"- started {self.started:%Y-%m-%d %H:%M:%S} UTC, took **{duration(self.seconds)}**",
            f"- batches processed: **{len(self.handled)}**, pages: **{self.pages}**, pages per hour: **{self.pages / hours:.0f}**",
            f"- dossiers: **{sum(len(b.dossiers) for b in self.handled)}**, "
            f"rejected inputs: **{self.rejected_inputs}**, failed batches: **{sum(b.outcome == BatchOutcome.FAILED for b in self.batches)}**",
        ]  # fmt: skip
        lines += ["", "## Per station", "", "| station | batches | pages | dossiers | flagged | rejected | seconds |", "|---|---|---|---|---|---|---|"]
        lines += [
            f"| {r.station} | {r.batches} | {r.pages} | {r.dossiers} | "
            f"{', '.join(f'{k} {v}' for k, v in r.flagged.items()) or '-'} | {r.rejected} | {r.seconds:.0f} |"
            for r in self.stations()
        ] or ["| - | 0 | 0 | 0 | - | 0 | 0 |"]  # fmt: skip
        lines.append(f"- finished batches of earlier nights moved to the done area: **{self.moved_to_done}**")
        lines += [f"- finished, but left in the inbox: {printable_key(batch)} ({why})" for batch, why in self.stays_in_inbox.items()]
        lines += ["", "## Left in the inbox", "", "| station | batch | state | age | why |", "|---|---|---|---|---|"]
        lines += [
            f"| {q.station} | {q.batch} | {q.state} | {duration(q.age_s)} | {q.detail} |" for q in self.queue
        ] or ["| - | - | - | - | nothing waiting |"]  # fmt: skip
        review = self.review
        lines += ["", "## Waiting for a person", ""]
        if review.unavailable:
            lines.append(f"- the review area could not be listed: {review.unavailable}")
        else:
            lines += [
                f"- dossiers to review: **{review.open}**" + (f", oldest {duration(review.oldest_open_s)}" if review.oldest_open_s is not None else ""),
                f"- quarantined inputs: **{review.quarantined}**" + (f", oldest {duration(review.oldest_quarantined_s)}" if review.oldest_quarantined_s is not None else ""),
            ]  # fmt: skip
        runs = [b for b in self.batches if b.run]
        if runs:
            lines += ["", "## Batch runs (filter the dashboard's runs by tag station:<id> or batch:<station>/<batch>)", ""]
            lines += ["| batch | station | outcome | flow run |", "|---|---|---|---|"]
            lines += [f"| {b.batch} | {b.station} | {b.outcome} | {f'[{b.run}]({url})' if (url := run_url(b.run)) else b.run} |" for b in runs]
        failed = [b for b in self.batches if b.outcome in (BatchOutcome.FAILED, BatchOutcome.HELD)]
        if failed:
            lines += ["", "## Not finished tonight", "", "| batch | state | why |", "|---|---|---|"]
            lines += [f"| {b.batch} | {b.outcome} | {b.detail} |" for b in failed]
        rejected = [f"{b.batch}{reason}" for b in self.handled for reason in b.rejected]
        if rejected:
            lines += ["", "## Rejected inputs (quarantined under rejected/ in the review area)", ""] + [f"- {r}" for r in rejected]
        already = [f"{b.batch}{line}" for b in self.handled for line in b.already_archived]
        if already:
            lines += ["", "## Already archived (not archived again)", ""] + [f"- {a}" for a in already]
        return "\n".join(lines) + "\n"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 86400} days"


def queue_left(states: list[BatchState], now: datetime, lease_s: float) -> list[QueuedBatch]:
    """Every batch not done, with its state and age; a ready batch with a live claim is `claimed`."""
    queued = []
    for state in states:
        if state.state == Readiness.DONE:
            continue
        if state.takeable and state.live_claims(now, lease_s):
            shown = "claimed"
        elif state.state == Readiness.INVALID:
            shown = "ready"  # the next run takes it up, to quarantine it with its reason
        else:
            shown = str(state.state)
        age = (now - state.since).total_seconds() if state.since else 0.0
        queued.append(QueuedBatch(station=state.station, batch=printable_key(state.prefix), state=shown, age_s=round(age, 1), detail=state.detail))
    return queued


def save_last_night(archive: Store, report: NightReport) -> None:
    archive.put_bytes(LAST_NIGHT, report.model_dump_json(by_alias=True, indent=2).encode())


def load_last_night(archive: Store) -> NightReport | None:
    if not archive.exists(LAST_NIGHT):
        return None
    return NightReport.model_validate_json(archive.read_bytes(LAST_NIGHT))


def save_batch_result(archive: Store, run: str, result: BatchResult) -> None:
    archive.put_bytes(f"{BATCH_RUNS}{run}.json", result.model_dump_json(indent=2).encode())


def load_batch_result(archive: Store, run: str) -> BatchResult | None:
    """What batch run `run` reported, or None when it ended before it could say (killed, or S3 down)."""
    key = f"{BATCH_RUNS}{run}.json"
    if not archive.exists(key):
        return None
    return BatchResult.model_validate_json(archive.read_bytes(key))


def table_rows(result: BatchResult) -> list[dict]:
    """A batch's dossiers as the rows of its dashboard table."""
    return [
        {
            "dossier": row.dossier, "pages": row.pages, "flags": ", ".join(row.flags) or "none",
            "OCR confidence": row.mean_ocr_confidence, "where": row.where,
        }
        for row in result.dossiers
    ]  # fmt: skip


def review_queue(review: Store, now: datetime) -> ReviewQueue:
    """Open review items and quarantined inputs, with the oldest of each, from one listing."""
    from digitize.review import ARCHIVED, REJECTED, REVIEW_ITEM, waits_for_a_person

    try:
        objects = review.list()
    except DigitizeError as exc:
        return ReviewQueue(unavailable=str(exc))
    keys = {o.key for o in objects}
    items = [o for o in objects if o.key.endswith("/" + REVIEW_ITEM) and o.key[: -len(REVIEW_ITEM)] + ARCHIVED not in keys]
    quarantined = [
        o for o in objects if o.key.startswith(REJECTED) and o.key.endswith(".reason.json") and waits_for_a_person(o.key, keys)
    ]  # fmt: skip

    def oldest(found: list) -> float | None:
        return round((now - min(o.modified for o in found)).total_seconds(), 1) if found else None

    return ReviewQueue(open=len(items), oldest_open_s=oldest(items), quarantined=len(quarantined), oldest_quarantined_s=oldest(quarantined))
