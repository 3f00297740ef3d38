"""A real S3 server for tests: SeaweedFS `weed mini` on loopback, started and stopped by a fixture."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ACCESS_KEY = "digitize-test"
SECRET_KEY = "digitize-test-secret-0123456789"
# Every listener weed mini opens, each given a free port, so that test sessions and other servers
# on the machine never collide; the Iceberg and Lance catalogues are turned off (port 0).
LISTENERS = (
    "s3.port", "s3.port.grpc", "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
    "filer.port", "filer.port.grpc", "admin.port", "admin.port.grpc", "webdav.port",
)  # fmt: skip
OFF = ("s3.port.iceberg", "s3.port.lance")


def weed_binary() -> Path:
    return Path(sys.executable).parent / "weed"


def free_ports(count: int) -> list[int]:
    """`count` distinct ports nobody listens on now (held together, so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


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
        # Kept for the server's life: a restart on the same data answers on the same endpoint.
        self.ports = dict(zip(LISTENERS, free_ports(len(LISTENERS)), strict=True))
        self.s3_port = self.ports["s3.port"]

    def start(self, timeout: float = 90) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        argv = [str(weed_binary()), "mini", f"-dir={self.data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
        argv += [f"-{name}={port}" for name, port in self.ports.items()] + [f"-{name}=0" for name in OFF]
        if self.s3_config is not None:
            argv.append(f"-s3.config={self.s3_config}")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                argv,
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"weed mini exited: {self.log.read_text()[-2000:]}")
                if _port_open(self.s3_port) and self._answers():
                    return
                time.sleep(0.5)
            raise RuntimeError(f"weed mini did not answer on {self.s3_port} within {timeout} s")
        except BaseException:
            self.stop()  # a server that never answered must not outlive its test
            raise

    def _answers(self) -> bool:
        from minio import Minio

        try:
            Minio(f"127.0.0.1:{self.s3_port}", access_key=ACCESS_KEY, secret_key=SECRET_KEY, secure=False).list_buckets()
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
        self.stop()

    @property
    def env(self) -> dict[str, str]:
        return {
            "MINIO_ENDPOINT": f"127.0.0.1:{self.s3_port}", "MINIO_ACCESS_KEY": ACCESS_KEY,
            "MINIO_SECRET_KEY": SECRET_KEY, "MINIO_SECURE": "false",
        }  # fmt: skip
