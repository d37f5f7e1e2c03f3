"""/series/{uid}/geometry and /volume against a real server: outside probe 47.

A. A gantry-tilted CT (IOP 1\\0\\0\\0\\cos20°\\-sin20°, IPP (0,0,5k)) answered 200 with
   ``uniform_spacing`` true, ``slice_spacing`` 4.698 (along the normal) and nothing about the
   tilt: a viewer placing slice k at IPP0 + k × spacing × normal was 8.55 mm off at slice 5.
B. A CR whose Modality LUT Sequence maps x -> 4095 - x came back as stored values with slope
   1, intercept 0 and nothing to say a LUT exists: the client's modality values were wrong.
C. Enhanced CT (one multi-frame instance, positions in its functional groups) was refused
   with 409 "multi-frame instances only".

Instances are built here with pydicom and sent with DCMTK storescu; the expectations are
computed here from what was sent.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from lucent.api.client import ApiError, LucentClient
from tests.data import samples
from tests.integration.dicom_io import storescu, storescu_as_stored
from tests.support.lucent import LucentServer

CR = "1.2.840.10008.5.1.4.1.1.1"
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
TILT = math.radians(20.0)


def _ct_series(
    server: LucentServer, directory: Path, mutate: Callable[[int, Dataset], None], n: int = 6
) -> tuple[str, dict[str, np.ndarray]]:
    """A small CT series (int16 16×16, different pixels per slice), changed per slice by
    ``mutate``, sent in shuffled order. Returns the series UID and each SOP's stored pixels."""
    files = samples.write_ct_series(
        directory, n=n, rows=16, cols=16, patient_id=directory.name, patient_name="Probe^47"
    )
    sent: dict[str, np.ndarray] = {}
    for i, f in enumerate(files):
        ds = dcmread(f)
        ds.PixelData = (np.arange(256, dtype="<i2").reshape(16, 16) + 100 * i).tobytes()
        mutate(i, ds)
        ds.save_as(f)
        sent[str(ds.SOPInstanceUID)] = ds.pixel_array.copy()
    random.Random(47).shuffle(files)
    done = storescu("127.0.0.1", server.port, server.ae_title, files)
    assert done.returncode == 0, done.stderr[-2000:]
    return str(dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID), sent


# --------------------------------------------------------------------------- A: gantry tilt


def _tilted(i: int, ds: Dataset) -> None:
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, math.cos(TILT), -math.sin(TILT)]
    ds.ImagePositionPatient = [0.0, 0.0, 5.0 * i]
    ds.SliceLocation = 5.0 * i


def test_gantry_tilt_is_flagged_with_stack_direction_and_spacing_along_it(
    server: LucentServer, api: LucentClient, tmp_path: Path
) -> None:
    series_uid, sent = _ct_series(server, tmp_path / "TILT47", _tilted)
    volume = api.volume(series_uid)
    g = volume.geometry
    assert g.tilted is True
    assert g.uniform_spacing is False  # not a regular grid along the normal
    assert g.gantry_tilt_deg == pytest.approx(20.0, abs=0.01)
    assert g.stack_direction == pytest.approx([0.0, 0.0, 1.0], abs=1e-6)
    assert g.slice_spacing == pytest.approx(5.0, abs=1e-4)  # along the stacking direction
    assert g.slice_gaps == pytest.approx([5.0] * 5, abs=1e-4)
    assert g.image_orientation == pytest.approx([1, 0, 0, 0, math.cos(TILT), -math.sin(TILT)])
    # per-slice IPPs stay, in stacking order: a viewer places each slice at its own
    assert [s.image_position for s in g.slices] == [[0.0, 0.0, 5.0 * k] for k in range(6)]
    # where a regular grid along the normal would put slice 5: 8.55 mm off its IPP
    normal = np.cross(g.image_orientation[:3], g.image_orientation[3:])
    grid = 5 * float(np.dot(normal, [0, 0, 5.0])) * normal
    assert float(np.linalg.norm(grid - [0, 0, 25.0])) == pytest.approx(8.55, abs=0.01)
    # the client says so
    assert volume.tilted is True and volume.regular_grid is False
    # and the volume is the slices in that order
    assert volume.array.shape == (6, 16, 16)
    for k, s in enumerate(g.slices):
        np.testing.assert_array_equal(volume.array[k], sent[s.sop_instance_uid])


def test_a_straight_stack_is_not_tilted_even_oblique_with_rounded_positions(
    server: LucentServer, api: LucentClient, tmp_path: Path
) -> None:
    """An oblique (not tilted) stack whose IPPs are rounded to 0.01 mm: the slices step along
    the normal, so it stays a regular grid; the stack direction is the normal."""
    row = np.array([1.0, 0.0, 0.0])
    col = np.array([0.0, math.cos(TILT), -math.sin(TILT)])
    normal = np.cross(row, col)

    def oblique(i: int, ds: Dataset) -> None:
        ds.ImageOrientationPatient = [*row, *col]
        ds.ImagePositionPatient = [round(float(v), 2) for v in (10.0 + 2.5 * i) * normal]

    series_uid, _ = _ct_series(server, tmp_path / "OBLIQUE47", oblique)
    volume = api.volume(series_uid)
    g = volume.geometry
    assert g.tilted is False and g.gantry_tilt_deg == 0.0
    assert g.uniform_spacing is True
    assert g.slice_spacing == pytest.approx(2.5, abs=0.01)
    assert g.stack_direction == pytest.approx(list(normal), abs=1e-6)
    assert volume.regular_grid is True and volume.tilted is False


# --------------------------------------------------------------------------- B: Modality LUT


def _cr(series_uid: str, study_uid: str, number: int, stored: np.ndarray) -> Dataset:
    ds = samples.make_instance(
        CR,
        study_uid=study_uid,
        series_uid=series_uid,
        instance_number=number,
        patient_id="LUT47",
        patient_name="Probe^LUT",
        rows=16,
        cols=16,
    )
    for keyword in ("RescaleSlope", "RescaleIntercept", "RescaleType"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = stored.astype("<u2").tobytes()
    ds["PixelData"].VR = "OW"
    return ds


def _lut(ds: Dataset, first: int, table: np.ndarray, vr: str) -> None:
    item = Dataset()
    item.add_new(0x00283002, "US", [len(table) % 65536, first, 16])  # LUT Descriptor
    item.ModalityLUTType = "US"
    if vr == "OW":
        item.add_new(0x00283006, "OW", table.astype("<u2").tobytes())
    else:
        item.add_new(0x00283006, "US", [int(v) for v in table])
    ds.ModalityLUTSequence = Sequence([item])


def _through(stored: np.ndarray, first: int, table: np.ndarray) -> np.ndarray:
    """PS3.3 C.11.1.1.1: below the first mapped value the first entry, above the last."""
    return table[np.clip(stored.astype(np.int64) - first, 0, len(table) - 1)]


def test_modality_lut_sequence_is_applied_and_said(
    server: LucentServer, api: LucentClient, tmp_path: Path
) -> None:
    """Three CR images: x -> 4095 - x (LUT Data OW), a LUT starting at 1024 (US), none."""
    study_uid, series_uid = generate_uid(), generate_uid()
    stored = [np.arange(256, dtype=np.uint16).reshape(16, 16) * 16 + k for k in range(3)]
    inverse = 4095 - np.arange(4096)
    shifted = np.arange(2048) * 2 + 7
    expected = [
        _through(stored[0], 0, inverse),
        _through(stored[1], 1024, shifted),
        stored[2],
    ]
    files = []
    for k in range(3):
        ds = _cr(series_uid, study_uid, k + 1, stored[k])
        if k == 0:
            _lut(ds, 0, inverse, "OW")
        elif k == 1:
            _lut(ds, 1024, shifted, "US")
        files.append(samples.write(ds, tmp_path / f"cr{k}.dcm"))
    storescu_as_stored("127.0.0.1", server.port, server.ae_title, files, tmp_path)

    g = api.geometry(series_uid)
    assert g.modality_lut_applied is True
    assert g.dtype == "uint16"
    assert [s.modality_lut_applied for s in g.slices] == [True, True, False]
    assert all((s.rescale_slope, s.rescale_intercept) == (1.0, 0.0) for s in g.slices)
    volume = api.volume(series_uid)
    assert volume.array.dtype == np.dtype(g.dtype)
    for k in range(3):
        np.testing.assert_array_equal(volume.array[k], expected[k])
        np.testing.assert_array_equal(volume.modality_values()[k], expected[k])
    assert int(volume.array[0][0, 0]) == 4095  # x -> 4095 - x: stored 0 reads 4095


def test_modality_lut_of_signed_pixels_with_its_first_value_written_as_us(
    server: LucentServer, api: LucentClient, tmp_path: Path
) -> None:
    """Pixel Representation 1, LUT Descriptor 4096\\63488\\16 (first mapped -2048 written
    as US): stored -2048 takes the first entry, not the last."""
    study_uid, series_uid = generate_uid(), generate_uid()
    files = []
    expected = []
    for k in range(2):
        stored = (np.arange(256).reshape(16, 16) * 16 - 2048 + k).astype(np.int16)
        ds = _cr(series_uid, study_uid, k + 1, stored)
        ds.PixelRepresentation = 1
        ds.PixelData = stored.astype("<i2").tobytes()
        entries = np.arange(4096) * 16  # -2048 -> 0 ... 2047 -> 65520
        _lut(ds, 63488, entries, "OW")
        expected.append(_through(stored, -2048, entries))
        files.append(samples.write(ds, tmp_path / f"signed{k}.dcm"))
    storescu_as_stored("127.0.0.1", server.port, server.ae_title, files, tmp_path)
    volume = api.volume(series_uid)
    assert volume.geometry.modality_lut_applied is True
    assert volume.geometry.dtype == "uint16" == str(volume.array.dtype)
    for k in range(2):
        np.testing.assert_array_equal(volume.array[k], expected[k])
    assert int(volume.array[0][0, 0]) == 0


# --------------------------------------------------------------------------- C: Enhanced CT


def _enhanced_ct(
    positions: list[list[float]],
    *,
    series_uid: str | None = None,
    study_uid: str | None = None,
    orientations: list[list[float]] | None = None,
    intercepts: list[float] | None = None,
    position_per_frame: bool = True,
) -> tuple[Dataset, np.ndarray]:
    """An Enhanced CT with one frame per position: per-frame Plane Position (Patient), Pixel
    Value Transformation and Frame VOI LUT; shared Plane Orientation and Pixel Measures (an
    orientation per frame where ``orientations`` is given)."""
    n = len(positions)
    ds = samples.make_instance(
        ENHANCED_CT,
        study_uid=study_uid,
        series_uid=series_uid,
        patient_id="ENH47",
        patient_name="Probe^Enhanced",
        rows=16,
        cols=16,
    )
    frames = np.stack([np.arange(256, dtype="<i2").reshape(16, 16) * (k + 1) for k in range(n)])
    ds.NumberOfFrames = n
    ds.PixelData = frames.tobytes()
    ds["PixelData"].VR = "OW"
    intercepts = intercepts or [-1024.0] * n
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([Dataset()])
    shared.PixelMeasuresSequence[0].PixelSpacing = [0.5, 0.5]
    shared.PixelMeasuresSequence[0].SliceThickness = 2.0
    if orientations is None:
        shared.PlaneOrientationSequence = Sequence([Dataset()])
        shared.PlaneOrientationSequence[0].ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    if not position_per_frame:
        shared.PlanePositionSequence = Sequence([Dataset()])
        shared.PlanePositionSequence[0].ImagePositionPatient = positions[0]
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for k in range(n):
        item = Dataset()
        content = Dataset()
        content.DimensionIndexValues = [k + 1]
        item.FrameContentSequence = Sequence([content])
        if position_per_frame:
            plane = Dataset()
            plane.ImagePositionPatient = positions[k]
            item.PlanePositionSequence = Sequence([plane])
        if orientations is not None:
            oriented = Dataset()
            oriented.ImageOrientationPatient = orientations[k]
            item.PlaneOrientationSequence = Sequence([oriented])
        rescale = Dataset()
        rescale.RescaleIntercept, rescale.RescaleSlope, rescale.RescaleType = (
            intercepts[k],
            1.0,
            "HU",
        )
        item.PixelValueTransformationSequence = Sequence([rescale])
        voi = Dataset()
        voi.WindowCenter, voi.WindowWidth = 40.0 + k, 400.0
        item.FrameVOILUTSequence = Sequence([voi])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    return ds, frames


def _send(server: LucentServer, tmp_path: Path, datasets: list[Dataset]) -> str:
    files = [samples.write(ds, tmp_path / f"mf{k}.dcm") for k, ds in enumerate(datasets)]
    storescu_as_stored("127.0.0.1", server.port, server.ae_title, files, tmp_path)
    return str(datasets[0].SeriesInstanceUID)


def test_enhanced_ct_is_one_volume_ordered_by_position_with_per_frame_rescale(
    server: LucentServer, api: LucentClient, tmp_path: Path
) -> None:
    """Frames stored out of order (z 6, 0, 8, 2, 4): served in position order, each slice
    naming its frame, its IPP and its own rescale from the functional groups."""
    z = [6.0, 0.0, 8.0, 2.0, 4.0]
    intercepts = [-1024.0, -1000.0, -1010.0, -990.0, -980.0]
    ds, frames = _enhanced_ct([[-4.0, -4.0, v] for v in z], intercepts=intercepts)
    series_uid = _send(server, tmp_path, [ds])
    volume = api.volume(series_uid)
    g = volume.geometry
    order = sorted(range(5), key=lambda k: z[k])  # frames 2, 4, 5, 1, 3
    assert [s.frame_number for s in g.slices] == [k + 1 for k in order]
    assert {s.sop_instance_uid for s in g.slices} == {str(ds.SOPInstanceUID)}
    assert [s.image_position for s in g.slices] == [[-4.0, -4.0, z[k]] for k in order]
    assert [s.rescale_intercept for s in g.slices] == [intercepts[k] for k in order]
    assert g.uniform_rescale is False
    assert g.image_orientation == [1, 0, 0, 0, 1, 0]
    assert g.pixel_spacing == [0.5, 0.5]
    assert g.slice_spacing == pytest.approx(2.0) and g.uniform_spacing is True
    assert g.tilted is False
    assert g.dtype == "int16"
    assert g.window_center == 40.0 + order[0]  # the first slice's Frame VOI LUT
    assert volume.array.shape == (5, 16, 16) and volume.array.dtype == np.int16
    for j, k in enumerate(order):
        np.testing.assert_array_equal(volume.array[j], frames[k])
        np.testing.assert_array_equal(volume.modality_values()[j], frames[k] + intercepts[k])


def test_enhanced_ct_with_a_gap_and_tilt_is_reported(
    server: LucentServer, api: LucentClient, tmp_path: Path
) -> None:
    """The single-frame checks apply to frames: a gap is reported, a tilt flagged."""
    iop = [1.0, 0.0, 0.0, 0.0, math.cos(TILT), -math.sin(TILT)]
    z = [0.0, 5.0, 10.0, 20.0]
    ds, _ = _enhanced_ct([[0.0, 0.0, v] for v in z], orientations=[iop] * 4)
    g = api.geometry(_send(server, tmp_path, [ds]))
    assert g.tilted is True and g.gantry_tilt_deg == pytest.approx(20.0, abs=0.01)
    assert g.uniform_spacing is False and g.slice_spacing is None
    assert g.slice_gaps == pytest.approx([5.0, 5.0, 10.0], abs=1e-4)
    assert [s.frame_number for s in g.slices] == [1, 2, 3, 4]


def _repeated(tmp: Path) -> list[Dataset]:
    return [_enhanced_ct([[0.0, 0.0, v] for v in (0.0, 2.0, 2.0, 4.0)])[0]]


def _orientations(tmp: Path) -> list[Dataset]:
    axial, coronal = [1.0, 0, 0, 0, 1.0, 0], [1.0, 0, 0, 0, 0, -1.0]
    positions = [[0.0, 0.0, v] for v in (0.0, 2.0, 4.0)]
    return [_enhanced_ct(positions, orientations=[axial, coronal, axial])[0]]


def _no_position(tmp: Path) -> list[Dataset]:
    return [_enhanced_ct([[0.0, 0.0, 0.0]] * 3, position_per_frame=False)[0]]


def _two_instances(tmp: Path) -> list[Dataset]:
    first, _ = _enhanced_ct([[0.0, 0.0, v] for v in (0.0, 2.0)])
    second, _ = _enhanced_ct(
        [[0.0, 0.0, v] for v in (4.0, 6.0)],
        series_uid=str(first.SeriesInstanceUID),
        study_uid=str(first.StudyInstanceUID),
    )
    return [first, second]


def _frames_without_groups(tmp: Path) -> list[Dataset]:
    ds, _ = _enhanced_ct([[0.0, 0.0, v] for v in (0.0, 2.0, 4.0)])
    for frame in ds.PerFrameFunctionalGroupsSequence:
        del frame.PlanePositionSequence
    ds.ImagePositionPatient = [0.0, 0.0, 0.0]  # a top-level IPP is no frame's position
    return [ds]


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (_repeated, "4 slices at 3 positions"),
        (_orientations, "image orientations"),
        (_no_position, "3 slices at 1 positions"),
        (_two_instances, "2 multi-frame instances"),
        (_frames_without_groups, "no position for frame 1 of 3"),
    ],
    ids=["repeated", "orientations", "shared-position", "two-instances", "no-position"],
)
def test_multi_frame_that_is_not_one_volume_is_refused(
    server: LucentServer,
    api: LucentClient,
    tmp_path: Path,
    build: Callable[[Path], list[Dataset]],
    reason: str,
) -> None:
    series_uid = _send(server, tmp_path, build(tmp_path))
    for call in (api.geometry, api.volume):
        with pytest.raises(ApiError) as err:
            call(series_uid)
        assert err.value.status == 409, call
        assert reason in err.value.detail and "fetch frames" in err.value.detail, err.value.detail


def test_float_parametric_map_is_a_float_volume(
    server: LucentServer, api: LucentClient, tmp_path: Path
) -> None:
    """A Parametric Map (Float Pixel Data, Bits Allocated 32: what our perfusion engine
    writes) with a frame per position is a volume of float32 values, never its float bytes
    read as uint32."""
    pm = samples.parametric_map(tmp_path / "ct", frames=3, size=16)
    series_uid = _send(server, tmp_path, [pm])
    volume = api.volume(series_uid)
    g = volume.geometry
    assert g.dtype == "float32" and volume.array.dtype == np.float32
    z = [
        float(f.PlanePositionSequence[0].ImagePositionPatient[2])
        for f in pm.PerFrameFunctionalGroupsSequence
    ]
    order = sorted(range(3), key=lambda k: z[k])
    assert [s.frame_number for s in g.slices] == [k + 1 for k in order]
    np.testing.assert_array_equal(volume.array, pm.pixel_array[order])
