"""One small module per external program: install check, argv, timeout, logging, output check."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Mapping, Sequence

from pipeline.errors import ExternalProgramError, MissingProgram, ProgramTimeout

log = logging.getLogger(__name__)


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    what: str,
) -> subprocess.CompletedProcess[bytes]:
    """Run a program without a shell; turn every failure into a DigitizeError naming `what`."""
    full_env = {**os.environ, **env} if env else None
    log.debug("run %s", list(argv))
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, timeout=timeout, env=full_env, check=False
        )
    except FileNotFoundError:
        raise MissingProgram(f"{argv[0]} is not installed (needed for {what})") from None
    except subprocess.TimeoutExpired:
        raise ProgramTimeout(f"{argv[0]} timed out after {timeout:g} s on {what}") from None
    stderr = proc.stderr.decode("utf-8", "replace").strip()
    if stderr:
        log.debug("%s stderr: %s", argv[0], stderr)
    if proc.returncode != 0:
        first = stderr.splitlines()[0] if stderr else "no message"
        raise ExternalProgramError(
            f"{argv[0]} failed with exit code {proc.returncode} on {what}: {first}", stderr=stderr
        )
    return proc
