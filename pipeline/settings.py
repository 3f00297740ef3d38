"""Validated, frozen settings for the pipeline, loaded from TOML files."""

from __future__ import annotations

import re
import tomllib
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, ValidationError, field_validator

from pipeline.errors import ConfigError

# Package data, so an installed (non-editable) package finds it as a checkout does.
DEFAULT_CONFIG = files("pipeline") / "config" / "default.toml"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OcrSettings(_Section):
    languages: str = Field(pattern=r"^[A-Za-z_]+(\+[A-Za-z_]+)*$")
    page_timeout_s: float = Field(gt=0)


class OutputSettings(_Section):
    pdfa: Literal["1b", "2b"]
    profile: Literal["compact", "archival"]
    jpeg_quality: int = Field(ge=30, le=100)
    agency: str


class GeometrySettings(_Section):
    max_skew_deg: float = Field(gt=0, le=45)
    min_skew_deg: float = Field(ge=0)
    orientation_margin: float = Field(ge=0)


class BlankSettings(_Section):
    max_marks: int = Field(ge=0)
    max_ink_fraction: float = Field(ge=0, le=1)
    ink_contrast: float = Field(gt=0, lt=1)


class LimitSettings(_Section):
    max_page_pixels: int = Field(gt=0)
    max_pages: int = Field(gt=0)
    max_input_bytes: int = Field(gt=0)
    rasterize_timeout_s: float = Field(gt=0)


class SplitSettings(_Section):
    code_pattern: str
    separator_prefix: str
    keep_receipt: bool
    drop_blank: bool

    @field_validator("code_pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return pattern


class TriageSettings(_Section):
    oversize_tolerance: float = Field(ge=0)
    thick_record_pages: int = Field(gt=0)
    min_confidence: float = Field(ge=0, le=100)
    min_syllable_share: float = Field(ge=0, le=1)
    min_words: int = Field(ge=0)
    drawing_min_line_share: float = Field(ge=0, le=1)
    drawing_max_mark_density: float = Field(ge=0)


class SigningSettings(_Section):
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

    @property
    def configured(self) -> bool:
        return self.enabled and bool(self.pkcs12 or self.pkcs11_module)


class ServiceSettings(_Section):
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


class ReviewSettings(_Section):
    """The review station (`digitize review serve`): who may sign in."""

    users_file: str = Field(min_length=1)
    session_hours: float = Field(gt=0, le=24 * 7)
    preview_width: int = Field(ge=1000, le=4000)


class Settings(_Section):
    """Every knob, with its default in pipeline/config/default.toml (the one place defaults live)."""

    ocr: OcrSettings
    output: OutputSettings
    geometry: GeometrySettings
    blank: BlankSettings
    limits: LimitSettings
    split: SplitSettings
    triage: TriageSettings
    signing: SigningSettings
    service: ServiceSettings
    review: ReviewSettings

    def with_overrides(self, overrides: dict[str, Any]) -> Settings:
        """Return a copy with dotted keys (``"output.pdfa"``) replaced, validated again."""
        data = self.model_dump()
        for dotted, value in overrides.items():
            section, _, key = dotted.partition(".")
            if section not in data or key not in data[section]:
                raise ConfigError(f"unknown setting {dotted!r}")
            data[section][key] = value
        return _validate(data, origin="overrides")


def _validate(data: dict[str, Any], *, origin: str) -> Settings:
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{origin}: {problems}") from None


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(*paths: Path) -> Settings:
    """Read the default TOML, then each given file on top of it, and validate once."""
    data: dict[str, Any] = {}
    origin = []
    for path in (DEFAULT_CONFIG, *map(Path, paths)):
        try:
            with path.open("rb") as fh:
                data = _merge(data, tomllib.load(fh))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read settings: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        origin.append(str(path))
    return _validate(data, origin=" + ".join(origin))
