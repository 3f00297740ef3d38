"""Atomic file output: a reader sees the old file or the whole new one, never a part."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from pipeline.errors import OutputError

# mkstemp creates files only the owner can read; records should get the usual permissions.
UMASK = os.umask(0)
os.umask(UMASK)


def write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary name in the same folder, flush to disk, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write: {exc.strerror or exc}") from None


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
