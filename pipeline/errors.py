"""One exception hierarchy: each class knows if it is permanent and which exit code the CLI returns."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterable, Iterator
from enum import IntEnum
from pathlib import Path

class ExitCode(IntEnum):
    """sysexits.h codes, so shell scripts and schedulers can tell failures apart."""

    OK = 0
    USAGE = 64  # a command given the wrong kind of argument
    DATAERR = 65  # a bad input
    NOINPUT = 66  # an input that is not there
    UNAVAILABLE = 69  # a program or model missing
    SOFTWARE = 70  # a program crashed, or a bug
    CANTCREAT = 73  # output not writable
    TEMPFAIL = 75  # worth trying again later
    NOPERM = 77  # refused: wrong credentials or no permission
    CONFIG = 78  # a bad setting


# When several things failed, the exit code says the one a person must fix first: nothing works
# until settings, programs and permissions are right; a bug or a disk comes next; a temporary
# failure goes away by itself; a bad input concerns one file.
_SEVERITY = (
    ExitCode.CONFIG, ExitCode.UNAVAILABLE, ExitCode.NOPERM, ExitCode.SOFTWARE, ExitCode.CANTCREAT,
    ExitCode.TEMPFAIL, ExitCode.USAGE, ExitCode.NOINPUT, ExitCode.DATAERR, ExitCode.OK,
)  # fmt: skip


def most_serious(codes: Iterable[int]) -> ExitCode:
    """The exit code for a run in which each of `codes` happened (OK when there were none)."""
    found = {ExitCode(code) for code in codes}
    return next((code for code in _SEVERITY if code in found), ExitCode.OK)


class DigitizeError(Exception):
    """Base class of every error the product raises. `permanent` errors must not be retried; transient ones may be."""

    permanent = True
    exit_code = ExitCode.SOFTWARE


class TransientError(DigitizeError):
    """A failure that a later attempt may not meet: S3 or the network down, a timeout, a lost worker."""

    permanent = False
    exit_code = ExitCode.TEMPFAIL


class InputError(DigitizeError):
    """A bad input: its file and the reason, shown to staff as one line."""

    exit_code = ExitCode.DATAERR

    def __init__(self, path: os.PathLike | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class MissingInput(InputError):
    """The file or folder named is not there: a typo rather than a bad scan."""

    exit_code = ExitCode.NOINPUT


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

    exit_code = ExitCode.USAGE


class ConfigError(DigitizeError):
    """A bad setting; the message names the key."""

    exit_code = ExitCode.CONFIG


class MissingProgram(DigitizeError):
    """An external program or language model is not installed."""

    exit_code = ExitCode.UNAVAILABLE


class ExternalProgramError(DigitizeError):
    """An external program crashed or produced nothing; `stderr` is what it said."""

    exit_code = ExitCode.SOFTWARE

    def __init__(self, message: str, *, stderr: str = "") -> None:
        super().__init__(message)
        self.stderr = stderr


class ProgramTimeout(ExternalProgramError, TransientError):
    """An external program ran past its timeout; a later run may succeed."""

    permanent = False
    exit_code = ExitCode.TEMPFAIL


class OutputError(DigitizeError):
    """Output could not be written (disk full, no permission). Nothing partial is left."""

    permanent = False
    exit_code = ExitCode.CANTCREAT


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
