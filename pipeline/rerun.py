"""Rerun state: what each input became, so a rerun with the same source, settings, hints and version does nothing new."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline import __version__, atomic
from pipeline.flags import FlagName
from pipeline.manifest import ManifestError, load_manifest
from pipeline.report import DocumentRecord
from pipeline.split import DossierHint

STATE = ".digitize"


class _Saved(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SavedDocument(_Saved):
    name: str
    code: str | None
    source_pages: list[int]
    removed_blank_pages: list[int]
    flags: dict[FlagName, int]
    pages: int
    mean_confidence: float | None
    pdf: str | None  # relative to the output folder
    manifest: str
    manifest_sha256: str


class InputState(_Saved):
    """One input's outputs, and what they were made from."""

    source_sha256: str
    settings_sha256: str
    pipeline_version: str
    hints: list[DossierHint]
    # The pages not read by the default engine, as (page index, engine name); absent in older state.
    ocr_routing: list[tuple[int, str]] = []
    documents: list[SavedDocument]


def state_path(out_dir: Path, stem: str) -> Path:
    return out_dir / STATE / f"{stem}.json"


def save_state(
    out_dir: Path, stem: str, *, source_sha256: str, settings_digest: str, hints: list[DossierHint],
    ocr_routing: list[tuple[int, str]], written: list[DocumentRecord],
) -> None:  # fmt: skip
    """Remember what this input became, so a rerun can tell it is already done."""
    state = InputState(
        source_sha256=source_sha256,
        settings_sha256=settings_digest,
        pipeline_version=__version__,
        hints=hints,
        ocr_routing=ocr_routing,
        documents=[
            SavedDocument(
                name=doc.name, code=doc.code, source_pages=doc.source_pages, removed_blank_pages=doc.removed_blank_pages,
                flags=doc.flags, pages=doc.pages, mean_confidence=doc.mean_confidence,
                pdf=str(doc.pdf.relative_to(out_dir)) if doc.pdf else None,
                manifest=str(doc.manifest.relative_to(out_dir)),
                manifest_sha256=atomic.sha256_file(doc.manifest),
            )  # fmt: skip
            for doc in written
        ],
    )
    atomic.write_text(state_path(out_dir, stem), state.model_dump_json(indent=2) + "\n")


def up_to_date(
    out_dir: Path, stem: str, input_path: Path, *, source_sha256: str, settings_digest: str, hints: list[DossierHint],
    ocr_routing: list[tuple[int, str]],
) -> list[DocumentRecord] | None:
    """The documents from an earlier run, if from the same source, settings, hints, OCR routing and version, and intact."""
    try:
        state = InputState.model_validate_json(state_path(out_dir, stem).read_bytes())
    except (OSError, ValidationError):
        return None
    current = (
        state.source_sha256 == source_sha256
        and state.settings_sha256 == settings_digest
        and state.pipeline_version == __version__
        and state.hints == hints
        and state.ocr_routing == ocr_routing
    )
    if not current:
        return None
    documents = []
    for saved in state.documents:
        manifest_path = out_dir / saved.manifest
        pdf = out_dir / saved.pdf if saved.pdf else None
        try:
            if atomic.sha256_file(manifest_path) != saved.manifest_sha256:
                return None
            manifest = load_manifest(manifest_path.read_bytes(), origin=str(manifest_path))
            if pdf and atomic.sha256_file(pdf) != manifest.output.pdf_sha256:
                return None
        except (OSError, ManifestError):
            return None
        documents.append(DocumentRecord(
            input=input_path, name=saved.name, code=saved.code, source_pages=list(saved.source_pages),
            removed_blank_pages=list(saved.removed_blank_pages), flags=dict(saved.flags), pdf=pdf,
            manifest=manifest_path, pages=saved.pages, mean_confidence=saved.mean_confidence, up_to_date=True,
        ))  # fmt: skip
    return documents
