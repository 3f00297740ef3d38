"""The package installs like any other: a non-editable install works from any folder, and prefect.yaml deploys it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import httpx
import pytest

from digitize.prefect_server import local_prefect_server
from tests.conftest import REPO

BIN = Path(sys.executable).parent
SAMPLE = REPO / "sample_scans" / "don-de-nghi-200dpi-skew.png"
PINS = REPO / "pipeline" / "ocr_models" / "manifest.json"
# What a wheel is built from; copied, so the build leaves nothing (build/, egg-info) in the checkout.
PROJECT_FILES = ["pyproject.toml", "README.md", "pipeline", "digitize", "flows"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(argv: list, *, env: dict, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def _wait_for(what: str, probe, *, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := probe():
            return found
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A fresh venv with `pip install --no-deps` of the project (not editable); its dependencies are
    the test venv's, reached by a .pth line. Such a line only adds a folder to sys.path and runs
    none of that folder's .pth files, so the test venv's editable hook (which maps the packages
    to the checkout) stays off. Returns the venv and an environment without the checkout."""
    tmp = tmp_path_factory.mktemp("install")
    source = tmp / "source"
    source.mkdir()
    for name in PROJECT_FILES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / name, source / name)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}
    env.pop("PREFECT_API_URL", None)
    env.update(PATH=f"{venv / 'bin'}:{env.get('PATH', '')}", COLUMNS="200", PREFECT_HOME=str(tmp / "prefect"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false")  # fmt: skip
    pip = _run([venv / "bin" / "python", "-m", "pip", "install", "--no-deps", "--quiet", source], env=env, cwd=tmp)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    site_packages = Path(_run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                              env=env, cwd=tmp).stdout.strip())  # fmt: skip
    (site_packages / "zz-test-venv-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return venv, env


@pytest.mark.slow
def test_a_non_editable_install_processes_a_page_from_any_folder(installed, tmp_path):
    venv, env = installed
    site_packages = venv / "lib" / "python3.11" / "site-packages"
    where = _run([venv / "bin" / "python", "-c", (
        "import json, digitize, pipeline, flows.nightly\n"
        "from pipeline.settings import DEFAULT_CONFIG\nfrom pipeline.ocr import OCR_CONFIG\nfrom pipeline.models import MANIFEST\n"
        "print(json.dumps([digitize.__file__, pipeline.__file__, flows.nightly.__file__,"
        " str(DEFAULT_CONFIG), str(OCR_CONFIG), str(MANIFEST)]))"
    )], env=env, cwd=tmp_path)  # fmt: skip
    assert where.returncode == 0, where.stderr
    for path in map(Path, json.loads(where.stdout)):
        assert path.is_relative_to(site_packages) and path.is_file(), f"{path} is not the installed copy"

    out = tmp_path / "out"
    proc = _run([venv / "bin" / "digitize", "process", SAMPLE, "--out", out], env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pdf, manifest_file = out / "records" / f"{SAMPLE.stem}.pdf", out / "records" / f"{SAMPLE.stem}.json"
    manifest = json.loads(manifest_file.read_text("utf-8"))
    assert manifest["output"]["pdf_sha256"] == hashlib.sha256(pdf.read_bytes()).hexdigest()
    pins = {f["name"]: f["sha256"] for f in json.loads(PINS.read_text("utf-8"))["files"]}
    used = {m["name"]: m["sha256"] for m in manifest["ocr"]["models"]}
    assert {"vie.traineddata", "eng.traineddata", "digitize.config", "vietnamese-headings.user-words"} <= used.keys()
    assert all(used[name] == pins[name] for name in used), (used, pins)
    assert all(m["pinned"] for m in manifest["ocr"]["models"])

    # The pins are the checkout's: an installed copy is not rewritten, and the refusal says why.
    before = (site_packages / "pipeline" / "ocr_models" / "manifest.json").read_bytes()
    refused = _run([venv / "bin" / "digitize", "models", "--write"], env=env, cwd=tmp_path)
    assert refused.returncode == 73, refused.stdout + refused.stderr
    assert "installed package" in refused.stderr and str(site_packages) in refused.stderr.replace("\n", "")
    assert (site_packages / "pipeline" / "ocr_models" / "manifest.json").read_bytes() == before


@pytest.mark.slow
def test_digitize_serve_from_an_installed_package_records_a_module_entrypoint_that_runs(installed, tmp_path):
    venv, env = installed
    env = {**env, "DIGITIZE_SERVICE_INBOX": str(tmp_path / "inbox"), "DIGITIZE_SERVICE_ARCHIVE": str(tmp_path / "archive"),
           "DIGITIZE_SERVICE_REVIEW": str(tmp_path / "review"), "DIGITIZE_SERVICE_SCHEDULE": "15 3 * * *"}  # fmt: skip
    (tmp_path / "inbox").mkdir()
    # The server runs from the test venv: the fresh venv has the package, not Prefect's scripts.
    with local_prefect_server(_free_port(), env=env) as api:
        serve = subprocess.Popen(
            [str(venv / "bin" / "digitize"), "serve", "--jobs", "1"], env={**env, "PREFECT_API_URL": api},
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
        try:
            def deployment():
                found = httpx.post(f"{api}/deployments/filter", json={}, timeout=5).json()
                return found[0] if found else None

            served = _wait_for("`digitize serve` to register its deployment", deployment, timeout=180)
            assert served["entrypoint"] == "flows.nightly.nightly_from_config"
            assert [s["schedule"]["cron"] for s in served["schedules"]] == ["15 3 * * *"]
            run = httpx.post(f"{api}/deployments/{served['id']}/create_flow_run", json={}, timeout=10).json()

            def finished():
                state = httpx.get(f"{api}/flow_runs/{run['id']}", timeout=5).json()["state_type"]
                return state if state in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"} else None

            assert _wait_for("the served flow run", finished, timeout=180) == "COMPLETED"
        finally:
            os.killpg(serve.pid, signal.SIGTERM)
            output, _ = serve.communicate(timeout=60)
    assert "Traceback" not in output, output


@pytest.mark.slow
def test_prefect_deploy_takes_the_schedule_from_the_settings_and_a_worker_runs_it(tmp_path):
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DIGITIZE_SERVICE_INBOX": str(tmp_path / "inbox"), "DIGITIZE_SERVICE_ARCHIVE": str(tmp_path / "archive"),
           "DIGITIZE_SERVICE_REVIEW": str(tmp_path / "review"), "COLUMNS": "200"}  # fmt: skip
    (tmp_path / "inbox").mkdir()
    with local_prefect_server(_free_port(), env=env) as api:
        env["PREFECT_API_URL"] = api
        pool = _run([BIN / "prefect", "work-pool", "create", "digitize", "--type", "process"], env=env, cwd=tmp_path)
        assert pool.returncode == 0, pool.stdout + pool.stderr
        # The deploying shell's override reaches the schedule, as any setting's would.
        deploy = _run([BIN / "prefect", "--no-prompt", "deploy", "--all"],
                      env={**env, "DIGITIZE_SERVICE_SCHEDULE": "30 21 * * 1-5"}, cwd=REPO)  # fmt: skip
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        deployments = httpx.post(f"{api}/deployments/filter", json={}, timeout=10).json()
        assert sorted(d["name"] for d in deployments) == ["batches", "nightly"]
        by_name = {d["name"]: d for d in deployments}
        assert by_name["nightly"]["entrypoint"] == "flows.nightly.nightly_from_config"
        assert by_name["batches"]["entrypoint"] == "flows.batch.process_batch_run"
        assert by_name["batches"]["schedules"] == [] and all(d["pull_steps"] == [] for d in deployments)
        assert [(s["schedule"]["cron"], s["schedule"]["timezone"]) for s in by_name["nightly"]["schedules"]] == [
            ("30 21 * * 1-5", "Asia/Ho_Chi_Minh")
        ]

        # Without the override, the default of digitize/config/service.toml.
        again = _run([BIN / "prefect", "--no-prompt", "deploy", "--name", "nightly"], env=env, cwd=REPO)
        assert again.returncode == 0, again.stdout + again.stderr
        nightly = httpx.post(f"{api}/deployments/filter", json={"deployments": {"name": {"any_": ["nightly"]}}}, timeout=10).json()[0]
        assert [s["schedule"]["cron"] for s in nightly["schedules"]] == ["0 22 * * *"]

        run = httpx.post(f"{api}/deployments/{nightly['id']}/create_flow_run", json={}, timeout=10).json()
        worker = _run([BIN / "prefect", "worker", "start", "--pool", "digitize", "--run-once"], env=env, cwd=tmp_path, timeout=300)
        state = httpx.get(f"{api}/flow_runs/{run['id']}", timeout=10).json()["state_type"]
        assert state == "COMPLETED", worker.stdout + worker.stderr
