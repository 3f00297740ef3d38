"""The record manifest: manifests already in archives still load, are written back byte for byte, and a wrong one fails loudly."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipeline.flags import FlagName
from pipeline.manifest import SCHEMA, ManifestError, RecordIdentity, dump_manifest, load_identity, load_manifest
from tests.conftest import REPO

RESOURCES = Path(__file__).parent / "resources"
# Written by the pipeline at commit a4b344a, before the manifest was typed (tests/resources/README.md).
OLD_MANIFESTS = ["record-3-signed-flagged.json", "record-3-receipt.json"]


@pytest.mark.parametrize("name", OLD_MANIFESTS)
def test_a_record_3_manifest_from_before_loads_and_is_written_back_byte_for_byte(name):
    text = (RESOURCES / name).read_text("utf-8")
    manifest = load_manifest(text, origin=name)
    assert manifest.schema_ == SCHEMA == "digitize.record/3"
    assert dump_manifest(manifest) == text
    raw = json.loads(text)
    assert manifest.source.sha256 == raw["source"]["sha256"]
    assert manifest.output.pdf_sha256 == raw["output"]["pdf_sha256"]
    assert [p.source_index for p in manifest.pages] == [p["source_index"] for p in raw["pages"]]


def test_flags_evidence_signature_and_provenance_are_typed():
    manifest = load_manifest((RESOURCES / "record-3-signed-flagged.json").read_bytes(), origin="fixture")
    assert list(manifest.flags) == [FlagName.OVERSIZED, FlagName.TECHNICAL_DRAWING]
    assert manifest.flags[FlagName.OVERSIZED][0]["size_mm"] == [420.0, 297.1]
    assert manifest.pages[0].flags[FlagName.TECHNICAL_DRAWING]["line_share"] == 0.614
    assert manifest.signature is not None and manifest.signature.level == "PAdES-B-B"
    assert manifest.signature.signed_at.utcoffset().total_seconds() == 0
    assert manifest.source.provenance is not None and manifest.source.provenance.operator == "Nguyễn Văn An"
    assert manifest.source.path is None
    # Frozen: a reader cannot change a record's manifest by accident.
    with pytest.raises(ValueError):
        manifest.name = "other"


def test_non_ascii_text_stays_utf_8_in_the_written_manifest():
    manifest = load_manifest((RESOURCES / "record-3-signed-flagged.json").read_bytes(), origin="fixture")
    written = dump_manifest(manifest)
    assert "Nguyễn Văn An" in written and "\\u" not in written and written.endswith("}\n")


def test_a_renamed_key_is_refused_naming_the_manifest_and_the_key():
    raw = json.loads((RESOURCES / "record-3-receipt.json").read_text("utf-8"))
    raw["output"]["pdf_checksum"] = raw["output"].pop("pdf_sha256")
    with pytest.raises(ManifestError) as refused:
        load_manifest(json.dumps(raw), origin="2026/11/x.json")
    message = str(refused.value)
    assert message.startswith("2026/11/x.json: not a digitize.record/3 manifest")
    assert "output.pdf_sha256" in message and "output.pdf_checksum" in message
    assert refused.value.exit_code == 65 and "\n" not in message


def test_an_unknown_flag_or_another_schema_is_refused():
    raw = json.loads((RESOURCES / "record-3-receipt.json").read_text("utf-8"))
    with pytest.raises(ManifestError, match="flags"):
        load_manifest(json.dumps({**raw, "flags": {"smudged": [{"page": 0}]}}), origin="x.json")
    with pytest.raises(ManifestError, match="schema"):
        load_manifest(json.dumps({**raw, "schema": "digitize.record/9"}), origin="x.json")
    with pytest.raises(ManifestError, match="x.json: manifest is not valid JSON"):
        load_manifest(b'{"schema": ', origin="x.json")


def test_a_record_is_identified_by_its_scan_and_pages_from_the_whole_or_part_of_a_manifest():
    text = (RESOURCES / "record-3-receipt.json").read_text("utf-8")
    manifest = load_manifest(text, origin="fixture")
    part = {"source": {"sha256": manifest.source.sha256}, "document": {"source_pages": [0, 1, 2]}}
    assert RecordIdentity.of(manifest) == RecordIdentity.of(part) == load_identity(text, origin="fixture")
    with pytest.raises(ManifestError, match="k.json: not a record manifest"):
        load_identity(b"{}", origin="k.json")


def test_flag_names_are_spelled_only_in_the_flag_list():
    """Adding a flag means adding it to FlagName; no code spells a flag as a bare string."""
    spelled = re.compile(r"""(flags\[|\.flag\(|flags=\{|flags = \[)\s*["']""")
    found = [
        f"{path.relative_to(REPO)}:{n}"
        for folder in ("pipeline", "digitize")
        for path in sorted((REPO / folder).rglob("*.py"))
        for n, line in enumerate(path.read_text("utf-8").splitlines(), 1)
        if spelled.search(line)
    ]
    assert found == []
    names = {flag.value for flag in FlagName}
    assert len(names) == len(FlagName) and all(re.fullmatch(r"[a-z_]+", name) for name in names)
