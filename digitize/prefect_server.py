"""A Prefect server on loopback, for `digitize serve` without PREFECT_API_URL, the bench and tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

from pipeline.errors import MissingProgram


@contextlib.contextmanager
def local_prefect_server(
    port: int, *, env: Mapping[str, str] | None = None, startup_s: float = 120, log: Path | None = None,
) -> Iterator[str]:
    """Run `prefect server start` on 127.0.0.1:`port` for the block; yield its API URL.

    The UI is told the same URL, so its dashboard works on any port. The server's own output
    goes to `log` when given, and is dropped otherwise.
    """
    api = f"http://127.0.0.1:{port}/api"
    server_env = {**(env if env is not None else os.environ), "PREFECT_UI_API_URL": api}
    prefect = Path(sys.executable).parent / "prefect"
    output = open(log, "ab") if log else contextlib.nullcontext(subprocess.DEVNULL)
    with output as out:
        server = subprocess.Popen(
            [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=server_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + startup_s
        while True:
            try:
                urllib.request.urlopen(f"{api}/health", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise MissingProgram(f"prefect server did not start on port {port}") from None
                time.sleep(1)
        yield api
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
