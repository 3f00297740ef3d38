"""Deployed runs end to end: `digitize serve`, prefect.yaml with a process worker, and two workers on PostgreSQL."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from digitize.drop import drop
from digitize.inbox import DONE_MARKER
from digitize.prefect_server import local_prefect_server
from digitize.storage import Store, open_store
from tests import make_batches
from tests.conftest import DIGITIZE, REPO
from tests.deploykit import (
    QUICK_POLLING, announced_codes, api_call, archived_records, assert_completed, background, free_port, prefect_cli, postgres_cluster, runs_taken,
    start_flow_run, wait_for_deployment, wait_for_final_state, worker,
)  # fmt: skip
from tests.servicekit import batch_folder, digitize_cli, folder_env, service_env

pytestmark = pytest.mark.slow

SAMPLE = REPO / "sample_scans" / "giay-tiep-nhan-300dpi-skew.jpg"
SAMPLE_CODE = "000.00.21.H40-261126-0042"  # in the sample receipt's QR
FLOW = "digitize-nightly-scheduled"  # flows/nightly.py's nightly_from_config
BATCH_FLOW = "process-batch"  # flows/batch.py's process_batch_run


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


def batch_runs(api: str) -> list[dict]:
    """Every `process-batch` flow run the server has."""
    return api_call(api, "/flow_runs/filter", {"flows": {"name": {"any_": [BATCH_FLOW]}}, "limit": 200})


@pytest.mark.s3
def test_a_prefect_yaml_deployment_run_by_a_process_worker_archives_the_batch(s3, tmp_path):
    """README's production route on S3: a work pool, `prefect deploy --all`, a worker started elsewhere;
    the nightly run starts the batch's own run on the pool, which the worker takes too."""
    env = {**service_env(s3, tmp_path, "yaml"), **QUICK_POLLING}
    dropped = digitize_cli(env, "drop", batch_folder(tmp_path / "desk-1", SAMPLE), "--station", "vinh")
    assert dropped.returncode == 0, dropped.stdout + dropped.stderr
    with local_prefect_server(free_port(), env=env) as api:
        env["PREFECT_API_URL"] = api
        prefect_cli("work-pool", "create", "digitize", "--type", "process", env=env, cwd=REPO)
        prefect_cli("--no-prompt", "deploy", "--all", env=env, cwd=REPO)
        deployment = wait_for_deployment(api, FLOW, "nightly")
        log = tmp_path / "worker.log"
        # The worker runs outside the repository: the flows are imported from the installed package.
        with worker("digitize", env=env, cwd=tmp_path, log=log):
            run = wait_for_final_state(api, start_flow_run(api, deployment, parameters={}))
            assert_completed(api, run, log)
        (batch,) = batch_runs(api)
        assert batch["id"] in runs_taken(log), "the worker did not run the batch's flow run"
        assert batch["deployment_id"] == wait_for_deployment(api, BATCH_FLOW, "batches")
    assert batch["state"]["name"] == "Done", batch["state"]
    assert set(batch["tags"]) == {"station:vinh", f"batch:{batch['parameters']['prefix'].rstrip('/')}"}, batch["tags"]
    _assert_sample_archived_once(open_store(env["DIGITIZE_SERVICE_ARCHIVE"], env), tmp_path)


@pytest.fixture
def postgres_prefect(tmp_path):
    """A Prefect server on a fresh Debian PostgreSQL cluster, as in production; yields its API URL and the cluster."""
    with postgres_cluster() as database:
        env = {**folder_env(tmp_path), "PREFECT_API_DATABASE_CONNECTION_URL": database.url}
        with local_prefect_server(free_port(), env=env) as api:
            yield api, database


@pytest.mark.s3
def test_two_workers_on_a_postgresql_server_archive_each_dossier_once(s3, postgres_prefect, tmp_path):
    """Production shape: Prefect on PostgreSQL, S3, two workers on the pool taking one night's batch runs."""
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
    nightly = wait_for_deployment(api, FLOW, "nightly")
    logs = [tmp_path / f"worker-{n}.log" for n in (1, 2)]
    with worker("digitize", env=env, cwd=tmp_path, log=logs[0]), worker("digitize", env=env, cwd=tmp_path, log=logs[1]):
        night = wait_for_final_state(api, start_flow_run(api, nightly, parameters={"jobs": 1}), timeout_s=600)
        assert_completed(api, night, *logs)
    runs = batch_runs(api)
    # The server kept its runs in PostgreSQL, not in a SQLite file of its own.
    assert database.query(f"select count(*) from flow_run where id = '{night['id']}'") == "1"
    assert not list(Path(env["PREFECT_HOME"]).glob("*.db"))

    # One flow run per batch, each tagged with its station and batch, all Done; which worker took
    # how many depends on which asked first, so that is printed, not asserted.
    assert len(runs) == 5 and {r["state"]["name"] for r in runs} == {"Done"}, [(r["name"], r["state"]["name"]) for r in runs]
    assert sorted(t for r in runs for t in r["tags"] if t.startswith("station:")) == sorted(f"station:station-{n % 3 + 1}" for n in range(5)), runs
    taken = [runs_taken(log) & {r["id"] for r in runs} for log in logs]
    print("batch runs taken by each worker:", [len(t) for t in taken])
    assert not taken[0] & taken[1] and len(taken[0] | taken[1]) == 5, taken
    archive = open_store(env["DIGITIZE_SERVICE_ARCHIVE"], env)
    archived = Counter(r.code for r in archived_records(archive, tmp_path))
    assert archived == announced, f"announced {sorted(announced)}, archived {dict(archived)}"
    review = open_store(env["DIGITIZE_SERVICE_REVIEW"], env)
    in_review = [o.key for o in review.list() if o.key.endswith(".json") and "/previous/" not in o.key]
    assert not in_review, f"nothing should go to review (no duplicates like <code>-2): {in_review}"
    done = [o.key for o in inbox.list() if o.key.endswith(DONE_MARKER)]
    assert len(done) == 5 and all(json.loads(inbox.read_bytes(k)).get("status") != "rejected" for k in done), done
