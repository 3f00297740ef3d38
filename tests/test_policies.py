"""The least-privilege S3 policies in deploy/minio-policies/: their statements, and the product under them.

The S3 tests load the very JSON files shipped for MinIO into SeaweedFS (`weed mini -s3.config`),
whose own IAM policy engine evaluates them, `${aws:username}` included. That proves `digitize drop`
and `digitize run` work under these restrictions and that the restrictions hold on SeaweedFS;
it does not prove MinIO evaluates the files identically (its policy engine was not run here).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests import scanfactory as sf
from tests.conftest import DIGITIZE
from tests.s3server import ACCESS_KEY, SECRET_KEY, WeedMini

POLICIES = Path(__file__).resolve().parents[1] / "deploy" / "minio-policies"
STATIONS = ("dien-chau-01", "vinh-02")


def _policy(name: str) -> dict:
    return json.loads((POLICIES / f"{name}.json").read_text())


def _allowed(policy: dict) -> set[tuple[str, str]]:
    return {(a, r) for s in policy["Statement"] if s["Effect"] == "Allow" for a in s["Action"] for r in s["Resource"]}


def _denied(policy: dict) -> set[tuple[str, str]]:
    return {(a, r) for s in policy["Statement"] if s["Effect"] == "Deny" for a in s["Action"] for r in s["Resource"]}


def test_policy_files_are_valid_iam_json():
    for path in sorted(POLICIES.glob("*.json")):
        policy = json.loads(path.read_text())
        assert policy["Version"] == "2012-10-17", path
        for statement in policy["Statement"]:
            assert statement["Effect"] in ("Allow", "Deny"), path
            assert statement["Action"] and all(a.startswith("s3:") for a in statement["Action"]), path
            assert statement["Resource"] and all(r.startswith("arn:aws:s3:::") for r in statement["Resource"]), path
    assert {p.stem for p in POLICIES.glob("*.json")} == {"station", "worker", "worker-retention", "reviewer"}


def test_station_may_only_drop_under_its_own_prefix():
    station = _policy("station")
    allowed = _allowed(station)
    object_grants = {r for a, r in allowed if a not in ("s3:GetBucketLocation", "s3:ListBucket")}
    # Put and read back (drop checks what is already there, and verifies each upload): own prefix only.
    assert object_grants == {"arn:aws:s3:::inbox/${aws:username}/*"}
    assert {a for a, _ in allowed} == {"s3:GetBucketLocation", "s3:ListBucket", "s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload"}
    # Listing only its own rescan requests; no deleting, and never the worker's claims or done markers.
    (listing,) = [s for s in station["Statement"] if "s3:ListBucket" in s["Action"]]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["${aws:username}/_requests/*"]}}
    assert not any(a == "s3:DeleteObject" or a.endswith("*") for a, _ in allowed)
    assert {r for a, r in _denied(station) if a == "s3:PutObject"} >= {
        "arn:aws:s3:::inbox/*/_done.json", "arn:aws:s3:::inbox/*/_claims/*",
    }  # fmt: skip


def test_worker_reads_the_inbox_and_never_deletes_records():
    worker = _policy("worker")
    allowed = _allowed(worker)
    assert ("s3:ListBucket", "arn:aws:s3:::inbox") in allowed and ("s3:GetObject", "arn:aws:s3:::inbox/*") in allowed
    # In the inbox it writes only claims, done markers and the done area (finished batches are
    # moved there: copy, then delete), and never deletes a receipt there.
    assert {r for a, r in allowed if a == "s3:PutObject" and r.startswith("arn:aws:s3:::inbox")} == {
        "arn:aws:s3:::inbox/*/_claims/*", "arn:aws:s3:::inbox/*/_done.json", "arn:aws:s3:::inbox/_done/*",
    }  # fmt: skip
    assert {r for a, r in allowed if a == "s3:DeleteObject"} == {"arn:aws:s3:::inbox/*/_claims/*", "arn:aws:s3:::inbox/*"}
    assert {r for a, r in _denied(worker) if a == "s3:DeleteObject" and r.startswith("arn:aws:s3:::inbox")} == {
        "arn:aws:s3:::inbox/_done/*/batch.json", "arn:aws:s3:::inbox/_done/*/_done.json",
    }  # fmt: skip
    for bucket in ("archive", "review"):
        assert ("s3:PutObject", f"arn:aws:s3:::{bucket}/*") in allowed
        assert ("s3:DeleteObject", f"arn:aws:s3:::{bucket}/*") in _denied(worker)
    assert not any(a.endswith("*") for a, _ in allowed)
    retention = _policy("worker-retention")
    assert _allowed(retention) == {("s3:DeleteObject", "arn:aws:s3:::inbox/*")}
    assert _denied(retention) == {
        ("s3:DeleteObject", "arn:aws:s3:::inbox/_done/*/batch.json"), ("s3:DeleteObject", "arn:aws:s3:::inbox/_done/*/_done.json"),
    }  # fmt: skip
    reviewer = _policy("reviewer")
    assert not any(a == "s3:DeleteObject" for a, _ in _allowed(reviewer))
    assert ("s3:DeleteObject", "arn:aws:s3:::archive/*") in _denied(reviewer)


# --- against a real S3 server --------------------------------------------------------------------


def _identity(name: str, *policies: str) -> dict:
    # As in MinIO, where `${aws:username}` is the user's access key, the access key is the station id.
    return {"name": name, "credentials": [{"accessKey": name, "secretKey": f"{name}-secret-0123456789"}], "policyNames": list(policies)}


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weed-policies")
    config = folder / "s3-identities.json"
    config.write_text(json.dumps({
        "identities": [*(_identity(s, "station") for s in STATIONS), _identity("worker", "worker"),
                       _identity("worker-retention", "worker", "worker-retention")],
        # The shipped files, verbatim.
        "policies": [{"name": p.stem, "content": p.read_text()} for p in sorted(POLICIES.glob("*.json"))],
    }))  # fmt: skip
    global _server
    server = _server = WeedMini(folder / "data", s3_config=config)
    server.start()
    admin = _client(ACCESS_KEY, SECRET_KEY)
    for bucket in ("inbox", "archive", "review"):
        if not admin.bucket_exists(bucket):
            admin.make_bucket(bucket)
    yield server
    server.release()


# The module's server (the `s3` fixture), which the clients below talk to on its own free port.
_server: WeedMini | None = None


def _client(access_key: str, secret_key: str | None = None):
    from minio import Minio

    return Minio(f"127.0.0.1:{_server.s3_port}", access_key=access_key, secret_key=secret_key or f"{access_key}-secret-0123456789", secure=False)


def _env(s3, tmp: Path, identity: str) -> dict[str, str]:
    return {
        **os.environ, **s3.env, "MINIO_ACCESS_KEY": identity, "MINIO_SECRET_KEY": f"{identity}-secret-0123456789",
        "DIGITIZE_SERVICE_INBOX": "s3://inbox", "DIGITIZE_SERVICE_ARCHIVE": "s3://archive",
        "DIGITIZE_SERVICE_REVIEW": "s3://review", "DIGITIZE_SERVICE_CLAIM_SETTLE_S": "0.5",
        "PREFECT_HOME": str(tmp / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "COLUMNS": "200",
    }  # fmt: skip


def _digitize(env: dict, *args) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(DIGITIZE), *map(str, args)], capture_output=True, text=True, env=env, timeout=900)


def _keys(bucket: str, prefix: str = "") -> set[str]:
    return {o.object_name for o in _client(ACCESS_KEY, SECRET_KEY).list_objects(bucket, prefix=prefix, recursive=True)}


def _refused(call) -> str:
    from minio.error import S3Error

    with pytest.raises(S3Error) as caught:
        call()
    return caught.value.code


def _batch(folder: Path, *, seed: int) -> Path:
    """A receipt with its QR code and a plan: one dossier for the archive, one drawing for review."""
    folder.mkdir(parents=True)
    receipt, _ = sf.receipt_page(code=f"000.00.21.H40-261126-{seed:04d}", dpi=200, seed=seed)
    sf.save_png(folder / "receipt.png", sf.flatten_paper(sf.scan_effects(receipt, dpi=200, noise=2.0, seed=seed)), 200)
    sf.save_png(folder / "plan.png", sf.flatten_paper(sf.drawing_page(dpi=200, seed=seed)), 200)
    return folder


@pytest.mark.s3
def test_station_drops_its_own_batches_and_cannot_touch_others(s3, tmp_path):
    own = _env(s3, tmp_path, "dien-chau-01")
    dropped = _digitize(own, "drop", _batch(tmp_path / "ho-so-1", seed=1), "--station", "dien-chau-01")
    assert dropped.returncode == 0 and "rescan requests not read" not in dropped.stderr, dropped.stdout + dropped.stderr
    assert {k.rsplit("/", 1)[1] for k in _keys("inbox", "dien-chau-01/")} == {"receipt.png", "plan.png", "batch.json"}
    # Dropping the same folder again reads its own batch.json back and uploads nothing.
    again = _digitize(own, "drop", tmp_path / "ho-so-1", "--station", "dien-chau-01")
    assert again.returncode == 0 and "already dropped" in again.stdout, again.stdout + again.stderr

    # The real command, posing as another station: refused, nothing written there.
    posing = _digitize(own, "drop", _batch(tmp_path / "ho-so-2", seed=2), "--station", "vinh-02")
    assert posing.returncode == 77 and "AccessDenied" in posing.stderr, posing.stdout + posing.stderr
    assert not _keys("inbox", "vinh-02/")

    # Another station's batch, as that station dropped it.
    theirs = _env(s3, tmp_path, "vinh-02")
    assert _digitize(theirs, "drop", tmp_path / "ho-so-2", "--station", "vinh-02").returncode == 0
    (their_scan,) = [k for k in _keys("inbox", "vinh-02/") if k.endswith("receipt.png")]
    before = _keys("inbox")

    station = _client("dien-chau-01")
    assert _refused(lambda: station.put_object("inbox", "vinh-02/forged/receipt.png", io.BytesIO(b"x"), 1)) == "AccessDenied"
    assert _refused(lambda: station.put_object("inbox", their_scan, io.BytesIO(b"x"), 1)) == "AccessDenied"
    assert _refused(lambda: station.get_object("inbox", their_scan)) == "AccessDenied"
    assert _refused(lambda: station.stat_object("inbox", their_scan)) == "AccessDenied"
    assert _refused(lambda: station.remove_object("inbox", their_scan)) == "AccessDenied"
    assert _refused(lambda: list(station.list_objects("inbox", recursive=True))) == "AccessDenied"
    # It may list the review station's rescan requests to it, and no one else's.
    assert list(station.list_objects("inbox", prefix="dien-chau-01/_requests/")) == []
    assert _refused(lambda: list(station.list_objects("inbox", prefix="vinh-02/_requests/"))) == "AccessDenied"
    assert _refused(lambda: list(station.list_objects("inbox", prefix="dien-chau-01/"))) == "AccessDenied"
    # Not even its own batches may it delete, nor mark them done or claimed.
    (own_batch,) = {k.rsplit("/", 2)[0] + "/" + k.rsplit("/", 2)[1] for k in _keys("inbox", "dien-chau-01/")}
    assert _refused(lambda: station.remove_object("inbox", f"{own_batch}/receipt.png")) == "AccessDenied"
    assert _refused(lambda: station.put_object("inbox", f"{own_batch}/_done.json", io.BytesIO(b"{}"), 2)) == "AccessDenied"
    assert _refused(lambda: station.put_object("inbox", f"{own_batch}/_claims/x", io.BytesIO(b"{}"), 2)) == "AccessDenied"
    assert _refused(lambda: station.put_object("archive", "2026/11/forged.pdf", io.BytesIO(b"x"), 1)) == "AccessDenied"
    assert _keys("inbox") == before and not _keys("archive")
    admin = _client(ACCESS_KEY, SECRET_KEY)
    assert admin.get_object("inbox", their_scan).read() == (tmp_path / "ho-so-2" / "receipt.png").read_bytes()


@pytest.mark.s3
@pytest.mark.slow
def test_worker_runs_the_night_and_cannot_delete_records(s3, tmp_path):
    """Runs after the station test's drops, or drops its own batch when run alone."""
    station = _env(s3, tmp_path, "dien-chau-01")
    assert _digitize(station, "drop", _batch(tmp_path / "ho-so-3", seed=3), "--station", "dien-chau-01").returncode == 0
    worker = _env(s3, tmp_path, "worker")
    night = _digitize(worker, "run", "--jobs", "1")
    assert night.returncode == 0 and "failed" not in night.stderr, night.stdout + night.stderr
    inbox = _keys("inbox")
    batches = {k.rsplit("/", 1)[0] for k in inbox if k.endswith("/batch.json")}
    assert batches and all(f"{b}/_done.json" in inbox for b in batches), inbox
    assert not any("/_claims/" in k for k in inbox), "claims are released (deleted) by the worker"
    records = _keys("archive")
    assert any(k.endswith("000.00.21.H40-261126-0003.pdf") for k in records), records
    assert any(k.endswith("/_item.json") for k in _keys("review")), "the plan goes to manual review"

    client = _client("worker")
    record = next(k for k in records if k.endswith(".pdf"))
    assert _refused(lambda: client.remove_object("archive", record)) == "AccessDenied"
    assert record in _keys("archive")
    scan = next(k for k in inbox if k.endswith("receipt.png"))
    # It may not change a station's scan; it may delete one, since the next night moves the
    # finished batch to the done area (copy, then delete), where its receipt is kept.
    assert _refused(lambda: client.put_object("inbox", scan, io.BytesIO(b"x"), 1)) == "AccessDenied"

    # The next night moves the finished batches to the done area; with retention their scans go,
    # and each batch's record of receipt stays there, which the worker may not delete.
    keeper = {**_env(s3, tmp_path, "worker-retention"), "DIGITIZE_SERVICE_RETENTION_DAYS": "0.000001"}
    swept = _digitize(keeper, "run", "--jobs", "1")
    assert swept.returncode == 0, swept.stdout + swept.stderr
    left = _keys("inbox")
    assert not any(k.endswith(".png") for k in left), left
    moved = {k.split("/", 4)[4].rsplit("/", 1)[0]: k.rsplit("/", 1)[0] for k in left if k.startswith("_done/") and k.endswith("/_done.json")}
    assert set(moved) == batches and all(f"{moved[b]}/batch.json" in left for b in batches), left
    assert not any(k.startswith(tuple(f"{b}/" for b in batches)) for k in left), "nothing of them is left in the station folders"
    for identity in ("worker", "worker-retention"):
        assert _refused(lambda: _client(identity).remove_object("inbox", f"{moved[min(batches)]}/batch.json")) == "AccessDenied"
    # Records unchanged; the sweeping night adds only its own audit log and report.
    assert {k for k in _keys("archive") if not k.startswith("audit/")} == {k for k in records if not k.startswith("audit/")}
