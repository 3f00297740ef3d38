"""Deployed runs end to end: `digitize serve`, prefect.yaml with a process worker, and two workers on PostgreSQL."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from digitize.audit import AUDIT_PREFIX
from digitize.drop import drop
from digitize.inbox import DONE_MARKER
from digitize.prefect_server import local_prefect_server
from digitize.storage import Store, open_store
from tests import make_batches
from tests.conftest import DIGITIZE, REPO
from tests.deploykit import (
    announced_codes, api_call, archived_records, assert_completed, background, free_port, prefect_cli, postgres_cluster,
    start_flow_run, wait_for_deployment, wait_for_final_state, worker,
)  # fmt: skip
from tests.servicekit import batch_folder, digitize_cli, folder_env, service_env

pytestmark = pytest.mark.slow

SAMPLE = REPO / "sample_scans" / "giay-tiep-nhan-300dpi-skew.jpg"
SAMPLE_CODE = "000.00.21.H40-261126-0042"  # in the sample receipt's QR
FLOW = "digitize-nightly-scheduled"  # flows/nightly.py's nightly_from_config
# Runners and workers ask for due runs every 10 s by default; 1 s keeps the tests short.
QUICK_POLLING = {"PREFECT_RUNNER_POLL_FREQUENCY": "1", "PREFECT_WORKER_QUERY_SECONDS": "1"}


def _assert_sample_archived_once(archive: Store, scratch: Path) -> None:
    records = archived_records(archive, scratch)
    assert [r.code for r in records] == [SAMPLE_CODE], f"expected one record {SAMPLE_CODE}, found {[r.key for r in records]}"


def test_a_run_of_the_served_deployment_archives_the_batch(tmp_path):
    """`digitize serve` from the repository, as README says: the nightly deployment, run as its schedule runs it."""
    env = {**folder_env(tmp_path), **QUICK_POLLING}
    env.pop("PREFECT_API_URL", None)  # serve starts its own server
    dropped = digitize_cli(env, "drop", batch_folder(tmp_path / "desk-1", SAMPLE), "--station", "vinh")
    assert dropped.returncode == 0, dropped.stdout + dropped.stderr
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    log = tmp_path / "serve.log"
    with background([str(DIGITIZE), "serve", "--jobs", "1", "--port", str(port)], env=env, cwd=REPO, log=log):
        deployment = wait_for_deployment(api, FLOW, "nightly")
        run = wait_for_final_state(api, start_flow_run(api, deployment, parameters={}))
        assert_completed(api, run, log)
    _assert_sample_archived_once(open_store(env["DIGITIZE_SERVICE_ARCHIVE"], env), tmp_path)
    assert (tmp_path / "inbox" / "vinh").exists() and list((tmp_path / "inbox").rglob(DONE_MARKER))


@pytest.mark.s3
def test_a_prefect_yaml_deployment_run_by_a_process_worker_archives_the_batch(s3, tmp_path):
    """README's production route on S3: a work pool, `prefect deploy --all`, a worker started elsewhere."""
    env = {**service_env(s3, tmp_path, "yaml"), **QUICK_POLLING}
    dropped = digitize_cli(env, "drop", batch_folder(tmp_path / "desk-1", SAMPLE), "--station", "vinh")
    assert dropped.returncode == 0, dropped.stdout + dropped.stderr
    with local_prefect_server(free_port(), env=env) as api:
        env["PREFECT_API_URL"] = api
        prefect_cli("work-pool", "create", "digitize", "--type", "process", env=env, cwd=REPO)
        prefect_cli("--no-prompt", "deploy", "--all", env=env, cwd=REPO)
        deployment = wait_for_deployment(api, FLOW, "nightly-scanner-room-1")
        log = tmp_path / "worker.log"
        # The worker runs outside the repository: the flow is imported from the installed package.
        with worker("digitize", "scanner-room-1", env=env, cwd=tmp_path, log=log):
            run = wait_for_final_state(api, start_flow_run(api, deployment, parameters={"jobs": 1}))
            assert_completed(api, run, log)
    _assert_sample_archived_once(open_store(env["DIGITIZE_SERVICE_ARCHIVE"], env), tmp_path)


def _batches_done_by_run(api: str, archive: Store) -> dict[str, list[str]]:
    """From the nightly audit logs (one .jsonl per run, naming the run): the batches each flow run finished."""
    done: dict[str, list[str]] = {}
    for obj in archive.list(AUDIT_PREFIX):
        if not obj.key.endswith(".jsonl"):
            continue  # the last night's report beside the logs
        for line in archive.read_bytes(obj.key).decode().splitlines():
            event = json.loads(line)
            if event["event"] == "batch_done":
                done.setdefault(api_call(api, f"/flow_runs/{event['run']}")["id"], []).append(event["batch"])
    return done


@pytest.fixture
def postgres_prefect(tmp_path):
    """A Prefect server on a fresh Debian PostgreSQL cluster, as in production; yields its API URL and the cluster."""
    with postgres_cluster() as database:
        env = {**folder_env(tmp_path), "PREFECT_API_DATABASE_CONNECTION_URL": database.url}
        with local_prefect_server(free_port(), env=env) as api:
            yield api, database


@pytest.mark.s3
def test_two_workers_on_a_postgresql_server_archive_each_dossier_once(s3, postgres_prefect, tmp_path):
    """Production shape: Prefect on PostgreSQL, S3, two scanner-room workers sharing one night's batches."""
    api, database = postgres_prefect
    env = {**service_env(s3, tmp_path, "prod"), **QUICK_POLLING, "PREFECT_API_URL": api}
    inbox = open_store(env["DIGITIZE_SERVICE_INBOX"], env)
    specs = make_batches.small_batches(5, dossiers=1)
    for n, spec in enumerate(specs):
        folder = tmp_path / "scans" / spec["name"].removesuffix(".pdf")
        truth = make_batches.make(folder, [spec])[spec["name"]]
        (document,) = truth.documents
        hints = [{"file": truth.file, "code": document.code, "first_page": 0, "last_page": document.source_pages[-1]}]
        drop(folder, inbox, station=f"station-{n % 3 + 1}", operator="test", hints=hints)
    announced = announced_codes(inbox)
    assert len(announced) == 5

    prefect_cli("work-pool", "create", "digitize", "--type", "process", env=env, cwd=REPO)
    prefect_cli("--no-prompt", "deploy", "--all", env=env, cwd=REPO)
    rooms = ("scanner-room-1", "scanner-room-2")
    deployments = {room: wait_for_deployment(api, FLOW, f"nightly-{room}") for room in rooms}
    logs = {room: tmp_path / f"worker-{room}.log" for room in rooms}
    with worker("digitize", rooms[0], env=env, cwd=tmp_path, log=logs[rooms[0]]):
        with worker("digitize", rooms[1], env=env, cwd=tmp_path, log=logs[rooms[1]]):
            run_ids = {room: start_flow_run(api, deployments[room], parameters={"jobs": 1}) for room in rooms}
            runs = {room: wait_for_final_state(api, run_id) for room, run_id in run_ids.items()}
    for room, run in runs.items():
        assert_completed(api, run, logs[room])
        assert run["work_queue_name"] == room
        assert run["id"] in logs[room].read_text(), f"the {room} worker did not run its flow run"

    # The server kept its runs in PostgreSQL, not in a SQLite file of its own.
    assert database.query(f"select count(*) from flow_run where id in ('{run_ids[rooms[0]]}', '{run_ids[rooms[1]]}')") == "2"
    assert not list(Path(env["PREFECT_HOME"]).glob("*.db"))

    archive = open_store(env["DIGITIZE_SERVICE_ARCHIVE"], env)
    batches_done = _batches_done_by_run(api, archive)
    # Which run gets how many depends on which starts first; only that no batch is done twice is certain.
    print("batches done by each room's run:", {room: len(batches_done.get(run_ids[room], [])) for room in rooms})
    every_batch = [batch for batches in batches_done.values() for batch in batches]
    assert len(every_batch) == len(set(every_batch)) == 5, batches_done
    assert set(batches_done) <= set(run_ids.values()), f"batches done by runs other than the two: {batches_done}"
    archived = Counter(r.code for r in archived_records(archive, tmp_path))
    assert archived == announced, f"announced {sorted(announced)}, archived {dict(archived)}"
    review = open_store(env["DIGITIZE_SERVICE_REVIEW"], env)
    in_review = [o.key for o in review.list() if o.key.endswith(".json") and "/previous/" not in o.key]
    assert not in_review, f"nothing should go to review (no duplicates like <code>-2): {in_review}"
    done = [o.key for o in inbox.list() if o.key.endswith(DONE_MARKER)]
    assert len(done) == 5 and all(json.loads(inbox.read_bytes(k)).get("status") != "rejected" for k in done), done
