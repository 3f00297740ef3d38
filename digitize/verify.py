"""`digitize verify`: find each record (a local file or an archive key) with its manifest, and judge it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from digitize.storage import Store, open_store
from pipeline.errors import DigitizeError
from pipeline.manifest import ManifestError, load_manifest
from pipeline.verify import Verdict, load_trust_roots, verify_record


def verify_records(records: list[str], *, archive: str, env: Mapping[str, str], trust_roots: list[str]) -> list[Verdict]:
    roots = load_trust_roots(trust_roots)
    store: Store | None = None
    verdicts = []
    for record in records:
        stem = record.removesuffix(".json").removesuffix(".pdf")
        local = Path(f"{stem}.pdf")
        try:
            if local.is_file():
                pdf = local.read_bytes()
                manifest_path = local.with_suffix(".json")
                manifest = manifest_path.read_bytes() if manifest_path.is_file() else None
            else:
                store = store or open_store(archive, env)
                if not store.exists(f"{stem}.pdf"):
                    verdicts.append(Verdict(record, problems=[f"no such file, nor key in {store.url}"]))
                    continue
                pdf = store.read_bytes(f"{stem}.pdf")
                manifest = store.read_bytes(f"{stem}.json") if store.exists(f"{stem}.json") else None
        except (OSError, DigitizeError) as exc:
            verdicts.append(Verdict(record, problems=[f"cannot read: {exc}"]))
            continue
        try:
            parsed = load_manifest(manifest, origin=f"{stem}.json") if manifest is not None else None
        except ManifestError as exc:
            verdicts.append(Verdict(record, problems=[exc.problem]))
            continue
        verdicts.append(verify_record(f"{stem}.pdf", pdf, parsed, trust_roots=roots))
    return verdicts
