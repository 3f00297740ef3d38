"""Process scan inputs into dossier records: pages in parallel worker processes, documents written in order."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from pipeline import models
from pipeline._exec import tesseract
from pipeline.errors import DigitizeError, InputError, OutputError, writing_to
from pipeline.manifest import ModelRecord, Provenance
from pipeline.ocr import TESSERACT, EngineChooser, OcrEngine, default_chooser
from pipeline.pool import page_executor
from pipeline.record import MANUAL, RECORDS, Names, RecordContext, describe_source, write_documents
from pipeline.report import BatchReport, DocumentRecord, Rejection, write_report
from pipeline.rerun import STATE, save_state, up_to_date
from pipeline.schedule import InputJob, run_pages
from pipeline.settings import Settings
from pipeline.signing import RecordSigner, SigningError
from pipeline.sources import open_input
from pipeline.split import DossierHint

# What callers of the pipeline use, importable from its entry point.
__all__ = ["BatchReport", "DocumentRecord", "Provenance", "Rejection", "output_stems", "process_inputs"]


def process_inputs(
    inputs: Sequence[Path],
    out_dir: Path,
    settings: Settings,
    *,
    jobs: int,
    hints: Mapping[str, Sequence[DossierHint]] | None = None,
    on_pages: Callable[[int], None] | None = None,
    signer: RecordSigner | None = None,
    work_dir: Path | None = None,
    provenance: Mapping[str, Provenance] | None = None,
    choose_engine: EngineChooser = default_chooser,
    input_trust_roots: Sequence = (),
) -> BatchReport:
    """Split each input into dossiers under `out_dir`, and describe the batch in report.json.

    One bad input never stops the others. `hints` maps an input's file name to the
    station's dossier page ranges. `on_pages(n)` reports pages as they are known
    (negative n: pages that will not be done after all), and 0 for each page done.
    With a `signer`, every PDF is signed; the manifest records it with and without the signature.
    Page work files go to a temporary folder in `work_dir` (default: the system's). A full or
    read-only disk raises OutputError naming the folder: it is no input's fault.
    A signed PDF input's signatures are checked against the certificates `input_trust_roots`.
    `provenance` maps an input's file name to where it came from; its manifests then say that
    instead of the input's local path, which is only a work folder.
    `choose_engine(page)` picks the OCR engine for each page (default: Tesseract for all).
    """
    tesseract.require_languages(settings.ocr.languages)
    # A different signing key makes different records; where verify looks for trust does not.
    identity = settings.pipeline_json() + (signer.certificate_sha256 if signer else "")
    tesseract_models = models.current_models(settings.ocr.languages)
    context = RecordContext(
        out_dir, settings, [ModelRecord.model_validate(m) for m in models.as_records(tesseract_models)],
        hashlib.sha256(identity.encode()).hexdigest(), signer,
        {TESSERACT.name: (TESSERACT, models.engine_record(TESSERACT, settings.ocr.languages, known=tesseract_models))},
        tuple(input_trust_roots),
    )  # fmt: skip
    try:
        for folder in (out_dir / RECORDS, out_dir / MANUAL, out_dir / STATE):
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out_dir}: cannot create output folder: {exc.strerror or exc}") from None
    report = BatchReport()
    names = Names()
    pool = page_executor(jobs)
    with writing_to(work_dir or tempfile.gettempdir()):
        scratch = tempfile.TemporaryDirectory(prefix="digitize-", dir=work_dir)
    with scratch as tmp:
        pending: list[InputJob] = []
        for path, stem in zip(inputs, output_stems(inputs), strict=True):
            try:
                scan = open_input(path, settings.limits)
                source = describe_source(scan, (provenance or {}).get(Path(path).name))
            except InputError as exc:
                report.rejected.append(Rejection(path, str(exc), exc.exit_code))
                continue
            input_hints = list((hints or {}).get(Path(path).name, ()))
            engines = {ref.index: choose_engine(ref) for ref in scan.pages}
            for engine in engines.values():
                context.use_engine(engine)
            earlier = up_to_date(
                out_dir, stem, path, source_sha256=source.sha256, settings_digest=context.settings_digest, hints=input_hints,
                ocr_routing=_routing(engines),
            )  # fmt: skip
            if earlier is not None:
                names.reserve(doc.name for doc in earlier)
                report.documents.extend(earlier)
                continue
            work = Path(tmp) / f"{len(pending):04d}"
            work.mkdir()
            pending.append(InputJob(stem, scan, work, source, input_hints, engines))
            if on_pages:
                on_pages(len(scan.pages))

        def finish(job: InputJob) -> None:
            try:
                if job.failure is not None:
                    raise job.failure
                with writing_to(out_dir):
                    written = write_documents(job, context, names)
                    save_state(
                        out_dir, job.stem, source_sha256=job.source.sha256, settings_digest=context.settings_digest,
                        hints=job.hints, ocr_routing=_routing(job.engines), written=written,
                    )  # fmt: skip
                report.documents.extend(written)
            except (OutputError, SigningError):
                # Our disk, token or timestamp server failed, not the input: the run fails and
                # can be retried, rather than the input being rejected as bad.
                raise
            except DigitizeError as exc:
                reason = str(exc) if isinstance(exc, InputError) else f"{job.scan.path}: {exc}"
                report.rejected.append(Rejection(job.scan.path, reason, exc.exit_code))
            finally:
                shutil.rmtree(job.work, ignore_errors=True)

        run_pages(pool, pending, settings, jobs=jobs, on_pages=on_pages, on_done=finish)
    order = {Path(p): i for i, p in enumerate(inputs)}
    report.documents.sort(key=lambda d: order.get(d.input, len(order)))
    write_report(report, out_dir)
    return report


def _routing(engines: Mapping[int, OcrEngine]) -> list[tuple[int, str]]:
    """The pages not read by Tesseract: a rerun routed otherwise is not up to date."""
    return [(index, engine.name) for index, engine in sorted(engines.items()) if engine.name != TESSERACT.name]


def output_stems(inputs: Sequence[Path]) -> list[str]:
    """Name each input's outputs after it; inputs sharing a stem keep their extension apart."""
    stems = [Path(p).stem if Path(p).suffix else Path(p).name for p in inputs]
    names = []
    for path, stem in zip(inputs, stems, strict=True):
        clash = stems.count(stem) > 1
        names.append(f"{stem}-{Path(path).suffix.lstrip('.').lower()}" if clash and Path(path).suffix else stem)
    return names
