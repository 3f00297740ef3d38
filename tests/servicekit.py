"""Helpers for tests of the nightly service: its environment, the real console script, batch folders."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.conftest import DIGITIZE


def service_env(s3, tmp: Path, bucket: str) -> dict[str, str]:
    """Inbox, archive and review in buckets `<bucket>-inbox` etc. on `s3`; Prefect's home under `tmp`."""
    return {
        **os.environ, **s3.env,
        "DIGITIZE_SERVICE_INBOX": f"s3://{bucket}-inbox", "DIGITIZE_SERVICE_ARCHIVE": f"s3://{bucket}-archive",
        "DIGITIZE_SERVICE_REVIEW": f"s3://{bucket}-review", "DIGITIZE_SERVICE_CLAIM_SETTLE_S": "1.5",
        "PREFECT_HOME": str(tmp / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "COLUMNS": "200",
    }  # fmt: skip


def folder_env(tmp: Path) -> dict[str, str]:
    """Inbox, archive and review in folders under `tmp` (the embedded default); Prefect's home there too."""
    return {
        **os.environ, "PREFECT_HOME": str(tmp / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DIGITIZE_SERVICE_INBOX": str(tmp / "inbox"), "DIGITIZE_SERVICE_ARCHIVE": str(tmp / "archive"),
        "DIGITIZE_SERVICE_REVIEW": str(tmp / "review"), "DIGITIZE_SERVICE_CLAIM_SETTLE_S": "0", "COLUMNS": "200",
    }  # fmt: skip


def digitize_cli(env: dict, *args) -> subprocess.CompletedProcess[str]:
    """The real `digitize` console script with `env`, to the end."""
    return subprocess.run([str(DIGITIZE), *map(str, args)], capture_output=True, text=True, env=env, timeout=900)


def batch_folder(folder: Path, *sources: Path) -> Path:
    """A station's batch folder holding copies of `sources`."""
    folder.mkdir(parents=True)
    for source in sources:
        shutil.copy(source, folder / source.name)
    return folder


def snapshot(store) -> dict[str, tuple[int, str]]:
    """Every object's size and modification time: equal snapshots mean nothing was written."""
    return {o.key: (o.size, o.modified.isoformat()) for o in store.list()}
