"""The night's batches as flow runs of their own: on the work pool's workers when the batch
deployment is registered and a worker of its pool is online (production), in the night's own
process otherwise (`digitize run` with Prefect's temporary server). Both run the same
`process-batch` flow."""

# No `from __future__ import annotations`: see flows/batch.py.
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from prefect import allow_failure, get_run_logger, tags, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun, StateType, WorkPoolStatus
from prefect.exceptions import ObjectNotFound
from prefect.futures import PrefectFuture, as_completed
from prefect.settings import get_current_settings
from prefect.states import Crashed, Scheduled, State

from digitize.config import AppSettings, ServiceSettings
from digitize.inbox import DONE_MARKER, BatchState, ClaimLife, claim_life
from digitize.night import BatchOutcome, BatchResult, load_batch_result
from digitize.storage import Store, open_store
from flows.batch import process_batch_run
from pipeline.errors import DigitizeError

# How often the night looks at its batch runs on the pool, and at most how often at the claim
# of each one in flight (an S3 listing each).
POLL_S = 2.0
CLAIM_CHECK_S = 10.0
# A batch whose run crashed (its worker killed, its machine gone) is run again, up to this many runs a night.
RUNS_PER_NIGHT = 3
# Idempotency keys tried for one batch before the night gives up on it: each failed, crashed or
# finished run of the same batch.json (earlier nights included) moves the key on by one.
MAX_ATTEMPT_KEYS = 1000


def batch_tags(state: BatchState) -> list[str]:
    """How a supervisor finds a batch's runs on the dashboard: by station, and by batch."""
    return [f"station:{state.station}", f"batch:{state.prefix.rstrip('/')}"]


def run_url(run: str) -> str:
    """The batch run's page on the dashboard, or "" when Prefect does not know its UI's address."""
    ui = get_current_settings().ui_url
    return f"{ui.rstrip('/')}/runs/flow-run/{run}" if ui and run else ""


def run_batches(
    states: list[BatchState], settings: AppSettings, jobs: int, night: str, config: list[str] | None,
) -> Iterator[BatchResult]:
    """Each batch as a `process-batch` flow run; each result as its run ends.

    A batch that shares a scan with an earlier one tonight starts once that one has ended: the
    first archives the scan, and the second then finds it archived."""
    deployment = _batch_deployment(settings.service.batch_deployment)
    logger = get_run_logger()
    if deployment is None:
        logger.info("%d batches run in this process (no deployment %s with a worker online)", len(states), settings.service.batch_deployment)
        yield from _run_here(states, settings, jobs, night)
    else:
        logger.info("%d batches go to the work pool, as runs of %s", len(states), settings.service.batch_deployment)
        yield from _run_on_pool(deployment, states, settings, night, config)


def _batch_deployment(name: str) -> uuid.UUID | None:
    """The batch deployment's id when its runs would be taken: it is registered and a worker of its
    pool is online. Otherwise the batches run here, rather than wait all night for a worker."""
    if not name:
        return None
    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(name)
        except ObjectNotFound:
            return None
        pool = client.read_work_pool(deployment.work_pool_name) if deployment.work_pool_name else None
    if pool is None or pool.status != WorkPoolStatus.READY:
        get_run_logger().warning("no worker of work pool %s is online", deployment.work_pool_name)
        return None
    return deployment.id


def _earlier(states: list[BatchState]) -> dict[str, set[str]]:
    """For each batch, the earlier batches tonight with a scan of the same content."""
    first_with: dict[str, str] = {}
    earlier: dict[str, set[str]] = {}
    for state in states:
        checksums = {f.sha256 for f in state.manifest.files} if state.manifest else set()
        earlier[state.prefix] = {first_with[c] for c in checksums if c in first_with}
        for checksum in checksums:
            first_with.setdefault(checksum, state.prefix)
    return earlier


def _result_of(archive: Store, state: BatchState, run: str, final: State) -> BatchResult | None:
    """What the batch run reported in the archive, or from its state when it ended before it
    could save that; None while the archive cannot be read (ask again)."""
    try:
        found = load_batch_result(archive, run)
    except DigitizeError as exc:
        get_run_logger().warning("batch %s: result of run %s not read yet: %s", state.prefix, run, exc)
        return None
    if found is not None:
        return found
    if final.is_completed():
        outcome = next((o for o in BatchOutcome if str(o).capitalize() == final.name), BatchOutcome.DONE)
        detail = "its run ended before it could save its result (the archive was unreachable): see the run's table"
        return BatchResult(batch=state.prefix, station=state.station, outcome=outcome, detail=detail, run=run)
    return BatchResult.failed(state.prefix, state.station, final.message or f"its run ended {final.name}", run=run)


@task(task_run_name="batch {prefix}", cache_policy=NO_CACHE)
def _batch_here(prefix: str, state: BatchState, settings: AppSettings, jobs: int, night: str) -> BatchResult:
    with tags(*batch_tags(state)):
        final = process_batch_run(prefix, state.station, night=night, jobs=jobs, settings=settings, return_state=True)
    data = final.result(raise_on_failure=False) if final.is_completed() or final.is_failed() else None
    if isinstance(data, BatchResult):  # in this process, the run's own result: no need to read it back
        return data
    run = str(final.state_details.flow_run_id or "")
    archive = open_store(settings.service.archive, os.environ)
    return _result_of(archive, state, run, final) or BatchResult.failed(prefix, state.station, f"its run ended {final.name}", run=run)


def _run_here(states: list[BatchState], settings: AppSettings, jobs: int, night: str) -> Iterator[BatchResult]:
    futures: dict[str, PrefectFuture] = {}
    earlier = _earlier(states)
    for state in states:
        after = [allow_failure(futures[p]) for p in earlier[state.prefix]]
        futures[state.prefix] = _batch_here.submit(state.prefix, state, settings, jobs, night, wait_for=after)
    by_future = {f: p for p, f in futures.items()}
    for future in as_completed(list(by_future)):
        try:
            yield future.result()
        except Exception as exc:  # the night goes on, and its summary says which batch failed and why
            state = next(s for s in states if s.prefix == by_future[future])
            yield BatchResult.failed(state.prefix, state.station, exc)


@dataclass
class _Dispatched:
    """A batch's current run on the pool."""

    state: BatchState
    run: FlowRun
    attempt: int  # the idempotency key's attempt number
    runs: int  # runs of this batch tonight
    holds_nothing_since: float | None = None
    claim_checked: float = 0.0  # when its claim was last looked at


def _run_on_pool(deployment: uuid.UUID, states: list[BatchState], settings: AppSettings, night: str, config: list[str] | None) -> Iterator[BatchResult]:
    logger = get_run_logger()
    inbox, archive = (open_store(url, os.environ) for url in (settings.service.inbox, settings.service.archive))
    earlier = _earlier(states)
    waiting = list(states)
    active: dict[str, _Dispatched] = {}
    ended: set[str] = set()
    give_up_at = time.monotonic() + settings.service.held_wait_max_s
    with get_client(sync_client=True) as client:

        def dispatch(state: BatchState, attempt: int = 1, runs: int = 1) -> _Dispatched:
            """A flow run for the batch; its key is the batch's prefix, its batch.json's checksum and
            an attempt number, so two nights dispatching one batch at once share one run."""
            parameters = {"prefix": state.prefix, "station": state.station, "night": night, "config": config}
            for number in range(attempt, attempt + MAX_ATTEMPT_KEYS):
                run = client.create_flow_run_from_deployment(
                    deployment, parameters=parameters, tags=batch_tags(state), state=Scheduled(),
                    idempotency_key=f"{state.prefix}{state.manifest_sha256}#{number}",
                )  # fmt: skip
                if not run.state or not run.state.is_final():
                    logger.info("batch %s: flow run %s (%s)", state.prefix, run.name, run.id)
                    return _Dispatched(state, run, number, runs)
            raise DigitizeError(f"batch {state.prefix}: {MAX_ATTEMPT_KEYS} runs already ended for this batch.json")

        while waiting or active:
            for state in [s for s in waiting if earlier[s.prefix] <= ended]:
                waiting.remove(state)
                active[state.prefix] = dispatch(state)
            time.sleep(POLL_S)
            # One request for every run in flight, however many batches the night has.
            ids = [c.run.id for c in active.values()]
            now_runs = {} if not ids else {r.id: r for r in client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=len(ids))}
            for prefix, current in list(active.items()):
                run = current.run = now_runs.get(current.run.id, current.run)
                crashed = run.state.type == StateType.CRASHED if run.state else False
                if not crashed and run.state and not run.state.is_final():
                    why = _abandoned(current, run, inbox, settings.service)
                    if why is None:
                        continue
                    logger.warning("batch %s: flow run %s %s; marked Crashed", prefix, run.name, why)
                    client.set_flow_run_state(run.id, Crashed(message=f"its worker stopped: {why}"), force=True)
                    run = client.read_flow_run(run.id)
                    crashed = True
                if crashed and current.runs < RUNS_PER_NIGHT:
                    logger.warning("batch %s: run %s crashed; dispatched again", prefix, run.name)
                    active[prefix] = dispatch(current.state, current.attempt + 1, current.runs + 1)
                    continue
                result = _result_of(archive, current.state, str(run.id), run.state)
                if result is None:
                    continue
                del active[prefix]
                ended.add(prefix)
                yield result
            if time.monotonic() > give_up_at:
                break
    for prefix, current in active.items():  # still running when the night stops waiting: named, not lost
        detail = f"still {current.run.state_name} as flow run {current.run.name} after service.held_wait_max_s"
        yield BatchResult(batch=prefix, station=current.state.station, outcome=BatchOutcome.HELD, detail=detail, run=str(current.run.id))
    for state in waiting:
        yield BatchResult(batch=state.prefix, station=state.station, outcome=BatchOutcome.HELD, detail="waits for a batch with the same scan")


def _abandoned(current: _Dispatched, run: FlowRun, inbox: Store, service: ServiceSettings) -> str | None:
    """Why a run that Prefect still shows as pending or running has no one behind it, or None.

    Its claim in the inbox is the evidence (see claim_life): dead, or none for
    `service.batch_start_grace_s` while the run was taken up (it died before claiming).
    Scheduled runs wait for a worker."""
    if run.state.type not in (StateType.PENDING, StateType.RUNNING):
        current.holds_nothing_since = None
        return None
    now = time.monotonic()
    if now - current.claim_checked < CLAIM_CHECK_S:
        return None
    current.claim_checked = now
    prefix = current.state.prefix
    try:
        life = claim_life(inbox, prefix, service.claim_lease_s, run=str(run.id))
        if life == ClaimLife.DEAD and not inbox.exists(prefix + DONE_MARKER):
            return "died holding its batch (its claim's process is gone or its lease ran out)"
    except DigitizeError:  # S3 unreachable: nothing can be judged now
        return None
    if life != ClaimLife.NONE:
        current.holds_nothing_since = None
        return None
    current.holds_nothing_since = current.holds_nothing_since or now
    if now - current.holds_nothing_since > service.batch_start_grace_s:
        return f"held no claim on its batch for {service.batch_start_grace_s:.0f} s (service.batch_start_grace_s)"
    return None
