"""An inconsistent-geometry refusal names the time points it found (outside probe 44).

A whole slice position imaged with another pixel spacing was reported "at time points 1, 3,
5, 7, 9 ..., 0.0 s after the first image": each odd image was ranked among the images of
both neighbouring slices. One odd image keeps its own time point and time.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from lucent.perfusion import Refusal, RefusalCode, analyse
from tests.data import phantom as P


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Path, list[tuple[float, float, Path]]]:
    """The phantom, and (slice z, acquisition time, path) of every image."""
    P.generate(P.PhantomSpec(), tmp_path)
    images = []
    for path in sorted(tmp_path.glob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        images.append((float(ds.ImagePositionPatient[2]), _seconds(ds.AcquisitionTime), path))
    return tmp_path, images


def _seconds(tm: str) -> float:
    """DICOM TM (HHMMSS.FFFFFF) as seconds since midnight."""
    text = str(tm).replace(":", "")
    return int(text[:2]) * 3600 + int(text[2:4]) * 60 + float(text[4:] or 0)


def _respace(path: Path) -> None:
    ds = pydicom.dcmread(path)
    ds.PixelSpacing = [float(v) * 1.1 for v in ds.PixelSpacing]
    ds.save_as(path)


def test_a_whole_slice_position_is_every_time_point(folder) -> None:  # type: ignore[no-untyped-def]
    tmp, images = folder
    middle = sorted({z for z, _, _ in images})[3]
    odd = [p for z, _, p in images if z == middle]
    for path in odd:
        _respace(path)
    r = analyse(tmp)
    assert isinstance(r, Refusal) and r.code == RefusalCode.INCONSISTENT_GEOMETRY, r
    assert f"at every time point (1-{len(odd)}" in r.reason, r.reason
    assert "1, 3, 5" not in r.reason


def test_one_image_names_its_own_time_point(folder) -> None:  # type: ignore[no-untyped-def]
    tmp, images = folder
    middle = sorted({z for z, _, _ in images})[3]
    at_middle = sorted((t, p) for z, t, p in images if z == middle)
    t, path = at_middle[17]  # the 18th time point
    _respace(path)
    r = analyse(tmp)
    assert isinstance(r, Refusal) and r.code == RefusalCode.INCONSISTENT_GEOMETRY, r
    first = min(t for _, t, _ in images)
    assert f"at time point 18, {t - first:.1f} s after the first image" in r.reason, r.reason
