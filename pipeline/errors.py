"""One exception hierarchy: each class knows if it is permanent and which exit code the CLI returns."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

# sysexits.h codes, so shell scripts and schedulers can tell failures apart.
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_SOFTWARE = 70
EX_OSERR = 71
EX_CANTCREAT = 73
EX_TEMPFAIL = 75
EX_NOPERM = 77
EX_UNAVAILABLE = 69
EX_CONFIG = 78


class DigitizeError(Exception):
    """Base class. `permanent` errors must not be retried; transient ones may be."""

    permanent = True
    exit_code = EX_SOFTWARE


class InputError(DigitizeError):
    """A bad input: its file and the reason, shown to staff as one line."""

    exit_code = EX_DATAERR

    def __init__(self, path: os.PathLike | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class MissingInput(InputError):
    """The file or folder named is not there: a typo rather than a bad scan."""

    exit_code = EX_NOINPUT


class EmptyInput(InputError):
    """Zero bytes, or a folder without page images."""


class CorruptInput(InputError):
    """The file claims a format but cannot be decoded."""


class UnsupportedInput(InputError):
    """Not a scan format we accept (text file, unknown image, ...)."""


class EncryptedInput(InputError):
    """A password-protected PDF: we cannot archive what we cannot read."""


class ActiveContent(InputError):
    """A PDF with JavaScript, a launch action or embedded files: an archive copy must not act or hide files."""


class InputTooLarge(InputError):
    """Over a configured limit: pixels (decompression bomb), pages or bytes."""


class UsageError(DigitizeError):
    """A command given the wrong kind of argument (a file for a folder, a malformed id)."""

    exit_code = EX_USAGE


class ConfigError(DigitizeError):
    """A bad setting; the message names the key."""

    exit_code = EX_CONFIG


class MissingProgram(DigitizeError):
    """An external program or language model is not installed."""

    exit_code = EX_UNAVAILABLE


class ExternalProgramError(DigitizeError):
    """An external program crashed or produced nothing."""

    exit_code = EX_SOFTWARE


class ProgramTimeout(ExternalProgramError):
    """An external program ran past its timeout; a later run may succeed."""

    permanent = False
    exit_code = EX_TEMPFAIL


class OutputError(DigitizeError):
    """Output could not be written (disk full, no permission). Nothing partial is left."""

    permanent = False
    exit_code = EX_CANTCREAT


# What the local disk answers when it, not the input or the network, is at fault.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG})


def write_error(exc: OSError, folder: os.PathLike | str) -> OutputError | None:
    """The OutputError for a failed write into `folder` ("no space left on device", "read-only
    file system", ...), or None when `exc` is not the disk's fault."""
    if exc.errno not in DISK_ERRNOS:
        return None
    return OutputError(f"{folder}: cannot write: {exc.strerror or exc}")


# Less free space than this, and a program that failed to write its output ran out of it.
MIN_FREE_BYTES = 1 << 20


def out_of_space(folder: os.PathLike | str) -> bool:
    """Whether the file system holding `folder` is (all but) full, for programs that fail without saying why."""
    try:
        return shutil.disk_usage(folder).free < MIN_FREE_BYTES
    except OSError:
        return False


@contextlib.contextmanager
def writing_to(folder: os.PathLike | str) -> Iterator[None]:
    """Report a full, read-only or forbidden `folder` as an OutputError naming it and the reason."""
    try:
        yield
    except OSError as exc:
        error = write_error(exc, folder)
        if error is None:
            raise
        raise error from None
