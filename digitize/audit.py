"""The nightly audit log: one JSON line per event (batch claimed, dossier archived or flagged, input rejected).

Object stores cannot append, so each run owns one object, audit/<yyyy>/<mm>/<dd>/<run>.jsonl
in the archive, and rewrites it with its earlier lines unchanged and new ones after them.
No run ever writes another run's log, so concurrent workers cannot lose each other's events.
"""

from __future__ import annotations

import json
import socket
import threading
from datetime import datetime, timezone

from digitize.storage import Store

AUDIT_PREFIX = "audit/"


class AuditLog:
    def __init__(self, store: Store, *, run: str, night: datetime | None = None) -> None:
        night = night or datetime.now(timezone.utc)
        self.store = store
        self.run = run
        self.key = f"{AUDIT_PREFIX}{night:%Y/%m/%d}/{night:%H%M%S}-{run}.jsonl"
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
