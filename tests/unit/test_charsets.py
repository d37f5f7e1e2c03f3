"""Strict reading of identifying text and the GB2312 escape repair (lucent.dicom.charsets)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from pydicom.charset import decode_bytes, encode_string
from pydicom.dataset import Dataset

from lucent.dicom import charsets
from server.api import dicomweb_xml
from server.index import folding

GB = b"Zhang^SanFeng=\x1b$)A\xd5\xc5^\x1b$)A\xc8\xfd\xb7\xe1"


def test_gb2312_reads_and_writes_without_stray_escapes() -> None:
    encodings = ["iso8859", "iso_ir_58"]
    assert decode_bytes(GB, encodings, {0x5E, 0x3D}) == "Zhang^SanFeng=张^三丰"
    assert encode_string("张", encodings) == b"\x1b$)A\xd5\xc5"


@pytest.mark.parametrize(
    "raw,encodings,problem",
    [
        (b"M\xfcller^Hans", ["UTF8"], "bytes fc are not valid in character set ISO_IR 192"),
        (b"Wei\xc3\x9f^Anna\xc3", ["UTF8"], "bytes c3 are not valid"),
        (
            b"\xc4\xe9\xef\xff^Test",
            ["iso8859_7"],
            "bytes ff are not valid in character set ISO_IR 126",
        ),
        (b"Yamada=\x1b$B;3\x1b(B", ["iso8859", "euc_kr"], "selects a character set"),
        (b"M\xc3\xbcller^Hans", ["UTF8"], None),
        (b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B", ["iso8859", "iso2022_jp"], None),
        (GB, ["iso8859", "iso_ir_58"], None),
        (b"M\xfcller", ["no-such-codec"], None),  # unknown term: read leniently, as pydicom
    ],
)
def test_undecodable_names_the_bytes(raw: bytes, encodings: list[str], problem: str | None) -> None:
    found = charsets.undecodable(raw, encodings)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_xml_metadata_stays_well_formed_with_control_characters() -> None:
    ds = Dataset()
    ds.ImageComments = "Page one\x0cPage two"
    ds.PatientName = "Zhang\x1b^San"
    root = ET.fromstring(dicomweb_xml.to_xml(ds))
    texts = [node.text for node in root.iter() if node.text]
    assert "Page one\ufffdPage two" in texts and "Zhang\ufffd" in texts


def test_folding_treats_dotted_and_dotless_i_as_i() -> None:
    assert folding.fold_text("çiçek") == folding.fold_text("ÇİÇEK") == "ÇIÇEK"
    assert folding.fold_text("Şahin^İsmail") == folding.fold_text("ŞAHİN^ismaıl")
