"""`digitize drop`: a station uploads a folder of scans as one batch, batch.json last."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from digitize.inbox import BATCH_MANIFEST, SCHEMA
from digitize.storage import Store
from pipeline import atomic
from pipeline.errors import EmptyInput
from pipeline.sources import PAGE_IMAGE_SUFFIXES

DROPPABLE = PAGE_IMAGE_SUFFIXES | {".pdf"}


def batch_id(folder: Path, files: list[dict]) -> str:
    """Named after the folder and its contents, so dropping the same folder again is the same batch."""
    digest = hashlib.sha256("".join(f"{f['name']}\t{f['sha256']}\n" for f in files).encode()).hexdigest()
    return f"{folder.name}-{digest[:12]}"


def drop(
    folder: Path, store: Store, *, station: str, operator: str, hints: list[dict] | None = None,
    on_file: Callable[[str, int], None] | None = None,
) -> tuple[str, bool]:  # fmt: skip
    """Upload every scan in `folder`, skipping files already there, then batch.json.

    Returns the batch key prefix and whether anything was uploaded (False: already dropped).
    """
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in DROPPABLE)
    if not paths:
        raise EmptyInput(folder, "no scans to drop (PDF, TIFF, JPEG or PNG)")
    files = [{"name": p.name, "sha256": atomic.sha256_file(p), "bytes": p.stat().st_size} for p in paths]
    prefix = f"{station}/{batch_id(folder, files)}/"
    if store.exists(prefix + BATCH_MANIFEST):
        return prefix, False
    for path, entry in zip(paths, files, strict=True):
        present = store.stat(prefix + path.name)
        if present is None or present.size != entry["bytes"]:
            # A file left by an interrupted drop is sent again whole; the store verifies each upload.
            store.upload(prefix + path.name, path)
        if on_file:
            on_file(path.name, entry["bytes"])
    manifest = {
        "schema": SCHEMA, "station": station, "operator": operator,
        "scanned_at": datetime.now(timezone.utc).isoformat(), "files": files, "dossiers": hints or [],
    }  # fmt: skip
    store.put_bytes(prefix + BATCH_MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False).encode())
    return prefix, True
