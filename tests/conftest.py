"""Shared fixtures: generated scans, one real `digitize process` run over them, the S3 server, and validators."""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from tests import make_fixtures
from tests.s3server import WeedMini

REPO = Path(__file__).resolve().parents[1]
DIGITIZE = Path(sys.executable).parent / "digitize"
PREFLIGHT_JARS = [
    "/usr/share/java/preflight.jar", "/usr/share/java/pdfbox2.jar", "/usr/share/java/fontbox2.jar",
    "/usr/share/java/xmpbox.jar", "/usr/share/java/commons-logging.jar",
    "/usr/share/java/javax.activation.jar", "/usr/share/java/jaxb-api.jar",
]  # fmt: skip


def run_digitize(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The real console script, as staff run it."""
    proc = subprocess.run(
        [str(DIGITIZE), *map(str, args)], capture_output=True, text=True, timeout=900,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"digitize {args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def preflight(pdf: Path) -> str:
    """Validate with Apache PDFBox Preflight; returns its verdict line, fails the test otherwise."""
    missing = [jar for jar in PREFLIGHT_JARS if not Path(jar).exists()]
    assert not missing, f"PDFBox Preflight is not installed ({missing}); run `make test`, which installs it"
    proc = subprocess.run(
        ["java", "-cp", ":".join(PREFLIGHT_JARS), "org.apache.pdfbox.preflight.Validator_A1b", str(pdf)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0 and "is a valid PDF/A-1b file" in proc.stdout, proc.stdout + proc.stderr
    return proc.stdout.strip()


def pdf_text(pdf: Path) -> str:
    return subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout


def word_accuracy(truth: str, found: str) -> float:
    """Share of ground-truth words found, order-insensitively (multisets of NFC words)."""
    expected = collections.Counter(unicodedata.normalize("NFC", truth).split())
    got = collections.Counter(unicodedata.normalize("NFC", found).split())
    return sum((expected & got).values()) / max(1, sum(expected.values()))


@pytest.fixture(scope="session")
def fixture_scans(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fixtures")
    make_fixtures.make(folder)
    return folder


@pytest.fixture(scope="session")
def truth(fixture_scans) -> dict[str, make_fixtures.Truth]:
    return make_fixtures.load_truth(fixture_scans)


@pytest.fixture(scope="session")
def processed(fixture_scans, truth, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """All fixtures through one real `digitize process --pdfa 1b --jobs 2` run."""
    out = tmp_path_factory.mktemp("records")
    inputs = [fixture_scans / name for name in truth]
    proc = run_digitize("process", *inputs, "--out", out, "--pdfa", "1b", "--jobs", "2")
    return out, proc


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A real S3 server (weed mini) on loopback for the module; other test sessions wait their turn."""
    server = WeedMini(tmp_path_factory.mktemp("weed"))
    server.start()
    yield server
    server.release()


@pytest.fixture(scope="session")
def sample_records(tmp_path_factory) -> Path:
    """The shipped sample scans through the default settings (PDF/A-2b, compact)."""
    out = tmp_path_factory.mktemp("samples")
    samples = sorted(p for p in (REPO / "sample_scans").iterdir() if p.suffix in {".png", ".jpg", ".tif", ".pdf"})
    run_digitize("process", *samples, "--out", out, "--jobs", "2")
    return out


def have(program: str) -> bool:
    return shutil.which(program) is not None
