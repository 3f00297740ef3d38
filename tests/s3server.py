"""A real S3 server for tests: SeaweedFS `weed mini` on loopback, started and stopped by a fixture."""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

S3_PORT = 8333
ACCESS_KEY = "digitize-test"
SECRET_KEY = "digitize-test-secret-0123456789"
# weed mini listens on a handful of fixed ports; test sessions on one machine take turns.
TURN_LOCK = Path("/tmp/digitize-test-weed.lock")


def weed_binary() -> Path:
    return Path(sys.executable).parent / "weed"


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class WeedMini:
    def __init__(self, data: Path, *, s3_config: Path | None = None) -> None:
        """`s3_config`: an S3 identities file (`-s3.config`) for identities besides the test's admin,
        which weed mini takes from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY either way."""
        self.data = data
        self.s3_config = s3_config
        self.proc: subprocess.Popen | None = None
        self.log = data / "weed.log"
        self._turn = None

    def start(self, timeout: float = 90) -> None:
        if self._turn is None:
            self._turn = open(TURN_LOCK, "a")
            fcntl.flock(self._turn, fcntl.LOCK_EX)
        if _port_open(S3_PORT):
            raise RuntimeError(f"port {S3_PORT} is taken; another S3 server is running")
        self.data.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        argv = [str(weed_binary()), "mini", f"-dir={self.data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
        if self.s3_config is not None:
            argv.append(f"-s3.config={self.s3_config}")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                argv,
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed mini exited: {self.log.read_text()[-2000:]}")
            if _port_open(S3_PORT) and self._answers():
                return
            time.sleep(0.5)
        raise RuntimeError(f"weed mini did not answer on {S3_PORT} within {timeout} s")

    def _answers(self) -> bool:
        from minio import Minio

        try:
            Minio(f"127.0.0.1:{S3_PORT}", access_key=ACCESS_KEY, secret_key=SECRET_KEY, secure=False).list_buckets()
            return True
        except Exception:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()

    def release(self) -> None:
        """Let another test session have the ports."""
        self.stop()
        if self._turn is not None:
            self._turn.close()
            self._turn = None

    @property
    def env(self) -> dict[str, str]:
        return {
            "MINIO_ENDPOINT": f"127.0.0.1:{S3_PORT}", "MINIO_ACCESS_KEY": ACCESS_KEY,
            "MINIO_SECRET_KEY": SECRET_KEY, "MINIO_SECURE": "false",
        }  # fmt: skip
