"""Transfer syntaxes the Store SCP accepts (Conformance 4.2.3.2) and what we know about them."""

from __future__ import annotations

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
EXPLICIT_BE = "1.2.840.10008.1.2.2"

# When a peer proposes several in one context, the first one IT lists that we accept is
# taken (lucent.net.transport for pynetdicom, server.dimse.fast_store): the order below is
# only what we propose ourselves.
ACCEPTED: tuple[str, ...] = (
    EXPLICIT_LE,
    IMPLICIT_LE,
    DEFLATED_LE,
    EXPLICIT_BE,
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51",  # JPEG Extended (Process 2 & 4)
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless (Process 14)
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless Only
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.100",  # MPEG2 Main Profile / Main Level
    "1.2.840.10008.1.2.4.101",  # MPEG2 Main Profile / High Level
    "1.2.840.10008.1.2.4.102",  # MPEG-4 AVC/H.264 High Profile / Level 4.1
    "1.2.840.10008.1.2.4.103",  # MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1
    "1.2.840.10008.1.2.4.104",  # MPEG-4 AVC/H.264 High Profile / Level 4.2 For 2D Video
    "1.2.840.10008.1.2.4.105",  # MPEG-4 AVC/H.264 High Profile / Level 4.2 For 3D Video
    "1.2.840.10008.1.2.4.106",  # MPEG-4 AVC/H.264 Stereo High Profile / Level 4.2
    "1.2.840.10008.1.2.4.107",  # HEVC/H.265 Main Profile / Level 5.1
    "1.2.840.10008.1.2.4.108",  # HEVC/H.265 Main 10 Profile / Level 5.1
    "1.2.840.10008.1.2.5",  # RLE Lossless
)

NATIVE: frozenset[str] = frozenset({IMPLICIT_LE, EXPLICIT_LE, DEFLATED_LE, EXPLICIT_BE})

#: Lossy Image Compression Method (0028,2114) of each lossy syntax (PS3.3 C.7.6.1.1.5.1).
LOSSY_METHOD: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",
    "1.2.840.10008.1.2.4.91": "ISO_15444_1",
    "1.2.840.10008.1.2.4.100": "ISO_13818_2",
    "1.2.840.10008.1.2.4.101": "ISO_13818_2",
    "1.2.840.10008.1.2.4.102": "ISO_14496_10",
    "1.2.840.10008.1.2.4.103": "ISO_14496_10",
    "1.2.840.10008.1.2.4.104": "ISO_14496_10",
    "1.2.840.10008.1.2.4.105": "ISO_14496_10",
    "1.2.840.10008.1.2.4.106": "ISO_14496_10",
    "1.2.840.10008.1.2.4.107": "ISO_23008_2",
    "1.2.840.10008.1.2.4.108": "ISO_23008_2",
}

#: Syntaxes that may lose information (what a lossy transcode may target; test samples
#: made with them are lossy). Whether an instance did is ``is_lossy``: JPEG 2000 (.91) is
#: reversible or not as its codestream says.
LOSSY: frozenset[str] = frozenset(LOSSY_METHOD)

#: Syntaxes whose codestream says whether it lost information: the JPEG 2000 family codes
#: with the reversible 5/3 or the irreversible 9/7 wavelet (ISO/IEC 15444-1 A.6.1).
CODESTREAM_DECIDES: frozenset[str] = frozenset(
    {
        "1.2.840.10008.1.2.4.91",  # JPEG 2000
        "1.2.840.10008.1.2.4.93",  # JPEG 2000 Part 2 Multi-component
        "1.2.840.10008.1.2.4.203",  # HTJ2K
    }
)

#: Syntaxes that always lose information: JPEG lossy processes, JPEG-LS near-lossless,
#: the video codecs, JPEG XL holding a recompressed (lossy) JPEG and JPEG XL (whose header
#: does not tell; .110 is JPEG XL Lossless).
ALWAYS_LOSSY: frozenset[str] = (LOSSY - CODESTREAM_DECIDES) | {
    "1.2.840.10008.1.2.4.111",  # JPEG XL JPEG Recompression
    "1.2.840.10008.1.2.4.112",  # JPEG XL
}


def is_lossy(
    transfer_syntax: str, lossy_image_compression: object = None, irreversible: bool | None = None
) -> bool | None:
    """Whether an instance was lossy compressed: the "JPG" badge of the workstation and the
    index's lossy flag, decided here for both (probe 59: they called every .91 lossy).

    - Lossy Image Compression (0028,2110) "01": lossy, now or at any time before
      (PS3.3 C.7.6.1.1.5);
    - an always-lossy syntax (``ALWAYS_LOSSY``): lossy;
    - a JPEG 2000 syntax (``CODESTREAM_DECIDES``): lossy when ``irreversible``
      (``codestream.pixel_data_irreversible``: the 9/7 wavelet, whatever the attribute
      claims); a reversible codestream is not; unknown (pixel data not at hand), "00"
      means not lossy and an absent attribute None: only the codestream can tell;
    - any other syntax: not lossy.
    """
    flag = str(lossy_image_compression or "").strip()
    if flag == "01" or transfer_syntax in ALWAYS_LOSSY:
        return True
    if transfer_syntax in CODESTREAM_DECIDES:
        if irreversible is not None:
            return irreversible
        return False if flag == "00" else None
    return False


VIDEO: frozenset[str] = frozenset(u for u in ACCEPTED if u.startswith("1.2.840.10008.1.2.4.1"))


def is_encapsulated(ts: str) -> bool:
    """True when pixel data travels as encapsulated fragments (every non-native syntax)."""
    return ts not in NATIVE
