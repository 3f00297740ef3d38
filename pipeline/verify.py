"""Check an archived record: its signature, its certificate chain, its manifest's checksums and its PDF/A claim."""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pikepdf
import pikepdf.pdfa
from pyhanko.keys import load_cert_from_pemder
from pyhanko.pdf_utils.misc import PdfReadError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko_certvalidator import ValidationContext

from pipeline.errors import ConfigError
from pipeline.manifest import RecordManifest

log = logging.getLogger(__name__)


@dataclass
class Verdict:
    """What `digitize verify` found about one record; `problems` empty means it holds."""

    record: str
    problems: list[str] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        if self.ok:
            return f"OK    {self.record}: {'; '.join(self.facts)}"
        return f"FAIL  {self.record}: {'; '.join(self.problems)}"


def load_trust_roots(paths: list[str] | list[Path]) -> list:
    roots = []
    for path in paths:
        try:
            roots.append(load_cert_from_pemder(str(path)))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"signing.trust_roots: {path}: not a readable certificate: {exc}") from None
    return roots


def verify_record(record: str, pdf: bytes, manifest: RecordManifest | None, *, trust_roots: list) -> Verdict:
    """Judge one record from its PDF bytes and its manifest (None when there is none to compare)."""
    verdict = Verdict(record)
    _check_signature(pdf, verdict, trust_roots)
    unsigned = _check_checksums(pdf, manifest, verdict)
    _check_pdfa(pdf, unsigned, manifest, verdict)
    return verdict


def _check_signature(pdf: bytes, verdict: Verdict, trust_roots: list) -> None:
    try:
        signatures = PdfFileReader(io.BytesIO(pdf), strict=False).embedded_signatures
    except (PdfReadError, ValueError) as exc:
        verdict.problems.append(f"not a readable PDF: {exc}")
        return
    if not signatures:
        verdict.problems.append("not signed")
        return
    for signature in signatures:
        context = ValidationContext(trust_roots=trust_roots, allow_fetching=False)
        status = validate_pdf_signature(signature, context)
        subject = status.signing_cert.subject
        who = subject.native.get("common_name") or subject.human_friendly
        if not (status.intact and status.valid):
            verdict.problems.append(f"signature by {who} does not match the document: it was changed after signing")
            continue
        if not status.trusted:
            verdict.problems.append(f"certificate of {who} does not chain to a trusted root")
        if status.coverage.name != "ENTIRE_FILE":
            verdict.problems.append(f"document was changed after {who} signed it ({status.modification_level.name})")
        when = status.signer_reported_dt.isoformat() if status.signer_reported_dt else "unknown time"
        verdict.facts.append(f"signed by {who} at {when}")
        stamp = status.timestamp_validity
        if stamp is not None:
            if not (stamp.intact and stamp.valid and stamp.trusted):
                verdict.problems.append("signature timestamp is not valid or not from a trusted timestamp authority")
            else:
                verdict.facts.append(f"timestamped {stamp.timestamp.isoformat()}")


def _check_checksums(pdf: bytes, manifest: RecordManifest | None, verdict: Verdict) -> bytes | None:
    """Compare with the manifest; returns the unsigned revision when the manifest says where it ends."""
    if manifest is None:
        verdict.problems.append("no manifest beside the record")
        return None
    if manifest.output.pdf_sha256 != hashlib.sha256(pdf).hexdigest():
        verdict.problems.append("PDF checksum differs from the manifest")
    signature = manifest.signature
    if signature is None:
        return None
    unsigned = pdf[: signature.unsigned_bytes]
    if hashlib.sha256(unsigned).hexdigest() != signature.unsigned_sha256:
        verdict.problems.append("unsigned revision differs from the manifest")
        return None
    verdict.facts.append("checksums match the manifest")
    return unsigned


def _check_pdfa(pdf: bytes, unsigned: bytes | None, manifest: RecordManifest | None, verdict: Verdict) -> None:
    """The file claims the PDF/A flavour the manifest records, and the content revision passes validation.

    The signature revision only adds the signature field and value; pikepdf's validator does not
    cover interactive forms, so the content is validated in the revision the agency signed over.
    """
    try:
        with pikepdf.open(io.BytesIO(pdf)) as doc, doc.open_metadata() as xmp:
            claim = f"{xmp.get('pdfaid:part', '')}{xmp.get('pdfaid:conformance', '').lower()}"
    except pikepdf.PdfError as exc:
        verdict.problems.append(f"not a readable PDF: {exc}")
        return
    if not claim:
        verdict.problems.append("does not claim PDF/A")
        return
    expected = manifest.output.pdfa if manifest else None
    if expected and claim != expected:
        verdict.problems.append(f"claims PDF/A-{claim}, manifest says PDF/A-{expected}")
    content = unsigned if unsigned is not None else pdf
    report = pikepdf.pdfa.validate_written(io.BytesIO(content), claim)
    if not report.passed:
        findings = "; ".join(f.message for f in report.findings[:3])
        verdict.problems.append(f"not valid PDF/A-{claim}: {findings}")
    else:
        verdict.facts.append(f"PDF/A-{claim}")
