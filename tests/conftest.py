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


THREE_DOCUMENT_CODE = "000.00.21.H40-230901-0123"
THREE_DOCUMENT_AGENCY = "UBND huyện Nghi Lộc"


@pytest.fixture(scope="session")
def three_document_dossier(tmp_path_factory):
    """A generated dossier of three documents (an application, an ID card, a two-page decision),
    processed once by the real `digitize process --pdfa 1b`, signed with a throwaway CA.

    Returns (the record's folder, the demo CA, the environment that signs with it). The hints name
    the dossier; with no receipt on the pages to confirm them it is flagged split_mismatch, so the
    record is in manual/<code>/.
    """
    from digitize.keys import make_demo_ca
    from tests import scanfactory as sf

    root = tmp_path_factory.mktemp("three-documents")
    ca = make_demo_ca(root / "ca", agency="Bộ phận một cửa huyện Nghi Lộc (test)")
    pages = root / "ho-so"
    pages.mkdir()
    application, _ = sf.render_page(
        text_lines_or_paragraphs=sf.NATIONAL_MOTTO + [sf.Heading(sf.TITLES["don-de-nghi"])] + sf.VIETNAMESE_PARAGRAPHS[:2],
        dpi=200, seed=3,
    )  # fmt: skip
    sf.save_png(pages / "1.png", application, 200)
    sf.save_png(pages / "2.png", sf.id_card_page(dpi=300, name="NGUYỄN THỊ HOA", number="040187003521"), 300)
    decision = sf.decision_page(
        dpi=200, organ=("ỦY BAN NHÂN DÂN", "TỈNH NGHỆ AN"), number="123/QĐ-UBND",
        place_date="Nghệ An, ngày 1 tháng 9 năm 2023", title="QUYẾT ĐỊNH",
        subject="Về việc cấp giấy chứng nhận quyền sử dụng đất",
        body=["Căn cứ Luật Đất đai ngày 29 tháng 11 năm 2013; căn cứ Nghị định số 43/2014/NĐ-CP ngày 15 tháng 5 "
              "năm 2014 của Chính phủ quy định chi tiết thi hành một số điều của Luật Đất đai; xét đề nghị của "
              "Giám đốc Sở Tài nguyên và Môi trường tại Tờ trình số 45/TTr-STNMT ngày 20 tháng 8 năm 2023."],
    )  # fmt: skip
    sf.save_png(pages / "3.png", decision, 200)
    # The decision's second page opens with "QUYẾT ĐỊNH:", the heading of its articles, not a new title.
    articles, _ = sf.render_page(
        text_lines_or_paragraphs=[sf.Heading("QUYẾT ĐỊNH:"), sf.VIETNAMESE_PARAGRAPHS[6]], dpi=200, seed=4,
    )  # fmt: skip
    sf.save_png(pages / "4.png", articles, 200)
    hints = root / "hints.json"
    hints.write_text(f'{{"ho-so": [{{"code": "{THREE_DOCUMENT_CODE}", "first_page": 0, "last_page": 3}}]}}')
    env = {**os.environ, "DIGITIZE_SIGNING_PASSPHRASE": ca.passphrase, "COLUMNS": "200"}
    out = root / "out"
    proc = subprocess.run(
        [str(DIGITIZE), "process", str(pages), "--out", str(out), "--pdfa", "1b", "--jobs", "2", "--hints", str(hints),
         "--set", f"signing.pkcs12={ca.agency_pkcs12}", "--set", f'output.agency="{THREE_DOCUMENT_AGENCY}"'],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out / "manual" / THREE_DOCUMENT_CODE, ca, env


@pytest.fixture
def work_disk(tmp_path):
    """A work folder on a file system of its own (a tmpfs), to fill up or make read-only.

    Mounting needs root (CI runs as root, like this machine); elsewhere the test is skipped,
    saying why. Returns the folder and `mount(options)`, which mounts or remounts it.
    """
    folder = tmp_path / "work"
    folder.mkdir()
    mounted = False

    def mount(options: str) -> None:
        nonlocal mounted
        argv = ["mount", "-t", "tmpfs", "-o", ("remount," if mounted else "") + options, "digitize-work", str(folder)]
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode != 0 and not mounted:
            pytest.skip(f"a tmpfs cannot be mounted here (uid {os.getuid()}): {proc.stderr.strip()}")
        assert proc.returncode == 0, proc.stderr
        mounted = True

    yield folder, mount
    if mounted:
        subprocess.run(["umount", str(folder)], check=False)
