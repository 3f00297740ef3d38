"""Sign records with the agency's certificate: a PAdES signature added as an incremental update that keeps PDF/A."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.generic import pdf_name
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.metadata.model import VENDOR
from pyhanko.sign import fields, signers
from pyhanko.sign.timestamps import TimeStamper

from pipeline import atomic, stamp
from pipeline.errors import DISK_ERRNOS, TransientError

FIELD_NAME = "AgencySignature"


class SigningError(TransientError):
    """The record could not be signed: token or timestamp server unavailable. A later run may succeed."""


@dataclass(frozen=True)
class RecordSigner:
    """The agency's key with what each signature says about it. Built by the application from config."""

    signer: signers.Signer
    agency: str
    reason: str  # templates: {agency} and {code} are filled in per record
    location: str
    timestamper: TimeStamper | None = None
    # "decree30": a visible text stamp top right of page 1 (Decree 30/2020, Annex I); "invisible": none.
    appearance: str = "decree30"
    copy_form: str = "SAO Y"  # SAO Y, TRÍCH SAO or SAO LỤC

    @property
    def level(self) -> str:
        return "PAdES-B-T" if self.timestamper else "PAdES-B-B"

    @property
    def certificate_sha256(self) -> str:
        return hashlib.sha256(self.signer.signing_cert.dump()).hexdigest()

    def describe(self) -> dict:
        cert = self.signer.signing_cert
        return {
            "subject": cert.subject.human_friendly,
            "issuer": cert.issuer.human_friendly,
            "serial": format(cert.serial_number, "x"),
            "certificate_sha256": self.certificate_sha256,
            "not_after": cert["tbs_certificate"]["validity"]["not_after"].native.isoformat(),
        }


class _PdfaIncrementalWriter(IncrementalPdfFileWriter):
    """pyHanko's writer, made to keep the Info dictionary in step with the XMP it rewrites.

    PDF/A requires the two to agree. pyHanko 0.38 appends itself to Info /Producer but sets
    XMP pdf:Producer to itself alone, so both are set to the same value here.
    """

    def _update_meta(self) -> None:
        super()._update_meta()
        if self._info is not None:
            self._info.get_object()["/Producer"] = generic.TextStringObject(VENDOR)


def sign_record(unsigned: Path, out: Path, *, signer: RecordSigner, code: str) -> dict:
    """Write `out`: `unsigned` plus one signature revision. Returns what the manifest records of it."""
    reason = signer.reason.format(agency=signer.agency, code=code)
    location = signer.location.format(agency=signer.agency, code=code)
    meta = signers.PdfSignatureMetadata(
        field_name=FIELD_NAME, reason=reason, location=location, name=signer.agency or None,
        subfilter=fields.SigSeedSubFilter.PADES, md_algorithm="sha256",
    )  # fmt: skip
    signed_at = datetime.now(timezone.utc).replace(microsecond=0)
    visible = signer.appearance == "decree30"
    if visible:
        lines = stamp.stamp_lines(copy_form=signer.copy_form, agency=signer.agency, signed_at=signed_at)
        where = stamp.place(unsigned, stamp.text_size(lines))
    with open(unsigned, "rb") as src, atomic.replacing(out) as dst:
        writer = _PdfaIncrementalWriter(src)
        if visible:
            fields.append_signature_field(writer, fields.SigFieldSpec(FIELD_NAME, box=where.box, on_page=where.page))
            pdf_signer = signers.PdfSigner(meta, signer.signer, timestamper=signer.timestamper, stamp_style=stamp.style())
            params = {"stamp": "\n".join(lines)}
        else:
            _add_invisible_field(writer)
            pdf_signer = signers.PdfSigner(meta, signer.signer, timestamper=signer.timestamper)
            params = None
        try:
            pdf_signer.sign_pdf(writer, output=dst, appearance_text_params=params)
        except Exception as exc:  # pyHanko raises many types: token, TSA and CMS errors alike
            if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
                raise  # our own disk, not the token's or the network's fault
            raise SigningError(f"{out.name}: cannot sign: {exc}") from None
    record = {
        "level": signer.level, "signed_at": signed_at.isoformat(), "reason": reason, "location": location,
        "field": FIELD_NAME, **signer.describe(),
    }  # fmt: skip
    if visible:
        record["stamp"] = {"page": where.page, "box": list(where.box), "placement": where.placement}
    return record


def _add_invisible_field(writer: IncrementalPdfFileWriter) -> None:
    """An invisible signature field whose widget has an (empty) appearance, as PDF/A requires.

    pyHanko leaves the appearance out when the widget has no area, which PDF/A validators reject.
    """
    fields.append_signature_field(writer, fields.SigFieldSpec(FIELD_NAME, box=(0, 0, 0, 0)))
    for ref in writer.root["/AcroForm"]["/Fields"]:
        widget = ref.get_object()
        if widget.get("/T") != FIELD_NAME:
            continue
        appearance = generic.StreamObject(
            {
                pdf_name("/Type"): pdf_name("/XObject"),
                pdf_name("/Subtype"): pdf_name("/Form"),
                pdf_name("/BBox"): generic.ArrayObject([generic.NumberObject(0)] * 4),
            },
            stream_data=b"",
        )
        widget[pdf_name("/AP")] = generic.DictionaryObject({pdf_name("/N"): writer.add_object(appearance)})
        writer.update_container(widget)
