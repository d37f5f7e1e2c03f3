"""MPR/3D refuse a series whose slices lie in two Frames of Reference (outside probe 24).

Images in different Frames of Reference are not spatially related (PS3.3 C.7.4.1.1.1):
series K of the probe (15 slices in one FoR, 15 in another, otherwise a perfect axial stack)
was fused into one VolumeGrid, and MPR and 3D opened on it without a word.
"""

from __future__ import annotations

import numpy as np

from tests.unit.workstation.test_mpr import _axial
from workstation.model.volume import VolumeGrid, volume_of


def test_slices_in_two_frames_of_reference_are_not_fused_into_one_volume() -> None:
    _, data = _axial((30, 8, 8))
    for k, s in enumerate(data.slices):
        s.attrs = {**s.attrs, "FrameOfReferenceUID": "1.9" if k < 15 else "1.8"}
    result = volume_of(data)
    assert isinstance(result, str), "fused into one volume"
    assert "2 Frames of Reference" in result and "15 in 1.9" in result and "15 in 1.8" in result
    assert "not spatially related" in result


def test_a_slice_in_another_frame_than_the_series_is_refused() -> None:
    """The series' UID (its first instance's, as the index keeps it) counts as well."""
    _, data = _axial((6, 8, 8))
    data.slices[5].attrs = {"FrameOfReferenceUID": "1.7"}  # the series says 1.9
    assert isinstance(volume_of(data), str)


def test_one_frame_of_reference_still_gives_a_volume() -> None:
    vol, data = _axial((6, 8, 8))
    for s in data.slices:
        s.attrs = {**s.attrs, "FrameOfReferenceUID": "1.9"}
    grid = volume_of(data)
    assert isinstance(grid, VolumeGrid)
    assert np.array_equal(grid.array, vol)
    _, unknown = _axial((6, 8, 8))  # not indexed per slice: the series' UID alone
    assert isinstance(volume_of(unknown), VolumeGrid)
