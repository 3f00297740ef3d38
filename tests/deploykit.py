"""Helpers for tests of deployed runs: free ports, the Prefect REST API, workers, PostgreSQL, archived records."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from digitize.storage import Store
from pipeline import atomic

PREFECT = Path(sys.executable).parent / "prefect"
FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
# Debian's PostgreSQL (package `postgresql`, installed by `make test`).
PG_BIN = Path("/usr/lib/postgresql/15/bin")
# PostgreSQL refuses to run as root; the Debian package creates this system user.
PG_USER = "postgres"
API_ATTEMPTS = 6
# Runners and workers ask for due runs every 10 s by default; 1 s keeps the tests short.
QUICK_POLLING = {"PREFECT_RUNNER_POLL_FREQUENCY": "1", "PREFECT_WORKER_QUERY_SECONDS": "1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def api_call(api: str, path: str, body: dict | None = None, *, timeout: float = 10):
    """GET `path` of the Prefect API, or POST `body` to it; the decoded JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{api}{path}", data=data, headers={"content-type": "application/json"})
    for attempt in range(API_ATTEMPTS):
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return json.load(answer)
        except urllib.error.HTTPError as exc:
            # The server answers 503 while its database is busy (SQLite locked); Prefect's own client retries.
            if exc.code != 503 or attempt == API_ATTEMPTS - 1:
                raise
            time.sleep(1 + attempt)


def wait_for_deployment(api: str, flow: str, deployment: str, *, timeout_s: float = 180) -> str:
    """The id of deployment `flow/deployment` once the server has it."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return api_call(api, f"/deployments/name/{flow}/{deployment}")["id"]
        except OSError:  # the server is not up yet, or the deployment not registered (404)
            if time.monotonic() > deadline:
                raise AssertionError(f"deployment {flow}/{deployment} was not registered within {timeout_s:.0f} s") from None
            time.sleep(1)


def start_flow_run(api: str, deployment_id: str, *, parameters: dict) -> str:
    """A flow run of the deployment, as its schedule or the dashboard's Run button makes one; its id."""
    return api_call(api, f"/deployments/{deployment_id}/create_flow_run", {"parameters": parameters})["id"]


def flow_run_logs(api: str, run_id: str) -> str:
    logs = api_call(api, "/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}, "sort": "TIMESTAMP_ASC", "limit": 200})
    return "\n".join(f"{log['level']:>2} {log['message']}" for log in logs)


def wait_for_final_state(api: str, run_id: str, *, timeout_s: float = 300) -> dict:
    """The flow run once it is Completed, Failed, Crashed or Cancelled; fails the test on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = api_call(api, f"/flow_runs/{run_id}")
        if run["state"] and run["state"]["type"] in FINAL_STATES:
            return run
        time.sleep(1)
    raise AssertionError(f"flow run {run_id} still {run['state_name']} after {timeout_s:.0f} s:\n{flow_run_logs(api, run_id)}")


def assert_completed(api: str, run: dict, *logs: Path) -> None:
    """The run completed; otherwise fail with its Prefect logs and the given process logs (tracebacks)."""
    if run["state"]["type"] == "COMPLETED":
        return
    tails = "\n".join(f"--- {log}:\n{log.read_text(errors='replace')[-6000:]}" for log in logs if log.exists())
    raise AssertionError(
        f"flow run {run['name']} ended {run['state']['type']}: {run['state'].get('message')}\n"
        f"--- flow run logs:\n{flow_run_logs(api, run['id'])}\n{tails}"
    )


@contextlib.contextmanager
def background(argv: list[str], *, env: dict, cwd: Path, log: Path) -> Iterator[subprocess.Popen]:
    """A long-running command (`digitize serve`, a worker) in its own process group, output to `log`;
    the whole group is stopped at the end of the block."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        for sig, wait_s in ((signal.SIGTERM, 60), (signal.SIGKILL, 30)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue


def worker(pool: str, *, env: dict, cwd: Path, log: Path):
    """`prefect worker start` on `pool`, as on a scanner-room machine (prefect.yaml's header)."""
    return background([str(PREFECT), "worker", "start", "--pool", pool, "--limit", "2"], env=env, cwd=cwd, log=log)


def runs_taken(log: Path) -> set[str]:
    """The flow runs a worker started, from its log: those it submitted and was not refused (two
    workers may submit the same run; the server lets one have it)."""
    text = log.read_text(errors="replace")
    aborted = set(re.findall(r"Aborted submission of flow run '([0-9a-f-]{36})'", text))
    return set(re.findall(r"submitting flow run '([0-9a-f-]{36})'", text)) - aborted


def prefect_cli(*args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The `prefect` command to the end; fails the test when it fails."""
    proc = subprocess.run([str(PREFECT), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"prefect {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@dataclass(frozen=True)
class PostgresCluster:
    url: str  # Prefect's connection URL (asyncpg)
    port: int
    run_as: tuple[str, ...]  # the command prefix that runs a PostgreSQL program as its unprivileged user

    def query(self, sql: str) -> str:
        """`sql`'s result from psql, unaligned, without headers."""
        argv = [*self.run_as, str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "prefect", "-d", "prefect"]
        proc = subprocess.run([*argv, "-At", "-c", sql], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"psql {sql!r}: {proc.stderr}"
        return proc.stdout.strip()


@contextlib.contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A fresh PostgreSQL cluster on 127.0.0.1 (a free port) for the block.

    Run as the unprivileged `postgres` user when we are root, since PostgreSQL refuses root; its
    data and socket folder is outside pytest's root-only tmp folder so that user can reach it.
    """
    missing = [p for p in ("initdb", "pg_ctl") if not (PG_BIN / p).exists()]
    assert not missing, f"PostgreSQL is not installed ({PG_BIN}/{missing[0]} missing); `make test` installs `postgresql`"
    as_user = ["runuser", "-u", PG_USER, "--"] if os.geteuid() == 0 else []
    home = Path(tempfile.mkdtemp(prefix="digitize-pg-"))
    if as_user:
        shutil.chown(home, PG_USER, PG_USER)
    data, log, port = home / "data", home / "postgres.log", free_port()

    def pg(*argv: str) -> None:
        proc = subprocess.run([*as_user, *argv], capture_output=True, text=True, timeout=120)
        server_log = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        assert proc.returncode == 0, f"PostgreSQL: {' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}{server_log}"

    try:
        # Trust on loopback only, no fsync: a throwaway cluster for one test.
        pg(str(PG_BIN / "initdb"), "-D", str(data), "-U", "prefect", "-E", "UTF8", "--auth=trust", "--no-sync")
        options = f"-p {port} -c listen_addresses=127.0.0.1 -k {home} -c fsync=off -c max_connections=100"
        pg(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start")
        try:
            pg(str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "prefect", "prefect")
            yield PostgresCluster(f"postgresql+asyncpg://prefect@127.0.0.1:{port}/prefect", port, tuple(as_user))
        finally:
            pg(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(home, ignore_errors=True)


@dataclass(frozen=True)
class Record:
    key: str  # the manifest's key in the archive: <yyyy>/<mm>/<code>.json
    code: str
    pdf_sha256: str  # the PDF's checksum, as read from the archived PDF


def archived_records(archive: Store, scratch: Path) -> list[Record]:
    """Every record in the archive (its audit log and index of scans left out), with each PDF checked
    against its manifest's checksum."""
    records = []
    for obj in archive.list():
        parts = obj.key.split("/")
        if len(parts) != 3 or not parts[0].isdigit() or not obj.key.endswith(".json"):
            continue
        manifest = json.loads(archive.read_bytes(obj.key))
        pdf = scratch / "record.pdf"
        archive.download(obj.key.removesuffix(".json") + ".pdf", pdf)
        checksum = atomic.sha256_file(pdf)
        assert checksum == manifest["output"]["pdf_sha256"], f"{obj.key}: the PDF does not match its manifest's checksum"
        records.append(Record(obj.key, parts[2].removesuffix(".json"), checksum))
    return records


def announced_codes(inbox: Store) -> Counter:
    """The dossier codes the stations' batch.json files announce."""
    codes: Counter = Counter()
    for obj in inbox.list():
        if obj.key.endswith("/batch.json"):
            codes.update(d["code"] for d in json.loads(inbox.read_bytes(obj.key)).get("dossiers", []))
    return codes
