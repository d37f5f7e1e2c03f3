"""Bad inputs for the Store SCP, each with the DICOM status class we expect back.

Issue 2 section 4: missing UIDs, truncated pixel data, wrong lengths, garbage bytes, a
deflate bomb, odd-length values, a PDU that claims 4 GB must each give a placeholder with
the reason, the right status, and a server that keeps serving. Validation before import is
Conformance 4.1.3.2; the status classes are PS3.4 B.2.3 (Storage Service):

- ``C000`` (0xC000-0xCFFF, "cannot understand"): the bytes do not decode to a data set —
  garbage, a value cut off mid-element, an odd value length (PS3.5 7.1.1), a deflated
  stream we refuse to inflate past a limit.
- ``A900`` (0xA900-0xA9FF, "data set does not match SOP class"): it decodes, but the IOD
  is not satisfied — a required UID or Patient ID is missing, a UID is not a UID, the SOP
  Class UID in the data set differs from the one in the C-STORE command, the Image Pixel
  module disagrees with the length of Pixel Data.

Every case is a :class:`BadInput`: the data-set bytes as they travel in P-DATA, plus the
SOP Class / Instance / transfer syntax the C-STORE command claims. ``part10()`` wraps them in
a file whose meta carries those claims, so pynetdicom's chunked sending (which does not parse
the data set) can deliver them unchanged: see :func:`send_raw_c_store`. DCMTK `storescu`
parses and re-encodes what it sends, so only the cases with ``storescu_ok`` survive it intact.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite, write_file_meta_info
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    generate_uid,
)

from tests.data.samples import make_instance

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
VERIFICATION = "1.2.840.10008.1.1"

C000 = "C000"  # Cannot understand: 0xC000-0xCFFF
A900 = "A900"  # Data set does not match SOP class: 0xA900-0xA9FF
STATUS_RANGES: dict[str, range] = {C000: range(0xC000, 0xD000), A900: range(0xA900, 0xAA00)}

BOMB_INFLATED_SIZE = 64 * 1024 * 1024  # ~1000x the ~65 KB that travels


@dataclass(frozen=True)
class BadInput:
    """One bad C-STORE: what travels, what the command claims, what must come back."""

    name: str
    status: str  # C000 or A900, see STATUS_RANGES
    reason: str  # what the placeholder should tell a person
    dataset: bytes = field(repr=False)  # the data set as it travels (no preamble, no meta)
    sop_class_uid: str = CT  # Affected SOP Class UID in the command
    sop_instance_uid: str = ""  # Affected SOP Instance UID in the command
    transfer_syntax: str = ExplicitVRLittleEndian  # of the presentation context
    patient_id: str | None = None  # Patient ID the placeholder should be filed under, if any
    storescu_ok: bool = False  # DCMTK storescu delivers these bytes unchanged
    raw_file: bytes | None = field(default=None, repr=False)  # the file as uploaded, if not Part 10

    def part10(self) -> bytes:
        """Preamble + file meta carrying the command's claims + the bad data set."""
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = self.sop_class_uid
        meta.MediaStorageSOPInstanceUID = self.sop_instance_uid
        meta.TransferSyntaxUID = self.transfer_syntax
        meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
        meta.ImplementationVersionName = "LUCENT_BADDATA"
        buf = io.BytesIO()
        buf.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(buf, meta, enforce_standard=True)  # type: ignore[arg-type]
        return buf.getvalue() + self.dataset

    def upload(self) -> bytes:
        """What a file import or STOW-RS upload of this case contains."""
        return self.raw_file if self.raw_file is not None else self.part10()

    def write(self, directory: Path | str) -> Path:
        """Write ``part10()`` as ``<name>.dcm`` (what send_raw_c_store and storescu read)."""
        path = Path(directory) / f"{self.name}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.part10())
        return path


def status_matches(status: int, expected: str) -> bool:
    """True when a C-STORE response status lies in the expected class's range."""
    return status in STATUS_RANGES[expected]


# --------------------------------------------------------------------------------------------
# Encoding helpers


def encode(ds: Dataset) -> bytes:
    """The data set alone (no preamble, no group 0002) in Explicit VR Little Endian."""
    if hasattr(ds, "file_meta"):
        del ds.file_meta
    buf = io.BytesIO()
    dcmwrite(buf, ds, implicit_vr=False, little_endian=True, enforce_file_format=False)
    data = buf.getvalue()
    if data[:2] == b"\x02\x00":
        raise AssertionError("file meta leaked into the encoded data set")
    return data


def _element(tag: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian element, written by hand (so it can be wrong)."""
    group, elem = tag >> 16, tag & 0xFFFF
    if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
        return struct.pack("<HH2sHI", group, elem, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr, len(value)) + value


def _ct(patient_id: str = "LUCENT-BAD-001", **kwargs: object) -> Dataset:
    return make_instance(
        CT, patient_id=patient_id, patient_name="Bad^Input", rows=16, cols=16, **kwargs
    )


def _case(name: str, status: str, reason: str, ds: Dataset, **kwargs: object) -> BadInput:
    """A case built from a data set: command claims its class/instance unless overridden."""
    claims: dict[str, object] = {
        "sop_class_uid": str(ds.get("SOPClassUID", CT)),
        "sop_instance_uid": str(ds.get("SOPInstanceUID", "")) or generate_uid(),
        "patient_id": ds.get("PatientID"),
    }
    claims.update(kwargs)
    return BadInput(name, status, reason, encode(ds), **claims)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# The cases


def missing_sop_instance_uid() -> BadInput:
    """The command names an instance the data set does not carry."""
    ds = _ct()
    claimed = ds.SOPInstanceUID
    del ds.SOPInstanceUID
    return _case(
        "missing_sop_instance_uid", A900, "SOP Instance UID (0008,0018) missing", ds,
        sop_instance_uid=claimed,
    )  # fmt: skip


def missing_study_uid() -> BadInput:
    ds = _ct()
    del ds.StudyInstanceUID
    return _case(
        "missing_study_uid", A900, "Study Instance UID (0020,000D) missing", ds, storescu_ok=True
    )


def missing_series_uid() -> BadInput:
    ds = _ct()
    del ds.SeriesInstanceUID
    return _case(
        "missing_series_uid", A900, "Series Instance UID (0020,000E) missing", ds, storescu_ok=True
    )


def missing_patient_id() -> BadInput:
    ds = _ct()
    del ds.PatientID
    return _case("missing_patient_id", A900, "Patient ID (0010,0020) missing", ds, storescu_ok=True)


def truncated_pixel_data() -> BadInput:
    """The stream ends half-way through Pixel Data: its length field promises more."""
    ds = _ct()
    full = encode(ds)
    return replace(
        _case("truncated_pixel_data", C000, "data set ends inside Pixel Data (7FE0,0010)", ds),
        dataset=full[: len(full) - 256],
    )


def pixel_data_too_short() -> BadInput:
    """Well-formed, but Pixel Data holds fewer bytes than Rows x Columns x Bits Allocated."""
    ds = _ct()
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    return _case(
        "pixel_data_too_short", A900,
        "Pixel Data length 256 does not match Rows 16 x Columns 16 x 16 bits (512)", ds,
        storescu_ok=True,
    )  # fmt: skip


def rows_columns_mismatch() -> BadInput:
    """Rows/Columns say 8 x 8 while Pixel Data holds 16 x 16 pixels."""
    ds = _ct()
    ds.Rows, ds.Columns = 8, 8
    return _case(
        "rows_columns_mismatch", A900,
        "Pixel Data length 512 does not match Rows 8 x Columns 8 x 16 bits (128)", ds,
        storescu_ok=True,
    )  # fmt: skip


def bits_stored_exceeds_allocated() -> BadInput:
    """Bits Stored 20 in a 16-bit cell (PS3.3 C.7.6.3.1: Bits Stored <= Bits Allocated)."""
    ds = _ct()
    ds.BitsStored, ds.HighBit = 20, 19
    return _case(
        "bits_stored_exceeds_allocated", A900, "Bits Stored 20 > Bits Allocated 16", ds,
        storescu_ok=True,
    )  # fmt: skip


def garbage_random(size: int = 4096, seed: int = 1) -> BadInput:
    """Random bytes as the data set (and as an uploaded file)."""
    junk = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
    return BadInput(
        "garbage_random", C000, "not a DICOM data set", junk,
        sop_instance_uid=generate_uid(), raw_file=junk,
    )  # fmt: skip


def garbage_8_bytes() -> BadInput:
    """Eight bytes: pydicom's dcmread(force=True) raises a raw struct.error on these."""
    junk = b"\x08\x00\x05\x00CS\x0a\x00"  # element header promising 10 bytes that never come
    return BadInput(
        "garbage_8_bytes", C000, "data set shorter than one element", junk,
        sop_instance_uid=generate_uid(), raw_file=junk,
    )  # fmt: skip


def dicm_then_junk(seed: int = 2) -> BadInput:
    """A Part-10 preamble and 'DICM' followed by junk: looks like a file, is not one."""
    junk = np.random.default_rng(seed).integers(0, 256, 1024, dtype=np.uint8).tobytes()
    blob = b"\x00" * 128 + b"DICM" + junk
    return BadInput(
        "dicm_then_junk", C000, "DICM prefix but no file meta or data set", blob,
        sop_instance_uid=generate_uid(), raw_file=blob,
    )  # fmt: skip


def deflate_bomb(inflated_size: int = BOMB_INFLATED_SIZE) -> BadInput:
    """Deflated Explicit VR LE whose inflated size is ~1000x what travels.

    A CT whose Rows x Columns match a zero-filled Pixel Data of ``inflated_size`` bytes, so
    a server that inflates without a limit (pydicom does) allocates it all before any check.
    """
    cols = 4096
    rows = max(1, inflated_size // (2 * cols))
    ds = _ct()
    ds.Rows, ds.Columns = rows, cols
    del ds.PixelData
    head = encode(ds)  # explicit VR LE, everything before Pixel Data
    pixel_len = rows * cols * 2
    pixel_header = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, pixel_len)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate (PS3.5 A.5)
    parts = [comp.compress(head + pixel_header)]
    zeros = bytes(1 << 20)
    remaining = pixel_len
    while remaining:
        chunk = zeros[: min(remaining, len(zeros))]
        parts.append(comp.compress(chunk))
        remaining -= len(chunk)
    parts.append(comp.flush())
    deflated = b"".join(parts)
    if len(deflated) % 2:
        deflated += b"\x00"
    return BadInput(
        "deflate_bomb", C000,
        f"deflated data set inflates to {len(head) + 12 + pixel_len} bytes "
        f"({(len(head) + 12 + pixel_len) // len(deflated)}x what was sent)",
        deflated, sop_class_uid=CT, sop_instance_uid=ds.SOPInstanceUID,
        transfer_syntax=DeflatedExplicitVRLittleEndian, patient_id=ds.PatientID,
    )  # fmt: skip


def odd_length_value() -> BadInput:
    """Patient's Name with a 7-byte value: PS3.5 7.1.1 requires even value lengths."""
    ds = _ct()
    del ds.PatientName
    data = encode(ds)
    odd = _element(0x00100010, b"PN", b"Odd^Len")  # 7 bytes, no padding
    # Insert in tag order: Patient's Name (0010,0010) goes right before Patient ID (0010,0020).
    pid_at = data.find(b"\x10\x00\x20\x00LO")
    bad = data[:pid_at] + odd + data[pid_at:]
    return BadInput(
        "odd_length_value", C000, "element (0010,0010) has odd value length 7", bad,
        sop_class_uid=CT, sop_instance_uid=ds.SOPInstanceUID, patient_id=ds.PatientID,
    )  # fmt: skip


def sop_class_mismatch() -> BadInput:
    """The data set is a CT, the command (and presentation context) says MR."""
    ds = _ct()
    return _case(
        "sop_class_mismatch", A900,
        f"SOP Class UID in data set ({CT}) differs from the command ({MR})", ds,
        sop_class_uid=MR,
    )  # fmt: skip


def invalid_uid_characters() -> BadInput:
    """Study/Series Instance UIDs with letters and a leading zero (PS3.5 9.1)."""
    ds = _ct()
    ds.StudyInstanceUID = "1.2.840.abc.01"
    ds.SeriesInstanceUID = "1.2.840.10008.ser_ies!"
    return _case(
        "invalid_uid_characters", A900, "Study Instance UID '1.2.840.abc.01' is not a valid UID",
        ds, storescu_ok=True,
    )  # fmt: skip


def invalid_study_date() -> BadInput:
    """StudyDate 2020-13-45 (no such day; DA is YYYYMMDD): was indexed as "2020-13-",
    returned by C-FIND as an invalid DA and matched by date ranges (outside probe)."""
    ds = _ct()
    ds.StudyDate = "2020-13-45"
    return _case(
        "invalid_study_date", A900, "StudyDate '2020-13-45' is not a valid DA value",
        ds, storescu_ok=True,
    )  # fmt: skip


def invalid_birth_date() -> BadInput:
    """PatientBirthDate 19801332 (eight digits, no such day)."""
    ds = _ct()
    ds.PatientBirthDate = "19801332"
    return _case(
        "invalid_birth_date", A900, "PatientBirthDate '19801332' is not a valid DA value",
        ds, storescu_ok=True,
    )  # fmt: skip


def modality_contradicts_sop_class() -> BadInput:
    """An MR image sent as CT Image Storage (class and data set agree, content does not):
    stored with 0000 and indexed as CT before (outside probe)."""
    ds = _ct()
    ds.Modality = "MR"
    return _case(
        "modality_contradicts_sop_class", A900, "Modality MR does not match the SOP class",
        ds, storescu_ok=True,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# Pixel Data encoding (PS3.5 A.4) and the Image Pixel module (PS3.3 C.7.6.3), probe 28

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
ITEM, SEQUENCE_DELIMITER = (0xFFFE, 0xE000), struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


def _fragment(value: bytes, claimed: int | None = None) -> bytes:
    """An item (FFFE,E000) of encapsulated Pixel Data; ``claimed`` overrides its length."""
    return struct.pack("<HHI", *ITEM, len(value) if claimed is None else claimed) + value


def _encapsulated_case(
    name: str, reason: str, items: bytes, *, transfer_syntax: str = JPEG_BASELINE
) -> BadInput:
    """An 8-bit CT whose Pixel Data is an undefined-length sequence of ``items`` (as sent)."""
    ds = _ct()
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = bytes(256)
    head = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF)
    data = encode(ds)
    at = data.rfind(b"\xe0\x7f\x10\x00")
    return BadInput(
        name, C000, reason, data[:at] + head + items, CT, str(ds.SOPInstanceUID),
        transfer_syntax, patient_id=str(ds.PatientID),
    )  # fmt: skip


def encapsulated_syntax_native_pixels() -> BadInput:
    """JPEG Baseline negotiated, Pixel Data sent with a defined length (native): PS3.5 A.4
    needs an undefined-length sequence of fragments (stored with 0000 before, probe 28 c21)."""
    ds = _ct()
    return replace(
        _case(
            "encapsulated_syntax_native_pixels", C000,
            "Pixel Data has defined length 512", ds,
        ),
        transfer_syntax=JPEG_BASELINE,
    )  # fmt: skip


def native_syntax_encapsulated_pixels() -> BadInput:
    """Explicit VR Little Endian with Pixel Data as fragments whose item headers and values
    total exactly Rows x Columns x 2 bytes: served as an image whose first pixels were item
    headers (probe 28 c22)."""
    ds = _ct()
    items = _fragment(b"") + _fragment(b"\xab" * (len(ds.PixelData) - 16)) + SEQUENCE_DELIMITER
    head = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF)
    data = encode(ds)
    at = data.rfind(b"\xe0\x7f\x10\x00")
    return BadInput(
        "native_syntax_encapsulated_pixels", C000,
        "Pixel Data encapsulated (undefined length) in a native syntax",
        data[:at] + head + items, CT, str(ds.SOPInstanceUID), patient_id=str(ds.PatientID),
    )  # fmt: skip


def non_item_in_pixel_sequence() -> BadInput:
    """A Patient's Name element where the first fragment belongs (probe 28 c23b)."""
    bogus = struct.pack("<HHI", 0x0008, 0x0010, 4) + b"abcd"
    return _encapsulated_case(
        "non_item_in_pixel_sequence",
        "(0008,0010) inside Pixel Data where an item belongs",
        _fragment(b"") + bogus + SEQUENCE_DELIMITER,
    )


def pixel_fragment_overruns() -> BadInput:
    """A fragment claiming 5000 bytes, 40 of which come before the delimiter (c23d)."""
    return _encapsulated_case(
        "pixel_fragment_overruns",
        "Pixel Data fragment 1: 5000 bytes, only 40 before the sequence delimiter",
        _fragment(b"") + _fragment(b"\xff\xd8" * 20, claimed=5000) + SEQUENCE_DELIMITER,
    )


def encapsulated_pixels_without_delimiter() -> BadInput:
    """The fragments end with the stream, no sequence delimiter (FFFE,E0DD): pydicom reads
    an empty data set, and the placeholder landed under UNKNOWN (probe 28 c23c)."""
    return _encapsulated_case(
        "encapsulated_pixels_without_delimiter",
        "Pixel Data has no sequence delimiter",
        _fragment(b"") + _fragment(b"\xff\xd8" + bytes(40)),
    )


def encapsulated_pixels_cut_in_fragment() -> BadInput:
    """A compressed instance cut inside its last fragment (a dcmcjpeg file cut at 2/3)."""
    jpeg = b"\xff\xd8\xff\xdb" + bytes(range(256)) * 4 + b"\xff\xd9"
    return _encapsulated_case(
        "encapsulated_pixels_cut_in_fragment",
        "Pixel Data truncated in fragment 1",
        _fragment(b"") + _fragment(jpeg)[: 8 + len(jpeg) // 2],
    )


def sequences_nested_too_deep(depth: int = 300) -> BadInput:
    """Content Sequence items nested 300 deep: pydicom's reader recurses per level and
    raises RecursionError; the placeholder landed under UNKNOWN (probe 28 c34)."""
    ds = _ct()
    inner = struct.pack("<HH2sH", 0x0008, 0x1030, b"LO", 4) + b"DEEP"
    for _ in range(depth):
        inner = (
            struct.pack("<HH2sHI", 0x0040, 0xA730, b"SQ", 0, 0xFFFFFFFF)
            + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
            + inner
            + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
            + SEQUENCE_DELIMITER
        )
    data = encode(ds)
    at = data.rfind(b"\xe0\x7f\x10\x00")  # (0040,A730) sorts before Pixel Data
    return BadInput(
        "sequences_nested_too_deep", C000, "sequences nested too deep to read",
        data[:at] + inner + data[at:], CT, str(ds.SOPInstanceUID), patient_id=str(ds.PatientID),
    )  # fmt: skip


def high_bit_not_bits_stored_minus_one() -> BadInput:
    """High Bit 3 with Bits Stored 12: PS3.3 C.7.6.3.1 says High Bit = Bits Stored - 1."""
    ds = _ct()
    ds.BitsStored, ds.HighBit = 12, 3
    return _case(
        "high_bit_not_bits_stored_minus_one", A900, "HighBit 3, BitsStored 12 needs 11", ds,
        storescu_ok=True,
    )  # fmt: skip


def monochrome_with_three_samples() -> BadInput:
    """MONOCHROME2 with Samples per Pixel 3 (PS3.3 C.7.6.3.1.2: monochrome has one sample)."""
    ds = _ct()
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
    ds.PixelData = bytes(range(256)) * 3
    return _case(
        "monochrome_with_three_samples", A900, "SamplesPerPixel 3, MONOCHROME2 needs 1", ds,
        storescu_ok=True,
    )  # fmt: skip


def rgb_with_one_sample() -> BadInput:
    """RGB with Samples per Pixel 1 (a Secondary Capture; RGB has three samples)."""
    ds = make_instance(
        "1.2.840.10008.5.1.4.1.1.7", patient_id="LUCENT-BAD-001", patient_name="Bad^Input",
        rows=16, cols=16,
    )  # fmt: skip
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "RGB"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    if "PlanarConfiguration" in ds:
        del ds.PlanarConfiguration
    ds.PixelData = bytes(range(256))
    return _case(
        "rgb_with_one_sample", A900, "SamplesPerPixel 1, RGB needs 3", ds, storescu_ok=True
    )


def unknown_photometric() -> BadInput:
    ds = _ct()
    ds.PhotometricInterpretation = "FOO"
    return _case(
        "unknown_photometric", A900, "PhotometricInterpretation 'FOO' is not defined", ds,
        storescu_ok=True,
    )  # fmt: skip


def pixel_representation_invalid() -> BadInput:
    ds = _ct()
    ds.PixelRepresentation = 7
    return _case(
        "pixel_representation_invalid", A900, "PixelRepresentation 7, must be 0 or 1", ds,
        storescu_ok=True,
    )  # fmt: skip


BREAST_PROJECTION = "1.2.840.10008.5.1.4.1.1.13.1.4"


def image_class_beyond_table1_without_pixels() -> BadInput:
    """Breast Projection X-Ray Image Storage (an image IOD, not in Table 1) without Pixel
    Data: stored with 0000 before, as only Table 1 said which classes need pixels."""
    ds = _ct()
    pixel_module = "PixelData Rows Columns BitsAllocated BitsStored HighBit PixelRepresentation"
    for keyword in (*pixel_module.split(), "SamplesPerPixel", "PhotometricInterpretation"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.SOPClassUID = BREAST_PROJECTION
    ds.Modality = "MG"
    return _case(
        "image_class_beyond_table1_without_pixels", A900,
        "image SOP class without Pixel Data", ds, storescu_ok=True,
    )  # fmt: skip


BAD_INPUTS: dict[str, Callable[[], BadInput]] = {
    "missing_sop_instance_uid": missing_sop_instance_uid,
    "missing_study_uid": missing_study_uid,
    "missing_series_uid": missing_series_uid,
    "missing_patient_id": missing_patient_id,
    "truncated_pixel_data": truncated_pixel_data,
    "pixel_data_too_short": pixel_data_too_short,
    "rows_columns_mismatch": rows_columns_mismatch,
    "bits_stored_exceeds_allocated": bits_stored_exceeds_allocated,
    "garbage_random": garbage_random,
    "garbage_8_bytes": garbage_8_bytes,
    "dicm_then_junk": dicm_then_junk,
    "deflate_bomb": deflate_bomb,
    "odd_length_value": odd_length_value,
    "sop_class_mismatch": sop_class_mismatch,
    "invalid_uid_characters": invalid_uid_characters,
    "invalid_study_date": invalid_study_date,
    "invalid_birth_date": invalid_birth_date,
    "modality_contradicts_sop_class": modality_contradicts_sop_class,
    "encapsulated_syntax_native_pixels": encapsulated_syntax_native_pixels,
    "native_syntax_encapsulated_pixels": native_syntax_encapsulated_pixels,
    "non_item_in_pixel_sequence": non_item_in_pixel_sequence,
    "pixel_fragment_overruns": pixel_fragment_overruns,
    "encapsulated_pixels_without_delimiter": encapsulated_pixels_without_delimiter,
    "encapsulated_pixels_cut_in_fragment": encapsulated_pixels_cut_in_fragment,
    "sequences_nested_too_deep": sequences_nested_too_deep,
    "high_bit_not_bits_stored_minus_one": high_bit_not_bits_stored_minus_one,
    "monochrome_with_three_samples": monochrome_with_three_samples,
    "rgb_with_one_sample": rgb_with_one_sample,
    "unknown_photometric": unknown_photometric,
    "pixel_representation_invalid": pixel_representation_invalid,
    "image_class_beyond_table1_without_pixels": image_class_beyond_table1_without_pixels,
}

# name -> expected status class; the single table tests iterate over.
EXPECTED_STATUS: dict[str, str] = {
    "missing_sop_instance_uid": A900,
    "missing_study_uid": A900,
    "missing_series_uid": A900,
    "missing_patient_id": A900,
    "truncated_pixel_data": C000,
    "pixel_data_too_short": A900,
    "rows_columns_mismatch": A900,
    "bits_stored_exceeds_allocated": A900,
    "garbage_random": C000,
    "garbage_8_bytes": C000,
    "dicm_then_junk": C000,
    "deflate_bomb": C000,
    "odd_length_value": C000,
    "sop_class_mismatch": A900,
    "invalid_uid_characters": A900,
    "invalid_study_date": A900,
    "invalid_birth_date": A900,
    "modality_contradicts_sop_class": A900,
    "encapsulated_syntax_native_pixels": C000,
    "native_syntax_encapsulated_pixels": C000,
    "non_item_in_pixel_sequence": C000,
    "pixel_fragment_overruns": C000,
    "encapsulated_pixels_without_delimiter": C000,
    "encapsulated_pixels_cut_in_fragment": C000,
    "sequences_nested_too_deep": C000,
    "high_bit_not_bits_stored_minus_one": A900,
    "monochrome_with_three_samples": A900,
    "rgb_with_one_sample": A900,
    "unknown_photometric": A900,
    "pixel_representation_invalid": A900,
    "image_class_beyond_table1_without_pixels": A900,
}


def all_bad_inputs() -> list[BadInput]:
    """Every case, built fresh (new UIDs each call)."""
    return [make() for make in BAD_INPUTS.values()]


def write_bad_inputs(directory: Path | str) -> dict[str, Path]:
    """Each case's Part-10 form as ``<name>.dcm`` in ``directory``."""
    return {bad.name: bad.write(directory) for bad in all_bad_inputs()}


# --------------------------------------------------------------------------------------------
# Delivering them


def send_raw_c_store(
    bad: BadInput | Path,
    host: str,
    port: int,
    *,
    called_ae: str = "LUCENT",
    calling_ae: str = "BADSCU",
    timeout: float = 30.0,
) -> int | None:
    """C-STORE the bytes unchanged (pynetdicom chunked mode) and return the status.

    None when there was no response (association rejected or aborted) — for a bad input
    the test should then check the server still answers C-ECHO.
    """
    from pynetdicom import AE, _config

    path = bad
    tmpdir = None
    if isinstance(bad, BadInput):
        import tempfile

        tmpdir = tempfile.TemporaryDirectory()
        path = bad.write(tmpdir.name)
        sop_class, ts = bad.sop_class_uid, bad.transfer_syntax
    else:
        from pydicom.filereader import read_file_meta_info

        meta = read_file_meta_info(path)
        sop_class, ts = meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(sop_class, [ts])
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True  # send the file's bytes, never re-encode
    try:
        assoc = ae.associate(host, port, ae_title=called_ae)
        if not assoc.is_established:
            return None
        try:
            rsp = assoc.send_c_store(Path(path))
        finally:
            if assoc.is_established:
                assoc.release()
        return int(rsp.Status) if "Status" in rsp else None
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
        if tmpdir is not None:
            tmpdir.cleanup()


# --------------------------------------------------------------------------------------------
# Raw PDUs (PS3.8 9.3) for socket-level tests


def _item(item_type: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(payload)) + payload


def associate_rq(
    called_ae: str = "LUCENT",
    calling_ae: str = "RAWSCU",
    contexts: Sequence[tuple[str, Sequence[str]]] = ((VERIFICATION, (ExplicitVRLittleEndian,)),),
    *,
    max_pdu: int = 16384,
    claimed_length: int | None = None,
) -> bytes:
    """An A-ASSOCIATE-RQ PDU; ``claimed_length`` overrides the PDU length field (to lie)."""
    body = struct.pack(">HH", 1, 0)
    body += called_ae.encode().ljust(16)[:16] + calling_ae.encode().ljust(16)[:16] + bytes(32)
    body += _item(0x10, b"1.2.840.10008.3.1.1.1")
    for i, (abstract, syntaxes) in enumerate(contexts):
        sub = _item(0x30, abstract.encode()) + b"".join(_item(0x40, ts.encode()) for ts in syntaxes)
        body += _item(0x20, struct.pack(">BBBB", 2 * i + 1, 0, 0, 0) + sub)
    user = _item(0x51, struct.pack(">I", max_pdu))
    user += _item(0x52, b"1.2.826.0.1.3680043.8.498.1") + _item(0x55, b"LUCENT_RAW")
    body += _item(0x50, user)
    length = len(body) if claimed_length is None else claimed_length
    return struct.pack(">BBI", 0x01, 0, length) + body


def pdu_claiming_4gb(pdu_type: int = 0x04, payload: bytes = b"") -> bytes:
    """A PDU header whose length field says 0xFFFFFFFF (~4 GB), then a few real bytes.

    Default type 0x04 (P-DATA-TF): send it after a successful association. pynetdicom does
    not check a claimed length against the negotiated maximum and would try to read 4 GB; our
    server must abort the association (A-ABORT or close) and keep serving others.
    """
    if not payload:
        # Start of a plausible PDV: length, context id 1, command+last flags.
        payload = struct.pack(">IBB", 0xFFFFFFFA, 1, 0x03) + b"\x00" * 64
    return struct.pack(">BBI", pdu_type, 0, 0xFFFFFFFF) + payload


def associate_rq_claiming_4gb(called_ae: str = "LUCENT") -> bytes:
    """An A-ASSOCIATE-RQ whose PDU length says ~4 GB: refused before association."""
    return associate_rq(called_ae, claimed_length=0xFFFFFFFF)


def part10_of(ds: Dataset) -> bytes:
    """A good data set as a Part-10 stream whose file meta names its own class and UID."""
    return BadInput("ok", "", "", encode(ds), ds.SOPClassUID, ds.SOPInstanceUID).part10()
