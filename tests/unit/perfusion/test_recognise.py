"""Recognition of perfusion series from index rows (server/perfusion/recognise.py).

examine() with a confidence, as 3D Slicer's DICOMPlugin: repeated slice positions over time
are perfusion; a plain head CT, a Secondary Capture or one image per position are not.
"""

from __future__ import annotations

from server.perfusion.recognise import InstanceInfo, examine

CT = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
SC = "1.2.840.10008.5.1.4.1.1.7"
AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def _rows(n_times: int, n_slices: int, sop: str = CT, timed: bool = True) -> list[InstanceInfo]:
    out = []
    for t in range(n_times):
        for z in range(n_slices):
            attrs: dict[str, object] = {
                "ImageOrientationPatient": AXIAL,
                "ImagePositionPatient": [-120.0, -120.0, 5.0 * z],
            }
            if timed:
                attrs["AcquisitionTime"] = f"1200{t:02d}"
            out.append(InstanceInfo(sop, 64, 64, 1, attrs))
    return out


def test_repeated_positions_are_perfusion_with_full_confidence() -> None:
    e = examine(_rows(40, 8))
    assert e.confidence == 1.0 and e.is_perfusion
    assert (e.modality, e.slice_positions, e.time_points) == ("CT", 8, 40)


def test_confidence_rises_with_time_points() -> None:
    assert 0 < examine(_rows(4, 8)).confidence < examine(_rows(7, 8)).confidence < 1.0


def test_head_ct_once_per_position_is_not_perfusion() -> None:
    e = examine(_rows(1, 30))
    assert e.confidence == 0.0 and "imaged once" in e.reason


def test_secondary_capture_and_missing_geometry_are_not_perfusion() -> None:
    assert examine(_rows(20, 4, sop=SC)).confidence == 0.0
    bare = [InstanceInfo(CT, 64, 64, 1, {}) for _ in range(50)]
    assert examine(bare).confidence == 0.0


def test_missing_timing_is_reported() -> None:
    e = examine(_rows(20, 4, timed=False))
    assert e.is_perfusion and "without Acquisition/Content Time" in e.reason


def test_enhanced_multiframe_gets_medium_confidence() -> None:
    e = examine([InstanceInfo(ENHANCED_MR, 128, 128, 600, {})])
    assert e.confidence == 0.5 and e.modality == "MR"
