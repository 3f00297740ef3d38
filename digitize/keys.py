"""The agency's signing key from config and secrets, and a throwaway demo CA for trying signing out."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from pyhanko.sign.signers import SimpleSigner

from pipeline.errors import ConfigError
from digitize.config import AppSettings
from pipeline import stamp
from pipeline.signing import RecordSigner

PASSPHRASE_ENV = "DIGITIZE_SIGNING_PASSPHRASE"
PASSPHRASE_FILE_ENV = "DIGITIZE_SIGNING_PASSPHRASE_FILE"


def load_record_signer(settings: AppSettings, env: Mapping[str, str]) -> RecordSigner | None:
    """The configured signer, or None when signing is off or no key is configured.

    A key that is configured but cannot be opened is a configuration error: the service must
    not quietly archive unsigned records when the agency expects them signed.
    """
    config = settings.signing
    if not config.configured:
        return None
    secret = _passphrase(env)
    if config.pkcs12:
        signer = _open_pkcs12(Path(config.pkcs12), secret)
    else:
        signer = _open_pkcs11(config.pkcs11_module, config.pkcs11_token, config.pkcs11_key, secret)
    timestamper = None
    if config.timestamp_url:
        from pyhanko.sign.timestamps.requests_client import HTTPTimeStamper

        timestamper = HTTPTimeStamper(config.timestamp_url, timeout=30)
    if config.appearance == "decree30":
        stamp.require_font()
    return RecordSigner(
        signer=signer, agency=settings.output.agency or signer.signing_cert.subject.human_friendly,
        reason=config.reason, location=config.location, timestamper=timestamper,
        appearance=config.appearance, copy_form=config.copy_form,
    )  # fmt: skip


def _passphrase(env: Mapping[str, str]) -> bytes | None:
    if PASSPHRASE_FILE_ENV in env:
        path = Path(env[PASSPHRASE_FILE_ENV])
        try:
            return path.read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            raise ConfigError(f"{PASSPHRASE_FILE_ENV}={path}: cannot read: {exc.strerror}") from None
    if PASSPHRASE_ENV in env:
        return env[PASSPHRASE_ENV].encode()
    return None


def _open_pkcs12(path: Path, passphrase: bytes | None):
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"signing.pkcs12: {path}: cannot read: {exc.strerror}") from None
    try:
        loaded = SimpleSigner.load_pkcs12_data(data, other_certs=(), passphrase=passphrase)
    except ValueError:
        hint = f" (set {PASSPHRASE_FILE_ENV} or {PASSPHRASE_ENV})" if passphrase is None else ""
        raise ConfigError(f"signing.pkcs12: {path}: cannot open: wrong passphrase or not a PKCS#12 file{hint}") from None
    return _ParsedKeySigner(signing_key=loaded.signing_key, signing_cert=loaded.signing_cert, cert_registry=loaded.cert_registry)


_RSA_HASHES = {"sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}


class _ParsedKeySigner(SimpleSigner):
    """pyHanko's SimpleSigner parses the private key again for every signature: 25 ms for
    RSA-2048, twice per record (the size estimate signs too), which was most of the cost of
    signing. The agency's key is parsed once here; other key types take pyHanko's own path."""

    @functools.cached_property
    def _private_key(self):
        return serialization.load_der_private_key(self.signing_key.dump(), password=None)

    def sign_raw(self, data: bytes, digest_algorithm: str) -> bytes:
        mechanism = self.get_signature_mechanism_for_digest(digest_algorithm).signature_algo
        if mechanism != "rsassa_pkcs1v15" or digest_algorithm not in _RSA_HASHES:
            return super().sign_raw(data, digest_algorithm)
        return self._private_key.sign(data, PKCS1v15(), _RSA_HASHES[digest_algorithm]())


@functools.lru_cache(maxsize=4)
def _open_pkcs11(module: str, token: str, key: str, pin: bytes | None):
    """One logged-in session per token for the life of the process, shared by every batch."""
    try:
        from pyhanko.config.pkcs11 import TokenCriteria
        from pyhanko.sign.pkcs11 import PKCS11Signer, open_pkcs11_session
    except ImportError:
        raise ConfigError("signing.pkcs11_module: PKCS#11 needs python-pkcs11 (pip install 'digitize[pkcs11]')") from None
    try:
        session = open_pkcs11_session(
            module, token_criteria=TokenCriteria(label=token or None), user_pin=pin.decode() if pin else None
        )
        return PKCS11Signer(session, key_label=key or None, cert_label=key or None)
    except Exception as exc:  # the PKCS#11 library raises its own types for every token problem
        raise ConfigError(f"signing.pkcs11_module: {module}: cannot open token {token!r}: {exc}") from None


@dataclass(frozen=True)
class DemoCA:
    root: Path
    agency_pkcs12: Path
    passphrase: str


def make_demo_ca(folder: Path, *, agency: str, passphrase: str = "demo", root_name: str = "Demo Root CA") -> DemoCA:
    """A root and an agency certificate, like the Government Cipher Committee's, but for trying things out only."""
    now = dt.datetime.now(dt.timezone.utc)
    root_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    root_subject = _name(root_name)
    root = (
        x509.CertificateBuilder().subject_name(root_subject).issuer_name(root_subject)
        .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )  # fmt: skip
    agency_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder().subject_name(_name(agency)).issuer_name(root_subject)
        .public_key(agency_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=730))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True, content_commitment=True), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    demo = DemoCA(folder / "root.pem", folder / "agency.p12", passphrase)
    demo.root.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    demo.agency_pkcs12.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"agency", agency_key, cert, [root], serialization.BestAvailableEncryption(passphrase.encode())
        )
    )
    demo.agency_pkcs12.chmod(0o600)
    return demo


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "DEMO - not a real certificate"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])  # fmt: skip


def _key_usage(**allowed: bool) -> x509.KeyUsage:
    flags = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
             "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")  # fmt: skip
    return x509.KeyUsage(**{flag: allowed.get(flag, False) for flag in flags})
