"""What a night needs, checked before any batch is claimed: work folder, programs and models, inbox access, signing key."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

from digitize.keys import load_record_signer
from digitize.storage import open_store
from pipeline.errors import OutputError
from pipeline.programs import check_programs
from digitize.config import AppSettings


def check_service(settings: AppSettings, env: Mapping[str, str]) -> None:
    """Raise the first problem as a DigitizeError (its one line and exit code); a batch claimed
    by a run that then cannot work would only wait for its lease."""
    check_work_dir(settings)
    check_programs(settings.ocr.languages)
    # Wrong keys or no access to the inbox: one line now, not a failure inside the flow.
    open_store(settings.service.inbox, env).check_access()
    # A key that is configured but will not open stops the night here.
    load_record_signer(settings, env)


def work_dir(settings: AppSettings) -> Path | None:
    """service.work_dir, or None for the system's temporary folder."""
    return Path(settings.service.work_dir) if settings.service.work_dir else None


def check_work_dir(settings: AppSettings) -> None:
    """The work folder must take a file."""
    folder = work_dir(settings) or Path(tempfile.gettempdir())
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder) as probe:
            probe.write(b"digitize")
            probe.flush()
    except OSError as exc:
        raise OutputError(f"service.work_dir {folder}: cannot write: {exc.strerror or exc}") from None
