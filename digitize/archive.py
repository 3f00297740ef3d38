"""The archive's two rules: a scan is archived once, and a record is never overwritten."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

from digitize.storage import Store
from pipeline.manifest import RecordIdentity, RecordManifest, load_identity

# Which scans the archive holds, by checksum, beside the records and the audit log: a scan
# dropped again, under any batch name and in any month, is found here and not archived twice.
SOURCES = "sources/"


def received(archive: Store, sha256: str) -> dict | None:
    """Where the scan with this checksum went when it was first archived, or None."""
    key = f"{SOURCES}{sha256}.json"
    if not archive.exists(key):
        return None
    return json.loads(archive.read_bytes(key))


def note_received(archive: Store, sha256: str, *, batch: str, file: str, records: list[dict]) -> None:
    """Remember a scan once every record made from it is uploaded and verified."""
    entry = {
        "sha256": sha256, "batch": batch, "file": file, "records": records,
        "at": datetime.now(timezone.utc).isoformat(),
    }  # fmt: skip
    archive.put_bytes(f"{SOURCES}{sha256}.json", json.dumps(entry, indent=2, ensure_ascii=False).encode())


@dataclass(frozen=True)
class Placement:
    """Where a dossier's record may go in an archive folder."""

    name: str  # the name to archive under: the wanted one, or the next free `<name>-N`
    existing: str | None = None  # the manifest already archived under the wanted name
    identical: bool = False  # that record was made from the same pages of the same scan


def place(archive: Store, folder: str, name: str, manifest: RecordManifest) -> Placement:
    """Find a place for the record `manifest` describes without overwriting another.

    The archived manifest goes last, so its presence means a whole record is there. A record
    of the same pages of the same scan is the same dossier: there is nothing to archive. A
    different one under the same dossier code is a second dossier claiming that code: it gets
    the next free name, and the caller sends it to a person rather than the archive.
    """
    wanted = f"{folder}{name}.json"
    if not archive.exists(wanted):
        return Placement(name)
    there = load_identity(archive.read_bytes(wanted), origin=f"{archive.url}/{wanted}")
    if there == RecordIdentity.of(manifest):
        return Placement(name, wanted, identical=True)
    n = 2
    while archive.exists(f"{folder}{name}-{n}.json"):
        n += 1
    return Placement(f"{name}-{n}", wanted)
