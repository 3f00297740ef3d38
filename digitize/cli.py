"""The `digitize` command: process, drop, run, serve, review, verify, export, demo-ca, models."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from digitize.config import AppSettings, app_settings, parse_value
from digitize.keys import load_record_signer
from pipeline import models
from pipeline.programs import check_programs
from pipeline.batch import BatchReport, process_inputs
from pipeline.errors import ConfigError, DigitizeError, ExitCode, MissingInput, UsageError, most_serious
from pipeline.sources import expand_inputs
from pipeline.split import DossierHint
from pipeline.verify import load_trust_roots

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Digitize scanned dossiers into searchable, archival PDF/A records.")
# Logs and CI are not terminals; 80 columns would fold every dossier code.
console = Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 140)
errors = Console(stderr=True, width=None if sys.stderr.isatty() or os.environ.get("COLUMNS") else 140)


class Flavour(StrEnum):
    pdfa_2b = "2b"
    pdfa_1b = "1b"


class Profile(StrEnum):
    compact = "compact"
    archival = "archival"


ConfigOption = Annotated[
    list[Path] | None,
    typer.Option("--config", help="Extra TOML settings on top of the defaults (pipeline/config/default.toml, digitize/config/service.toml; repeatable)."),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", metavar="SECTION.KEY=VALUE", help="Override one setting, e.g. triage.thick_record_pages=50 (repeatable)."),
]


def _settings(config: list[Path] | None, sets: list[str] | None, overrides: dict[str, object]) -> AppSettings:
    for item in sets or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE")
        overrides.setdefault(key.strip(), parse_value(raw.strip()))
    return app_settings(config, os.environ, overrides)


def _hints(path: Path | None) -> dict[str, list[DossierHint]]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text("utf-8"))
        return {name: [DossierHint(**h) for h in hints] for name, hints in data.items()}
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{path}: not a dossier hints file ({exc}); expected "
                          '{"<input name>": [{"code": ..., "first_page": 0, "last_page": 3}]}') from None


def _page_numbers(pages: str) -> list[int]:
    """--pages N,M as people count them, from 1; anything else is a usage mistake (exit 64)."""
    try:
        return [int(p) for p in pages.split(",") if p.strip()]
    except ValueError:
        raise _fail(UsageError(f"--pages {pages!r}: expected page numbers like 3,4")) from None


def _fail(exc: DigitizeError) -> typer.Exit:
    errors.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
    return typer.Exit(exc.exit_code)


def _print_version(wanted: bool) -> None:
    if wanted:
        from importlib.metadata import version

        console.print(f"digitize {version('digitize')}", highlight=False)
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every program run.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


@app.command()
def process(
    inputs: Annotated[list[Path], typer.Argument(help="Scan files (PDF, TIFF, JPEG, PNG) or folders of page images.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the records.")],
    lang: Annotated[str | None, typer.Option(help="Tesseract languages, e.g. vie+eng.")] = None,
    pdfa: Annotated[Flavour | None, typer.Option(help="PDF/A flavour.")] = None,
    profile: Annotated[Profile | None, typer.Option(help="compact: JPEG for lossless gray/colour; archival: keep lossless.")] = None,
    jobs: Annotated[int, typer.Option(help="Pages processed at once (one Tesseract each).", min=1)] = os.cpu_count() or 1,
    hints: Annotated[Path | None, typer.Option(help="JSON of dossier page ranges per input name; they decide the split.")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Split scans into dossiers and archive each as a searchable PDF/A with its manifest and text.

    Clean dossiers go to OUT/records/, flagged ones to OUT/manual/<name>/ with their reasons
    and thumbnails; OUT/report.json describes the batch. In a folder, the page images form one
    input, and each PDF and multi-page TIFF is an input of its own; other files are skipped.
    """
    missing = [path for path in inputs if not path.exists()]
    for path in missing:
        errors.print(f"[red]error:[/red] {escape(str(MissingInput(path, 'no such file or folder')))}", highlight=False, soft_wrap=True)
    if missing:
        # Before anything is written: a typo must not leave an empty output folder behind.
        raise typer.Exit(MissingInput.exit_code)
    try:
        settings = _settings(
            config,
            set_,
            {
                "ocr.languages": lang,
                "output.pdfa": pdfa.value if pdfa else None,
                "output.profile": profile.value if profile else None,
            },
        )
        # Before the progress bar: a missing program or a language mistake is the only line shown.
        check_programs(settings.ocr.languages)
        expanded = expand_inputs(inputs, settings.limits)
        for path in expanded.skipped:
            errors.print(f"[yellow]skipped:[/yellow] {escape(str(path))}: not a scan (PDF, TIFF, JPEG or PNG)", highlight=False, soft_wrap=True)
        report = _run_with_progress(list(expanded.inputs), out, settings, jobs=jobs, hints=_hints(hints))
    except DigitizeError as exc:
        raise _fail(exc) from None
    _print_summary(report, out)
    for rejection in report.rejected:
        errors.print(f"[red]rejected:[/red] {rejection.reason}", highlight=False, soft_wrap=True)
    if report.rejected:
        raise typer.Exit(most_serious(r.exit_code for r in report.rejected))


def _run_with_progress(
    inputs: list[Path], out: Path, settings: AppSettings, *, jobs: int, hints: dict[str, list[DossierHint]]
) -> BatchReport:
    columns = (
        TextColumn("[progress.description]{task.description}"), BarColumn(),
        MofNCompleteColumn(), TextColumn("pages"), TimeElapsedColumn(),
    )  # fmt: skip
    with Progress(*columns, console=errors, transient=False) as progress:
        task = progress.add_task("OCR", total=0)

        def on_pages(count: int) -> None:
            if count == 0:
                progress.advance(task)
            else:
                progress.update(task, total=(progress.tasks[0].total or 0) + count)

        signer = load_record_signer(settings, os.environ)
        return process_inputs(
            inputs, out, settings, jobs=jobs, hints=hints, on_pages=on_pages, signer=signer,
            input_trust_roots=load_trust_roots(settings.signing.trust_roots),
        )  # fmt: skip


def _print_summary(report: BatchReport, out: Path) -> None:
    table = Table(title=f"Dossiers in {out}", title_justify="left")
    table.add_column("input", overflow="fold")
    # A dossier code is looked up and typed by people: shown whole, never folded, whatever the width.
    table.add_column("dossier", no_wrap=True, min_width=max((len(doc.name) for doc in report.documents), default=7))
    for column in ("pages", "blank removed", "OCR conf."):
        table.add_column(column, justify="right")
    table.add_column("flags", overflow="fold")
    table.add_column("where", overflow="fold")
    for doc in report.documents:
        conf = f"{doc.mean_confidence:.1f}" if doc.mean_confidence is not None else "-"
        where = "manual" if doc.flags else "records"
        if doc.up_to_date:
            where += " (up to date)"
        table.add_row(
            doc.input.name, doc.name, str(doc.pages), str(len(doc.removed_blank_pages)), conf,
            ", ".join(doc.flags) or "-", where,
        )  # fmt: skip
    for rejection in report.rejected:
        table.add_row(rejection.input.name, "-", "-", "-", "-", "-", "[red]rejected[/red]")
    console.print(table)
    manual = sum(1 for doc in report.documents if doc.flags)
    console.print(
        f"{len(report.documents)} dossiers: {len(report.documents) - manual} archived in records/, "
        f"{manual} for manual handling in manual/; {len(report.rejected)} inputs rejected."
    )
    counts = report.flag_counts()
    if counts:
        console.print("Flags: " + ", ".join(f"{flag} {n}" for flag, n in counts.items()))


@app.command()
def drop(
    folder: Annotated[Path, typer.Argument(help="Folder of scans that form one batch.")],
    station: Annotated[str, typer.Option(help="This station's id, e.g. dien-chau-01 (a-z, 0-9, '.', '_', '-').")],
    inbox: Annotated[str | None, typer.Option(help="Inbox location (default from config).")] = None,
    operator: Annotated[str, typer.Option(help="Who scanned the batch.")] = os.environ.get("USER", "unknown"),
    allow_bad: Annotated[bool, typer.Option("--allow-bad", help="Upload scans the pipeline would reject too; batch.json names them.")] = False,
    config: ConfigOption = None,
) -> None:
    """Upload a folder of scans to the inbox as one batch; batch.json goes last. Safe to re-run.

    Each scan is checked first (its pages counted, its first page decoded); a bad one refuses
    the drop unless --allow-bad. Files that are not scans are named and left out.
    """
    from digitize.drop import check_folder, check_station, refuse_bad
    from digitize.drop import drop as drop_batch
    from digitize.storage import open_store

    try:
        check_station(station)
        settings = _settings(config, None, {"service.inbox": inbox})
        checked = check_folder(folder, limits=settings.limits)
        for path in checked.skipped:
            errors.print(f"[yellow]skipped:[/yellow] {escape(str(path))}: not a scan (PDF, TIFF, JPEG or PNG)", highlight=False, soft_wrap=True)
        for bad in checked.bad:
            errors.print(f"[red]bad scan:[/red] {escape(str(bad.path))}: {escape(bad.reason)}", highlight=False, soft_wrap=True)
        refuse_bad(checked, allow_bad=allow_bad)
        store = open_store(settings.service.inbox, os.environ)
        sizes = [scan.path.stat().st_size for scan in checked.scans] + [bad.path.stat().st_size for bad in checked.bad]
        with Progress(TextColumn("upload"), BarColumn(), TimeElapsedColumn(), console=errors) as progress:
            bar = progress.add_task("upload", total=sum(sizes) or None)
            prefix, uploaded = drop_batch(
                folder, store, station=station, operator=operator, checked=checked, allow_bad=allow_bad,
                on_file=lambda _name, size: progress.advance(bar, size),
            )  # fmt: skip
    except DigitizeError as exc:
        raise _fail(exc) from None
    if uploaded:
        console.print(f"dropped {folder} as {store.url}/{prefix}")
    else:
        console.print(f"{folder} was already dropped as {store.url}/{prefix}; nothing uploaded")
    if checked.bad:
        console.print(f"{len(checked.bad)} bad scan(s) uploaded anyway and named in batch.json; the nightly run quarantines them")
    from digitize.review import station_requests

    try:
        requests = station_requests(store, station)
    except DigitizeError as exc:  # the drop itself is done; only the list of rescan requests is missing
        errors.print(f"[yellow]rescan requests not read:[/yellow] {escape(str(exc))}", highlight=False, soft_wrap=True)
        requests = []
    for request in requests:
        pages = ", ".join(map(str, request.get("pages") or [])) or "all"
        console.print(f"[yellow]rescan requested:[/yellow] {escape(request['dossier'])} pages {pages} by {escape(request['by'])}: "
                      f"{escape(request.get('note') or '')} ({escape(request['key'])})", highlight=False, soft_wrap=True)  # fmt: skip


@app.command("run")
def run_command(
    inbox: Annotated[str | None, typer.Option(help="Inbox location (default from config).")] = None,
    archive: Annotated[str | None, typer.Option(help="Archive location.")] = None,
    review: Annotated[str | None, typer.Option(help="Manual-review location.")] = None,
    jobs: Annotated[int, typer.Option(help="Pages processed at once (one Tesseract each).", min=1)] = os.cpu_count() or 1,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for batches other live runs hold (default), or exit 75.")] = True,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Process the inbox now: every complete batch, exactly once, into the archive."""
    from digitize.night import BatchOutcome, NightReport

    try:
        settings = _settings(config, set_, {"service.inbox": inbox, "service.archive": archive, "service.review": review})
        from digitize.preflight import check_service
        from flows.nightly import nightly

        # Here as one line, rather than as a traceback in the flow's log (which checks again for deployments).
        check_service(settings, os.environ)

        with _patient_ephemeral_server():
            state = nightly(settings, jobs, wait_for_held=wait, return_state=True)
        report = state.result(raise_on_failure=False)
        if isinstance(report, BaseException):  # the night stopped before its report (a bad setting, S3 down)
            raise report
    except DigitizeError as exc:
        raise _fail(exc) from None
    assert isinstance(report, NightReport)
    table = Table("batch", "station", "dossiers", "pages", "flags", title="Batches processed", title_justify="left")
    table.columns[0].no_wrap = True
    for batch in report.handled:
        table.add_row(batch.batch, batch.station, str(len(batch.dossiers)), str(batch.pages),
                      ", ".join(f"{k} {v}" for k, v in batch.flags.items()) or "-")  # fmt: skip
    console.print(table)
    for batch in report.handled:
        for reason in batch.rejected:
            errors.print(f"[red]rejected:[/red] {escape(batch.batch + reason)} (see rejected/ in the review area)", highlight=False, soft_wrap=True)
        for line in batch.already_archived:
            console.print(f"already archived: {escape(batch.batch + line)}", highlight=False, soft_wrap=True)
    for queued in report.queue:
        if queued.state == "waiting":
            console.print(f"waiting: {escape(queued.batch)} (not complete yet: {escape(queued.detail)})", highlight=False, soft_wrap=True)
        elif queued.state == "refused":
            errors.print(f"[red]refused:[/red] {escape(queued.batch)}: {escape(queued.detail)}", highlight=False, soft_wrap=True)
        elif queued.state != "claimed":
            console.print(f"[yellow]{queued.state}:[/yellow] {escape(queued.batch)}: {escape(queued.detail)}", highlight=False, soft_wrap=True)
    console.print(f"archive: {settings.service.archive}   manual review: {settings.service.review}")
    api = os.environ.get("PREFECT_API_URL")
    if api:
        console.print(f"dashboard: {api.removesuffix('/api')} (flow runs, artifacts)")
    else:
        console.print("dashboard: run `prefect server start` and open http://127.0.0.1:4200 (flow runs, artifacts)")
    for batch in report.batches:
        if batch.outcome == BatchOutcome.FAILED:
            errors.print(f"[red]failed:[/red] {escape(batch.batch)}: {escape(batch.detail)}", highlight=False, soft_wrap=True)
        elif batch.outcome == BatchOutcome.HELD:
            errors.print(f"[yellow]not taken:[/yellow] {escape(batch.batch)}: {escape(batch.detail)}", highlight=False, soft_wrap=True)
    console.print(f"{report.outcome}: {escape(report.message())}", highlight=False, soft_wrap=True)
    # --no-wait: a batch left to its holder is a temporary failure of this run.
    codes = [b.exit_code or ExitCode.TEMPFAIL for b in report.batches if b.outcome in (BatchOutcome.FAILED, BatchOutcome.HELD)]
    if codes:
        raise typer.Exit(most_serious(codes))


# Without PREFECT_API_URL, `run` starts Prefect's temporary server, which Prefect gives 20 s; a
# worker machine busy with OCR can take longer, and the night would fail for it.
EPHEMERAL_STARTUP_S = 120


@contextlib.contextmanager
def _patient_ephemeral_server():
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

    if PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.name in os.environ:
        yield
        return
    with temporary_settings(updates={PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: EPHEMERAL_STARTUP_S}):
        yield


@app.command("status")
def status_command(
    inbox: Annotated[str | None, typer.Option(help="Inbox location (default from config).")] = None,
    archive: Annotated[str | None, typer.Option(help="Archive location.")] = None,
    review: Annotated[str | None, typer.Option(help="Manual-review location.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    show_all: Annotated[bool, typer.Option("--all", help="Every batch ever finished, not only the last week's.")] = False,
    config: ConfigOption = None,
) -> None:
    """Pending batches and their state, the last week's finished ones, what waits for a person, and the last night's outcome."""
    from digitize.night import duration
    from digitize.status import service_status

    try:
        settings = _settings(config, None, {"service.inbox": inbox, "service.archive": archive, "service.review": review})
        status = service_status(settings, os.environ, everything=show_all)
    except DigitizeError as exc:
        raise _fail(exc) from None
    if as_json:
        print(status.model_dump_json(indent=2))
        return
    table = Table("station", "batch", "state", "age", "detail", title=f"Inbox {settings.service.inbox}", title_justify="left")
    table.columns[1].no_wrap = True
    for batch in status.batches:
        table.add_row(batch.station, batch.batch, batch.state, duration(batch.age_s), batch.detail)
    console.print(table)
    console.print(f"review: {status.review.open} dossiers open; quarantine: {status.quarantine.files} inputs")
    last = status.last_night
    if last is None:
        console.print("last night: no night has run yet")
    else:
        console.print(f"last night: {last.outcome} at {last.started:%Y-%m-%d %H:%M} UTC: {escape(last.message)}", highlight=False, soft_wrap=True)


@app.command()
def serve(
    jobs: Annotated[int, typer.Option(help="Pages processed at once on this machine.", min=1)] = os.cpu_count() or 1,
    port: Annotated[int, typer.Option(help="Port of the Prefect server started when PREFECT_API_URL is not set.")] = 4200,
    config: ConfigOption = None,
) -> None:
    """Run the nightly deployment on its schedule (default 22:00 Asia/Ho_Chi_Minh) in this process.

    With PREFECT_API_URL set, the deployment registers with that server; otherwise a local
    Prefect server is started alongside, and its dashboard shows the runs.
    """
    try:
        settings = _settings(config, None, {})
    except DigitizeError as exc:
        raise _fail(exc) from None
    from prefect.schedules import Cron
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_API_URL, temporary_settings
    from prefect.types.entrypoint import EntrypointType

    from digitize.prefect_server import local_prefect_server
    from flows.nightly import nightly_from_config

    # A stop (SIGTERM from systemd or a test) before Prefect's runner installs its own handler
    # would end this process at once and leave the Prefect server started below running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.ExitStack() as stack:
        api = os.environ.get("PREFECT_API_URL")
        if not api:
            api = stack.enter_context(local_prefect_server(port))
            stack.enter_context(temporary_settings(updates={PREFECT_API_URL: api, PREFECT_UI_API_URL: api}))
        console.print(
            f"serving 'nightly' on {settings.service.schedule} ({settings.service.timezone}); "
            f"dashboard {api.removesuffix('/api')}; Ctrl+C to stop"
        )
        nightly_from_config.serve(
            name="nightly",
            schedules=[Cron(settings.service.schedule, timezone=settings.service.timezone)],
            parameters={"config": [str(p) for p in config or []], "jobs": jobs},
            limit=1,
            # flows.nightly.nightly_from_config, not a path relative to the cwd: works from any
            # folder and from an installed (non-editable) package.
            entrypoint_type=EntrypointType.MODULE_PATH,
        )


review_app = typer.Typer(help="Manual handling of flagged dossiers.", no_args_is_help=True)
app.add_typer(review_app, name="review")
ReviewOption = Annotated[str | None, typer.Option("--review", help="Manual-review location (default from config).")]
ByOption = Annotated[str | None, typer.Option("--by", help="Who is acting (default: the login name).")]


def _review_stores(config: list[Path] | None, review: str | None):
    from digitize.storage import open_store

    settings = _settings(config, None, {"service.review": review})
    return settings, open_store(settings.service.review, os.environ)


@review_app.command("list")
def review_list(review: ReviewOption = None, all_: Annotated[bool, typer.Option("--all", help="Include archived items.")] = False, config: ConfigOption = None) -> None:
    """Open items, with their reasons."""
    from digitize import review as manual

    try:
        _, store = _review_stores(config, review)
        items = manual.list_items(store, include_archived=all_)
    except DigitizeError as exc:
        raise _fail(exc) from None
    table = Table(title=f"Manual review in {store.url}", title_justify="left")
    table.add_column("dossier", no_wrap=True, min_width=max((len(item.code or item.name) for item in items), default=7))
    for column in ("batch", "flags", "pages flagged", "status"):
        table.add_column(column, overflow="fold")
    for item in items:
        pages = sorted({e.get("dossier_page") or e["page"] + 1 for evs in item.flags.values() for e in evs if "page" in e or "dossier_page" in e})
        table.add_row(item.code or item.name, item.prefix.rsplit("/", 2)[0], ", ".join(item.flags),
                      ", ".join(map(str, pages)) or "-", "archived" if item.archived else "open")  # fmt: skip
    console.print(table)


@review_app.command("show")
def review_show(code: str, review: ReviewOption = None, to: Annotated[Path, typer.Option(help="Where to put the files.")] = Path("review-items"), config: ConfigOption = None) -> None:
    """Fetch an item's thumbnails, reasons and PDF, and open them."""
    import shutil
    import subprocess

    from digitize import review as manual

    try:
        _, store = _review_stores(config, review)
        item = manual.find(store, code)
        paths = manual.fetch(store, item, to / item.name)
    except DigitizeError as exc:
        raise _fail(exc) from None
    for flag, evidence in item.flags.items():
        console.print(f"[bold]{flag}[/bold]: " + "; ".join(json.dumps(_counted_from_1(e), ensure_ascii=False) for e in evidence))
    for path in paths:
        console.print(f"  {path}")
    opener = shutil.which("xdg-open")
    if opener and os.environ.get("DISPLAY"):
        for path in paths:
            if path.suffix == ".png":
                subprocess.Popen([opener, str(path)])


def _counted_from_1(evidence: dict) -> dict:
    """Evidence as people read it: the manifests' 0-based page indexes counted from 1."""
    shown = dict(evidence)
    if isinstance(shown.get("page"), int):
        shown["page"] += 1
    if isinstance(shown.get("pages"), list):  # a list of pages; a bare number is a count
        shown["pages"] = [p + 1 for p in shown["pages"]]
    return shown


@review_app.command("approve")
def review_approve(code: str, review: ReviewOption = None, archive: Annotated[str | None, typer.Option(help="Archive location.")] = None, by: ByOption = None, config: ConfigOption = None) -> None:
    """Archive a flagged dossier as it is."""
    from digitize import review as manual
    from digitize.storage import open_store

    try:
        settings, store = _review_stores(config, review)
        archive_store = open_store(archive or settings.service.archive, os.environ)
        keys = manual.approve(store, archive_store, manual.find(store, code), by=by)
    except DigitizeError as exc:
        raise _fail(exc) from None
    console.print(f"archived {code}: " + ", ".join(f"{archive_store.url}/{k}" for k in keys))


@review_app.command("replace")
def review_replace(
    code: str,
    rescan: Annotated[Path, typer.Argument(help="The re-scan (any input the pipeline takes).")],
    pages: Annotated[str, typer.Option(help="Dossier pages to replace, 1-based: N,M.")],
    review: ReviewOption = None, by: ByOption = None, config: ConfigOption = None,
) -> None:  # fmt: skip
    """Swap pages of a flagged dossier for a re-scan (a large-format drawing, say) and re-assemble it."""
    from digitize import review as manual

    numbers = _page_numbers(pages)
    try:
        settings, store = _review_stores(config, review)
        entry = manual.replace_pages(
            store, manual.find(store, code), pages=numbers, rescan=rescan, settings=settings, by=by,
            signer=load_record_signer(settings, os.environ),
        )  # fmt: skip
    except DigitizeError as exc:
        raise _fail(exc) from None
    console.print(f"{code}: pages {entry['pages_replaced']} replaced by {rescan.name}; new PDF sha256 {entry['pdf_sha256'][:16]}…")


@review_app.command("add-user")
def review_add_user(
    name: Annotated[str, typer.Argument(help="The user's sign-in name (a-z, 0-9, '.', '_', '-').")],
    role: Annotated[str, typer.Option(help="reviewer (acts on items) or supervisor (also sees everyone's actions).")],
    config: ConfigOption = None,
) -> None:
    """Add a review station account (or set its password); the password is read from standard input."""
    from digitize.web.users import Role, add_user

    try:
        settings = _settings(config, None, {})
        if role not in Role.__members__.values():
            raise ConfigError(f"--role {role!r}: expected reviewer or supervisor")
        password = sys.stdin.readline().rstrip("\n")
        add_user(Path(settings.review.users_file), name, role=Role(role), password=password)
    except DigitizeError as exc:
        raise _fail(exc) from None
    console.print(f"{name} ({role}) can sign in to the review station; accounts in {settings.review.users_file}")


@review_app.command("serve")
def review_serve(
    host: Annotated[str, typer.Option(help="Address to listen on; the default keeps the station on this machine.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8070,
    config: ConfigOption = None,
) -> None:
    """Run the review station: a web application for the manual-handling queue and the quarantine."""
    import uvicorn

    from digitize.storage import open_store
    from digitize.web.app import Stores, create_app

    try:
        settings = _settings(config, None, {})
        users = Path(settings.review.users_file)
        if not users.exists():
            raise ConfigError(f"review.users_file {users}: no accounts yet; add one with `digitize review add-user NAME --role reviewer`")
        stores = Stores(*(open_store(url, os.environ) for url in (settings.service.review, settings.service.archive, settings.service.inbox)))
        load_record_signer(settings, os.environ)  # a bad key is a config error now, not on the first replace
        app_ = create_app(settings, stores=stores, users_file=users, signer=lambda: load_record_signer(settings, os.environ))
    except DigitizeError as exc:
        raise _fail(exc) from None
    console.print(f"review station on http://{host}:{port}/ (review {stores.review.url}); Ctrl+C to stop")
    uvicorn.run(app_, host=host, port=port, log_level="warning")


@review_app.command("split")
def review_split(
    code: str,
    at: Annotated[int, typer.Option(help="The new dossier starts at this page (1-based).")],
    new_name: Annotated[str, typer.Option(help="Name of the new dossier (letters, digits, '.', '_', '-').")],
    review: ReviewOption = None, by: ByOption = None, config: ConfigOption = None,
) -> None:  # fmt: skip
    """Split a dossier in two (when the night's split was wrong): pages AT.. become a new item."""
    from digitize import review as manual

    try:
        settings, store = _review_stores(config, review)
        new = manual.split_item(store, manual.find(store, code), at=at, new_name=new_name, settings=settings, by=by,
                                signer=load_record_signer(settings, os.environ))  # fmt: skip
    except DigitizeError as exc:
        raise _fail(exc) from None
    console.print(f"{code}: pages from {at} on are now {new.prefix.rstrip('/')}")


@review_app.command("move")
def review_move(
    source: Annotated[str, typer.Argument(help="The dossier the pages leave.")],
    target: Annotated[str, typer.Argument(help="The dossier they are added to, at its end.")],
    pages: Annotated[str, typer.Option(help="Pages of SOURCE to move, 1-based: N,M.")],
    note: Annotated[str, typer.Option(help="Why, for the record.")] = "",
    review: ReviewOption = None, by: ByOption = None, config: ConfigOption = None,
) -> None:  # fmt: skip
    """Move pages to another dossier (when the night's split was wrong); both are re-assembled and signed."""
    from digitize import review as manual
    from digitize.storage import open_store

    numbers = _page_numbers(pages)
    try:
        settings, store = _review_stores(config, review)
        archive = open_store(settings.service.archive, os.environ)
        entry = manual.move_pages(
            store, manual.find(store, source), manual.find(store, target), pages=numbers, settings=settings, by=by,
            signer=load_record_signer(settings, os.environ), note=note, audit=archive,
        )  # fmt: skip
    except DigitizeError as exc:
        raise _fail(exc) from None
    console.print(f"{source}: pages {entry['pages_moved']} are now pages {entry['to_pages']} of {entry['to_item'].rstrip('/')}")


@review_app.command("send-back")
def review_send_back(
    code: str, pages: Annotated[str, typer.Option(help="Pages to rescan, 1-based: N,M.")] = "",
    note: Annotated[str, typer.Option(help="What the station should do.")] = "",
    review: ReviewOption = None, by: ByOption = None, config: ConfigOption = None,
) -> None:  # fmt: skip
    """Ask the dossier's station to scan it again; `digitize drop` shows the request there."""
    from digitize import review as manual
    from digitize.storage import open_store

    numbers = _page_numbers(pages)
    try:
        settings, store = _review_stores(config, review)
        inbox = open_store(settings.service.inbox, os.environ)
        key = manual.send_back(store, inbox, manual.find(store, code), pages=numbers, note=note, by=by)
    except DigitizeError as exc:
        raise _fail(exc) from None
    console.print(f"{code}: request {inbox.url}/{key}")


@app.command("verify")
def verify_command(
    records: Annotated[list[str], typer.Argument(help="Record PDFs (or their .json manifests): local paths, or keys in the archive.")],
    archive: Annotated[str | None, typer.Option(help="Archive to read keys from (default: service.archive).")] = None,
    trust: Annotated[list[Path] | None, typer.Option("--trust", help="Trusted root certificate (PEM/DER); replaces signing.trust_roots (repeatable).")] = None,
    config: ConfigOption = None, set_: SetOption = None,
) -> None:  # fmt: skip
    """Check each record's signature, certificate chain, manifest checksums and PDF/A claim; one line each."""
    from digitize.verify import verify_records

    # pyHanko logs every failed chain with a traceback; the verdict line already says it.
    logging.getLogger("pyhanko").setLevel(logging.CRITICAL)
    try:
        settings = _settings(config, set_, {})
        verdicts = verify_records(
            records, archive=archive or settings.service.archive, env=os.environ,
            trust_roots=[str(t) for t in trust] if trust else settings.signing.trust_roots,
        )  # fmt: skip
    except DigitizeError as exc:
        raise _fail(exc) from None
    for verdict in verdicts:
        console.print(verdict.line(), style=None if verdict.ok else "red", highlight=False, soft_wrap=True)
    failed = sum(not v.ok for v in verdicts)
    console.print(f"{len(verdicts) - failed} of {len(verdicts)} records verified.")
    if failed:
        raise typer.Exit(1)


@app.command("export")
def export_command(
    codes: Annotated[list[str], typer.Argument(help="Dossier codes, as archived.")],
    to: Annotated[Path, typer.Option("--to", help="Folder for the export: one <code>/ folder per dossier.")] = Path("export"),
    archive: Annotated[str | None, typer.Option(help="Archive to read from (default: service.archive).")] = None,
    config: ConfigOption = None, set_: SetOption = None,
) -> None:  # fmt: skip
    """Write each dossier's Decree 30 Annex VI XML and one signed PDF/A per component document, <code>.<nn>.pdf."""
    from digitize.export import export_dossiers
    from digitize.storage import open_store

    try:
        settings = _settings(config, set_, {"service.archive": archive})
        signer = load_record_signer(settings, os.environ)
        report = export_dossiers(codes, archive=open_store(settings.service.archive, os.environ), to=to, signer=signer)
    except DigitizeError as exc:
        raise _fail(exc) from None
    for dossier in report.exported:
        console.print(f"exported {escape(dossier.code)}: {escape(str(dossier.xml))} and {len(dossier.pdfs)} documents", highlight=False, soft_wrap=True)
    for exc in report.failed:
        errors.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
    if report.failed:
        raise typer.Exit(most_serious(exc.exit_code for exc in report.failed))


@app.command("demo-ca")
def demo_ca_command(
    folder: Annotated[Path, typer.Argument(help="Where to write root.pem and agency.p12.")],
    agency: Annotated[str, typer.Option(help="Name on the agency certificate.")] = "Trung tâm Phục vụ hành chính công (demo)",
) -> None:
    """Make a throwaway root and agency certificate for trying signing out. Never for real records."""
    from digitize.keys import make_demo_ca

    demo = make_demo_ca(folder, agency=agency)
    console.print(f"root certificate: {demo.root}\nagency key and certificate: {demo.agency_pkcs12} (passphrase {demo.passphrase!r})")


@app.command("models")
def models_command(
    write: Annotated[bool, typer.Option("--write", help="Pin the installed models' checksums in pipeline/ocr_models/manifest.json (in an editable checkout).")] = False,
    lang: Annotated[str, typer.Option(help="Tesseract languages.")] = "vie+eng",
) -> None:
    """Show the OCR model files in use and whether they match the pinned checksums."""
    try:
        if write:
            console.print(f"wrote {models.write_manifest(lang)}")
        table = Table("file", "sha256", "bytes", "pinned")
        for model in models.current_models(lang):
            table.add_row(model.name, model.sha256[:16] + "…", str(model.bytes), "yes" if model.pinned else "[red]no[/red]")
        console.print(table)
    except DigitizeError as exc:
        raise _fail(exc) from None


def run() -> None:
    app()


if __name__ == "__main__":
    sys.exit(run())
