"""Bad batches in the inbox, against a real S3 server and real Prefect: each refused or quarantined
once with its reason, the rest archived, the same scan archived once, and the inbox never changed."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import pytest

from digitize.inbox import DONE_AREA, DONE_MARKER
from digitize.storage import open_store
from tests import scanfactory as sf
from tests.servicekit import batch_folder, digitize_cli, service_env, snapshot

pytestmark = [pytest.mark.s3, pytest.mark.slow]

CODE = "000.00.21.H40-261126-0042"


def _manifest(files: dict[str, bytes]) -> bytes:
    """A batch.json as a station writes it; `files` maps each listed name to its content."""
    return json.dumps({
        "schema": "digitize.batch/1", "station": "st", "operator": "test", "scanned_at": "2026-11-26T09:00:00+07:00",
        "files": [{"name": n, "sha256": hashlib.sha256(d).hexdigest(), "bytes": len(d)} for n, d in files.items()],
    }).encode()  # fmt: skip


def _put_as_a_station_tool(s3, bucket: str, key: str, data: bytes) -> None:
    """Straight through the S3 API, as a station's own tooling might: digitize's stores refuse unsafe keys."""
    _client(s3).put_object(bucket, key, io.BytesIO(data), len(data))


def _read(s3, bucket: str, key: str) -> bytes:
    response = _client(s3).get_object(bucket, key)
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


def _client(s3):
    from minio import Minio

    env = s3.env
    return Minio(env["MINIO_ENDPOINT"], access_key=env["MINIO_ACCESS_KEY"], secret_key=env["MINIO_SECRET_KEY"], secure=False)


def _records(store) -> dict[str, tuple[int, str]]:
    """The archive's records, leaving out its audit log and its index of received scans."""
    return {k: v for k, v in snapshot(store).items() if not k.startswith(("audit/", "sources/"))}


def _files_named(root: Path, names: set[str]) -> list[Path]:
    return [p for p in root.rglob("*") if p.name in names]


def test_bad_batches_are_quarantined_once_and_unsafe_keys_refused(s3, fixture_scans, tmp_path):
    """What a station's tooling can put in the inbox, put there the way it would, through S3.

    * batch.json that is not JSON, or that lists `..`, a path (`../../etc/passwd.tif`), a name with
      a control character or one over 255 bytes, or a file twice: the batch is quarantined (a copy of batch.json and
      the reason under rejected/), reported on the first night only, and marked done as rejected.
    * keys whose station or batch part holds a control character, or a part over 255 bytes:
      refused every night, unread, since nothing can be claimed or marked under them.
    * a stray object with a newline in its name inside a good batch: refused, the batch archived.
    * a batch whose batch.json lists a file never uploaded: waiting, then, once older than
      service.incomplete_after_h, the files that arrived archived and the missing one named.
    The S3 client refuses keys with '.' or '..' parts before they leave it, and S3 servers
    refuse keys over 1024 bytes (weed mini: a name over 255), so those reach the service only as
    names in batch.json, tested here, and in folder stores, which test_units covers (check_key).
    """
    env = {**service_env(s3, tmp_path, "bad"), "TMPDIR": str(tmp_path / "work")}
    (tmp_path / "work").mkdir()
    inbox = open_store(env["DIGITIZE_SERVICE_INBOX"], env)
    scan = (fixture_scans / "bitonal-g4-400dpi.tif").read_bytes()
    inbox.put_bytes("st/bad-json/scan.tif", scan)
    inbox.put_bytes("st/bad-json/batch.json", b'{"schema": "digitize.batch/1", "station": "st", "files": [')
    bad_names = {
        "dotdot": ("..", "'..' has a '.' or '..' component"),
        "path": ("../../etc/passwd.tif", "'../../etc/passwd.tif' is a path, not a file name"),
        "control": ("a\x01b.tif", "'a\\x01b.tif' has a control character"),
        "long": ("ả" * 100 + ".tif", "is longer than 255 bytes"),
    }
    for batch, (name, _) in bad_names.items():
        inbox.put_bytes(f"st/{batch}/scan.tif", scan)
        inbox.put_bytes(f"st/{batch}/batch.json", _manifest({name: scan}))
    # The same file listed twice would be archived twice.
    twice = json.loads(_manifest({"scan.tif": scan}))
    twice["files"] *= 2
    inbox.put_bytes("st/twice/scan.tif", scan)
    inbox.put_bytes("st/twice/batch.json", json.dumps(twice).encode())
    unsafe = {
        "st/b\x01/": "st/b\\x01/: unsafe object key: a control character",
        "st\x1b[31m/b/": "st\\x1b[31m/b/: unsafe object key: a control character",
        "st/" + "a" * 300 + "/": "unsafe object key: a component longer than 255 bytes",
    }
    for prefix in unsafe:
        _put_as_a_station_tool(s3, "bad-inbox", prefix + "scan.tif", scan)
        _put_as_a_station_tool(s3, "bad-inbox", prefix + "batch.json", _manifest({"scan.tif": scan}))
    inbox.put_bytes("st/good/bitonal-g4-400dpi.tif", scan)
    _put_as_a_station_tool(s3, "bad-inbox", "st/good/evil\nname.tif", scan)
    inbox.put_bytes("st/good/batch.json", _manifest({"bitonal-g4-400dpi.tif": scan}))
    gap = (fixture_scans / "skew-6-200dpi.png").read_bytes()
    inbox.put_bytes("st/gap/skew-6-200dpi.png", gap)
    inbox.put_bytes("st/gap/batch.json", _manifest({"skew-6-200dpi.png": gap, "missing.png": b"never uploaded"}))
    originals = {o.key: _read(s3, "bad-inbox", o.key) for o in inbox.list()}
    assert len(originals) == 23, sorted(originals)
    archive = open_store(env["DIGITIZE_SERVICE_ARCHIVE"], env)
    review = open_store(env["DIGITIZE_SERVICE_REVIEW"], env)

    first = digitize_cli(env, "run", "--jobs", "2")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "rejected: st/bad-json/batch.json: bad batch manifest: (document): Invalid JSON" in first.stderr
    for batch, (_, reason) in bad_names.items():
        line = next((ln for ln in first.stderr.splitlines() if ln.startswith(f"rejected: st/{batch}/batch.json: ")), "")
        assert "bad batch manifest: files.0.name: " in line and reason in line, first.stderr
        record = json.loads(review.read_bytes(f"rejected/st/{batch}/batch.json.reason.json"))
        assert reason in record["reason"] and record["copy"] == f"rejected/st/{batch}/batch.json"
        assert review.read_bytes(f"rejected/st/{batch}/batch.json") == originals[f"st/{batch}/batch.json"]
        assert json.loads(inbox.read_bytes(f"st/{batch}/{DONE_MARKER}"))["status"] == "rejected"
    assert review.read_bytes("rejected/st/bad-json/batch.json") == originals["st/bad-json/batch.json"]
    assert "rejected: st/twice/batch.json: bad batch manifest: (document): files: 'scan.tif' listed more than once" in first.stderr
    for reason in unsafe.values():
        assert any(ln.startswith("refused: ") and reason in ln for ln in first.stderr.splitlines()), first.stderr
    assert "rejected: st/good/evil\\nname.tif: unsafe object key: a control character; not read" in first.stderr
    assert "waiting: st/gap/" in first.stdout
    # Each line of the report is one printable line: no control character reaches a terminal.
    assert all(line.isprintable() for line in first.stderr.splitlines())
    assert list(_records(archive)) == [
        "2026/11/uncoded/st/good/bitonal-g4-400dpi.json", "2026/11/uncoded/st/good/bitonal-g4-400dpi.pdf",
        "2026/11/uncoded/st/good/bitonal-g4-400dpi.txt",
    ]  # fmt: skip
    written = [o.key for store in (archive, review) for o in store.list()]
    assert not [k for k in written if "\x01" in k or "\x1b" in k or "\n" in k or "a" * 300 in k], written
    # The inbox keeps every original as it was; the service only added done markers.
    after = {o.key: o for o in inbox.list()}
    assert all(_read(s3, "bad-inbox", key) == data for key, data in originals.items())
    assert sorted(set(after) - set(originals)) == sorted(
        f"st/{b}/{DONE_MARKER}" for b in ("bad-json", "control", "dotdot", "good", "long", "path", "twice")
    )
    # Nothing was written outside the work folder, and the work folder was cleaned up.
    assert not list((tmp_path / "work").glob("digitize-*"))
    # With S3 stores every local file is the service's own: no input's name may appear anywhere.
    assert not _files_named(tmp_path, {"scan.tif", "passwd.tif", "batch.json", "evil\nname.tif"})

    # The next night the service is old enough to give up on st/gap/'s missing file.
    env["DIGITIZE_SERVICE_INCOMPLETE_AFTER_H"] = "0.001"
    second = digitize_cli(env, "run", "--jobs", "2")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "bad batch manifest" not in second.stderr and "evil" not in second.stderr, "reported once"
    assert (
        "rejected: st/gap/missing.png: listed in batch.json but not in the inbox 0.001 h after the batch arrived "
        "(service.incomplete_after_h)"
    ) in second.stderr  # fmt: skip
    assert "2026/11/uncoded/st/gap/skew-6-200dpi.pdf" in _records(archive)
    assert json.loads(review.read_bytes("rejected/st/gap/missing.png.reason.json"))["copy"] is None
    gap_done = json.loads(inbox.read_bytes(f"st/gap/{DONE_MARKER}"))
    assert gap_done["status"] == "done" and [r["input"] for r in gap_done["rejected"]] == ["missing.png"]
    # Unsafe prefixes cannot be marked done; they are named every night until a person removes them.
    assert all(any(reason in ln for ln in second.stderr.splitlines()) for reason in unsafe.values())
    # The second night moved the batches finished on the first into the done area, each original
    # unchanged; st/good/ stays, since an object under it has an unsafe key.
    moved = {o.key.split("/", 4)[4]: o.key for o in inbox.list(DONE_AREA)}
    assert sorted({k.rsplit("/", 1)[0] for k in moved if k.endswith(DONE_MARKER)}) == [
        f"st/{b}" for b in ("bad-json", "control", "dotdot", "long", "path", "twice")
    ]
    assert all(_read(s3, "bad-inbox", moved.get(key, key)) == data for key, data in originals.items())


def _receipt(path: Path, *, scan_seed: int) -> Path:
    """The receipt of dossier CODE, scanned: each seed a different scan of the same sheet."""
    clean, _ = sf.receipt_page(code=CODE, dpi=200, seed=3)
    sf.save_png(path, sf.flatten_paper(sf.scan_effects(clean, dpi=200, noise=2.0, seed=scan_seed)), 200)
    return path


def test_the_same_scans_dropped_twice_are_archived_once(s3, fixture_scans, tmp_path):
    """A records office's usual accidents: the same folder copied and dropped under a second
    name on the same night, the same folder dropped again after it was done, and a different
    scan of a dossier whose code is archived. Each dossier is archived once; the second scan
    of a code goes to a person as `<code>-2`, and approving it keeps both records."""
    env = service_env(s3, tmp_path, "twice")
    desk = batch_folder(tmp_path / "desk", fixture_scans / "bitonal-g4-400dpi.tif")
    _receipt(desk / "receipt.png", scan_seed=1)
    copy = tmp_path / "desk-copy"
    shutil.copytree(desk, copy)
    for folder in (desk, copy):
        assert digitize_cli(env, "drop", folder, "--station", "st").returncode == 0
    archive = open_store(env["DIGITIZE_SERVICE_ARCHIVE"], env)
    inbox = open_store(env["DIGITIZE_SERVICE_INBOX"], env)
    review = open_store(env["DIGITIZE_SERVICE_REVIEW"], env)

    first = digitize_cli(env, "run", "--jobs", "2")
    assert first.returncode == 0, first.stdout + first.stderr
    records = _records(archive)
    # The month folder is the month the batches were dropped in.
    month = next(k for k in records if k.endswith(f"/{CODE}.pdf"))[: -len(f"{CODE}.pdf")]
    # The two copies run one after the other, in the order of their names; the first archives them.
    first_prefix = min(o.key for o in inbox.list("st/desk-") if o.key.endswith("/batch.json"))[: -len("batch.json")]
    assert [k for k in records if k.endswith(".pdf")] == [
        f"{month}{CODE}.pdf", f"{month}uncoded/{first_prefix}bitonal-g4-400dpi.pdf",
    ]  # fmt: skip
    skipped = [ln for ln in first.stdout.splitlines() if ln.startswith("already archived: ")]
    assert len(skipped) == 2 and all(f"same scan as {first_prefix}" in ln for ln in skipped), first.stdout
    done = [json.loads(inbox.read_bytes(o.key)) for o in inbox.list() if o.key.endswith(DONE_MARKER)]
    assert sorted(len(d["already_archived"]) for d in done) == [0, 2]

    inbox_before = snapshot(inbox)
    again = digitize_cli(env, "drop", desk, "--station", "st")
    assert again.returncode == 0 and "already dropped" in again.stdout, again.stdout
    assert snapshot(inbox) == inbox_before
    rescan = tmp_path / "rescan"
    rescan.mkdir()
    _receipt(rescan / "receipt.png", scan_seed=2)
    assert digitize_cli(env, "drop", rescan, "--station", "st").returncode == 0

    second = digitize_cli(env, "run", "--jobs", "2")
    assert second.returncode == 0, second.stdout + second.stderr
    assert _records(archive) == records, "an archived record was written again"
    (item,) = [o.key for o in review.list() if o.key.endswith("/_item.json")]
    assert item.startswith("st/rescan-") and item.endswith(f"/{CODE}-2/_item.json")
    reasons = json.loads(review.read_bytes(item.replace("_item.json", "reasons.json")))
    assert reasons["flags"]["duplicate_code"] == [
        {"code": CODE, "archived": f"{month}{CODE}.json", "written_as": f"{CODE}-2"}
    ]
    assert "duplicate_code" in second.stdout

    approved = digitize_cli(env, "review", "approve", f"{CODE}-2", "--by", "Lê Thị Hoa")
    assert approved.returncode == 0, approved.stderr
    after = _records(archive)
    assert {k: v for k, v in after.items() if k in records} == records
    assert sorted(set(after) - set(records)) == [f"{month}{CODE}-2.{ext}" for ext in ("json", "pdf", "txt")]
