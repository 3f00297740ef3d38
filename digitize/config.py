"""Settings for the application: TOML files, then DIGITIZE_<SECTION>_<KEY> from the environment."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path

from pipeline.settings import Settings, load_settings

ENV_PREFIX = "DIGITIZE_"


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


def app_settings(config: list[Path] | None, env: Mapping[str, str], overrides: Mapping[str, object]) -> Settings:
    """Defaults, site files, environment, then command-line options, validated once."""
    settings = load_settings(*(config or []))
    merged = {**env_overrides(settings, env), **{k: v for k, v in overrides.items() if v is not None}}
    return settings.with_overrides(merged)
