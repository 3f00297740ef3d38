"""The `digitize` command: process scans now, and (later) run, serve, drop and verify."""

from __future__ import annotations

import logging
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline import models
from pipeline.batch import Outcome, Record, Rejection, process_inputs
from pipeline.errors import DigitizeError
from pipeline.settings import Settings, load_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Digitize scanned dossiers into signed, searchable PDF/A records.")
console = Console()
errors = Console(stderr=True)


class Flavour(StrEnum):
    pdfa_2b = "2b"
    pdfa_1b = "1b"


class Profile(StrEnum):
    compact = "compact"
    archival = "archival"


ConfigOption = Annotated[
    list[Path] | None,
    typer.Option("--config", help="Extra TOML settings on top of config/default.toml (repeatable)."),
]


def _settings(config: list[Path] | None, overrides: dict[str, object]) -> Settings:
    settings = load_settings(*(config or []))
    return settings.with_overrides({k: v for k, v in overrides.items() if v is not None})


def _fail(exc: DigitizeError) -> typer.Exit:
    errors.print(f"[red]error:[/red] {exc}", highlight=False)
    return typer.Exit(exc.exit_code)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every program run.")] = False) -> None:
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
    config: ConfigOption = None,
) -> None:
    """OCR scans into searchable PDF/A records, one per input, with a JSON manifest and the text."""
    try:
        settings = _settings(
            config,
            {
                "ocr.languages": lang,
                "output.pdfa": pdfa.value if pdfa else None,
                "output.profile": profile.value if profile else None,
            },
        )
        outcomes = _run_with_progress(inputs, out, settings, jobs=jobs)
    except DigitizeError as exc:
        raise _fail(exc) from None
    _print_summary(outcomes, out)
    rejected = [o for o in outcomes if isinstance(o, Rejection)]
    for rejection in rejected:
        errors.print(f"[red]rejected:[/red] {rejection.reason}", highlight=False, soft_wrap=True)
    if rejected:
        raise typer.Exit(max(r.exit_code for r in rejected))


def _run_with_progress(inputs: list[Path], out: Path, settings: Settings, *, jobs: int) -> list[Outcome]:
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

        return process_inputs(inputs, out, settings, jobs=jobs, on_pages=on_pages)


def _print_summary(outcomes: list[Outcome], out: Path) -> None:
    table = Table(title=f"Records in {out}", title_justify="left")
    for column in ("input", "record", "pages", "blank", "OCR conf.", "flags", "status"):
        table.add_column(column, overflow="fold")
    for outcome in outcomes:
        if isinstance(outcome, Record):
            flags = ", ".join(f"{k}×{v}" for k, v in sorted(outcome.flags.items())) or "-"
            conf = f"{outcome.mean_confidence:.1f}" if outcome.mean_confidence is not None else "-"
            status = "up to date" if outcome.up_to_date else "[green]done[/green]"
            table.add_row(
                outcome.input.name, outcome.pdf.name, str(outcome.pages), str(outcome.blank_pages),
                conf, flags, status,
            )  # fmt: skip
        else:
            table.add_row(outcome.input.name, "-", "-", "-", "-", "-", "[red]rejected[/red]")
    console.print(table)
    done = sum(isinstance(o, Record) for o in outcomes)
    console.print(f"{done} of {len(outcomes)} inputs archived as records.")


@app.command("models")
def models_command(
    write: Annotated[bool, typer.Option("--write", help="Pin the installed models' checksums in ocr_models/manifest.json.")] = False,
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
