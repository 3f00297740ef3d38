"""What a batch became: its documents and rejections, and report.json describing them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import __version__, atomic
from pipeline.flags import FlagName

REPORT_SCHEMA = "digitize.report/1"


@dataclass(frozen=True)
class DocumentRecord:
    """A dossier written out: to records/ when clean, to manual/<name>/ when flagged."""

    input: Path
    name: str
    code: str | None
    source_pages: list[int]
    removed_blank_pages: list[int]
    flags: dict[FlagName, int]  # flag -> how many pieces of evidence
    pdf: Path | None
    manifest: Path
    pages: int
    mean_confidence: float | None
    up_to_date: bool = False


@dataclass(frozen=True)
class Rejection:
    """An input that could not be processed, with the one-line reason staff will see."""

    input: Path
    reason: str
    exit_code: int


@dataclass
class BatchReport:
    documents: list[DocumentRecord] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)

    def flag_counts(self) -> dict[FlagName, int]:
        counts: dict[FlagName, int] = {}
        for doc in self.documents:
            for flag in doc.flags:
                counts[flag] = counts.get(flag, 0) + 1
        return dict(sorted(counts.items()))


def write_report(report: BatchReport, out_dir: Path) -> None:
    """report.json in `out_dir`: every document and rejection, paths relative to `out_dir`."""

    def rel(path: Path | None) -> str | None:
        return str(path.relative_to(out_dir)) if path else None

    body = {
        "schema": REPORT_SCHEMA,
        "pipeline_version": __version__,
        "documents": [
            {
                "input": str(doc.input), "code": doc.code, "source_pages": doc.source_pages,
                "flags": sorted(doc.flags), "pdf": rel(doc.pdf), "name": doc.name,
                "manifest": rel(doc.manifest), "removed_blank_pages": doc.removed_blank_pages,
                "mean_confidence": doc.mean_confidence, "up_to_date": doc.up_to_date,
            }  # fmt: skip
            for doc in report.documents
        ],
        "rejected": [{"input": str(r.input), "reason": r.reason} for r in report.rejected],
        "flag_counts": report.flag_counts(),
    }
    atomic.write_text(out_dir / "report.json", json.dumps(body, indent=2, ensure_ascii=False) + "\n")
