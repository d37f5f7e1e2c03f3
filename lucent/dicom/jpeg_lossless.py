"""JPEG Lossless encoding (PS3.5 A.4.1: Process 14, and its Selection Value 1 variant) with GDCM.

pydicom has no encoder for these two syntaxes, yet JPEG Lossless SV1 (1.2.840.10008.1.2.4.70)
is the lossless syntax older PACS and viewers decode, often the only compressed one they take
(Conformance 4.2.4.2 lists it; an outside tester's peer that accepted only it got nothing).
GDCM (``python-gdcm``, already a decoder plugin here) encodes it from an in-memory image: no
plaintext file of patient data is written anywhere. One fragment per frame (PS3.5 A.4).
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate

JPEG_LOSSLESS_P14 = "1.2.840.10008.1.2.4.57"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
SYNTAXES = (JPEG_LOSSLESS_SV1, JPEG_LOSSLESS_P14)


def encode(ds: Dataset, target: str) -> list[bytes]:
    """The frames of ``ds`` (native pixel data, little endian) as JPEG Lossless fragments.

    Raises ValueError where JPEG Lossless cannot hold the image (more than 16 bits stored,
    float pixels) or GDCM refuses it; the caller then tries another syntax."""
    import gdcm  # imported here: only a sender that needs this syntax pays for it

    if target not in SYNTAXES:
        raise ValueError(f"{target} is not a JPEG Lossless syntax")
    bits_stored = int(ds.BitsStored)
    if int(ds.BitsAllocated) not in (8, 16) or not 2 <= bits_stored <= 16:
        raise ValueError(f"JPEG Lossless holds 2-16 bits in 8 or 16 ({bits_stored} stored)")
    samples = int(ds.SamplesPerPixel)
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    pixels = np.ascontiguousarray(ds.pixel_array)
    if samples > 1 and int(getattr(ds, "PlanarConfiguration", 0) or 0) != 0:
        raise ValueError("colour-by-plane pixels are not encoded here")
    rows, cols = int(ds.Rows), int(ds.Columns)
    image = gdcm.Image()
    image.SetNumberOfDimensions(3 if frames > 1 else 2)
    image.SetDimension(0, cols)
    image.SetDimension(1, rows)
    if frames > 1:
        image.SetDimension(2, frames)
    signed = int(ds.PixelRepresentation) == 1
    image.SetPixelFormat(
        gdcm.PixelFormat(samples, int(ds.BitsAllocated), bits_stored, bits_stored - 1, int(signed))
    )
    kind = gdcm.PhotometricInterpretation.GetPIType(str(ds.PhotometricInterpretation))
    image.SetPhotometricInterpretation(gdcm.PhotometricInterpretation(kind))
    if samples > 1:
        image.SetPlanarConfiguration(0)
    image.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.ExplicitVRLittleEndian))
    value = gdcm.DataElement(gdcm.Tag(0x7FE0, 0x0010))
    value.SetByteStringValue(pixels.astype(pixels.dtype.newbyteorder("<"), copy=False).tobytes())
    image.SetDataElement(value)
    change = gdcm.ImageChangeTransferSyntax()
    process = (
        gdcm.TransferSyntax.JPEGLosslessProcess14_1
        if target == JPEG_LOSSLESS_SV1
        else gdcm.TransferSyntax.JPEGLosslessProcess14
    )
    change.SetTransferSyntax(gdcm.TransferSyntax(process))
    change.SetInput(image)
    # SetInput keeps the image in a GDCM SmartPointer, which deletes it with the filter:
    # Python must not delete it too (a double free: the process aborted or crashed now
    # and then, depending on what the heap held)
    image.thisown = False
    if not change.Change():
        # seen for single 8-bit frames with an odd number of bytes (3 x 3 RGB, 17 x 19);
        # the caller tries the next accepted syntax or says why the instance was not sent
        raise ValueError("GDCM could not encode the image")
    # references into the filter's output: read while ``change`` lives
    output = change.GetOutput()
    element = output.GetDataElement()
    fragments = element.GetSequenceOfFragments()
    if fragments is None or fragments.GetNumberOfFragments() != frames:
        raise ValueError("GDCM did not give one fragment per frame")
    encoded: list[bytes] = []
    for i in range(frames):
        fragment = fragments.GetFragment(i)
        value = fragment.GetByteValue()
        # SWIG gives the bytes as a str decoded with surrogateescape (pydicom's GDCM
        # plugin reads them back the same way)
        encoded.append(value.GetBuffer().encode("utf-8", "surrogateescape"))
    return encoded


def compress(ds: Dataset, target: str) -> None:
    """Replace the native Pixel Data of ``ds`` by its JPEG Lossless encapsulation; the caller
    sets the transfer syntax and checks that it decodes to the same pixels."""
    frames = encode(ds, target)
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    if int(ds.SamplesPerPixel) > 1:
        ds.PlanarConfiguration = 0
