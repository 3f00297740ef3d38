"""The nightly audit log: one JSON line per event (batch claimed, dossier archived or flagged, input rejected).

Object stores cannot append, so each writer owns one object, audit/<yyyy>/<mm>/<dd>/<time>-<run>[-<part>].jsonl
in the archive (a run's night, and each of its batches), and rewrites it with its earlier lines
unchanged and new ones after them. No writer ever writes another's log, so concurrent workers
and batches cannot lose each other's events.
"""

from __future__ import annotations

import json
import socket
import threading
from datetime import datetime, timezone

from digitize.storage import Store

AUDIT_PREFIX = "audit/"


class AuditLog:
    """One writer's log. `part` names a writer within a run (a batch's task), so that writers
    running at once in one run each own their object; each event still names the run."""

    def __init__(self, store: Store, *, run: str, part: str = "", night: datetime | None = None) -> None:
        night = night or datetime.now(timezone.utc)
        self.store = store
        self.run = run
        self.key = f"{AUDIT_PREFIX}{night:%Y/%m/%d}/{night:%H%M%S}-{run}{'-' + part if part else ''}.jsonl"
        self._host = socket.gethostname()
        self._lines: list[str] = []
        self._lock = threading.Lock()

    def record(self, event: str, **details: object) -> None:
        entry = {"time": datetime.now(timezone.utc).isoformat(), "event": event, "run": self.run, "host": self._host}
        with self._lock:
            self._lines.append(json.dumps({**entry, **details}, ensure_ascii=False))

    def flush(self) -> None:
        """Store the log; called when a batch is claimed and when it ends, so each stage is on record."""
        with self._lock:
            if self._lines:
                self.store.put_bytes(self.key, ("\n".join(self._lines) + "\n").encode())
