"""`digitize drop`: a station uploads a folder of scans as one batch, batch.json last."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from digitize.inbox import BATCH_MANIFEST, SCHEMA, station_problem
from digitize.storage import Store
from pipeline import atomic
from pipeline.errors import EmptyInput, InputError, MissingInput, UsageError
from pipeline.settings import LimitSettings, load_settings
from pipeline.sources import PAGE_IMAGE_SUFFIXES, load_page, open_input

DROPPABLE = PAGE_IMAGE_SUFFIXES | {".pdf"}


@dataclass(frozen=True)
class ScanFile:
    path: Path
    pages: int


@dataclass(frozen=True)
class BadFile:
    path: Path
    reason: str  # the pipeline's own words, as it would quarantine the file


@dataclass(frozen=True)
class FolderCheck:
    """What a station's folder holds: scans to drop, scans the pipeline would reject, and other files."""

    folder: Path
    scans: tuple[ScanFile, ...]
    bad: tuple[BadFile, ...]
    skipped: tuple[Path, ...]  # not scans by their name (notes.txt); never uploaded


class BadFiles(InputError):
    """Scans the pipeline would reject; the drop is refused unless the station allows them."""


def check_station(station: str) -> str:
    problem = station_problem(station)
    if problem:
        raise UsageError(f"--station {station!r}: {problem}")
    return station


def check_folder(folder: Path, *, limits: LimitSettings) -> FolderCheck:
    """Count each scan's pages and decode its first page, with the pipeline's own reader."""
    if not folder.exists():
        raise MissingInput(folder, "no such folder")
    if not folder.is_dir():
        raise UsageError(f"{folder}: not a folder; drop takes the folder that holds one batch's scans")
    scans, bad, skipped = [], [], []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        if path.suffix.lower() not in DROPPABLE:
            skipped.append(path)
            continue
        try:
            scan = open_input(path, limits)
            # Page 1 only: a whole PDF is rendered by the nightly run, not on the station.
            load_page(scan.pages[0], limits)
        except InputError as exc:
            bad.append(BadFile(path, exc.reason))
            continue
        scans.append(ScanFile(path, len(scan.pages)))
    if not scans and not bad:
        raise EmptyInput(folder, "no scans to drop (PDF, TIFF, JPEG or PNG)")
    return FolderCheck(folder, tuple(scans), tuple(bad), tuple(skipped))


def refuse_bad(checked: FolderCheck, *, allow_bad: bool) -> None:
    """Raise BadFiles when the folder holds scans the pipeline would reject, unless they are allowed."""
    if checked.bad and not allow_bad:
        names = ", ".join(b.path.name for b in checked.bad)
        raise BadFiles(checked.folder, f"{len(checked.bad)} bad scan(s) ({names}); nothing uploaded (--allow-bad uploads them anyway)")


def batch_id(folder: Path, files: list[dict]) -> str:
    """Named after the folder and its contents, so dropping the same folder again is the same batch."""
    digest = hashlib.sha256("".join(f"{f['name']}\t{f['sha256']}\n" for f in files).encode()).hexdigest()
    return f"{folder.name}-{digest[:12]}"


def drop(
    folder: Path, store: Store, *, station: str, operator: str, hints: list[dict] | None = None,
    on_file: Callable[[str, int], None] | None = None, checked: FolderCheck | None = None,
    limits: LimitSettings | None = None, allow_bad: bool = False,
) -> tuple[str, bool]:  # fmt: skip
    """Upload every scan in `folder`, skipping files already there, then batch.json.

    `checked` is `check_folder`'s verdict on `folder` (made here with `limits` when not given).
    Scans the pipeline would reject refuse the drop (BadFiles), unless `allow_bad`: then they are
    uploaded and named in batch.json's bad_files. Returns the batch key prefix and whether
    anything was uploaded (False: already dropped).
    """
    check_station(station)
    if checked is None:
        checked = check_folder(folder, limits=limits or load_settings().limits)
    refuse_bad(checked, allow_bad=allow_bad)
    pages = {s.path: s.pages for s in checked.scans}
    paths = sorted([s.path for s in checked.scans] + [b.path for b in checked.bad])
    files = [
        {"name": p.name, "sha256": atomic.sha256_file(p), "bytes": p.stat().st_size}
        | ({"pages": pages[p]} if p in pages else {})
        for p in paths
    ]
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
    if checked.bad:
        manifest["bad_files"] = [{"name": b.path.name, "reason": b.reason} for b in checked.bad]
    store.put_bytes(prefix + BATCH_MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False).encode())
    return prefix, True
