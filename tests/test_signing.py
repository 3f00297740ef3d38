"""Signed records: PAdES with a throwaway test CA, verified, tamper-evident, still PDF/A; the nightly audit log."""

from __future__ import annotations

import datetime as dt
import hashlib
import http.server
import io
import json
import os
import threading
from pathlib import Path

import pytest
from asn1crypto import tsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pyhanko.pdf_utils.reader import PdfFileReader

from digitize.keys import make_demo_ca
from digitize.storage import LocalStore
from pipeline import atomic
from tests.conftest import REPO, preflight, run_digitize
from tests.servicekit import batch_folder, digitize_cli, folder_env

RECEIPT = REPO / "sample_scans" / "giay-tiep-nhan-300dpi-skew.jpg"
RECEIPT_CODE = "000.00.21.H40-261126-0042"
AGENCY = "UBND huyện Nghi Lộc"


@pytest.fixture(scope="module")
def test_ca(tmp_path_factory):
    return make_demo_ca(tmp_path_factory.mktemp("ca"), agency="Bộ phận một cửa huyện Nghi Lộc (test)")


@pytest.fixture(scope="module")
def stranger_ca(tmp_path_factory):
    """Another CA with an agency certificate of the same name: the signature is sound, the issuer is not trusted."""
    return make_demo_ca(tmp_path_factory.mktemp("stranger"), agency="Bộ phận một cửa huyện Nghi Lộc (test)", root_name="Stranger CA")


def _signing_args(ca) -> list[str]:
    return ["--set", f"signing.pkcs12={ca.agency_pkcs12}", "--set", f'output.agency="{AGENCY}"']


def _process_signed(ca, out: Path, *inputs: Path, passphrase: str | None = None, extra: tuple[str, ...] = ()):
    env = {**os.environ, "DIGITIZE_SIGNING_PASSPHRASE": passphrase or ca.passphrase}
    return digitize_cli(env, "process", *inputs, "--out", out, "--pdfa", "1b", "--jobs", "2", *_signing_args(ca), *extra)


@pytest.fixture(scope="module")
def signed(test_ca, fixture_scans, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("signed")
    proc = _process_signed(test_ca, out, RECEIPT, fixture_scans / "bitonal-g4-400dpi.tif")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_signed_records_verify_against_the_trusted_root(signed, test_ca):
    pdfs = sorted((signed / "records").glob("*.pdf"))
    assert len(pdfs) == 2
    proc = run_digitize("verify", *pdfs, "--trust", test_ca.root)
    lines = proc.stdout.strip().splitlines()
    assert all(line.startswith("OK") for line in lines[:2]), proc.stdout
    assert "PDF/A-1b" in lines[0] and "checksums match the manifest" in lines[0]
    assert "2 of 2 records verified" in proc.stdout


def test_signed_pdfa_1b_still_passes_preflight(signed):
    for pdf in sorted((signed / "records").glob("*.pdf")):
        preflight(pdf)


def test_manifest_records_the_fixity_chain_and_the_signer(signed, fixture_scans):
    manifest = json.loads((signed / "records" / f"{RECEIPT_CODE}.json").read_text())
    pdf = (signed / "records" / f"{RECEIPT_CODE}.pdf").read_bytes()
    signature = manifest["signature"]
    # source scan as dropped -> unsigned PDF -> signed PDF
    assert manifest["source"]["files"][0]["sha256"] == atomic.sha256_file(RECEIPT)
    assert hashlib.sha256(pdf[: signature["unsigned_bytes"]]).hexdigest() == signature["unsigned_sha256"]
    assert hashlib.sha256(pdf).hexdigest() == manifest["output"]["pdf_sha256"] != signature["unsigned_sha256"]
    assert signature["level"] == "PAdES-B-B"
    assert "Nghi Lộc (test)" in signature["subject"] and "Demo Root CA" in signature["issuer"]
    assert dt.datetime.fromisoformat(signature["signed_at"]) <= dt.datetime.now(dt.timezone.utc)
    # The reason and location carry the agency and the dossier code, in the PDF itself.
    assert RECEIPT_CODE in signature["reason"] and AGENCY in signature["reason"] and AGENCY in signature["location"]
    (embedded,) = PdfFileReader(io.BytesIO(pdf)).embedded_signatures
    assert embedded.sig_object["/Reason"] == signature["reason"]
    assert embedded.sig_object["/Location"] == signature["location"]
    assert embedded.sig_object["/SubFilter"] == "/ETSI.CAdES.detached"


def test_one_changed_byte_is_detected(signed, test_ca, tmp_path):
    original = signed / "records" / f"{RECEIPT_CODE}.pdf"
    data = bytearray(original.read_bytes())
    # A byte in the middle of the page image: the file still opens, only the content differs.
    data[len(data) // 3] ^= 0x01
    tampered = tmp_path / original.name
    tampered.write_bytes(bytes(data))
    (tmp_path / original.with_suffix(".json").name).write_bytes(original.with_suffix(".json").read_bytes())
    proc = run_digitize("verify", tampered, "--trust", test_ca.root, check=False)
    assert proc.returncode == 1, proc.stdout
    assert proc.stdout.startswith("FAIL") and "changed after signing" in proc.stdout, proc.stdout
    assert "PDF checksum differs from the manifest" in proc.stdout


def test_a_certificate_from_an_untrusted_ca_is_rejected(stranger_ca, test_ca, fixture_scans, tmp_path):
    assert _process_signed(stranger_ca, tmp_path, fixture_scans / "bitonal-g4-400dpi.tif").returncode == 0
    (pdf,) = (tmp_path / "records").glob("*.pdf")
    rejected = run_digitize("verify", pdf, "--trust", test_ca.root, check=False)
    assert rejected.returncode == 1 and "does not chain to a trusted root" in rejected.stdout, rejected.stdout
    accepted = run_digitize("verify", pdf, "--trust", stranger_ca.root, check=False)
    assert accepted.returncode == 0, accepted.stdout


def test_a_key_that_will_not_open_stops_before_any_work(test_ca, fixture_scans, tmp_path):
    proc = _process_signed(test_ca, tmp_path / "out", fixture_scans / "bitonal-g4-400dpi.tif", passphrase="wrong")
    assert proc.returncode == 78, proc.stdout + proc.stderr
    assert f"{test_ca.agency_pkcs12}: cannot open: wrong passphrase" in proc.stderr
    assert "wrong" not in proc.stderr.replace("wrong passphrase", ""), "the passphrase itself must not be printed"
    assert not list((tmp_path / "out").rglob("*.pdf"))


class _TimestampAuthority(http.server.ThreadingHTTPServer):
    """An RFC 3161 timestamp server on loopback, signing with a TSA certificate from the test CA."""

    def __init__(self, ca_folder: Path) -> None:
        from pyhanko.keys import load_cert_from_pemder, load_private_key_from_pemder_data
        from pyhanko.sign.timestamps import DummyTimeStamper

        root_key, root = _tsa_root(ca_folder)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = dt.datetime.now(dt.timezone.utc)
        cert = (
            x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test TSA")]))
            .issuer_name(root.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
            .sign(root_key, hashes.SHA256())
        )  # fmt: skip
        (ca_folder / "tsa.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        pem_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        stamper = DummyTimeStamper(
            tsa_cert=load_cert_from_pemder(str(ca_folder / "tsa.pem")),
            tsa_key=load_private_key_from_pemder_data(pem_key, passphrase=None),
        )
        self.requests = 0
        authority = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers["Content-Length"]))
                response = stamper.request_tsa_response(tsp.TimeStampReq.load(body)).dump()
                authority.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(response)))
                self.end_headers()
                self.wfile.write(response)

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/"
        threading.Thread(target=self.serve_forever, daemon=True).start()


def _tsa_root(ca_folder: Path):
    """A timestamp authority's own root, as real TSAs have; verify must be told to trust it too."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test TSA Root")])
    root = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    (ca_folder / "tsa-root.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    return key, root


def test_with_a_timestamp_server_the_signature_is_pades_b_t(test_ca, fixture_scans, tmp_path):
    tsa = _TimestampAuthority(tmp_path)
    try:
        proc = _process_signed(test_ca, tmp_path / "out", fixture_scans / "bitonal-g4-400dpi.tif",
                               extra=("--set", f'signing.timestamp_url="{tsa.url}"'))  # fmt: skip
    finally:
        tsa.shutdown()
        tsa.server_close()  # else its socket is collected later, with a warning, inside another test
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert tsa.requests >= 1  # pyHanko asks once more to size the signature
    (manifest_path,) = (tmp_path / "out" / "records").glob("*.json")
    assert json.loads(manifest_path.read_text())["signature"]["level"] == "PAdES-B-T"
    pdf = manifest_path.with_suffix(".pdf")
    proc = run_digitize("verify", pdf, "--trust", test_ca.root, "--trust", tmp_path / "tsa-root.pem", check=False)
    assert proc.stdout.startswith("OK") and "timestamped" in proc.stdout, proc.stdout
    untrusted_tsa = run_digitize("verify", pdf, "--trust", test_ca.root, check=False)
    assert untrusted_tsa.returncode == 1 and "timestamp" in untrusted_tsa.stdout, untrusted_tsa.stdout


def test_nightly_signs_writes_the_audit_log_and_verify_reads_archive_keys(test_ca, fixture_scans, tmp_path):
    env = {
        **folder_env(tmp_path), "DIGITIZE_SIGNING_PASSPHRASE": test_ca.passphrase,
        "DIGITIZE_SIGNING_PKCS12": str(test_ca.agency_pkcs12), "DIGITIZE_OUTPUT_AGENCY": f'"{AGENCY}"',
        "DIGITIZE_SIGNING_TRUST_ROOTS": f'["{test_ca.root}"]',
    }  # fmt: skip
    batch = batch_folder(tmp_path / "desk", RECEIPT, REPO / "sample_scans" / "ban-ve-a3-200dpi.jpg")
    (batch / "empty.tif").write_bytes(b"")
    # Allowed past the station's check, so that the nightly run's quarantine is audited.
    assert digitize_cli(env, "drop", batch, "--station", "nghi-loc", "--allow-bad").returncode == 0
    run = digitize_cli(env, "run", "--jobs", "2")
    assert run.returncode == 0, run.stdout + run.stderr

    archive = LocalStore(tmp_path / "archive")
    (pdf_key,) = [o.key for o in archive.list() if o.key.endswith(f"{RECEIPT_CODE}.pdf")]
    verified = digitize_cli(env, "verify", pdf_key)
    assert verified.returncode == 0 and verified.stdout.startswith(f"OK    {pdf_key}"), verified.stdout + verified.stderr

    # The batch's own log (the night's, beside it, ends with night_finished).
    (log_key,) = [o.key for o in archive.list("audit/") if "-nghi-loc-desk-" in o.key]
    assert log_key.startswith(f"audit/{dt.datetime.now(dt.timezone.utc):%Y/%m/%d}/") and log_key.endswith(".jsonl")
    events = [json.loads(line) for line in archive.read_bytes(log_key).decode().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "batch_claimed" and kinds[-1] == "batch_done", kinds
    assert sorted(kinds[1:-1]) == ["dossier_archived", "dossier_flagged", "input_rejected"], kinds
    archived = next(e for e in events if e["event"] == "dossier_archived")
    assert archived["dossier"] == RECEIPT_CODE and archived["pdf"] == pdf_key
    assert archived["pdf_sha256"] == atomic.sha256_file(tmp_path / "archive" / pdf_key)
    flagged = next(e for e in events if e["event"] == "dossier_flagged")
    assert "technical_drawing" in flagged["flags"]
    assert next(e for e in events if e["event"] == "input_rejected")["input"] == "empty.tif"
    assert len({e["run"] for e in events}) == 1

    # A second night adds its own log and leaves the first one as it was.
    first = archive.read_bytes(log_key)
    assert digitize_cli(env, "run", "--jobs", "1").returncode == 0
    assert archive.read_bytes(log_key) == first

    # Staff replace the flagged drawing's page: the new PDF is signed afresh and verifies.
    replaced = digitize_cli(env, "review", "replace", "ban-ve-a3-200dpi", fixture_scans / "bitonal-g4-400dpi.tif", "--pages", "1")
    assert replaced.returncode == 0, replaced.stderr
    (item_pdf,) = [p for p in (tmp_path / "review").rglob("ban-ve-a3-200dpi.pdf") if "previous" not in p.parts]
    verified = digitize_cli(env, "verify", item_pdf)
    assert verified.returncode == 0 and verified.stdout.startswith("OK"), verified.stdout


SOFTHSM_MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")


def _softhsm_token(folder: Path, ca, *, label: str, pin: str) -> dict[str, str]:
    """A SoftHSM token holding the agency's key and certificate, as a USB token would; returns its environment."""
    import subprocess

    import pkcs11
    from cryptography.hazmat.primitives.serialization import pkcs12
    from pkcs11 import Attribute, CertificateType, KeyType, ObjectClass

    (folder / "tokens").mkdir(parents=True)
    conf = folder / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {folder / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", "87654321"],
                   check=True, capture_output=True, env=env, timeout=60)  # fmt: skip
    key, cert, _ = pkcs12.load_key_and_certificates(ca.agency_pkcs12.read_bytes(), ca.passphrase.encode())
    numbers = key.private_numbers()

    def raw(value: int) -> bytes:
        return value.to_bytes((value.bit_length() + 7) // 8, "big")

    os.environ["SOFTHSM2_CONF"] = str(conf)  # python-pkcs11 reads it from this process's environment
    try:
        token = pkcs11.lib(str(SOFTHSM_MODULE)).get_token(token_label=label)
        with token.open(rw=True, user_pin=pin) as session:
            common = {Attribute.TOKEN: True, Attribute.LABEL: "agency", Attribute.ID: b"\x01"}
            session.create_object({
                **common, Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.KEY_TYPE: KeyType.RSA,
                Attribute.SIGN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
                Attribute.MODULUS: raw(numbers.public_numbers.n), Attribute.PUBLIC_EXPONENT: raw(numbers.public_numbers.e),
                Attribute.PRIVATE_EXPONENT: raw(numbers.d), Attribute.PRIME_1: raw(numbers.p), Attribute.PRIME_2: raw(numbers.q),
                Attribute.EXPONENT_1: raw(numbers.dmp1), Attribute.EXPONENT_2: raw(numbers.dmq1),
                Attribute.COEFFICIENT: raw(numbers.iqmp),
            })  # fmt: skip
            session.create_object({
                **common, Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
                Attribute.SUBJECT: cert.subject.public_bytes(), Attribute.VALUE: cert.public_bytes(serialization.Encoding.DER),
            })  # fmt: skip
    finally:
        del os.environ["SOFTHSM2_CONF"]
    return env


def test_signing_with_a_pkcs11_token(test_ca, fixture_scans, tmp_path):
    if not SOFTHSM_MODULE.exists() or not __import__("shutil").which("softhsm2-util"):
        pytest.skip("SoftHSM (Debian softhsm2) is not installed; `make test` installs it")
    env = {**_softhsm_token(tmp_path / "hsm", test_ca, label="agency-token", pin="246810"), "DIGITIZE_SIGNING_PASSPHRASE": "246810"}
    token = ["--set", f"signing.pkcs11_module={SOFTHSM_MODULE}", "--set", "signing.pkcs11_token=agency-token",
             "--set", "signing.pkcs11_key=agency"]  # fmt: skip
    proc = digitize_cli(env, "process", fixture_scans / "bitonal-g4-400dpi.tif", "--out", tmp_path / "out", *token)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (pdf,) = (tmp_path / "out" / "records").glob("*.pdf")
    verified = run_digitize("verify", pdf, "--trust", test_ca.root)
    assert verified.stdout.startswith("OK") and "Nghi Lộc (test)" in verified.stdout, verified.stdout

    wrong_pin = digitize_cli({**env, "DIGITIZE_SIGNING_PASSPHRASE": "000000"}, "process",
                             fixture_scans / "bitonal-g4-400dpi.tif", "--out", tmp_path / "out2", *token)  # fmt: skip
    assert wrong_pin.returncode == 78 and "cannot open token 'agency-token'" in wrong_pin.stderr, wrong_pin.stderr


def test_an_unreachable_timestamp_server_fails_the_run_for_a_retry_and_rejects_nothing(test_ca, fixture_scans, tmp_path):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = _process_signed(test_ca, tmp_path / "out", fixture_scans / "bitonal-g4-400dpi.tif",
                           extra=("--set", f'signing.timestamp_url="http://127.0.0.1:{port}/"'))  # fmt: skip
    assert proc.returncode == 75, proc.stdout + proc.stderr
    assert "cannot sign" in proc.stderr and "rejected:" not in proc.stderr, proc.stderr
    assert not list((tmp_path / "out").rglob("*.pdf")), "no record, signed or not, is left behind"


def test_the_example_site_config_is_valid_and_configures_signing():
    from digitize.config import load_app_settings

    settings = load_app_settings(REPO / "digitize" / "config" / "example-site.toml")
    assert settings.signing.configured and settings.signing.pkcs11_module and settings.signing.trust_roots
