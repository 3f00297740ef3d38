"""Atomic file output: a reader sees the old file or the whole new one, never a part."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from pipeline.errors import OutputError

# mkstemp creates files only the owner can read; records should get the usual permissions.
UMASK = os.umask(0)
os.umask(UMASK)


# Temporary names start with this, so a folder listing (digitize.storage.LocalStore) can leave them out.
TEMP_PREFIX = ".tmp-"


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[BinaryIO]:
    """Write to a temporary file beside `path`; on success flush it to disk and rename it over `path`.

    A failure leaves `path` as it was and no temporary file behind; a full or read-only disk
    is an OutputError naming `path`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{path.name}.", suffix=".part")
    os.close(fd)
    try:
        # Opened by name, so the caller can read back what it wrote (fh.name) before it is renamed.
        with open(tmp, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (see `replacing`)."""
    with replacing(path) as fh:
        fh.write(data)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def replace_dir(staged: Path, final: Path) -> None:
    """Swap a finished folder into place; an older version is removed only after."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.rename(final, old)
    os.rename(staged, final)
    os.chmod(final, 0o755 & ~UMASK)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
