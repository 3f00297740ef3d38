"""Settings for the application: TOML files, then DIGITIZE_<SECTION>_<KEY> from the environment."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path
from typing import Literal

from pydantic import Field, NonNegativeFloat

from pipeline.settings import DEFAULT_CONFIG, Section, Settings, read_toml, validate_settings

ENV_PREFIX = "DIGITIZE_"
# The application's own defaults, beside the pipeline's (package data, as theirs).
APP_DEFAULTS = files("digitize") / "config" / "service.toml"


class SigningSettings(Section):
    """The agency's signing key and what `digitize verify` trusts. The PIN or passphrase is never a setting."""

    enabled: bool
    pkcs12: str
    pkcs11_module: str
    pkcs11_token: str
    pkcs11_key: str
    timestamp_url: str
    reason: str
    location: str
    trust_roots: list[str]
    appearance: Literal["decree30", "invisible"]
    copy_form: str = Field(min_length=1)

    @property
    def configured(self) -> bool:
        return self.enabled and bool(self.pkcs12 or self.pkcs11_module)


class ServiceSettings(Section):
    """Where the nightly service reads and writes; the pipeline itself never looks here."""

    inbox: str
    archive: str
    review: str
    incomplete_after_h: float = Field(gt=0)
    claim_lease_s: float = Field(gt=0)
    claim_settle_s: float = Field(ge=0)
    schedule: str
    timezone: str
    retention_days: float = Field(ge=0)
    work_dir: str
    retry_delays_s: list[NonNegativeFloat] = Field(max_length=10)
    held_wait_max_s: float = Field(ge=0)
    batch_deployment: str
    batch_start_grace_s: float = Field(gt=0)


class ReviewSettings(Section):
    """The review station (`digitize review serve`): who may sign in."""

    users_file: str = Field(min_length=1)
    session_hours: float = Field(gt=0, le=24 * 7)
    preview_width: int = Field(ge=1000, le=4000)


class AppSettings(Settings):
    """The pipeline's settings and the application's: signing, the nightly service, the review station."""

    signing: SigningSettings
    service: ServiceSettings
    review: ReviewSettings


def load_app_settings(*paths: Path) -> AppSettings:
    """Both sets of defaults, then each given file on top, validated once."""
    data, origin = read_toml(DEFAULT_CONFIG, APP_DEFAULTS, *paths)
    return validate_settings(AppSettings, data, origin=origin)


def parse_value(raw: str) -> object:
    """Read a value as TOML would (numbers, true/false, quoted strings); anything else is a string."""
    try:
        return tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        return raw


def env_overrides(settings: Settings, env: Mapping[str, str]) -> dict[str, object]:
    """DIGITIZE_SERVICE_INBOX=s3://... sets service.inbox; unknown DIGITIZE_ names are ignored."""
    overrides = {}
    for section, values in settings.model_dump().items():
        for key in values:
            name = f"{ENV_PREFIX}{section}_{key}".upper()
            if name in env:
                overrides[f"{section}.{key}"] = parse_value(env[name])
    return overrides


def app_settings(config: list[Path] | None, env: Mapping[str, str], overrides: Mapping[str, object]) -> AppSettings:
    """Defaults, site files, environment, then command-line options, validated once."""
    settings = load_app_settings(*(config or []))
    merged = {**env_overrides(settings, env), **{k: v for k, v in overrides.items() if v is not None}}
    return settings.with_overrides(merged)
