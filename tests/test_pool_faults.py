"""The faults of test_faults.py on the production shape: prefect.yaml's deployments on a process
work pool, two workers, S3. Each batch is a flow run of its own, started by the nightly run.

A worker killed mid-batch, the night's own worker killed and an immediate rerun, S3 gone for
20 s, a full work disk and the dashboard's Retry, a read-only work folder: nothing lost,
nothing archived twice, nothing partial ever visible."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from digitize.inbox import CLAIMS
from digitize.prefect_server import local_prefect_server
from digitize.storage import open_store
from tests import make_batches
from tests.conftest import REPO
from tests.deploykit import (
    QUICK_POLLING, api_call, assert_completed, free_port, prefect_cli, runs_taken, start_flow_run, wait_for_deployment,
    wait_for_final_state, worker,
)  # fmt: skip
from tests.faultkit import (
    ArchiveReader, assert_night_archived_once, descendants, done_markers, drop_night, fault_env, inbox_files, make_read_only, records,
    three_stations_night, wait_for,
)  # fmt: skip

pytestmark = [pytest.mark.s3, pytest.mark.slow]

# A run the killed worker had taken but not yet started holds no claim: the night starts another
# after service.batch_start_grace_s (120 s by default; a loaded 2-core machine starts a run in under 15 s).
START_GRACE = {"batch_start_grace_s": "30"}

NIGHTLY = ("digitize-nightly-scheduled", "nightly")
BATCH_FLOW = "process-batch"


@pytest.fixture(scope="module")
def pool_api(tmp_path_factory) -> str:
    """A Prefect server with the `digitize` process pool and prefect.yaml's deployments, as `README` sets them up."""
    env = {**os.environ, "PREFECT_HOME": str(tmp_path_factory.mktemp("prefect")), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    with local_prefect_server(free_port(), env=env) as api:
        env["PREFECT_API_URL"] = api
        prefect_cli("work-pool", "create", "digitize", "--type", "process", env=env, cwd=REPO)
        prefect_cli("--no-prompt", "deploy", "--all", env=env, cwd=REPO)
        yield api


@pytest.fixture(scope="module")
def night(tmp_path_factory) -> list[tuple[Path, make_batches.BatchTruth]]:
    return three_stations_night(tmp_path_factory.mktemp("night"))


@contextlib.contextmanager
def two_workers(env: dict, tmp: Path) -> Iterator[list[tuple[object, Path]]]:
    """Two scanner-room workers on the pool (the machine's two), each with its log."""
    logs = [tmp / f"worker-{n}.log" for n in (1, 2)]
    with worker("digitize", env=env, cwd=tmp, log=logs[0]) as first, worker("digitize", env=env, cwd=tmp, log=logs[1]) as second:
        yield [(first, logs[0]), (second, logs[1])]


def start_night(api: str) -> str:
    """A run of the nightly deployment, as its schedule or the dashboard's Run button makes one."""
    return start_flow_run(api, wait_for_deployment(api, *NIGHTLY), parameters={})


def batch_runs(api: str, *nights: str) -> list[dict]:
    """The batch runs the given nights started, in the order they started."""
    runs = api_call(api, "/flow_runs/filter", {"flows": {"name": {"any_": [BATCH_FLOW]}}, "sort": "START_TIME_ASC", "limit": 200})
    return [r for r in runs if r["parameters"].get("night") in nights]


def kill_machine(pid: int) -> int:
    """kill -9 of a worker and all it started, as when its machine dies; how many processes died."""
    victims = descendants(pid)
    for victim in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
    return len(victims)


def running_with_claim(api: str, night: str, inbox, taken: set[str]) -> dict | None:
    """A batch run of `night` among `taken` that is running and holds its batch's claim."""
    for run in batch_runs(api, night):
        if run["id"] in taken and run["state_type"] == "RUNNING" and inbox.list(run["parameters"]["prefix"] + CLAIMS):
            return run
    return None


def runs_of(api: str, night: str, prefix: str) -> list[dict]:
    return [r for r in batch_runs(api, night) if r["parameters"]["prefix"] == prefix]


def test_a_worker_killed_mid_batch_loses_nothing_and_its_batch_runs_again(s3, pool_api, night, tmp_path):
    env = {**fault_env(s3, pool_api, tmp_path, "pool-kill", **START_GRACE), **QUICK_POLLING}
    inbox = drop_night(env, night)
    originals = inbox_files(inbox)
    reader = ArchiveReader(env)
    reader.start()
    with two_workers(env, tmp_path) as workers:
        night_run = start_night(pool_api)

        def victim():
            """A worker that is not running the night itself, in the middle of a batch."""
            for proc, log in workers:
                taken = runs_taken(log)
                if night_run not in taken and (run := running_with_claim(pool_api, night_run, inbox, taken)):
                    return proc, log, run
            return None

        found = wait_for(victim, timeout=300, every=0.2)
        assert found, "no batch run was seen running on the worker that does not run the night"
        proc, log, killed = found
        died = kill_machine(proc.pid)
        killed_at = time.monotonic()
        print(f"\nkilled {died} processes of {log.name}, in batch {killed['parameters']['prefix']}")
        final = wait_for_final_state(pool_api, night_run, timeout_s=600)
        assert_completed(pool_api, final, *(log for _, log in workers))
    print(f"the night ended {time.monotonic() - killed_at:.0f} s after the kill: {final['state']['message']}")
    seen = reader.stop()
    assert reader.looks > 0 and not seen, seen
    # The dead run is marked Crashed, saying why, and a second run of the batch did it.
    runs = runs_of(pool_api, night_run, killed["parameters"]["prefix"])
    assert [r["id"] for r in runs][0] == killed["id"], runs
    states = [(r["state_type"], r["state_name"]) for r in runs]
    assert states == [("CRASHED", "Crashed"), ("COMPLETED", "Done")], states
    assert "its worker stopped: died holding its batch" in api_call(pool_api, f"/flow_runs/{killed['id']}")["state"]["message"]
    survivor_log = next(log for p, log in workers if p is not proc)
    assert runs[1]["id"] in runs_taken(survivor_log)
    # The same batch.json, the next attempt: a night started now would join the second run, not the dead one.
    (first_key, first_attempt), (second_key, second_attempt) = (r["idempotency_key"].rsplit("#", 1) for r in runs)
    assert first_key == second_key and int(second_attempt) == int(first_attempt) + 1, runs
    assert_night_archived_once(env, inbox, night, originals)


ENDED = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def test_the_night_killed_with_its_worker_is_finished_at_once_by_a_rerun(s3, pool_api, night, tmp_path):
    """#7's immediate rerun, on the pool: with the default 300 s claim lease, the rerun takes over
    the dead worker's batches without waiting for it, and joins the live one's runs."""
    env = {**fault_env(s3, pool_api, tmp_path, "pool-rerun", **START_GRACE), **QUICK_POLLING}
    inbox = drop_night(env, night)
    originals = inbox_files(inbox)
    archive = open_store(env["DIGITIZE_SERVICE_ARCHIVE"], env)
    with two_workers(env, tmp_path) as workers:
        first = start_night(pool_api)

        def nights_worker_busy():
            """The night's worker, once each batch run it has in hand (if any) holds its batch, and
            some batch is archiving. A run it already finished is not lost with it."""
            for proc, log in workers:
                taken = runs_taken(log)
                if first in taken and records(archive):
                    mine = [r for r in batch_runs(pool_api, first) if r["id"] in taken and r["state_type"] not in ENDED]
                    if all(r["state_type"] == "RUNNING" and inbox.list(r["parameters"]["prefix"] + CLAIMS) for r in mine):
                        return proc, log, mine
            return None

        found = wait_for(nights_worker_busy, timeout=300, every=0.2)
        assert found, "the night's worker was never seen with its batches claimed"
        proc, log, lost = found
        assert len(done_markers(inbox)) < len(night), "the kill came too late to test anything"
        kill_machine(proc.pid)
        print(f"\nkilled the night's worker with {len(lost)} batch runs of its own")
        started = time.monotonic()
        second = start_night(pool_api)
        rerun = wait_for_final_state(pool_api, second, timeout_s=600)
        took = time.monotonic() - started
        assert_completed(pool_api, rerun, *(log for _, log in workers))
    print(f"rerun: {took:.0f} s, {rerun['state']['message']}")
    assert took < 240, "the rerun waited for the dead runs' leases"
    # The dead night stays as it died (nothing reports for it); the dead worker's batch runs are Crashed.
    for run in lost:
        assert api_call(pool_api, f"/flow_runs/{run['id']}")["state_type"] == "CRASHED", run
    # Every batch has a run that ended Done.
    runs = batch_runs(pool_api, first, second)
    done = [r["parameters"]["prefix"] for r in runs if r["state_name"] == "Done"]
    assert sorted(done) == sorted({r["parameters"]["prefix"] for r in runs}), [(r["name"], r["state_name"]) for r in runs]
    assert_night_archived_once(env, inbox, night, originals)


OUTAGE_S = 20


def test_s3_down_for_20_s_costs_the_batch_runs_retries_not_records(s3, pool_api, night, tmp_path):
    env = {**fault_env(s3, pool_api, tmp_path, "pool-outage"), **QUICK_POLLING}
    inbox = drop_night(env, night)
    originals = inbox_files(inbox)
    archive = open_store(env["DIGITIZE_SERVICE_ARCHIVE"], env)
    reader = ArchiveReader(env)
    reader.start()
    with two_workers(env, tmp_path) as workers:
        night_run = start_night(pool_api)
        try:
            assert wait_for(lambda: records(archive), timeout=300, every=0.05), "nothing was archived"
            s3.stop()
            time.sleep(OUTAGE_S)
        finally:
            s3.start()
        final = wait_for_final_state(pool_api, night_run, timeout_s=900)
        logs = "\n".join(log.read_text(errors="replace") for _, log in workers)
        retries = re.findall(r"Task run failed with exception: (\w+)\(.* - Retry (\d+)/(\d+)", logs)
        print(f"\nnight: {final['state_name']}: {final['state']['message']}\nretries: {retries}")
        # The outage hit batch runs at work, and their tasks retried it as an S3 failure.
        assert retries and all(kind == "StorageError" for kind, _, _ in retries), logs[-5000:]
        if final["state_type"] != "COMPLETED":
            # Retries ran out before S3 came back: the night says which batch failed; the next one completes.
            assert final["state_type"] == "FAILED" and "batches failed" in final["state"]["message"], final["state"]
            again = wait_for_final_state(pool_api, start_night(pool_api), timeout_s=600)
            assert_completed(pool_api, again, *(log for _, log in workers))
    seen = reader.stop()
    assert reader.looks > 0 and not seen, seen
    assert_night_archived_once(env, inbox, night, originals)


def test_a_full_work_disk_fails_the_batch_run_cleanly_and_the_dashboards_retry_archives_it(s3, pool_api, night, tmp_path, work_disk):
    folder, mount = work_disk
    mount("size=512k")  # smaller than the scan (~1 MB): full before the scan is down
    env = {**fault_env(s3, pool_api, tmp_path, "pool-full", work_dir=str(folder), retry_delays_s="[1, 1]"), **QUICK_POLLING}
    inbox = drop_night(env, night[:1])
    originals = inbox_files(inbox)
    archive, review = (open_store(env[f"DIGITIZE_SERVICE_{name}"], env) for name in ("ARCHIVE", "REVIEW"))
    with two_workers(env, tmp_path) as workers:
        first = wait_for_final_state(pool_api, start_night(pool_api), timeout_s=600)
        (failed,) = batch_runs(pool_api, first["id"])
        print(f"\nnight: {first['state_name']}: {first['state']['message']}\nbatch run: {failed['state_name']}: {failed['state']['message']}")
        # A clear failure after a bounded number of retries: the folder and the reason, on the
        # batch's own run and in the night's state.
        assert first["state_type"] == "FAILED", first["state"]
        assert failed["state_type"] == "FAILED" and str(folder) in failed["state"]["message"], failed["state"]
        assert "No space left on device" in failed["state"]["message"] and failed["parameters"]["prefix"] in first["state"]["message"]
        # Nothing lost, nothing partial: the inbox as dropped, nothing done, archived or quarantined, no work files.
        assert inbox_files(inbox) == originals and done_markers(inbox) == {}
        assert records(archive) == [] and review.list() == [] and list(folder.iterdir()) == []

        mount("size=256m")
        # The dashboard's Retry button on the failed batch run: it is scheduled again, under its own id.
        api_call(pool_api, f"/flow_runs/{failed['id']}/set_state", {"state": {"type": "SCHEDULED", "name": "AwaitingRetry"}, "force": True})
        retried = wait_for_final_state(pool_api, failed["id"], timeout_s=600)
        assert_completed(pool_api, retried, *(log for _, log in workers))
    assert retried["state_name"] == "Done" and retried["run_count"] >= 2, retried
    assert_night_archived_once(env, inbox, night[:1], originals)


def test_a_read_only_work_folder_stops_the_night_before_any_batch_run_starts(s3, pool_api, night, tmp_path, work_disk):
    folder, mount = work_disk
    make_read_only(folder, mount, True)
    env = {**fault_env(s3, pool_api, tmp_path, "pool-read-only", work_dir=str(folder)), **QUICK_POLLING}
    inbox = drop_night(env, night[:1])
    originals = inbox_files(inbox)
    with two_workers(env, tmp_path) as workers:
        first = wait_for_final_state(pool_api, start_night(pool_api), timeout_s=600)
        print(f"\nnight: {first['state_name']}: {first['state']['message']}")
        assert first["state_type"] == "FAILED", first["state"]
        assert f"service.work_dir {folder}: cannot write: " in first["state"]["message"], first["state"]
        # Stopped before dispatching: no batch run, no claim, nothing done, archived or quarantined.
        assert batch_runs(pool_api, first["id"]) == []
        assert [o.key for o in inbox.list()] == sorted(originals)
        archive, review = (open_store(env[f"DIGITIZE_SERVICE_{name}"], env) for name in ("ARCHIVE", "REVIEW"))
        assert records(archive) == [] and review.list() == []

        make_read_only(folder, mount, False)
        second = wait_for_final_state(pool_api, start_night(pool_api), timeout_s=600)
        assert_completed(pool_api, second, *(log for _, log in workers))
    assert_night_archived_once(env, inbox, night[:1], originals)
