"""End to end, inbox to archive: pages per hour through `digitize drop` + `digitize run`,
against `digitize process` on the same pages in the same run (the pure pipeline).

Usage: bench_flow.py [--pages 60] [--jobs 2]. Uses folder stores, so it measures the
service's own overhead (claims, verification, uploads, Prefect), not a network.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench import pageset  # noqa: E402
from digitize.prefect_server import local_prefect_server  # noqa: E402

BIN = Path(sys.executable).parent


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{argv[1]} failed: {proc.stderr[-2000:]}")
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=60)
    parser.add_argument("--batch-pages", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="digitize-flowbench-"))
    one_round = pageset.make(work / "set")
    # Batches as a reception desk sends them.
    batches = []
    for n in range(args.pages):
        folder = work / "batches" / f"batch-{n // args.batch_pages:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        source = one_round[n % len(one_round)]
        shutil.copy(source, folder / f"{n:04d}-{source.name}")
        if folder not in batches:
            batches.append(folder)
    env = {
        **os.environ, "PREFECT_HOME": str(work / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DIGITIZE_SERVICE_INBOX": str(work / "inbox"), "DIGITIZE_SERVICE_ARCHIVE": str(work / "archive"),
        "DIGITIZE_SERVICE_REVIEW": str(work / "review"), "DIGITIZE_SERVICE_CLAIM_SETTLE_S": "0.5",
    }  # fmt: skip
    # The pure pipeline at its best: every page in one `digitize process`.
    all_pages = [str(p) for b in batches for p in sorted(b.iterdir())]
    pipeline_s = timed([str(BIN / "digitize"), "process", *all_pages, "--out", str(work / "out"), "--jobs", str(args.jobs)], env)
    drop_s = sum(timed([str(BIN / "digitize"), "drop", str(b), "--station", "bench"], env) for b in batches)
    # As in production, the flow reports to a running Prefect server.
    server_env = {**os.environ, "PREFECT_HOME": str(work / "prefect-server"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    with local_prefect_server(4299, env=server_env) as api:
        run_s = timed([str(BIN / "digitize"), "run", "--jobs", str(args.jobs)], {**env, "PREFECT_API_URL": api})
    archived = sum(1 for p in (work / "archive").rglob("*.pdf")) + sum(1 for p in (work / "review").rglob("*.pdf"))
    print(f"{args.pages} pages in {len(batches)} batches, {args.jobs} jobs; {archived} dossiers archived or in review")
    print(f"pipeline (one digitize process):       {pipeline_s:7.1f} s  {args.pages / pipeline_s * 3600:7.0f} pages/hour")
    print(f"flow (digitize run, inbox to archive, running Prefect server): {run_s:7.1f} s  {args.pages / run_s * 3600:7.0f} pages/hour")
    print(f"station drops (not in the flow time):  {drop_s:7.1f} s")
    print(f"flow overhead over the pipeline: {run_s / pipeline_s - 1:+.1%}   (target <= +10%)")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
