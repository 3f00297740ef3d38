"""Shared benchmark helpers: run a command tree while sampling its total RSS, and score words."""

from __future__ import annotations

import collections
import concurrent.futures
import os
import re
import subprocess
import threading
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Run:
    seconds: float
    peak_rss_mb: float  # the whole process tree, summed, at its largest
    returncode: int


def _tree_rss_kb(root: int, *, include_root: bool = True) -> int:
    children: dict[int, list[int]] = collections.defaultdict(list)
    rss: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            pid, ppid = int(entry.name), int(fields[1])
            rss[pid] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") // 1024
            children[ppid].append(pid)
        except (OSError, IndexError, ValueError):
            continue
    total, stack = 0, list(children.get(root, []))
    if include_root:
        total += rss.get(root, 0)
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def tree_pids(root: int) -> list[int]:
    """`root` and every process descending from it, from /proc."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                children[int(fh.read().rsplit(")", 1)[1].split()[1])].append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def tree_memory_mb(root: int) -> tuple[float, float]:
    """Summed RSS and summed PSS of `root`'s process tree, in MB.

    RSS counts a page shared by several processes (libraries, forked workers) once per
    process, so its sum overstates; PSS divides each shared page among its sharers, so
    its sum is what the tree really occupies.
    """
    rss = pss = 0
    for pid in tree_pids(root):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except (OSError, ValueError):
            continue  # it ended between the listing and the read
    return rss / 1024, pss / 1024


def run_all(commands: list[list[str]], *, jobs: int, env: dict | None = None) -> Run:
    """Run commands `jobs` at a time; sample the summed RSS of every descendant every 50 ms."""
    start = time.perf_counter()
    me = os.getpid()
    peak = 0
    stop = threading.Event()
    failures = []

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _tree_rss_kb(me, include_root=False))
            stop.wait(0.05)

    def one(argv: list[str]) -> None:
        proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
        if proc.returncode:
            failures.append(f"{argv[0]} exited {proc.returncode}: {proc.stderr.decode(errors='replace')[-300:]}")

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(one, commands))
    stop.set()
    sampler.join()
    for failure in failures:
        print(f"  ! {failure}")
    return Run(time.perf_counter() - start, peak / 1024, len(failures))


def words(text: str) -> collections.Counter:
    return collections.Counter(unicodedata.normalize("NFC", text).split())


def join_hyphens(text: str) -> str:
    """A word broken at the end of a line ("sim-" / "ply") made whole, as pdftotext itself does."""
    return re.sub(r"(\w)-[ \t]*\n[ \t]*(\w)", r"\1\2", text)


def word_accuracy(truth: str, found: str, *, joined: bool = False) -> float:
    """Share of the ground truth's words found, order-insensitively (multisets after NFC);
    `joined`: end-of-line hyphens joined on both sides first."""
    if joined:
        truth, found = join_hyphens(truth), join_hyphens(found)
    expected, got = words(truth), words(found)
    return sum((expected & got).values()) / max(1, sum(expected.values()))


def pdf_text(pdf: Path) -> str:
    return subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True).stdout

