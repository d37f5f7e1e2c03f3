"""/api/v1 series volume, geometry and frame routes against a real server (QA findings).

A series that is not one volume must be refused by ``/geometry`` and ``/volume`` alike, with a
409 whose reason the viewer can show: each case here answered 200 with a wrong volume (4D
stacked as 12 slices, repeated positions stacked, a multi-frame instance left out) or a
``/geometry`` 200 for a series ``/volume`` refused.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pydicom import Dataset, dcmread

from lucent.api.client import ApiError, LucentClient
from tests.data import samples
from tests.data import transfer_syntaxes as ts_samples
from tests.integration.dicom_io import storescu
from tests.support.lucent import LucentServer


def _send_series(
    server: LucentServer, directory: Path, mutate: Callable[[int, Dataset], None], n: int = 6
) -> str:
    """A small CT series (int16, 16×16, 1 mm apart), changed per slice by ``mutate`` and sent
    in shuffled order."""
    name = directory.name
    files = samples.write_ct_series(
        directory, n=n, rows=16, cols=16, patient_id=name, patient_name=f"{name}^Volume"
    )
    for i, f in enumerate(files):
        ds = dcmread(f)
        mutate(i, ds)
        ds.save_as(f)
    random.Random(5).shuffle(files)
    done = storescu("127.0.0.1", server.port, server.ae_title, files)
    assert done.returncode == 0, done.stderr[-2000:]
    return str(dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)


def _z(ds: Dataset, z: float) -> None:
    ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], z]
    ds.SliceLocation = z


def four_d(i: int, ds: Dataset) -> None:
    """12 slices: 3 positions × 4 time points (a perfusion or dynamic series)."""
    _z(ds, -float(i % 3) * 5)
    ds.TemporalPositionIdentifier = i // 3 + 1


def repeated_position(i: int, ds: Dataset) -> None:
    if i == 4:
        _z(ds, -3.0)  # slice 3 is there already


def one_multi_frame(i: int, ds: Dataset) -> None:
    if i == 5:
        ds.NumberOfFrames = 4
        ds.PixelData = np.arange(4 * 16 * 16, dtype="<i2").tobytes()


def one_smaller(i: int, ds: Dataset) -> None:
    if i == 2:
        ds.Rows = ds.Columns = 8
        ds.PixelData = np.zeros((8, 8), "<i2").tobytes()


def one_finer_pixel_spacing(i: int, ds: Dataset) -> None:
    if i == 1:
        ds.PixelSpacing = [0.35, 0.35]  # the others 0.7


def one_unsigned(i: int, ds: Dataset) -> None:
    if i == 3:
        ds.PixelRepresentation = 0


_OTHER_FRAME = "1.2.826.0.1.3680043.8.498.4242"


def two_frames_of_reference(i: int, ds: Dataset) -> None:
    if i >= 3:  # outside probe 24: fused into one volume, answered 200
        ds.FrameOfReferenceUID = _OTHER_FRAME


@pytest.mark.parametrize(
    ("mutate", "n", "reason"),
    [
        (four_d, 12, "4D"),
        (repeated_position, 6, "positions"),
        (one_multi_frame, 6, "multi-frame"),
        (one_smaller, 6, "image sizes"),
        (one_finer_pixel_spacing, 6, "pixel spacings"),
        (one_unsigned, 6, "pixel formats"),
        (two_frames_of_reference, 6, "Frames of Reference"),
    ],
    ids=["4d", "repeated", "multiframe-mixed", "sizes", "pixel-spacing", "pixel-format", "for"],
)
def test_series_that_is_not_one_volume_is_refused_by_geometry_and_volume(
    server: LucentServer,
    api: LucentClient,
    tmp_path: Path,
    mutate: Callable[[int, Dataset], None],
    n: int,
    reason: str,
) -> None:
    series_uid = _send_series(server, tmp_path / f"NOTVOL{n}", mutate, n=n)
    for call in (api.geometry, api.volume):
        with pytest.raises(ApiError) as err:
            call(series_uid)
        assert err.value.status == 409, call
        assert reason in err.value.detail and "fetch frames" in err.value.detail


def test_4d_refusal_says_positions_and_time_points(
    server: LucentServer, api: LucentClient, tmp_path: Path
) -> None:
    series_uid = _send_series(server, tmp_path / "FOURD", four_d, n=12)
    with pytest.raises(ApiError) as err:
        api.geometry(series_uid)
    assert "12 slices at 3 positions, 4 at each" in err.value.detail


def test_non_uniform_gaps_are_flagged_and_give_no_single_spacing(
    server: LucentServer, api: LucentClient, tmp_path: Path
) -> None:
    """A missing slice (gaps 2,2,2,2,4,2,2,2 mm) answered slice_spacing 2.0 with nothing to
    say the gaps differ: a viewer stacking at 2 mm misplaces half the volume."""
    z = [0.0, 2.0, 4.0, 6.0, 8.0, 12.0, 14.0, 16.0, 18.0]
    series_uid = _send_series(server, tmp_path / "GAP", lambda i, ds: _z(ds, -z[i]), n=9)
    volume = api.volume(series_uid)
    g = volume.geometry
    assert volume.array.shape == (9, 16, 16)
    assert g.slice_spacing is None
    assert g.uniform_spacing is False
    assert g.slice_gaps == pytest.approx([2, 2, 2, 4, 2, 2, 2, 2])  # sorted along +z
    assert [s.image_position[2] for s in g.slices if s.image_position] == [-v for v in z[::-1]]


def test_rounded_positions_are_still_uniform(
    server: LucentServer, api: LucentClient, tmp_path: Path
) -> None:
    """0.625 mm slices whose IPP the scanner wrote to 0.01 mm (gaps 0.62/0.63): uniform."""
    series_uid = _send_series(
        server, tmp_path / "ROUNDED", lambda i, ds: _z(ds, round(-0.625 * i, 2)), n=8
    )
    g = api.geometry(series_uid)
    assert g.uniform_spacing is True
    assert g.slice_spacing == pytest.approx(0.625, abs=0.002)
    assert len(g.slice_gaps) == 7


def test_signed_8_bit_series_geometry_dtype_is_that_of_the_volume(
    server: LucentServer, api: LucentClient, tmp_path: Path
) -> None:
    """Geometry said uint8 for Pixel Representation 1 while the volume came back int8."""

    def signed_8_bit(i: int, ds: Dataset) -> None:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 1
        ds.RescaleIntercept = 0
        ds.PixelData = np.arange(-128, 128, dtype="i1").tobytes()
        ds["PixelData"].VR = "OB"

    series_uid = _send_series(server, tmp_path / "INT8", signed_8_bit, n=3)
    volume = api.volume(series_uid)
    assert volume.geometry.dtype == "int8"
    assert volume.array.dtype == np.dtype(volume.geometry.dtype)
    np.testing.assert_array_equal(volume.array[0], np.arange(-128, 128).reshape(16, 16))


def test_float_pixel_data_frames(server: LucentServer, api: LucentClient, tmp_path: Path) -> None:
    """A Parametric Map (Float Pixel Data, our perfusion maps) answered 404 "instance has no
    pixel data" on /frames/{n}, while WADO-RS frames served it."""
    pm = samples.parametric_map(tmp_path / "ct", frames=2, size=16)
    assert "FloatPixelData" in pm and "PixelData" not in pm
    path = tmp_path / "pm.dcm"
    pm.save_as(path, enforce_file_format=True)
    pairs = [(str(pm.SOPClassUID), str(pm.file_meta.TransferSyntaxUID))]
    profile = ts_samples.write_storescu_config(tmp_path / "profile.cfg", pairs)
    done = storescu("127.0.0.1", server.port, server.ae_title, [path], *profile)
    assert done.returncode == 0, done.stderr[-2000:]
    frame = api.frame(str(pm.SOPInstanceUID), 2)
    assert frame.dtype == np.float32
    np.testing.assert_array_equal(frame, pm.pixel_array[1])
