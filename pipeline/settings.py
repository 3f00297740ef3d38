"""Validated, frozen settings for the pipeline, loaded from TOML files."""

from __future__ import annotations

import re
import tomllib
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.errors import ConfigError
from pipeline.pdfsource import ExistingText

SettingsT = TypeVar("SettingsT", bound="Settings")
# Package data, so an installed (non-editable) package finds it as a checkout does.
DEFAULT_CONFIG = files("pipeline") / "config" / "default.toml"


class Section(BaseModel):
    """A table of settings: frozen, and a key not known is an error naming it."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class OcrSettings(Section):
    languages: str = Field(pattern=r"^[A-Za-z_]+(\+[A-Za-z_]+)*$")
    page_timeout_s: float = Field(gt=0)
    existing_text: ExistingText = ExistingText.REPLACE


class OutputSettings(Section):
    pdfa: Literal["1b", "2b"]
    profile: Literal["compact", "archival"]
    jpeg_quality: int = Field(ge=30, le=100)
    agency: str


class GeometrySettings(Section):
    max_skew_deg: float = Field(gt=0, le=45)
    min_skew_deg: float = Field(ge=0)
    orientation_margin: float = Field(ge=0)


class BlankSettings(Section):
    max_marks: int = Field(ge=0)
    max_ink_fraction: float = Field(ge=0, le=1)
    ink_contrast: float = Field(gt=0, lt=1)


class LimitSettings(Section):
    max_page_pixels: int = Field(gt=0)
    max_pages: int = Field(gt=0)
    max_input_bytes: int = Field(gt=0)
    rasterize_timeout_s: float = Field(gt=0)


class SplitSettings(Section):
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


class StandardSettings(Section):
    min_dpi: float = Field(ge=0)
    require_colour: bool


class TriageSettings(Section):
    oversize_tolerance: float = Field(ge=0)
    thick_record_pages: int = Field(gt=0)
    min_confidence: float = Field(ge=0, le=100)
    min_syllable_share: float = Field(ge=0, le=1)
    min_words: int = Field(ge=0)
    drawing_min_curve_spread: float = Field(ge=0, le=1)
    drawing_plan_min_curve_spread: float = Field(ge=0, le=1)
    drawing_plan_min_short_rules: float = Field(ge=0)
    drawing_min_line_share: float = Field(ge=0, le=1)
    drawing_max_inner_rules: int = Field(ge=0)


class RetentionRule(Section):
    """How long a dossier is kept and who may read it (Decree 30 Annex VI Maintenance and Rights)."""

    maintenance: str = Field(min_length=1)
    rights: str = Field(min_length=1)


class RecordsSettings(Section):
    """Retention and access per procedure code, with the defaults for any other dossier."""

    maintenance: str = Field(min_length=1)
    rights: str = Field(min_length=1)
    procedures: dict[str, RetentionRule] = Field(default_factory=dict)

    def rule_for(self, procedure_code: str | None) -> RetentionRule:
        if procedure_code is not None and procedure_code in self.procedures:
            return self.procedures[procedure_code]
        return RetentionRule(maintenance=self.maintenance, rights=self.rights)


class Settings(Section):
    """Every knob of the processing library, with its default in pipeline/config/default.toml."""

    ocr: OcrSettings
    output: OutputSettings
    geometry: GeometrySettings
    blank: BlankSettings
    limits: LimitSettings
    split: SplitSettings
    triage: TriageSettings
    records: RecordsSettings
    standard: StandardSettings

    def with_overrides(self, overrides: dict[str, Any]) -> Self:
        """Return a copy with dotted keys (``"output.pdfa"``) replaced, validated again."""
        data = self.model_dump()
        for dotted, value in overrides.items():
            section, _, key = dotted.partition(".")
            if section not in data or key not in data[section]:
                raise ConfigError(f"unknown setting {dotted!r}")
            data[section][key] = value
        return validate_settings(type(self), data, origin="overrides")

    def pipeline_json(self) -> str:
        """The pipeline's own sections as JSON: what a record depends on (an application's
        sections, in a subclass, do not change a record)."""
        return self.model_dump_json(include=set(Settings.model_fields))


def validate_settings(model: type[SettingsT], data: dict[str, Any], *, origin: str) -> SettingsT:
    """Validate once; a bad value is a ConfigError naming the key."""
    try:
        return model.model_validate(data)
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
    data, origin = read_toml(DEFAULT_CONFIG, *paths)
    return validate_settings(Settings, data, origin=origin)


def read_toml(*paths: Path | Traversable) -> tuple[dict[str, Any], str]:
    """Each file's tables merged over the previous ones', and where they came from."""
    data: dict[str, Any] = {}
    origin = []
    for path in (path if isinstance(path, Traversable) else Path(path) for path in paths):
        try:
            with path.open("rb") as fh:
                data = _merge(data, tomllib.load(fh))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read settings: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        origin.append(str(path))
    return data, " + ".join(origin)
