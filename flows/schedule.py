"""The nightly deployments' schedule for prefect.yaml, read from the settings so it is written once."""

from __future__ import annotations

import os
from pathlib import Path

from digitize.config import app_settings


def nightly_schedule(*, config: list[str] | None = None) -> dict[str, str]:
    """A `prefect deploy` build step: [service] schedule and timezone, with the deploying shell's overrides.

    prefect.yaml fills its `schedules` from this step's output (`{{ service-schedule.cron }}`);
    Prefect steps return a dict by contract.
    """
    settings = app_settings([Path(p) for p in config or []], os.environ, {})
    return {"cron": settings.service.schedule, "timezone": settings.service.timezone}
