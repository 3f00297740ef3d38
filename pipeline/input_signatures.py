"""The digital signatures a PDF input carries: who signed it, when, and whether it verifies."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pyhanko.pdf_utils.misc import PdfReadError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko_certvalidator import ValidationContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputSignature:
    field: str
    signer: str  # the signing certificate's common name, else its whole subject
    signed_at: str | None  # the time the signer's software claims, ISO 8601
    intact: bool  # the signed bytes are unchanged
    valid: bool  # the cryptography holds, with algorithms still allowed (not SHA-1)
    trusted: bool  # the certificate chains to one of the configured trust roots
    covers_whole_file: bool  # nothing was added after this signature


def read_signatures(path: Path, *, trust_roots: Sequence) -> list[InputSignature]:
    """Each signature in the PDF at `path`, checked against `trust_roots`; none for an unsigned one.

    An owner-locked file opens with its empty user password, as pikepdf opens it for its pages.
    """
    with open(path, "rb") as fh:
        try:
            reader = PdfFileReader(fh, strict=False)
            if reader.encrypted:
                reader.decrypt("")
            signatures = reader.embedded_signatures
        except (PdfReadError, ValueError, KeyError) as exc:
            # The pages were readable (pikepdf opened them); only the signatures are not.
            log.warning("%s: signatures cannot be read: %s", path, exc)
            return []
        found = []
        for signature in signatures:
            context = ValidationContext(trust_roots=list(trust_roots), allow_fetching=False)
            status = validate_pdf_signature(signature, context)
            subject = status.signing_cert.subject
            found.append(
                InputSignature(
                    field=str(signature.field_name),
                    signer=str(subject.native.get("common_name") or subject.human_friendly),
                    signed_at=status.signer_reported_dt.isoformat() if status.signer_reported_dt else None,
                    intact=bool(status.intact),
                    valid=bool(status.valid),
                    trusted=bool(status.trusted),
                    covers_whole_file=status.coverage.name == "ENTIRE_FILE",
                )
            )
        return found
