"""lucent.dicom.transcode across byte orders: data stored Explicit VR Big Endian sent to a
peer that accepts only little endian (and back), pixel-identical, other values unchanged."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.encaps import generate_frames
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from lucent.dicom import transcode

#: pydicom's big endian test files: 16-bit MR, 32-bit RT dose (OW of 32-bit words), RGB.
BIG_ENDIAN = ["MR_small_bigendian.dcm", "rtdose_expb_1frame.dcm", "SC_rgb_small_odd_big_endian.dcm"]


def _values(ds: object) -> dict[int, object]:
    """Every parsed value but the binary ones (the byte order shows only there)."""
    binary = ("OB", "OW", "OF", "OD", "OL", "OV", "UN", "SQ")
    return {int(e.tag): e.value for e in ds if e.tag.element and e.VR not in binary}  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", BIG_ENDIAN)
@pytest.mark.parametrize("target", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_big_endian_to_little_endian_keeps_pixels_and_values(name: str, target: str) -> None:
    warnings.simplefilter("ignore")
    raw = open(get_testdata_file(name), "rb").read()  # noqa: SIM115
    source = dcmread(io.BytesIO(raw))
    own = str(source.file_meta.TransferSyntaxUID)
    assert own == ExplicitVRBigEndian
    assert transcode.changes_byte_order(own, {target})
    assert not transcode.changes_byte_order(own, {target, ExplicitVRBigEndian})
    data, syntax, transcoded, error = transcode.prepare_part10(raw, own, {target}, "")
    assert data is not None, error
    out = dcmread(io.BytesIO(data))
    assert syntax == target == out.file_meta.TransferSyntaxUID and transcoded
    assert np.array_equal(out.pixel_array, source.pixel_array)
    assert _values(out) == _values(source)
    back, _, _, error = transcode.prepare_part10(data, target, {ExplicitVRBigEndian}, "")
    assert back is not None, error
    again = dcmread(io.BytesIO(back))
    assert again.file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    assert np.array_equal(again.pixel_array, source.pixel_array)


def _decoded(ds: object, own: str) -> object:
    done = transcode.prepare(ds, own, {ExplicitVRLittleEndian}, "")  # type: ignore[arg-type]
    assert done.dataset is not None and done.transcoded, done.error
    return done.dataset


def test_decoding_a_lossy_syntax_records_lossy_compression() -> None:
    """PS3.3 C.7.6.1.1.5: a near-lossless JPEG-LS image sent decompressed must still say it
    was lossy compressed (an outside tester's C-GET lost the mark)."""
    warnings.simplefilter("ignore")
    ds = dcmread(get_testdata_file("JPEGLSNearLossless_16.dcm"))
    assert "LossyImageCompression" not in ds
    out = _decoded(ds, "1.2.840.10008.1.2.4.81")
    assert out.LossyImageCompression == "01"  # type: ignore[attr-defined]
    assert out.LossyImageCompressionMethod == "ISO_14495_1"  # type: ignore[attr-defined]


def test_jpeg2000_reversible_stream_is_not_marked_lossy() -> None:
    """Transfer syntax .91 carries reversible (5-3) or irreversible (9-7) streams: the
    codestream's COD marker decides, not the syntax."""
    warnings.simplefilter("ignore")
    lossless = dcmread(get_testdata_file("MR_small_jp2klossless.dcm"))  # a 5-3 stream
    assert "LossyImageCompression" not in _decoded(lossless, "1.2.840.10008.1.2.4.91")
    lossy = dcmread(get_testdata_file("JPEG2000.dcm"))
    del lossy.LossyImageCompression  # the 9-7 stream alone must say it
    out = _decoded(lossy, "1.2.840.10008.1.2.4.91")
    assert out.LossyImageCompression == "01"  # type: ignore[attr-defined]


#: Compressed pydicom test files: RLE and JPEG-LS 16-bit, JPEG lossless 16-bit, 8-bit RLE RGB.
COMPRESSED = ["MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "SC_rgb_rle.dcm"]


@pytest.mark.parametrize("name", COMPRESSED)
def test_compressed_to_big_endian_swaps_the_decoded_pixels(name: str) -> None:
    """A peer that takes only Explicit VR Big Endian got the decoded (little endian) pixel
    bytes under a big endian label: every 16-bit pixel byte-swapped (outside probe)."""
    warnings.simplefilter("ignore")
    raw = open(get_testdata_file(name), "rb").read()  # noqa: SIM115
    source = dcmread(io.BytesIO(raw))
    own = str(source.file_meta.TransferSyntaxUID)
    data, syntax, transcoded, error = transcode.prepare_part10(raw, own, {ExplicitVRBigEndian}, "")
    assert data is not None, error
    out = dcmread(io.BytesIO(data))
    assert syntax == ExplicitVRBigEndian == out.file_meta.TransferSyntaxUID and transcoded
    assert np.array_equal(out.pixel_array, source.pixel_array)


def test_decoder_that_fails_in_decompress_falls_back_to_pixel_array() -> None:
    """J2K_pixelrep_mismatch.dcm: pydicom's decompress() fails ("output array is
    read-only") where pixel_array works, so WADO-RS answered 406 and native-only peers got
    nothing (QA probe); the native Pixel Data is now built from pixel_array."""
    warnings.simplefilter("ignore")
    raw = open(get_testdata_file("J2K_pixelrep_mismatch.dcm"), "rb").read()  # noqa: SIM115
    source = dcmread(io.BytesIO(raw))
    with pytest.raises(ValueError, match="read-only"):
        dcmread(io.BytesIO(raw)).decompress(generate_instance_uid=False)
    own = str(source.file_meta.TransferSyntaxUID)
    data, syntax, transcoded, error = transcode.prepare_part10(
        raw, own, {ExplicitVRLittleEndian}, ""
    )
    assert data is not None, error
    out = dcmread(io.BytesIO(data))
    assert syntax == ExplicitVRLittleEndian == out.file_meta.TransferSyntaxUID and transcoded
    assert out.SOPInstanceUID == source.SOPInstanceUID
    assert out["PixelData"].VR == "OW"
    assert np.array_equal(out.pixel_array, source.pixel_array)


#: Colour (YBR_RCT J2K, YBR_FULL_422 JPEG, RGB J2K lossy) and 8-bit multi-frame files.
FALLBACK = [
    "examples_jpeg2k.dcm",
    "SC_rgb_dcmtk_+eb+cy+np.dcm",
    "SC_rgb_gdcm_KY.dcm",
    "examples_ybr_color.dcm",
    "MR_small_jp2klossless.dcm",
]


@pytest.mark.parametrize("name", FALLBACK)
def test_pixel_array_fallback_sets_what_decompress_sets(name: str) -> None:
    """The fallback leaves the data set as pydicom's decompress() would: same Pixel Data,
    transfer syntax, VR, Photometric Interpretation, Planar Configuration, frames."""
    warnings.simplefilter("ignore")
    path = get_testdata_file(name)
    expected, got = dcmread(path), dcmread(path)
    expected.decompress(generate_instance_uid=False)
    transcode.decompress_from_pixel_array(got)
    assert got.PixelData == expected.PixelData
    assert got.file_meta.TransferSyntaxUID == expected.file_meta.TransferSyntaxUID
    assert got["PixelData"].VR == expected["PixelData"].VR
    assert not got["PixelData"].is_undefined_length
    for keyword in ("PhotometricInterpretation", "PlanarConfiguration", "NumberOfFrames"):
        assert got.get(keyword) == expected.get(keyword), keyword


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("CT_small.dcm", ImplicitVRLittleEndian),  # uncompressed ↔ uncompressed
        ("MR_small_bigendian.dcm", ExplicitVRLittleEndian),  # byte order
        ("MR_small_RLE.dcm", ExplicitVRLittleEndian),  # compressed → native
        ("MR_small_jpeg_ls_lossless.dcm", ImplicitVRLittleEndian),
        ("MR_small.dcm", "1.2.840.10008.1.2.5"),  # native → RLE Lossless
    ],
)
def test_transcoding_emits_no_warning(
    name: str, target: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Setting Dataset.is_implicit_VR / is_little_endian is deprecated in pydicom 3 ("will
    be removed in v4.0"): two warnings in the server log per transcoded instance. The file
    meta alone says how to encode."""
    raw = open(get_testdata_file(name), "rb").read()  # noqa: SIM115
    own = str(dcmread(io.BytesIO(raw)).file_meta.TransferSyntaxUID)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data, syntax, transcoded, error = transcode.prepare_part10(raw, own, {target}, "")
        assert data is not None, error
        if not UID(own).is_little_endian:
            ds = dcmread(io.BytesIO(raw))
            assert transcode.to_little_endian(ds)
            ds.save_as(io.BytesIO(), enforce_file_format=True)
    assert syntax == target and transcoded
    assert not [r for r in caplog.records if "will be removed" in r.getMessage()]


JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
DEFLATED = "1.2.840.10008.1.2.1.99"
RLE = "1.2.840.10008.1.2.5"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
JPEG_LOSSLESS_P14 = "1.2.840.10008.1.2.4.57"


@pytest.mark.parametrize("name", ["MR_small.dcm", "MR_small_bigendian.dcm", "MR_small_RLE.dcm"])
@pytest.mark.parametrize(
    "target", [DEFLATED, JPEG_LS_LOSSLESS, J2K_LOSSLESS, JPEG_LOSSLESS_SV1, JPEG_LOSSLESS_P14]
)
def test_peer_without_native_syntaxes_gets_a_lossless_one(name: str, target: str) -> None:
    """Issue 3: "transcode when the peer only accepts another syntax" — to a lossless one
    we can encode, pixel-identical, SOP Instance UID kept."""
    warnings.simplefilter("ignore")
    raw = open(get_testdata_file(name), "rb").read()  # noqa: SIM115
    source = dcmread(io.BytesIO(raw))
    own = str(source.file_meta.TransferSyntaxUID)
    assert transcode.codes_pixels(own, {target}) == (target != DEFLATED or own == RLE)
    data, syntax, transcoded, error = transcode.prepare_part10(raw, own, {target}, "")
    assert data is not None, error
    out = dcmread(io.BytesIO(data))
    assert syntax == target == out.file_meta.TransferSyntaxUID and transcoded
    assert out.SOPInstanceUID == source.SOPInstanceUID
    assert np.array_equal(out.pixel_array, source.pixel_array)
    assert "LossyImageCompression" not in out


def test_a_codec_that_cannot_take_the_image_hands_it_to_the_next_syntax(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    warnings.simplefilter("ignore")
    monkeypatch.setitem(transcode._ENCODER, RLE, "no-such-plugin")  # RLE refuses
    ds = dcmread(get_testdata_file("MR_small.dcm"))
    before = ds.pixel_array.copy()
    done = transcode.prepare(ds, ExplicitVRLittleEndian, {RLE, JPEG_LS_LOSSLESS}, "")
    assert done.dataset is not None and done.syntax == JPEG_LS_LOSSLESS, done.error
    assert np.array_equal(done.dataset.pixel_array, before)
    ds = dcmread(get_testdata_file("rtdose_1frame.dcm"))  # 32-bit: no JPEG-LS / JPEG 2000
    done = transcode.prepare(
        ds, ExplicitVRLittleEndian, {JPEG_LS_LOSSLESS, J2K_LOSSLESS, JPEG_LOSSLESS_SV1}, ""
    )
    assert done.dataset is None and "JPEG-LS" in done.error and "JPEG 2000" in done.error
    assert "2-16 bits" in done.error  # JPEG Lossless: said, not a crash
    done = transcode.prepare(ds, ExplicitVRLittleEndian, {JPEG_LS_LOSSLESS, DEFLATED}, "")
    assert done.syntax == DEFLATED  # no pixel codec needed


def test_odd_sized_rgb_to_rle_does_not_take_the_process_down() -> None:
    """pydicom tries GDCM first for RLE, and GDCM's encoder aborts the process (uncaught
    C++ exception) on this image: the pylibjpeg plugin is named explicitly."""
    warnings.simplefilter("ignore")
    ds = dcmread(get_testdata_file("SC_rgb_small_odd.dcm"))
    before = ds.pixel_array.copy()
    done = transcode.prepare(ds, ExplicitVRLittleEndian, {RLE}, "")
    assert done.dataset is not None and done.syntax == RLE, done.error
    assert np.array_equal(done.dataset.pixel_array, before)


def test_lossless_data_is_never_transcoded_to_a_lossy_syntax() -> None:
    warnings.simplefilter("ignore")
    ds = dcmread(get_testdata_file("MR_small.dcm"))
    lossy = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.91"}
    assert not transcode.codes_pixels(ExplicitVRLittleEndian, lossy)
    done = transcode.prepare(ds, ExplicitVRLittleEndian, lossy, "")
    assert done.dataset is None and "lossy" in done.error


def test_decoded_lossy_data_sent_lossless_stays_marked_lossy() -> None:
    warnings.simplefilter("ignore")
    ds = dcmread(get_testdata_file("JPEGLSNearLossless_16.dcm"))
    done = transcode.prepare(ds, "1.2.840.10008.1.2.4.81", {JPEG_LS_LOSSLESS}, "")
    assert done.dataset is not None and done.syntax == JPEG_LS_LOSSLESS, done.error
    assert done.dataset.LossyImageCompression == "01"


@pytest.mark.parametrize("name", ["CT_small.dcm", "SC_rgb_rle_2frame.dcm", "SC_rgb_rle_16bit.dcm"])
def test_jpeg_lossless_sv1_keeps_every_frame_and_colour(name: str) -> None:
    """GDCM encodes JPEG Lossless SV1 from memory: one fragment per frame, RGB interleaved,
    the very pixels back (probe 38: a peer taking only SV1 got nothing)."""
    warnings.simplefilter("ignore")
    raw = open(get_testdata_file(name), "rb").read()  # noqa: SIM115
    source = dcmread(io.BytesIO(raw))
    own = str(source.file_meta.TransferSyntaxUID)
    data, syntax, transcoded, error = transcode.prepare_part10(raw, own, {JPEG_LOSSLESS_SV1}, "")
    assert data is not None and syntax == JPEG_LOSSLESS_SV1 and transcoded, error
    out = dcmread(io.BytesIO(data))
    frames = int(getattr(source, "NumberOfFrames", 1) or 1)
    assert out.file_meta.TransferSyntaxUID == JPEG_LOSSLESS_SV1
    assert len(list(generate_frames(out.PixelData, number_of_frames=frames))) == frames
    assert np.array_equal(out.pixel_array, source.pixel_array)
    assert "LossyImageCompression" not in out


def test_an_image_gdcm_cannot_encode_gets_a_reason_not_a_crash() -> None:
    warnings.simplefilter("ignore")
    ds = dcmread(get_testdata_file("SC_rgb_small_odd.dcm"))  # 3 x 3 RGB: GDCM refuses it
    done = transcode.prepare(ds, ExplicitVRLittleEndian, {JPEG_LOSSLESS_SV1}, "")
    assert done.dataset is None and "JPEG Lossless" in done.error, done.error
    done = transcode.prepare(ds, ExplicitVRLittleEndian, {JPEG_LOSSLESS_SV1, RLE}, "")
    assert done.syntax == RLE, done.error  # the next accepted syntax takes it
