"""Load: a night of generated mixed batches through a real S3 inbox and a Prefect work pool, with 1, 2 and 4 workers.

Usage: bench_load.py [--pages 240] [--stations 4] [--batch-pages 20] [--workers 1,2,4] [--keep]

Batches of dossiers (a receipt with its QR code, then 1-6 pages) in scanner PDFs of colour
or gray JPEG pages, bitonal G4 TIFFs and gray LZW TIFFs, 200-400 dpi, skewed up to 6 degrees
and turned every quarter, are dropped by `--stations` stations at once into `weed mini` on
loopback. prefect.yaml's deployments go onto a `process` work pool of a Prefect server, and N
workers (`prefect worker start --pool digitize --limit 2`, as README's production set-up)
take the night: the nightly run starts one `process-batch` flow run per batch, and any worker
takes it. Each N runs the same night in a fresh bucket.

On this machine the workers share its cores, and Prefect's limit `tesseract-<host>` (the core
count) bounds their Tesseracts together: more workers here cannot add pages per hour, only
show that they do not oversubscribe the machine (the most Tesseracts seen at once is
printed). Workers on N machines each have their own limit, so a province's capacity is
projected as N times one machine's rate, less the dispatch overhead measured here (from the
night's start to its last batch run's end, against the batch runs' own time). Peak memory is
sampled for each worker's whole process tree. It prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import contextlib
import math
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench import pageset  # noqa: E402
from bench.measure import tree_memory_mb  # noqa: E402
from digitize.drop import drop  # noqa: E402
from digitize.prefect_server import local_prefect_server  # noqa: E402
from digitize.storage import open_store  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from tests.deploykit import (  # noqa: E402
    FINAL_STATES, QUICK_POLLING, api_call, background, prefect_cli, runs_taken, start_flow_run, wait_for_deployment, worker,
)
from tests import scanfactory as sf  # noqa: E402
from tests.make_batches import dossier_codes  # noqa: E402
from tests.s3server import WeedMini  # noqa: E402

PREFECT_PORT = 4298
# How stations save a scanner run: (format, share of files). Colour comes as JPEG, as
# scanners write it; bitonal as G4.
FORMATS = {"pdf-colour-jpeg": 0.25, "pdf-gray-jpeg": 0.25, "tiff-g4": 0.3, "tiff-lzw-gray": 0.2}
DPI_SHARE = {200: 0.3, 300: 0.5, 400: 0.2}
GB = 1024.0

# Nghệ An: administrative-procedure records a year (the figure given with issue #5).
RECORDS_PER_YEAR = 1_490_000


# --- the night's scans ---------------------------------------------------------------------------


def content_pool() -> dict[int, list[np.ndarray]]:
    """The bench page set's pages (every quarter turn, skew to ±6°), rendered once, by dpi."""
    pool: dict[int, list[np.ndarray]] = {}
    # Without the receipt's own text: a receipt title without its code is flagged, rightly.
    docs = [d for d in sf.DOCUMENTS if d != "giay-tiep-nhan"]
    for seed, (dpi, _mode, skew, turns) in enumerate(pageset.PAGES):
        doc = docs[seed % len(docs)]
        body = sf.DOCUMENTS[doc] + sf.VIETNAMESE_PARAGRAPHS[seed:] + sf.VIETNAMESE_PARAGRAPHS[:seed]
        clean, _ = sf.render_page(text_lines_or_paragraphs=body, dpi=dpi, font=("serif", "sans")[seed % 2], font_pt=12, seed=500 + seed)
        pool.setdefault(dpi, []).append(sf.scan_effects(clean, dpi=dpi, skew_deg=skew, rotate90=turns, noise=2.0, seed=500 + seed))
    return pool


@dataclass
class Batch:
    station: str
    folder: Path
    pages: int = 0
    dossiers: int = 0
    files: list[str] = field(default_factory=list)


def make_night(out: Path, *, pages: int, stations: int, batch_pages: int, seed: int = 2026) -> list[Batch]:
    """Batches totalling at least `pages` pages, round-robin over the stations, in drop order."""
    rng = np.random.default_rng(seed)
    pool = content_pool()
    codes = iter(dossier_codes(pages + 10, seed=seed))
    batches: list[Batch] = []
    total = 0
    while total < pages:
        station = f"station-{len(batches) % stations + 1:02d}"
        batch = Batch(station, out / station / f"ca-{len(batches) + 1:03d}")
        batch.folder.mkdir(parents=True)
        target = min(batch_pages, pages - total)
        while batch.pages < target:
            # One scanner run: whole dossiers, one format and resolution.
            fmt = str(rng.choice(list(FORMATS), p=list(FORMATS.values())))
            dpi = int(rng.choice(list(DPI_SHARE), p=list(DPI_SHARE.values())))
            remaining = target - batch.pages
            # A session is one scanner run, or two when it is long.
            run_pages = remaining if remaining <= 10 or rng.random() < 0.5 else int(rng.integers(remaining // 3, 2 * remaining // 3 + 1))
            images = []
            while len(images) < run_pages:
                receipt, _ = sf.receipt_page(code=next(codes), dpi=dpi, seed=int(rng.integers(1 << 30)))
                images.append(sf.scan_effects(receipt, dpi=dpi, skew_deg=float(rng.uniform(-3, 3)), noise=2.0, seed=int(rng.integers(1 << 30))))
                for _ in range(min(int(rng.integers(1, 7)), run_pages - len(images))):
                    images.append(pool[dpi][int(rng.integers(len(pool[dpi])))])
                batch.dossiers += 1
            name = _write(batch.folder / f"scan-{len(batch.files) + 1:02d}", fmt, images, dpi, seed=int(rng.integers(1 << 30)))
            batch.files.append(f"{name} ({fmt}, {dpi} dpi, {len(images)} pages)")
            batch.pages += len(images)
        total += batch.pages
        batches.append(batch)
    return batches


def _write(stem: Path, fmt: str, images: list[np.ndarray], dpi: int, *, seed: int) -> str:
    if fmt.startswith("pdf-"):
        colour = fmt == "pdf-colour-jpeg"
        encoded = [sf.encode_jpeg(img, dpi, quality=80, colour=colour, seed=seed + i) for i, img in enumerate(images)]
        return sf.save_pdf(stem.with_suffix(".pdf"), encoded, dpi).name
    if fmt == "tiff-g4":
        return sf.save_tiff(stem.with_suffix(".tif"), images, dpi, compression="group4").name
    return sf.save_tiff(stem.with_suffix(".tif"), [sf.flatten_paper(img) for img in images], dpi, compression="tiff_lzw").name


# --- one run of the night ------------------------------------------------------------------------


@dataclass
class WorkerResult:
    name: str
    seconds: float
    returncode: int
    batches: int
    pages: int
    peak_rss_mb: float
    peak_pss_mb: float
    stderr_tail: str


def _cpu_times() -> tuple[int, int]:
    """(idle, total) jiffies of all cores, from /proc/stat."""
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    return values[3] + values[4], sum(values)


def cpu_busy_since(before: tuple[int, int]) -> float:
    """Share of the machine's CPU time that was busy since `before`."""
    idle, total = _cpu_times()
    return 1.0 - (idle - before[0]) / max(1, total - before[1])


@dataclass
class RunResult:
    workers: list[WorkerResult]
    seconds: float
    pages: int
    batches_done: int
    batches: int
    archived: int
    in_review: int
    dossiers: int
    drop_seconds: float
    busy_before: float  # others' load: the machine's busy share in the seconds before the workers started
    busy_during: float
    most_tesseracts: int  # Tesseract processes seen at once
    batch_run_seconds: float  # the batch runs' own run time, summed
    night_state: str


def night(label: str, batches: list[Batch], *, workers: int, s3: WeedMini, api: str, work: Path) -> RunResult:
    base = {
        **os.environ, **s3.env, "PREFECT_API_URL": api, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "COLUMNS": "220",
        "DIGITIZE_SERVICE_INBOX": f"s3://{label}-inbox", "DIGITIZE_SERVICE_ARCHIVE": f"s3://{label}-archive",
        "DIGITIZE_SERVICE_REVIEW": f"s3://{label}-review", **QUICK_POLLING,
    }  # fmt: skip
    inbox = open_store(base["DIGITIZE_SERVICE_INBOX"], base)
    # The stations drop at once, each its own batches in order.
    by_station: dict[str, list[Batch]] = {}
    for batch in batches:
        by_station.setdefault(batch.station, []).append(batch)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(by_station)) as pool:
        dropped = pool.map(lambda own: [(drop(b.folder, inbox, station=b.station, operator="bench")[0], b) for b in own],
                           by_station.values())  # fmt: skip
        by_prefix = {prefix: b for station in dropped for prefix, b in station}
    drop_seconds = time.perf_counter() - started

    # What the machine is doing without us: it is shared, and a busy one lowers every figure.
    idle_check = _cpu_times()
    time.sleep(5)
    busy_before = cpu_busy_since(idle_check)
    logs = [work / f"{label}-worker-{n + 1}.log" for n in range(max(1, workers))]
    with contextlib.ExitStack() as stack:
        if workers:
            procs = [stack.enter_context(worker("digitize", env={**base, "PREFECT_HOME": str(work / f"{label}-home-{n}")}, cwd=work, log=log))
                     for n, log in enumerate(logs)]  # fmt: skip
            # The workers are online before the night starts (the night runs batches itself otherwise).
            while api_call(api, "/work_pools/digitize")["status"] != "READY":
                time.sleep(0.5)
        cpu_start = _cpu_times()
        start = time.perf_counter()
        if workers:
            night_run = start_flow_run(api, wait_for_deployment(api, "digitize-nightly-scheduled", "nightly"), parameters={})

            def ended() -> str | None:
                state = api_call(api, f"/flow_runs/{night_run}")["state_type"]
                return state if state in FINAL_STATES else None
        else:  # the baseline: one `digitize run`, its batches in its own process, two at a time
            here = {**base, "DIGITIZE_SERVICE_BATCH_DEPLOYMENT": "", "PREFECT_HOME": str(work / f"{label}-home")}
            procs = [stack.enter_context(background([str(Path(sys.executable).parent / "digitize"), "run"], env=here, cwd=work, log=logs[0]))]

            def ended() -> str | None:
                return None if procs[0].poll() is None else ("COMPLETED" if procs[0].returncode == 0 else f"EXIT {procs[0].returncode}")
        peaks = [[0.0, 0.0] for _ in procs]
        most_tesseracts = 0
        while (state := ended()) is None:
            for n, proc in enumerate(procs):
                rss, pss = tree_memory_mb(proc.pid)
                peaks[n][0], peaks[n][1] = max(peaks[n][0], rss), max(peaks[n][1], pss)
            most_tesseracts = max(most_tesseracts, _tesseracts())
            time.sleep(0.25)
        seconds = time.perf_counter() - start
        busy_during = cpu_busy_since(cpu_start)
    archive = open_store(base["DIGITIZE_SERVICE_ARCHIVE"], base)
    if not workers:
        night_run = json.loads(archive.read_bytes("audit/last-night.json"))["run"]
    runs = [r for r in api_call(api, "/flow_runs/filter", {"flows": {"name": {"any_": ["process-batch"]}}, "limit": 200})
            if r["parameters"].get("night") == night_run]  # fmt: skip
    results = []
    for n, log in enumerate(logs):
        mine = [r for r in runs if (not workers or r["id"] in runs_taken(log)) and r["state_name"] == "Done"]
        pages = sum(by_prefix[r["parameters"]["prefix"]].pages for r in mine if r["parameters"]["prefix"] in by_prefix)
        results.append(WorkerResult(f"worker {n + 1}", sum(r["total_run_time"] for r in mine), 0 if state == "COMPLETED" else 1,
                                    len(mine), pages, peaks[n][0], peaks[n][1], ""))  # fmt: skip
    keys = [o.key for o in inbox.list()]
    done = {k.rsplit("/", 1)[0] + "/" for k in keys if k.endswith("/_done.json")}
    review = open_store(base["DIGITIZE_SERVICE_REVIEW"], base)
    return RunResult(
        results, seconds, pages=sum(by_prefix[p].pages for p in done if p in by_prefix), batches_done=len(done), batches=len(batches),
        archived=sum(1 for o in archive.list() if o.key.endswith(".pdf")),
        in_review=sum(1 for o in review.list() if o.key.endswith("/_item.json")),
        dossiers=sum(b.dossiers for b in batches), drop_seconds=drop_seconds, busy_before=busy_before,
        busy_during=busy_during, most_tesseracts=most_tesseracts, batch_run_seconds=sum(r["total_run_time"] for r in runs),
        night_state=state,
    )  # fmt: skip


# The Prefect database's tables that grow with each night, and what each row is.
PREFECT_TABLES = ("flow_run", "flow_run_state", "task_run", "task_run_state", "log", "artifact", "events")


def database_size(database: Path) -> tuple[int, dict[str, int]]:
    """The Prefect server's SQLite database: its bytes once its write-ahead log is folded in, and its rows by table."""
    with contextlib.closing(sqlite3.connect(database, timeout=60)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        rows = {table: db.execute(f"select count(*) from {table}").fetchone()[0] for table in PREFECT_TABLES}
    return database.stat().st_size, rows


def _tesseracts() -> int:
    """Tesseract processes running on this machine now."""
    count = 0
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            count += comm.read_text().strip() == "tesseract"
        except OSError:
            continue
    return count


# --- report --------------------------------------------------------------------------------------


def _label(workers: int) -> str:
    return f"{workers} workers" if workers else "one `digitize run`"


def report(args, batches: list[Batch], runs: dict[int, RunResult]) -> None:
    formats: dict[str, int] = {}
    for batch in batches:
        for entry in batch.files:
            kind = entry.split("(", 1)[1].split(",")[0]
            formats[kind] = formats.get(kind, 0) + 1
    pages = sum(b.pages for b in batches)
    print(f"\nnight: {pages} pages, {sum(b.dossiers for b in batches)} dossiers "
          f"({pages / max(1, sum(b.dossiers for b in batches)):.1f} pages each, receipts included), "
          f"{len(batches)} batches from {len({b.station for b in batches})} stations; files: "
          + ", ".join(f"{k} {v}" for k, v in sorted(formats.items())))  # fmt: skip
    print(f"machine: {os.cpu_count()} cores, shared by the workers, weed mini and the Prefect server; a worker = "
          "`prefect worker start --pool digitize --limit 2`; each batch run uses the machine's cores (--jobs default)\n")
    print(f"{'workers':>7} {'pages':>6} {'batches':>8} {'night':>6} {'wall s':>8} {'pages/hour':>11} {'Tesseracts at once':>19}"
          f" {'batch runs s':>13} {'CPU busy before/during':>23}   dossiers archived / in review / generated")  # fmt: skip
    rates = {}
    for count, run in runs.items():
        rate = run.pages / run.seconds if run.seconds else 0.0
        rates[count] = rate
        busy = f"{run.busy_before:.0%} / {run.busy_during:.0%}"
        print(f"{count or 'run':>7} {run.pages:>6} {run.batches_done:>4}/{run.batches:<3} {run.night_state[:6]:>6} {run.seconds:>8.1f}"
              f" {rate * 3600:>11.0f} {run.most_tesseracts:>19} {run.batch_run_seconds:>13.0f} {busy:>23}"
              f"   {run.archived} / {run.in_review} / {run.dossiers}")  # fmt: skip
    if any(run.busy_before > 0.15 for run in runs.values()):
        print("! other work kept the machine busy before a run started (CPU busy before > 15%):"
              " these figures are low and the comparison unreliable; rerun on an idle machine.")
    if rates.get(0):
        print("\npages per hour against one `digitize run` (batches in its own process), same machine, same night: "
              + ", ".join(f"{count} workers {rate / rates[0]:.2f}x" for count, rate in rates.items() if count))
    print("\npeak memory per worker process tree (worker + its flow runs + page workers + Tesseract), sampled every 0.25 s:")
    for count, run in runs.items():
        for w in run.workers:
            fits = "yes" if w.peak_rss_mb < GB else ("yes by PSS" if w.peak_pss_mb < GB else "NO")
            print(f"  {_label(count)}, {w.name}: {w.batches} batch runs, {w.pages} pages, {w.seconds:.1f} s of runs; "
                  f"RSS sum {w.peak_rss_mb:.0f} MB, PSS sum {w.peak_pss_mb:.0f} MB; under 1 GB: {fits}")  # fmt: skip
        if run.batches_done < run.batches:
            print(f"  ! {_label(count)}: only {run.batches_done} of {run.batches} batches were marked done")
    print("  (RSS counts shared pages once per process and overstates; PSS shares them out.)")
    machine_rate = max((rate for count, rate in rates.items() if count), default=0.0)
    print(f"\nprojection: N machines like this one, each its own worker and limit tesseract-<host>, take "
          f"N x {machine_rate * 3600:.0f} pages/hour: the S3 inbox and the Prefect server are shared, and cost")
    print("  each batch run a flow run's start (a process and its imports, a few seconds, overlapped with other batches' OCR).")
    province(args, machine_rate)


def province(args, machine_rate: float) -> None:
    """Machines for a province's nights, from the measured rates and stated assumptions."""
    if not machine_rate:
        return
    per_machine_night = machine_rate * 3600 * args.night_hours
    print(f"\nWorkers per province (Nghệ An, {args.records_per_year:,} administrative-procedure records a year).")
    print("  pages per record is an ASSUMPTION, not a measurement: ../shared/corpus holds no dossiers with page")
    print("  counts, and the generated dossiers' size here is the generator's choice. Scans are assumed to arrive")
    print(f"  on {args.working_days} working days and to be processed in a {args.night_hours:g} h night;")
    print(f"  throughput as measured above on generated full text pages: {machine_rate * 3600:.0f} pages/hour for this {os.cpu_count()}-core machine.")
    print("  machines = ceil(records/year x pages/record / working days / (pages/hour per machine x night hours))\n")
    print(f"  {'pages/record':>12} {'pages/night':>12} {'machines like this':>19}")
    for per_record in args.pages_per_record:
        nightly = args.records_per_year * per_record / args.working_days
        print(f"  {per_record:>12g} {nightly:>12,.0f} {math.ceil(nightly / per_machine_night):>19}")
    print("  Real pages with less text than these full pages OCR faster; a higher dpi or colour share, slower.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=240, help="pages in the night")
    parser.add_argument("--stations", type=int, default=4)
    parser.add_argument("--batch-pages", type=int, default=20, help="pages per batch (a station's scanning session)")
    parser.add_argument("--workers", type=lambda s: [int(v) for v in s.split(",")], default=[0, 1, 2, 4],
                        help="worker counts to run; 0 is the baseline, one `digitize run` with its batches in its own process")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the generated batches, S3 data and worker logs")
    parser.add_argument("--records-per-year", type=int, default=RECORDS_PER_YEAR)
    parser.add_argument("--pages-per-record", type=lambda s: [float(v) for v in s.split(",")], default=[5.0, 10.0, 20.0])
    parser.add_argument("--working-days", type=int, default=250)
    parser.add_argument("--night-hours", type=float, default=10.0)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="digitize-loadbench-"))
    t0 = time.perf_counter()
    batches = make_night(work / "scans", pages=args.pages, stations=args.stations, batch_pages=args.batch_pages)
    print(f"generated {sum(b.pages for b in batches)} pages in {len(batches)} batches in {time.perf_counter() - t0:.0f} s ({work})")
    s3 = WeedMini(work / "weed")
    print("starting weed mini (it waits its turn while a test session holds its ports)")
    s3.start()
    runs: dict[int, RunResult] = {}
    growth: dict[int, tuple[int, dict[str, int]]] = {}  # the Prefect database's bytes and rows added by each night
    try:
        server_env = {**os.environ, "PREFECT_HOME": str(work / "prefect-server"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        with local_prefect_server(PREFECT_PORT, env=server_env) as api:
            server_env["PREFECT_API_URL"] = api
            prefect_cli("work-pool", "create", "digitize", "--type", "process", env=server_env, cwd=REPO)
            prefect_cli("--no-prompt", "deploy", "--all", env=server_env, cwd=REPO)
            database = work / "prefect-server" / "prefect.db"
            for count in args.workers:
                print(f"{_label(count)} on {sum(b.pages for b in batches)} pages ...")
                before, rows_before = database_size(database)
                runs[count] = night(f"w{count}", batches, workers=count, s3=s3, api=api, work=work)
                after, rows_after = database_size(database)
                growth[count] = (after - before, {t: rows_after[t] - rows_before[t] for t in PREFECT_TABLES})
    finally:
        s3.release()
    report(args, batches, runs)
    print("\nthe Prefect database (SQLite, write-ahead log folded in) grew per night by:")
    for count, (size, rows) in growth.items():
        print(f"  {_label(count)}: {size / 1024:.0f} KB, {size / 1024 / len(batches):.1f} KB a batch; rows: "
              + ", ".join(f"{table} {n}" for table, n in rows.items()))
    if args.keep:
        print(f"\nkept: {work} (scans/, weed/, *-worker-*.log)")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
