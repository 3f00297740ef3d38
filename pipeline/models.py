"""Which OCR models and configs read a page, pinned by checksum in pipeline/ocr_models/manifest.json."""

from __future__ import annotations

import json
import logging
import site
import sysconfig
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from pipeline._exec import tesseract
from pipeline.atomic import sha256_file, write_text
from pipeline.errors import OutputError
from pipeline.ocr import TESSERACT, OcrEngine

log = logging.getLogger(__name__)

MANIFEST = resources.files("pipeline") / "ocr_models" / "manifest.json"


@dataclass(frozen=True)
class ModelFile:
    name: str
    sha256: str
    bytes: int
    pinned: bool  # the checksum is the one in pipeline/ocr_models/manifest.json


def _pinned() -> dict[str, str]:
    try:
        entries = json.loads(MANIFEST.read_text("utf-8"))["files"]
    except (OSError, ValueError, KeyError):
        return {}
    return {entry["name"]: entry["sha256"] for entry in entries}


def current_models(languages: str, *, engine: OcrEngine = TESSERACT) -> list[ModelFile]:
    """The model files an engine uses, and whether each matches the checksum pinned for Tesseract's."""
    pinned = _pinned()
    found = []
    for source in engine.model_files(languages):
        with resources.as_file(source) as path:
            digest = sha256_file(path)
            size = path.stat().st_size
        match = pinned.get(path.name) == digest
        if not match and engine == TESSERACT:  # the pins are Tesseract's
            log.warning("%s differs from the checksum pinned in %s", path, MANIFEST)
        found.append(ModelFile(path.name, digest, size, match))
    return found


def _source_pin_file() -> Path:
    """The pin file to rewrite: the checkout's, never an installed copy that the next install replaces."""
    installed = [Path(p) for p in (*site.getsitepackages(), site.getusersitepackages(),
                                   sysconfig.get_path("purelib"), sysconfig.get_path("platlib"))]  # fmt: skip
    pin_file = Path(str(MANIFEST)).resolve()
    if not isinstance(MANIFEST, Path) or any(pin_file.is_relative_to(p.resolve()) for p in installed):
        raise OutputError(
            f"{pin_file}: will not pin model checksums in an installed package (the next install "
            "replaces it); run `digitize models --write` in an editable checkout (pip install -e .) "
            "and commit pipeline/ocr_models/manifest.json"
        )
    return pin_file


def write_manifest(languages: str) -> Path:
    """Pin the installed models' checksums (run after a deliberate model upgrade)."""
    pin_file = _source_pin_file()
    files = [
        {"name": m.name, "sha256": m.sha256, "bytes": m.bytes}
        for m in current_models(languages)
    ]
    body = {"tesseract": tesseract.info().version, "files": files}
    write_text(pin_file, json.dumps(body, indent=2, ensure_ascii=False) + "\n")
    return pin_file


def as_records(models: list[ModelFile]) -> list[dict]:
    return [asdict(m) for m in models]


@dataclass(frozen=True)
class EngineRecord:
    """The OCR engine that read a page, as the page's manifest record names it."""

    name: str
    version: str
    models: dict[str, str]  # model file name -> sha256


def engine_record(engine: OcrEngine, languages: str, *, known: list[ModelFile] | None = None) -> EngineRecord:
    """`known`: the engine's model files when already checksummed, to spare hashing them again."""
    files = known if known is not None else current_models(languages, engine=engine)
    return EngineRecord(engine.name, engine.version(), {m.name: m.sha256 for m in files})
