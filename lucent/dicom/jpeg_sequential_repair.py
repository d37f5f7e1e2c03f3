"""A last-resort pydicom decoder plugin for sequential-DCT JPEG (Baseline, Extended: PS3.5
A.4.1) whose scan header gives spectral selection 0..0 instead of 0..63.

ITU T.81 B.2.3 fixes Ss = 0 and Se = 63 for sequential DCT; some encoders wrote Se = 0
(pydicom's own test file ``JPEG-lossy.dcm``, 12-bit Extended). libjpeg refuses such a scan
("scan start must be zero and scan stop must be 63"), GDCM and Pillow do not read 12-bit
Extended at all, so an instance stored with 0000 could not be rendered, served as frames or
decompressed for a C-GET (outside probe 55). DCMTK decodes it with a warning; so does this
plugin: it sets Se = 63 in a copy of the frame's codestream and hands it to libjpeg. It is
added after every other plugin, so it only runs when they all failed.
"""

from __future__ import annotations

import contextlib
from typing import Any

from pydicom import uid
from pydicom.pixels import get_decoder

LABEL = "lucent-sequential-repair"
_SYNTAXES = (uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit)
_SEQUENTIAL_SOF = (0xC0, 0xC1)  # baseline, extended sequential (Huffman)
#: What pydicom names when the plugin cannot run (its plugin protocol).
DECODER_DEPENDENCIES = {syntax: ("pylibjpeg-libjpeg>=2.1",) for syntax in _SYNTAXES}


def repaired_scan(src: bytes) -> bytes | None:
    """``src`` with the sequential scan's Se set to 63 where it reads Ss = 0, Se = 0; None
    when the stream is not sequential DCT or has nothing to repair."""
    data = bytearray(src)
    i, sequential, changed = 2, False, False
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in _SEQUENTIAL_SOF:
            sequential = True
        elif marker == 0xDA:  # SOS: length, Ns, Ns x (Cs, Td/Ta), Ss, Se, Ah/Al
            if not sequential or i + 2 + length > len(data):
                return None
            spectral = i + 5 + 2 * data[i + 4]
            if data[spectral] == 0 and data[spectral + 1] == 0:
                data[spectral + 1] = 63
                changed = True
            break  # one scan in a sequential frame: the entropy-coded data follows
        i += 2 + length
    return bytes(data) if changed else None


def is_available(transfer_syntax: str) -> bool:
    if transfer_syntax not in _SYNTAXES:
        return False
    try:
        import libjpeg  # noqa: F401
    except ImportError:
        return False
    return True


def _decode_frame(src: bytes, runner: Any) -> bytearray:
    repaired = repaired_scan(src)
    if repaired is None:
        raise ValueError("not a sequential JPEG scan with spectral selection 0..0")
    from libjpeg import decode_pixel_data

    return decode_pixel_data(repaired, version=2, **runner.options)


def install() -> None:
    """Add the plugin behind the installed ones (once per process)."""
    for syntax in _SYNTAXES:
        with contextlib.suppress(ValueError):  # "already has a plugin named ..."
            get_decoder(syntax).add_plugin(LABEL, (__name__, "_decode_frame"))
