"""Change an instance's transfer syntax to one a peer accepted (PS3.5 8.2, 10; PS3.4 B.4.1).

One piece of code for every sender: our C-STORE SCU (``lucent.net.scu``) and the C-GET /
C-MOVE sub-operations of the Query/Retrieve SCP. Mature archives (Orthanc, dcm4chee)
decompress on demand when a peer accepted no context in the stored syntax; without that, a
default ``getscu`` or a ``storescp +xi`` gets nothing of data stored compressed.

Pure pydicom (decoders: the pylibjpeg/gdcm plugins installed). Decoding is CPU-heavy:
servers call :func:`prepare_part10` (bytes in, bytes out) in a helper process, never on a
DICOM association thread.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Collection
from dataclasses import dataclass

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID

from lucent.dicom.transfer_syntaxes import EXPLICIT_BE, EXPLICIT_LE, IMPLICIT_LE

#: The uncompressed syntaxes, in the order we prefer to send them (Conformance 4.2.1.2).
UNCOMPRESSED: tuple[str, ...] = (EXPLICIT_LE, IMPLICIT_LE, EXPLICIT_BE)
RLE_LOSSLESS = "1.2.840.10008.1.2.5"


@dataclass(frozen=True)
class Prepared:
    """The data set to send and in which syntax, or why it cannot be sent (``dataset`` None)."""

    dataset: Dataset | None
    syntax: str
    transcoded: bool
    error: str


def codes_pixels(own: str, accepted: Collection[str]) -> bool:
    """True when sending in an accepted syntax means decoding or encoding pixel data
    (compressed → uncompressed, uncompressed → RLE): the CPU-heavy cases a server hands to
    a helper process. Uncompressed ↔ uncompressed is only a re-encoding of the elements."""
    if own in accepted:
        return False
    try:
        compressed = UID(own).is_compressed
    except ValueError:  # not a transfer syntax we know: nothing to decode it with
        return False
    native = any(ts in accepted for ts in UNCOMPRESSED)
    if compressed:
        return native
    return not native and RLE_LOSSLESS in accepted


def prepare(ds: Dataset, own: str, accepted: Collection[str], sop_class_uid: str) -> Prepared:
    """Pick the syntax to send ``ds`` (stored in ``own``) in, and transcode it to that.

    Uncompressed ↔ uncompressed happens when the data set is encoded in the chosen syntax
    (here only the file meta changes); compressed → uncompressed uses pydicom's decoders;
    uncompressed → RLE its RLE encoder. The SOP Instance UID stays: the change of transfer
    syntax is lossless (PS3.5 8.2, 10), and a new UID would make the peer hold an instance
    we never recorded (and storage commitment ask for the old one).
    """
    if own in accepted:
        return Prepared(ds, own, False, "")
    native = [ts for ts in UNCOMPRESSED if ts in accepted]
    own_uid = UID(own)
    if own_uid.is_compressed and native:
        try:
            ds.decompress(generate_instance_uid=False)
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a per-instance error
            return Prepared(
                None, "", False, f"cannot decompress {own} for a peer that wants native: {exc}"
            )
        set_syntax(ds, native[0])
        return Prepared(ds, native[0], True, "")
    if not own_uid.is_compressed and native:
        set_syntax(ds, native[0])
        return Prepared(ds, native[0], native[0] != own, "")
    if not own_uid.is_compressed and RLE_LOSSLESS in accepted and "PixelData" in ds:
        try:
            ds.compress(RLE_LOSSLESS, generate_instance_uid=False)
        except Exception as exc:  # noqa: BLE001
            return Prepared(None, "", False, f"cannot encode RLE Lossless: {exc}")
        return Prepared(ds, RLE_LOSSLESS, True, "")
    return Prepared(
        None,
        "",
        False,
        (
            f"the peer accepted no transfer syntax we can send {sop_class_uid} in "
            f"(stored as {own}; accepted: {', '.join(sorted(accepted)) or 'none'})"
        ),
    )


def prepare_part10(
    raw: bytes, own: str, accepted: Collection[str], sop_class_uid: str
) -> tuple[bytes | None, str, bool, str]:
    """:func:`prepare` on Part-10 bytes, answering Part-10 bytes: plain values only, so it
    runs in another process (bytes in, bytes out) and a decoder crash stays there.

    Returns (Part-10 bytes in the chosen syntax or None, syntax, transcoded, error).
    """
    try:
        ds = dcmread(io.BytesIO(raw))
        done = prepare(ds, own, accepted, sop_class_uid)
        if done.dataset is None:
            return None, "", False, done.error
        out = io.BytesIO()
        done.dataset.save_as(out, enforce_file_format=True)
    except Exception as exc:  # noqa: BLE001 - unreadable or unwritable: a per-instance error
        return None, "", False, f"cannot transcode {own}: {exc}"
    return out.getvalue(), done.syntax, done.transcoded, ""


def set_syntax(ds: Dataset, ts: str) -> None:
    """Make ``ts`` the syntax pydicom (and pynetdicom) encode ``ds`` in."""
    uid = UID(ts)
    ds.file_meta.TransferSyntaxUID = uid
    # pydicom 3 encodes by the file meta; keep the old attributes out of the way.
    with contextlib.suppress(AttributeError):
        ds.is_implicit_VR = uid.is_implicit_VR  # type: ignore[attr-defined]
        ds.is_little_endian = uid.is_little_endian  # type: ignore[attr-defined]
