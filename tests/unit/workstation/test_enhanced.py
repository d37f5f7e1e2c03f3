"""Enhanced CT per-frame geometry from the functional groups (PS3.3 C.7.6.16), as used by
reference lines, the slice position overlay, measurements and MPR."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest
from pydicom.dataset import Dataset

from lucent.api import schemas
from workstation.model import loader
from workstation.model.geometry import ImagePlane, reference_line, slice_position
from workstation.model.series import (
    apply_frame_attributes,
    frame_attributes,
    slices_from_instances,
    sort_slices,
)

ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
Z = [12.0, 8.0, 10.0, 14.0]  # frames out of order on purpose


def _item(**kw: object) -> Dataset:
    ds = Dataset()
    for k, v in kw.items():
        setattr(ds, k, v)
    return ds


def enhanced_ct() -> Dataset:
    """4 axial frames of 32×40, 0.6 × 0.8 mm, per-frame position and rescale."""
    ds = Dataset()
    ds.SOPClassUID = ENHANCED_CT
    ds.NumberOfFrames = len(Z)
    ds.Rows, ds.Columns = 32, 40
    ds.SharedFunctionalGroupsSequence = [_item(
        PixelMeasuresSequence=[_item(PixelSpacing=[0.6, 0.8], SliceThickness=2.0)],
        PlaneOrientationSequence=[_item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])],
        PixelValueTransformationSequence=[_item(RescaleSlope=1, RescaleIntercept=-1024,
                                                RescaleType="HU")],
        FrameVOILUTSequence=[_item(WindowCenter=40, WindowWidth=400)],
    )]  # fmt: skip
    ds.PerFrameFunctionalGroupsSequence = [
        _item(PlanePositionSequence=[_item(ImagePositionPatient=[-16.0, -10.0, z])]) for z in Z
    ]
    # The last frame overrides the shared window (per-frame values win).
    ds.PerFrameFunctionalGroupsSequence[3].FrameVOILUTSequence = [
        _item(WindowCenter=300, WindowWidth=1500)
    ]
    return ds


def _instance() -> schemas.InstanceOut:
    return schemas.InstanceOut(sop_instance_uid="1.2.3.4", sop_class_uid=ENHANCED_CT,
                               transfer_syntax_uid="1.2.840.10008.1.2.1", instance_number=1,
                               rows=32, columns=40, frames=len(Z), lossy=False, size=0,
                               sha256="", received_at=datetime(2024, 1, 1), attrs={})  # fmt: skip


def test_functional_groups_give_every_frame_its_plane_and_spacing() -> None:
    per = frame_attributes(enhanced_ct())
    assert [a["ImagePositionPatient"][2] for a in per] == Z
    assert all(a["PixelSpacing"] == [0.6, 0.8] and a["SliceThickness"] == [2.0] for a in per)
    assert per[0]["WindowCenter"] == [40.0] and per[3]["WindowCenter"] == [300.0]
    assert per[0]["RescaleIntercept"] == [-1024.0] and per[0]["RescaleType"] == "HU"


def test_frames_sorted_by_position_with_overlay_position_and_mm() -> None:
    slices = slices_from_instances([_instance()])
    assert all(s.plane is None for s in slices)  # the index alone knows no per-frame geometry
    apply_frame_attributes(slices, "1.2.3.4", frame_attributes(enhanced_ct()))
    slices = sort_slices(slices)
    assert [s.frame for s in slices] == [1, 2, 0, 3]  # z 8, 10, 12, 14
    assert [slice_position(s.plane) for s in slices] == pytest.approx([8, 10, 12, 14])
    s = slices[0]
    assert (s.spacing.row, s.spacing.col, s.spacing.source) == (0.6, 0.8, "pixel")
    assert s.spacing.warning == ""
    # Distance of 10 columns × 0.8 mm and 10 rows × 0.6 mm.
    from workstation.model.annotations import Annotation

    result = Annotation("distance", [(0.0, 0.0), (10.0, 10.0)]).measure(s.spacing)
    assert result is not None and result.unit == "mm"
    assert result.value == pytest.approx(np.hypot(8.0, 6.0))


def test_reference_line_of_an_enhanced_frame_on_a_coronal_image() -> None:
    slices = slices_from_instances([_instance()])
    apply_frame_attributes(slices, "1.2.3.4", frame_attributes(enhanced_ct()))
    frame_z10 = sort_slices(slices)[1].plane
    assert frame_z10 is not None
    coronal = ImagePlane.from_attrs([-16.0, 0.0, 30.0], [1, 0, 0, 0, 0, -1], [0.5, 0.5], 80, 64)
    assert coronal is not None
    (a, b) = reference_line(coronal, frame_z10)  # type: ignore[misc]
    assert a[1] == pytest.approx((30.0 - 10.0) / 0.5) and b[1] == pytest.approx(40.0)


class _Archive:
    """instances() and instance_file() of one stored enhanced CT (for describe/load)."""

    def __init__(self) -> None:
        from pydicom.uid import ExplicitVRLittleEndian

        ds = enhanced_ct()
        ds.SOPInstanceUID = "1.2.3.4"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        pixels = np.stack([np.full((32, 40), 1024 + 10 * z, np.uint16) for z in Z])
        ds.PixelData = pixels.tobytes()
        ds.file_meta = Dataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ENHANCED_CT
        ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
        import io

        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        self.blob = buf.getvalue()
        self.file_requests = 0

    def instances(self, series_uid: str) -> list[schemas.InstanceOut]:
        return [_instance()]

    def instance_file(self, sop_uid: str) -> bytes:
        self.file_requests += 1
        return self.blob


def test_loader_reads_the_file_once_and_applies_per_frame_rescale_and_window() -> None:
    archive = _Archive()
    se = schemas.SeriesOut(series_uid="1.2.3", study_uid="1.2", modality="CT", series_number=1,
                           description="enh", body_part="", frame_of_reference_uid="1.9",
                           instance_count=1)  # fmt: skip
    data = loader.describe(archive, se)  # type: ignore[arg-type]
    assert [slice_position(s.plane) for s in data.slices] == pytest.approx([8, 10, 12, 14])
    loader.load(archive, data)  # type: ignore[arg-type]
    assert archive.file_requests == 1 and data.complete
    for k, z in enumerate([8, 10, 12, 14]):
        f = data.frame(k)
        assert f is not None
        assert float(f.modality_values()[0, 0]) == pytest.approx(10 * z)  # HU = stored - 1024
    assert data.frame(0).windows == [(40.0, 400.0)] and data.frame(3).windows == [(300.0, 1500.0)]
