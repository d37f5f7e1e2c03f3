"""Series in the input folder that are not part of the perfusion acquisition (a plain head
CT, a scout) were ignored without a word: result.json now lists them under
``input.other_series_not_used`` (UID, description, Image Type, images), and an input of
the acquisition alone lists none."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from lucent.perfusion.model import PerfusionSeries
from lucent.perfusion.series import assemble
from tests.data import phantom, samples

CT = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture(scope="module")
def ctp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ctp")
    phantom.generate(replace(phantom.PhantomSpec(), n_slices=2, n_times=20), folder)
    return folder


def test_other_series_in_the_folder_are_listed(ctp: Path, tmp_path: Path) -> None:
    ref = dcmread(next(ctp.iterdir()), stop_before_pixels=True)
    folder = tmp_path / "mixed"
    folder.mkdir()
    for f in ctp.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    plain = generate_uid()
    for i in range(3):  # a plain head CT of the same study: 3 slices imaged once
        ds = samples.make_instance(CT, rows=32, cols=32, study_uid=str(ref.StudyInstanceUID))
        ds.SeriesInstanceUID, ds.SeriesDescription = plain, "Head plain"
        ds.ImagePositionPatient = [0.0, 0.0, 5.0 * i]
        samples.write(ds, folder / f"plain{i}.dcm")
    scout = samples.make_instance(CT, rows=32, cols=32, study_uid=str(ref.StudyInstanceUID))
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    scout.SeriesDescription = "Scout"
    samples.write(scout, folder / "scout.dcm")
    series = assemble(folder)
    assert isinstance(series, PerfusionSeries), series
    listed = {s["series_instance_uid"]: s for s in series.other_series}
    assert set(listed) == {plain, str(scout.SeriesInstanceUID)}
    assert listed[plain]["images"] == 3 and listed[plain]["description"] == "Head plain"
    assert "LOCALIZER" in listed[str(scout.SeriesInstanceUID)]["image_type"]
    assert str(ref.SeriesInstanceUID) in series.series_uids


def test_the_acquisition_alone_lists_no_other_series(ctp: Path) -> None:
    series = assemble(ctp)
    assert isinstance(series, PerfusionSeries), series
    assert series.other_series == []
