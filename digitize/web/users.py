"""Review station accounts: names, roles and salted scrypt hashes in one JSON file (review.users_file)."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pipeline import atomic
from pipeline.errors import ConfigError, UsageError

USER_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
# scrypt's cost: about 50 ms and 16 MiB a check, so guessing is slow and a sign-in is not.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MIN_PASSWORD = 8


class Role(StrEnum):
    REVIEWER = "reviewer"  # acts on items and quarantined inputs
    SUPERVISOR = "supervisor"  # the same, and sees every reviewer's actions


@dataclass(frozen=True)
class User:
    name: str
    role: Role


def _hash(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=64 * 1024 * 1024)


def _read(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"review.users_file {path}: not a users file ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"review.users_file {path}: not a users file (expected an object of names)")
    return data


def add_user(path: Path, name: str, *, role: Role, password: str) -> None:
    """Add or update `name`; the password is stored only as a salted scrypt hash."""
    if not USER_NAME.fullmatch(name):
        raise UsageError(f"{name!r}: a user name is 1 to 64 of a-z, 0-9, '.', '_' and '-'")
    if len(password) < MIN_PASSWORD:
        raise UsageError(f"{name}: the password must have at least {MIN_PASSWORD} characters")
    users = _read(path)
    salt = secrets.token_bytes(16)
    users[name] = {
        "role": role.value, "kdf": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P,
        "salt": salt.hex(), "hash": _hash(password, salt).hex(),
    }  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, json.dumps(users, indent=2) + "\n")
    path.chmod(0o600)


def current(path: Path, name: str) -> User | None:
    """The user as the users file says now: a removed or demoted account loses what its session held."""
    entry = _read(path).get(name)
    return User(name, Role(entry["role"])) if entry else None


def check_password(path: Path, name: str, password: str) -> User | None:
    """The user, when `password` is theirs; None otherwise (unknown names cost the same time)."""
    entry = _read(path).get(name)
    salt = bytes.fromhex(entry["salt"]) if entry else b"\0" * 16
    expected = bytes.fromhex(entry["hash"]) if entry else b""
    found = _hash(password, salt)
    if entry and hmac.compare_digest(found, expected):
        return User(name, Role(entry["role"]))
    return None
