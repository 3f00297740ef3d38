"""Process scan inputs into dossier records: pages in parallel worker processes, documents written in order."""

from __future__ import annotations

import concurrent.futures as cf
import functools
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from pipeline import __version__, atomic, models
from pipeline._exec import tesseract
from pipeline.assemble import RecordMetadata, WrittenRecord, write_record
from pipeline.errors import CorruptInput, DigitizeError, InputError, OutputError, TransientError, write_error, writing_to
from pipeline.ocr import TESSERACT, EngineChooser, OcrEngine, default_chooser
from pipeline.page import PageResult, process_page
from pipeline.settings import Settings
from pipeline.signing import RecordSigner, SigningError
from pipeline.sources import PageRef, ScanInput, open_input
from pipeline.split import Document, DossierHint, split

log = logging.getLogger(__name__)

SCHEMA = "digitize.record/3"
REPORT_SCHEMA = "digitize.report/1"
RECORDS = "records"
MANUAL = "manual"
STATE = ".digitize"
# Pages queued per worker: enough to keep every core busy while documents are written,
# few enough that decoded pages never pile up.
QUEUE_PER_WORKER = 2


@dataclass(frozen=True)
class Provenance:
    """Where an input was before it reached this machine: a station's batch in the inbox."""

    station: str
    operator: str
    batch: str  # the batch's key prefix in the inbox, "<station>/<batch>/"
    key: str  # the scan's object key in the inbox


@dataclass(frozen=True)
class DocumentRecord:
    """A dossier written out: to records/ when clean, to manual/<name>/ when flagged."""

    input: Path
    name: str
    code: str | None
    source_pages: list[int]
    removed_blank_pages: list[int]
    flags: dict[str, int]  # flag -> how many pieces of evidence
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

    def flag_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for doc in self.documents:
            for flag in doc.flags:
                counts[flag] = counts.get(flag, 0) + 1
        return dict(sorted(counts.items()))


@dataclass
class _Job:
    stem: str
    scan: ScanInput
    work: Path
    source: dict
    hints: list[DossierHint]
    engines: dict[int, OcrEngine]  # page index -> the engine that reads it
    results: dict[int, PageResult] = field(default_factory=dict)
    failure: DigitizeError | None = None

    @property
    def finished(self) -> bool:
        return self.failure is not None or len(self.results) == len(self.scan.pages)


@dataclass(frozen=True)
class _Context:
    out_dir: Path
    settings: Settings
    models: list[dict]
    settings_digest: str
    signer: RecordSigner | None
    engines: dict[str, tuple[OcrEngine, models.EngineRecord]]  # by name: the engines this run uses


def _use_engine(context: _Context, engine: OcrEngine) -> None:
    """Check an engine and its models once per run, in this process, before it reads a page."""
    if engine.name in context.engines:
        if context.engines[engine.name][0] != engine:
            raise ValueError(f"two different OCR engines are named {engine.name!r}")
        return
    context.engines[engine.name] = (engine, models.engine_record(engine, context.settings.ocr.languages))


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
) -> BatchReport:
    """Split each input into dossiers under `out_dir`, and describe the batch in report.json.

    One bad input never stops the others. `hints` maps an input's file name to the
    station's dossier page ranges. `on_pages(n)` reports pages as they are known
    (negative n: pages that will not be done after all), and 0 for each page done.
    With a `signer`, every PDF is signed; the manifest records it with and without the signature.
    Page work files go to a temporary folder in `work_dir` (default: the system's). A full or
    read-only disk raises OutputError naming the folder: it is no input's fault.
    `provenance` maps an input's file name to where it came from; its manifests then say that
    instead of the input's local path, which is only a work folder.
    `choose_engine(page)` picks the OCR engine for each page (default: Tesseract for all).
    """
    tesseract.require_languages(settings.ocr.languages)
    # A different signing key makes different records; where verify looks for trust does not.
    identity = settings.model_dump_json(exclude={"service", "signing"}) + (signer.certificate_sha256 if signer else "")
    tesseract_models = models.current_models(settings.ocr.languages)
    context = _Context(
        out_dir, settings, models.as_records(tesseract_models),
        hashlib.sha256(identity.encode()).hexdigest(), signer,
        {TESSERACT.name: (TESSERACT, models.engine_record(TESSERACT, settings.ocr.languages, known=tesseract_models))},
    )  # fmt: skip
    try:
        for folder in (out_dir / RECORDS, out_dir / MANUAL, out_dir / STATE):
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out_dir}: cannot create output folder: {exc.strerror or exc}") from None
    report = BatchReport()
    names = _Names()
    pool = _executor(jobs)
    with writing_to(work_dir or tempfile.gettempdir()):
        scratch = tempfile.TemporaryDirectory(prefix="digitize-", dir=work_dir)
    with scratch as tmp:
        pending: list[_Job] = []
        for path, stem in zip(inputs, output_stems(inputs), strict=True):
            try:
                scan = open_input(path, settings.limits)
                source = _describe_source(scan, (provenance or {}).get(Path(path).name))
            except InputError as exc:
                report.rejected.append(Rejection(path, str(exc), exc.exit_code))
                continue
            input_hints = list((hints or {}).get(Path(path).name, ()))
            engines = {ref.index: choose_engine(ref) for ref in scan.pages}
            for engine in engines.values():
                _use_engine(context, engine)
            earlier = _up_to_date(context, stem, path, source["sha256"], input_hints, _routing(engines))
            if earlier is not None:
                names.reserve(doc.name for doc in earlier)
                report.documents.extend(earlier)
                continue
            work = Path(tmp) / f"{len(pending):04d}"
            work.mkdir()
            pending.append(_Job(stem, scan, work, source, input_hints, engines))
            if on_pages:
                on_pages(len(scan.pages))

        def finish(job: _Job) -> None:
            try:
                if job.failure is not None:
                    raise job.failure
                with writing_to(out_dir):
                    report.documents.extend(_write_documents(job, context, names))
            except (OutputError, SigningError):
                # Our disk, token or timestamp server failed, not the input: the run fails and
                # can be retried, rather than the input being rejected as bad.
                raise
            except DigitizeError as exc:
                reason = str(exc) if isinstance(exc, InputError) else f"{job.scan.path}: {exc}"
                report.rejected.append(Rejection(job.scan.path, reason, exc.exit_code))
            finally:
                shutil.rmtree(job.work, ignore_errors=True)

        _run_pages(pool, pending, settings, jobs=jobs, on_pages=on_pages, on_done=finish)
    order = {Path(p): i for i, p in enumerate(inputs)}
    report.documents.sort(key=lambda d: order.get(d.input, len(order)))
    _write_report(report, out_dir)
    return report


def output_stems(inputs: Sequence[Path]) -> list[str]:
    """Name each input's outputs after it; inputs sharing a stem keep their extension apart."""
    stems = [Path(p).stem if Path(p).suffix else Path(p).name for p in inputs]
    names = []
    for path, stem in zip(inputs, stems, strict=True):
        clash = stems.count(stem) > 1
        names.append(f"{stem}-{Path(path).suffix.lstrip('.').lower()}" if clash and Path(path).suffix else stem)
    return names


class _Names:
    """Output names taken in this run: a dossier code, or the input's stem with -2, -3, ..."""

    def __init__(self) -> None:
        self.taken: set[str] = set()

    def reserve(self, names) -> None:
        self.taken.update(names)

    def take(self, wanted: str) -> str:
        name, n = wanted, 1
        while name in self.taken:
            n += 1
            name = f"{wanted}-{n}"
        self.taken.add(name)
        return name


def _run_pages(
    pool: cf.Executor,
    pending: list[_Job],
    settings: Settings,
    *,
    jobs: int,
    on_pages: Callable[[int], None] | None,
    on_done: Callable[[_Job], None],
) -> None:
    tasks: Iterator[tuple[_Job, PageRef]] = ((job, ref) for job in pending for ref in job.scan.pages)
    in_flight: dict[cf.Future, tuple[_Job, PageRef]] = {}
    next_to_finish = 0
    window = max(1, jobs) * QUEUE_PER_WORKER

    def top_up() -> None:
        for job, ref in tasks:
            if job.failure is not None:
                continue
            in_flight[pool.submit(process_page, ref, job.work, settings, engine=job.engines[ref.index])] = (job, ref)
            if len(in_flight) >= window:
                return

    top_up()
    try:
        while in_flight:
            done, _ = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
            for future in done:
                job, ref = in_flight.pop(future)
                _collect(job, ref, future, on_pages)
            # Inputs are finished in order, so outputs appear in a predictable sequence.
            while next_to_finish < len(pending) and pending[next_to_finish].finished:
                job = pending[next_to_finish]
                if job.failure is not None and on_pages:
                    on_pages(-(len(job.scan.pages) - len(job.results)))
                on_done(job)
                next_to_finish += 1
            top_up()
    except BaseException:
        # The pool is shared: leave it idle, not busy writing into work folders about to go.
        for future in in_flight:
            future.cancel()
        cf.wait(in_flight)
        raise


def _collect(job: _Job, ref: PageRef, future: cf.Future, on_pages: Callable[[int], None] | None) -> None:
    if job.failure is not None:
        return
    try:
        job.results[ref.index] = future.result()
    except DigitizeError as exc:
        job.failure = exc
        return
    except BrokenProcessPool:
        # A worker died (killed, out of memory): this input can be retried, with a new pool.
        with _POOL_LOCK:
            _make_executor.cache_clear()
        job.failure = WorkerLost(f"a page worker died on page {ref.frame + 1}")
        return
    except Exception as exc:
        # A full or read-only work folder is the disk's fault, not the input's.
        failure = write_error(exc, job.work) if isinstance(exc, OSError) else None
        if failure is None:  # a bug must cost one input, not the night's batch
            log.exception("unexpected error on %s page %d", ref.path, ref.frame + 1)
            failure = DigitizeError(f"internal error on page {ref.frame + 1}: {exc!r}")
        job.failure = failure
        return
    if on_pages:
        on_pages(0)


def _write_documents(job: _Job, context: _Context, names: _Names) -> list[DocumentRecord]:
    pages = [job.results[i] for i in sorted(job.results)]
    if not any(page.readable for page in pages):
        # Nothing could be decoded: that is a corrupt input, not a dossier to review.
        raise CorruptInput(job.scan.path, pages[0].flags["unreadable_page"]["reason"])
    documents = split(pages, rules=context.settings.split, triage=context.settings.triage, hints=job.hints)
    written = []
    codeless = 0
    for doc in documents:
        if doc.code:
            name = names.take(doc.code)
            if name != doc.code:
                doc.flag("duplicate_code", {"code": doc.code, "written_as": name})
        else:
            codeless += 1
            name = names.take(job.stem if codeless == 1 else f"{job.stem}-{codeless}")
        written.append(_write_document(job, doc, name, pages, context))
    _save_state(context, job, written)
    return written


def _write_document(
    job: _Job, doc: Document, name: str, pages: list[PageResult], context: _Context
) -> DocumentRecord:
    settings, out_dir = context.settings, context.out_dir
    created = datetime.now(timezone.utc).replace(microsecond=0)
    flagged = bool(doc.flags)
    final_dir = out_dir / MANUAL / name if flagged else out_dir / RECORDS
    # A manual-review folder appears whole or not at all: it is built aside, then renamed.
    target = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out_dir / MANUAL)) if flagged else final_dir
    try:
        in_pdf = [pages[i] for i in doc.pages]
        text = "\f".join(page.text for page in in_pdf)
        txt_path, pdf_path, json_path = (target / f"{name}{ext}" for ext in (".txt", ".pdf", ".json"))
        atomic.write_text(txt_path, text + "\n")
        written = write_record(
            [Path(page.page_pdf) for page in in_pdf], pdf_path, flavour=settings.output.pdfa,
            metadata=RecordMetadata(
                title=name, created=created, agency=settings.output.agency,
                source_sha256=job.source["sha256"], dossier_code=doc.code,
            ),
            signer=context.signer, work=job.work,
        ) if in_pdf else None  # fmt: skip
        manifest = _manifest(job, doc, name, pages, created, written, txt_path, context)
        if flagged:
            _write_review_material(target, doc, pages)
        # The manifest goes last: its presence says the record is complete.
        atomic.write_text(json_path, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        if flagged:
            _replace_dir(target, final_dir)
    except BaseException:
        if flagged:
            shutil.rmtree(target, ignore_errors=True)
        raise
    return DocumentRecord(
        input=job.scan.path, name=name, code=doc.code, source_pages=list(doc.pages),
        removed_blank_pages=list(doc.removed_blank),
        flags={flag: len(items) for flag, items in sorted(doc.flags.items())},
        pdf=final_dir / f"{name}.pdf" if in_pdf else None, manifest=final_dir / f"{name}.json",
        pages=len(doc.pages),
        mean_confidence=_mean_confidence(doc, pages),
    )  # fmt: skip


def _manifest(
    job: _Job, doc: Document, name: str, pages: list[PageResult], created: datetime,
    written: WrittenRecord | None, txt_path: Path, context: _Context,
) -> dict:  # fmt: skip
    settings = context.settings
    included = doc.pages + doc.removed_blank + doc.separator_sheets + doc.unreadable
    timings: dict[str, float] = {}
    for index in included:
        for stage, seconds in pages[index].timings.items():
            timings[stage] = round(timings.get(stage, 0.0) + seconds, 4)
    timings.update({stage: round(seconds, 4) for stage, seconds in (written.timings if written else {}).items()})
    pdf_path = written.pdf if written else None
    return {
        "schema": SCHEMA,
        "pipeline_version": __version__,
        "name": name,
        "code": doc.code,
        "created": created.isoformat(),
        "source": job.source,
        "document": {
            "source_pages": doc.pages,
            # Left out of the PDF but kept in the source scan: the removal can be undone.
            "removed_blank_pages": doc.removed_blank,
            "separator_sheets": doc.separator_sheets,
            "unreadable_pages": doc.unreadable,
            "split_by": "hints" if job.hints else "sheets",
        },
        "flags": doc.flags,
        "output": {
            "pdf": pdf_path.name if pdf_path else None,
            "pdf_sha256": atomic.sha256_file(pdf_path) if pdf_path else None,
            "pdf_bytes": pdf_path.stat().st_size if pdf_path else 0,
            "pdfa": settings.output.pdfa,
            "profile": settings.output.profile,
            "text": txt_path.name,
            "text_sha256": atomic.sha256_file(txt_path),
        },
        # The fixity chain: source scans (above) -> unsigned PDF -> signed PDF (output.pdf_sha256).
        "signature": written.signature if written else None,
        "ocr": {
            "engine": f"tesseract {tesseract.info().version}",
            "languages": settings.ocr.languages,
            "models": context.models,
            "mean_confidence": _mean_confidence(doc, pages),
        },
        "settings_sha256": context.settings_digest,
        "pages": [_page_record(pages[i], in_pdf=i in doc.pages, context=context) for i in sorted(included)],
        "timings_s": timings,
    }


def _mean_confidence(doc: Document, pages: list[PageResult]) -> float | None:
    """Mean of the per-page OCR confidences of the pages in the PDF."""
    confidences = [pages[i].ocr_confidence for i in doc.pages if pages[i].ocr_confidence is not None]
    return round(sum(confidences) / len(confidences), 2) if confidences else None


def _page_record(page: PageResult, *, in_pdf: bool, context: _Context) -> dict:
    record = asdict(page)
    for internal in ("page_pdf", "thumbnail", "text"):
        record.pop(internal)
    record["in_pdf"] = in_pdf
    # Which engine, version and model files read this page: null when no engine did (blank pages).
    record["ocr_engine"] = asdict(context.engines[page.ocr_engine][1]) if page.ocr_engine else None
    return record


def _routing(engines: Mapping[int, OcrEngine]) -> list[list]:
    """The pages not read by Tesseract, as [index, engine name]: a rerun routed otherwise is not up to date."""
    return [[index, engine.name] for index, engine in sorted(engines.items()) if engine.name != TESSERACT.name]


def _write_review_material(folder: Path, doc: Document, pages: list[PageResult]) -> None:
    """reasons.json and a thumbnail of each flagged page, so a person can triage at a glance."""
    flagged_pages = sorted({item["page"] for items in doc.flags.values() for item in items if "page" in item})
    if not flagged_pages and doc.pages:
        flagged_pages = [doc.pages[0]]  # a flag on the whole document: show where it starts
    thumbnails = {}
    for index in flagged_pages:
        if pages[index].thumbnail:
            target = folder / f"page-{index:04d}.png"
            shutil.copyfile(pages[index].thumbnail, target)
            thumbnails[str(index)] = target.name
    reasons = {
        "code": doc.code,
        "flags": doc.flags,
        "thumbnails": thumbnails,
    }
    atomic.write_text(folder / "reasons.json", json.dumps(reasons, indent=2, ensure_ascii=False) + "\n")


def _replace_dir(staged: Path, final: Path) -> None:
    """Swap a finished folder into place; an older version is removed only after."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.rename(final, old)
    os.rename(staged, final)
    os.chmod(final, 0o755 & ~atomic.UMASK)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_report(report: BatchReport, out_dir: Path) -> None:
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


def _describe_source(scan: ScanInput, provenance: Provenance | None) -> dict:
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
    where = {"provenance": asdict(provenance)} if provenance else {"path": str(scan.path)}
    return {**where, "kind": str(scan.kind), "sha256": digest, "pages": len(scan.pages), "files": files}


def _state_path(context: _Context, stem: str) -> Path:
    return context.out_dir / STATE / f"{stem}.json"


def _save_state(context: _Context, job: _Job, written: list[DocumentRecord]) -> None:
    """Remember what this input became, so a rerun can tell it is already done."""
    state = {
        "source_sha256": job.source["sha256"],
        "settings_sha256": context.settings_digest,
        "pipeline_version": __version__,
        "hints": [asdict(h) for h in job.hints],
        "ocr_routing": _routing(job.engines),
        "documents": [
            {
                **{k: v for k, v in asdict(doc).items() if k not in ("input", "pdf", "manifest", "up_to_date")},
                "pdf": str(doc.pdf.relative_to(context.out_dir)) if doc.pdf else None,
                "manifest": str(doc.manifest.relative_to(context.out_dir)),
                "manifest_sha256": atomic.sha256_file(doc.manifest),
            }
            for doc in written
        ],
    }
    atomic.write_text(_state_path(context, job.stem), json.dumps(state, indent=2, ensure_ascii=False) + "\n")


def _up_to_date(
    context: _Context, stem: str, input_path: Path, source_sha256: str, hints: list[DossierHint], routing: list[list]
) -> list[DocumentRecord] | None:
    """The documents from an earlier run, if from the same source, settings, hints and version."""
    try:
        state = json.loads(_state_path(context, stem).read_text("utf-8"))
        current = (
            state["source_sha256"] == source_sha256
            and state["settings_sha256"] == context.settings_digest
            and state["pipeline_version"] == __version__
            and state["hints"] == [asdict(h) for h in hints]
            and state.get("ocr_routing", []) == routing
        )
        if not current:
            return None
        documents = []
        for entry in state["documents"]:
            manifest_path = context.out_dir / entry["manifest"]
            manifest = json.loads(manifest_path.read_text("utf-8"))
            pdf = context.out_dir / entry["pdf"] if entry["pdf"] else None
            if atomic.sha256_file(manifest_path) != entry["manifest_sha256"]:
                return None
            if pdf and atomic.sha256_file(pdf) != manifest["output"]["pdf_sha256"]:
                return None
            fields = {k: v for k, v in entry.items() if k in DocumentRecord.__dataclass_fields__}
            documents.append(
                DocumentRecord(**{**fields, "input": input_path, "pdf": pdf, "manifest": manifest_path, "up_to_date": True})
            )
        return documents
    except (OSError, ValueError, KeyError, TypeError):
        return None


class WorkerLost(TransientError):
    """A worker process died under us; nothing is wrong with the input."""


class _InlineExecutor(cf.Executor):
    """One job: run pages in this process. Cheaper than a pool, and faults can be injected.

    The lock keeps it to one page at a time when several batches share it from threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def submit(self, fn, /, *args, **kwargs):  # noqa: D401 - the Executor API
        future: cf.Future = cf.Future()
        with self._lock:
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # handed to the caller through the future
                future.set_exception(exc)
        return future


_POOL_LOCK = threading.Lock()


def _executor(jobs: int) -> cf.Executor:
    """One pool per process and size, shared by concurrent batches and kept for later ones:
    starting workers costs ~1 s, and sharing keeps Tesseract to `jobs` at a time."""
    with _POOL_LOCK:
        return _make_executor(jobs)


@functools.cache
def _make_executor(jobs: int) -> cf.Executor:
    if jobs <= 1:
        return _InlineExecutor()
    # forkserver: workers start clean, without the parent's threads or open files. The
    # server imports the page code once, so each worker forks ready instead of importing it.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["pipeline.page"])
    return cf.ProcessPoolExecutor(max_workers=jobs, mp_context=context)
