"""Which OCR models and configs read a page, pinned by checksum in ocr_models/manifest.json."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline._exec import tesseract
from pipeline.atomic import sha256_file, write_text
from pipeline.ocr import OCR_CONFIG, USER_WORDS

log = logging.getLogger(__name__)

MODELS_DIR = OCR_CONFIG.parent
MANIFEST = MODELS_DIR / "manifest.json"


@dataclass(frozen=True)
class ModelFile:
    name: str
    sha256: str
    bytes: int
    pinned: bool  # the checksum is the one in ocr_models/manifest.json


def _files(languages: str) -> list[Path]:
    return [*tesseract.require_languages(languages), OCR_CONFIG, USER_WORDS]


def _pinned() -> dict[str, str]:
    try:
        entries = json.loads(MANIFEST.read_text("utf-8"))["files"]
    except (OSError, ValueError, KeyError):
        return {}
    return {entry["name"]: entry["sha256"] for entry in entries}


def current_models(languages: str) -> list[ModelFile]:
    """The model files this run uses, and whether each matches the pinned checksum."""
    pinned = _pinned()
    found = []
    for path in _files(languages):
        digest = sha256_file(path)
        match = pinned.get(path.name) == digest
        if not match:
            log.warning("%s differs from the checksum pinned in %s", path, MANIFEST)
        found.append(ModelFile(path.name, digest, path.stat().st_size, match))
    return found


def write_manifest(languages: str) -> Path:
    """Pin the installed models' checksums (run after a deliberate model upgrade)."""
    files = [
        {"name": m.name, "sha256": m.sha256, "bytes": m.bytes}
        for m in current_models(languages)
    ]
    body = {"tesseract": tesseract.info().version, "files": files}
    write_text(MANIFEST, json.dumps(body, indent=2, ensure_ascii=False) + "\n")
    return MANIFEST


def as_records(models: list[ModelFile]) -> list[dict]:
    return [asdict(m) for m in models]
