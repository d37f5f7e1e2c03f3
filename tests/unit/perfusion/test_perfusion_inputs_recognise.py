"""Which archived series continue one perfusion acquisition (server/perfusion/recognise.py,
``extent`` and ``continuing``), outside probe 30: the whole slice geometry must match, the
timing attribute used must resolve the time points, and dates are calendar dates."""

from __future__ import annotations

import datetime as _dt
import logging

import pytest

from server.perfusion.recognise import InstanceInfo, _seconds, continuing, extent

CT = "1.2.840.10008.5.1.4.1.1.2"
AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
START = _dt.datetime(2024, 3, 5, 10, 15, 0)


def _tm(t: _dt.datetime, whole: bool = False) -> tuple[str, str]:
    return t.strftime("%Y%m%d"), t.strftime("%H%M%S" if whole else "%H%M%S.%f")


def _part(
    first_tp: int,
    n_tp: int,
    *,
    start: _dt.datetime = START,
    dt: float = 1.5,
    n_z: int = 4,
    spacing: list[float] | None = None,
    rows: int = 64,
    origin: tuple[float, float] = (-120.0, -120.0),
    iop: list[float] | None = None,
    thickness: float = 5.0,
    for_uid: str = "1.2.3.4",
    series_acquisition_time: bool = False,
) -> list[InstanceInfo]:
    """Index rows of ``n_tp`` time points from ``first_tp`` of a split acquisition."""
    out = []
    for t in range(first_tp, first_tp + n_tp):
        for z in range(n_z):
            when = start + _dt.timedelta(seconds=t * dt)
            attrs: dict[str, object] = {
                "ImageOrientationPatient": iop or AXIAL,
                "ImagePositionPatient": [origin[0], origin[1], 5.0 * z],
                "PixelSpacing": spacing or [3.6, 3.6],
                "SliceThickness": [thickness],
                "FrameOfReferenceUID": for_uid,
            }
            attrs["AcquisitionDate"], attrs["AcquisitionTime"] = _tm(when)
            attrs["ContentDate"], attrs["ContentTime"] = _tm(when)
            if series_acquisition_time:  # one value per series: the series' start
                series_start = start + _dt.timedelta(seconds=first_tp * dt)
                attrs["AcquisitionDate"], attrs["AcquisitionTime"] = _tm(series_start, True)
            out.append(InstanceInfo(CT, rows, rows, 1, attrs))
    return out


def _runs(first: list[InstanceInfo], second: list[InstanceInfo]) -> list[str]:
    extents = {"a": extent(first), "b": extent(second)}
    assert extents["a"] is not None and extents["b"] is not None
    return continuing("a", extents)


def test_two_parts_of_one_grid_that_follow_in_time_are_one_run() -> None:
    assert _runs(_part(0, 20), _part(20, 20)) == ["a", "b"]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"spacing": [3.5, 3.5]}, "pixel spacing"),
        ({"origin": (-100.0, -120.0)}, "in-plane image position"),
        ({"thickness": 2.5}, "slice thickness"),
        ({"rows": 128, "spacing": [1.8, 1.8]}, "matrix"),
        ({"iop": [1.0, 0.0, 0.0, 0.0, 0.9962, -0.0872]}, "image orientation"),
        ({"for_uid": "1.2.3.5"}, "Frame of Reference"),
    ],
)
def test_a_following_series_of_other_geometry_stays_a_run_of_its_own(
    change: dict[str, object], words: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Outside probe 30: the second half of a split acquisition with Pixel Spacing 3.5 mm
    instead of 3.6 mm was merged; the engine then analysed the larger part and ignored the
    other without a word."""
    with caplog.at_level(logging.WARNING, logger="lucent.perfusion"):
        assert _runs(_part(0, 20), _part(20, 20, **change)) == ["a"]  # type: ignore[arg-type]
    assert words in caplog.text and "not merged" in caplog.text


def test_a_run_crossing_a_month_boundary_is_one_run() -> None:
    """The date was read as the integer YYYYMMDD: 20261201 - 20261130 = 71 "days"."""
    start = _dt.datetime(2026, 11, 30, 23, 59, 40)
    assert _runs(_part(0, 10, start=start, dt=2.0), _part(10, 10, start=start, dt=2.0)) == [
        "a",
        "b",
    ]
    assert _seconds("20261201", "000010") - _seconds("20261130", "235950") == pytest.approx(20.0)  # type: ignore[operator]


def test_a_series_level_acquisition_time_gives_way_to_content_time() -> None:
    """Acquisition Time was one value per series (its start) while Content Time resolved
    every time point: the parts' spans were single instants 30 s apart, never merged."""
    first = _part(0, 20, series_acquisition_time=True)
    second = _part(20, 20, series_acquisition_time=True)
    assert _runs(first, second) == ["a", "b"]
    e = extent(first)
    assert e is not None and e.source == "content_time"


def test_whole_second_acquisition_time_gives_way_to_finer_content_time() -> None:
    """Sampling every 0.6 s with Acquisition Time in whole seconds: the last image of one
    part and the first of the next shared a second, so they looked overlapping."""
    start = START + _dt.timedelta(seconds=0.7)  # images 19 and 20 at 12.1 and 12.7 s
    first, second = _part(0, 20, start=start, dt=0.6), _part(20, 20, start=start, dt=0.6)
    for rows in (first, second):
        for i in rows:
            i.attrs["AcquisitionTime"] = str(i.attrs["AcquisitionTime"])[:6]  # type: ignore[index]
    assert _runs(first, second) == ["a", "b"]
    e = extent(first)
    assert e is not None and e.source == "content_time"
