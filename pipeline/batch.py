"""Process scan inputs into records: pages in parallel worker processes, records assembled in order."""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import logging
import multiprocessing
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from pipeline import __version__, atomic, models
from pipeline._exec import tesseract
from pipeline.assemble import RecordMetadata, assemble_pdfa
from pipeline.errors import DigitizeError, InputError, OutputError
from pipeline.page import PageResult, process_page
from pipeline.settings import Settings
from pipeline.sources import PageRef, ScanInput, open_input

log = logging.getLogger(__name__)

SCHEMA = "digitize.record/1"
# Pages queued per worker: enough to keep every core busy while a record is assembled,
# few enough that decoded pages never pile up.
QUEUE_PER_WORKER = 2


@dataclass(frozen=True)
class Record:
    """An input that became a record: PDF/A, manifest and text, all in `out_dir`."""

    input: Path
    name: str
    pdf: Path
    manifest: Path
    text: Path
    pages: int
    blank_pages: int
    flags: dict[str, int]
    mean_confidence: float | None
    up_to_date: bool = False  # nothing to do: the same source was already processed


@dataclass(frozen=True)
class Rejection:
    """An input that could not be processed, with the one-line reason staff will see."""

    input: Path
    reason: str
    exit_code: int


Outcome = Record | Rejection


@dataclass
class _Job:
    name: str
    scan: ScanInput
    work: Path
    source: dict
    results: dict[int, PageResult] = field(default_factory=dict)
    failure: DigitizeError | None = None

    @property
    def finished(self) -> bool:
        return self.failure is not None or len(self.results) == len(self.scan.pages)


def process_inputs(
    inputs: Sequence[Path],
    out_dir: Path,
    settings: Settings,
    *,
    jobs: int,
    on_pages: Callable[[int], None] | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Turn each input into `<out_dir>/<name>.pdf|.json|.txt`, or a Rejection saying why.

    One bad input never stops the others. `on_pages(n)` reports pages as they are
    known (negative n: pages that will not be done after all); `on_outcome` each result.
    """
    tesseract.require_languages(settings.ocr.languages)
    model_files = models.as_records(models.current_models(settings.ocr.languages))
    settings_digest = hashlib.sha256(settings.model_dump_json().encode()).hexdigest()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out_dir}: cannot create output folder: {exc.strerror or exc}") from None
    outcomes: dict[Path, Outcome] = {}

    def finish(outcome: Outcome) -> None:
        outcomes[outcome.input] = outcome
        if on_outcome:
            on_outcome(outcome)

    with tempfile.TemporaryDirectory(prefix="digitize-") as tmp, _executor(jobs) as pool:
        pending_jobs: list[_Job] = []
        for path, name in zip(inputs, output_names(inputs), strict=True):
            try:
                scan = open_input(path, settings.limits)
                source = _describe_source(scan)
            except InputError as exc:
                finish(Rejection(path, str(exc), exc.exit_code))
                continue
            existing = _up_to_date(out_dir, name, path, source["sha256"], settings_digest)
            if existing:
                finish(existing)
                continue
            work = Path(tmp) / f"{len(pending_jobs):04d}"
            work.mkdir()
            pending_jobs.append(_Job(name, scan, work, source))
            if on_pages:
                on_pages(len(scan.pages))
        _run_pages(
            pool, pending_jobs, settings, jobs=jobs, on_pages=on_pages,
            on_done=lambda job: finish(_finish_job(job, out_dir, settings, model_files, settings_digest)),
        )  # fmt: skip
    return [outcomes[path] for path in inputs]


def output_names(inputs: Sequence[Path]) -> list[str]:
    """Name each output after its input; inputs sharing a stem keep their extension apart."""
    stems = [Path(p).stem if Path(p).suffix else Path(p).name for p in inputs]
    names = []
    for path, stem in zip(inputs, stems, strict=True):
        clash = stems.count(stem) > 1
        names.append(f"{stem}-{Path(path).suffix.lstrip('.').lower()}" if clash and Path(path).suffix else stem)
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return unique


def _run_pages(
    pool: cf.Executor,
    pending_jobs: list[_Job],
    settings: Settings,
    *,
    jobs: int,
    on_pages: Callable[[int], None] | None,
    on_done: Callable[[_Job], None],
) -> None:
    tasks: Iterator[tuple[_Job, PageRef]] = ((job, ref) for job in pending_jobs for ref in job.scan.pages)
    in_flight: dict[cf.Future, tuple[_Job, PageRef]] = {}
    done_jobs: set[int] = set()
    window = max(1, jobs) * QUEUE_PER_WORKER

    def top_up() -> None:
        for job, ref in tasks:
            if job.failure is not None:
                continue
            in_flight[pool.submit(process_page, ref, job.work, settings)] = (job, ref)
            if len(in_flight) >= window:
                return

    top_up()
    while in_flight:
        done, _ = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
        for future in done:
            job, ref = in_flight.pop(future)
            _collect(job, ref, future, on_pages)
        # Records are finished in input order, so outputs appear in a predictable sequence.
        for index, job in enumerate(pending_jobs):
            if index in done_jobs:
                continue
            if not job.finished:
                break
            done_jobs.add(index)
            if job.failure is not None and on_pages:
                on_pages(-(len(job.scan.pages) - len(job.results)))
            on_done(job)
        top_up()


def _collect(job: _Job, ref: PageRef, future: cf.Future, on_pages: Callable[[int], None] | None) -> None:
    if job.failure is not None:
        return
    try:
        job.results[ref.index] = future.result()
    except DigitizeError as exc:
        job.failure = exc
        return
    except Exception as exc:  # a bug must cost one input, not the night's batch
        log.exception("unexpected error on %s page %d", ref.path, ref.frame + 1)
        job.failure = DigitizeError(f"{ref.path}: internal error on page {ref.frame + 1}: {exc!r}")
        return
    if on_pages:
        on_pages(0)


def _finish_job(
    job: _Job, out_dir: Path, settings: Settings, model_files: list[dict], settings_digest: str
) -> Outcome:
    try:
        if job.failure is not None:
            raise job.failure
        return _write_record(job, out_dir, settings, model_files, settings_digest)
    except DigitizeError as exc:
        return Rejection(job.scan.path, str(exc) if isinstance(exc, InputError) else f"{job.scan.path}: {exc}", exc.exit_code)
    finally:
        shutil.rmtree(job.work, ignore_errors=True)


def _write_record(
    job: _Job, out_dir: Path, settings: Settings, model_files: list[dict], settings_digest: str
) -> Record:
    pages = [job.results[i] for i in sorted(job.results)]
    created = datetime.now(timezone.utc).replace(microsecond=0)
    pdf_path, json_path, txt_path = (out_dir / f"{job.name}{ext}" for ext in (".pdf", ".json", ".txt"))
    text = "\f".join(page.text for page in pages)
    atomic.write_text(txt_path, text + "\n")
    started = datetime.now(timezone.utc)
    assemble_pdfa(
        [Path(page.page_pdf) for page in pages],
        pdf_path,
        flavour=settings.output.pdfa,
        metadata=RecordMetadata(
            title=job.name, created=created, agency=settings.output.agency,
            source_sha256=job.source["sha256"],
        ),
    )  # fmt: skip
    assemble_s = (datetime.now(timezone.utc) - started).total_seconds()
    timings: dict[str, float] = {}
    for page in pages:
        for stage, seconds in page.timings.items():
            timings[stage] = round(timings.get(stage, 0.0) + seconds, 4)
    timings["assemble"] = round(assemble_s, 4)
    flags: dict[str, int] = {}
    for page in pages:
        for flag in page.flags:
            flags[flag] = flags.get(flag, 0) + 1
    confidences = [p.ocr_confidence for p in pages if p.ocr_confidence is not None]
    mean_conf = round(sum(confidences) / len(confidences), 2) if confidences else None
    manifest = {
        "schema": SCHEMA,
        "pipeline_version": __version__,
        "name": job.name,
        "created": created.isoformat(),
        "source": job.source,
        "output": {
            "pdf": pdf_path.name,
            "pdf_sha256": atomic.sha256_file(pdf_path),
            "pdf_bytes": pdf_path.stat().st_size,
            "pdfa": settings.output.pdfa,
            "profile": settings.output.profile,
            "text": txt_path.name,
            "text_sha256": atomic.sha256_file(txt_path),
        },
        "ocr": {
            "engine": f"tesseract {tesseract.info().version}",
            "languages": settings.ocr.languages,
            "models": model_files,
            "mean_confidence": mean_conf,
        },
        "settings_sha256": settings_digest,
        "flags": flags,
        "pages": [_page_record(page) for page in pages],
        "timings_s": timings,
    }
    # The manifest goes last: its presence says the record is complete.
    atomic.write_text(json_path, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return Record(
        input=job.scan.path, name=job.name, pdf=pdf_path, manifest=json_path, text=txt_path,
        pages=len(pages), blank_pages=sum(p.blank for p in pages), flags=flags, mean_confidence=mean_conf,
    )  # fmt: skip


def _page_record(page: PageResult) -> dict:
    record = asdict(page)
    for internal in ("page_pdf", "text"):
        record.pop(internal)
    return record


def _describe_source(scan: ScanInput) -> dict:
    files = [
        {"name": path.name, "sha256": atomic.sha256_file(path), "bytes": path.stat().st_size}
        for path in scan.files
    ]
    if scan.kind == "file":
        digest = files[0]["sha256"]
    else:
        # A folder's identity is its files' names and contents, in page order.
        lines = "".join(f"{f['name']}\t{f['sha256']}\n" for f in files)
        digest = hashlib.sha256(lines.encode()).hexdigest()
    return {"path": str(scan.path), "kind": str(scan.kind), "sha256": digest, "pages": len(scan.pages), "files": files}


def _up_to_date(
    out_dir: Path, name: str, input_path: Path, source_sha256: str, settings_digest: str
) -> Record | None:
    """The record from an earlier run, if it came from the same source, settings and version."""
    json_path = out_dir / f"{name}.json"
    try:
        manifest = json.loads(json_path.read_text("utf-8"))
        pdf_path = out_dir / manifest["output"]["pdf"]
        current = (
            manifest["source"]["sha256"] == source_sha256
            and manifest["settings_sha256"] == settings_digest
            and manifest["pipeline_version"] == __version__
            and atomic.sha256_file(pdf_path) == manifest["output"]["pdf_sha256"]
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not current:
        return None
    pages = manifest["pages"]
    return Record(
        input=input_path, name=name, pdf=pdf_path, manifest=json_path,
        text=out_dir / manifest["output"]["text"], pages=len(pages),
        blank_pages=sum(1 for p in pages if p["blank"]), flags=manifest["flags"],
        mean_confidence=manifest["ocr"]["mean_confidence"], up_to_date=True,
    )  # fmt: skip


class _InlineExecutor(cf.Executor):
    """One job: run pages in this process. Cheaper than a pool, and faults can be injected."""

    def submit(self, fn, /, *args, **kwargs):  # noqa: D401 - Executor API
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the caller through the future
            future.set_exception(exc)
        return future


def _executor(jobs: int) -> cf.Executor:
    if jobs <= 1:
        return _InlineExecutor()
    # forkserver: workers start clean, without the parent's threads or open files.
    return cf.ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("forkserver"))
