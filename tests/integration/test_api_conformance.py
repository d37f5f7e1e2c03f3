"""Black-box conformance of /api/v1 (archive lists, filters, volumes) against a real server.

Each test here failed before the fix it names: the API must answer a clear 4xx, never an
empty 200 or a silently wrong volume.
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
from tests.integration.dicom_io import storescu
from tests.support.lucent import LucentServer


def _send_series(
    server: LucentServer, directory: Path, mutate: Callable[[int, Dataset], None], n: int = 6
) -> str:
    """A small CT series, changed per slice by ``mutate`` and sent in shuffled order."""
    name = directory.name
    files = samples.write_ct_series(
        directory, n=n, rows=16, cols=16, patient_id=name, patient_name=f"{name}^Conf"
    )
    for i, f in enumerate(files):
        ds = dcmread(f)
        mutate(i, ds)
        ds.save_as(f)
    random.Random(3).shuffle(files)
    done = storescu("127.0.0.1", server.port, server.ae_title, files)
    assert done.returncode == 0, done.stderr[-2000:]
    return str(dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)


@pytest.mark.parametrize("key", ["study_date", "birth_date"])
@pytest.mark.parametrize("value", ["garbage", "2024-13-45", "20241231-20240101", "2024013"])
def test_invalid_date_filter_is_a_400(api: LucentClient, key: str, value: str) -> None:
    """A typo in a date used to answer 200 with no studies: indistinguishable from none."""
    with pytest.raises(ApiError) as err:
        api.studies_page(**{key: value})
    assert err.value.status == 400
    assert key in err.value.detail


@pytest.mark.parametrize("value", ["20240101", "2024-01-01", "20240101-", "-20241231", "*"])
def test_valid_date_filters_still_answer(api: LucentClient, value: str) -> None:
    assert api.studies_page(study_date=value).total is not None
    api.patients(birth_date=value)


def test_volume_of_mixed_orientations_is_refused(
    server: LucentServer, api: LucentClient, tmp_path: Path
) -> None:
    """One sagittal slice in an axial series was stacked into the volume with the axial IOP."""

    def one_sagittal(i: int, ds: Dataset) -> None:
        if i == 3:
            ds.ImageOrientationPatient = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]

    series_uid = _send_series(server, tmp_path / "MIXEDIOP", one_sagittal)
    for call in (api.geometry, api.volume):
        with pytest.raises(ApiError) as err:
            call(series_uid)
        assert err.value.status == 409
        assert "orientation" in err.value.detail


def test_volume_of_shuffled_slices_is_sorted_along_the_normal(
    server: LucentServer, api: LucentClient, tmp_path: Path
) -> None:
    series_uid = _send_series(server, tmp_path / "SHUFFLED", lambda i, ds: None)
    volume = api.volume(series_uid)
    z = [s.image_position[2] for s in volume.geometry.slices if s.image_position]
    assert z == sorted(z) and len(z) == 6
    assert volume.geometry.slice_spacing == pytest.approx(1.0)
    by_uid = {i.sop_instance_uid: i for i in api.instances(series_uid)}
    for k, s in enumerate(volume.geometry.slices):
        assert s.sop_instance_uid in by_uid
        expected = dcmread_bytes(api.instance_file(s.sop_instance_uid)).pixel_array
        np.testing.assert_array_equal(volume.array[k], expected)


def dcmread_bytes(data: bytes) -> Dataset:
    """pydicom's own decode is the reference for every pixel check."""
    import io

    return dcmread(io.BytesIO(data))


def test_volume_of_multi_frame_only_series_is_refused(
    server: LucentServer, api: LucentClient, tmp_path: Path
) -> None:
    """A 4-frame instance gave a 1-slice 'volume' (its first frame) with no hint of the rest."""

    def four_frames(i: int, ds: Dataset) -> None:
        ds.NumberOfFrames = 4
        ds.PixelData = np.arange(4 * 16 * 16, dtype="<i2").tobytes()

    series_uid = _send_series(server, tmp_path / "MULTIFRAME", four_frames, n=1)
    sop_uid = api.instances(series_uid)[0].sop_instance_uid
    for call in (api.geometry, api.volume):
        with pytest.raises(ApiError) as err:
            call(series_uid)
        assert err.value.status == 409
        assert "multi-frame" in err.value.detail
    expected = dcmread_bytes(api.instance_file(sop_uid)).pixel_array[3]
    np.testing.assert_array_equal(api.frame(sop_uid, 4), expected)


def test_patients_page_has_a_total_and_a_stable_order(
    server: LucentServer, api: LucentClient, tmp_path: Path
) -> None:
    """Patients with the same name and ID from three issuers: one per page, each once, and
    the page says how many there are (``total`` was always empty)."""
    files = []
    for i, issuer in enumerate(("HOSP-A", "HOSP-B", "HOSP-C")):
        ds = samples.make_instance("1.2.840.10008.5.1.4.1.1.2", patient_id="SAMEID-1")
        ds.PatientName, ds.IssuerOfPatientID = "Same^Name", issuer
        files.append(samples.write(ds, tmp_path / f"{i}.dcm"))
    assert storescu("127.0.0.1", server.port, server.ae_title, files).returncode == 0
    pages = [api.patients_page(offset=i, limit=1, patient_id="SAMEID-1") for i in range(3)]
    assert [p.total for p in pages] == [3, 3, 3]
    assert sorted(p.items[0].issuer for p in pages) == ["HOSP-A", "HOSP-B", "HOSP-C"]
    assert api.patients_page(offset=3, limit=1, patient_id="SAMEID-1").items == []


def test_openapi_names_the_values_of_enumerated_fields(api: LucentClient) -> None:
    """An outside client read JobOut.state, PacsNodeResult.outcome and
    CommitmentOut.request_state as free strings: /openapi.json now lists the values."""
    document = api._request("GET", "/openapi.json").json()
    models = document["components"]["schemas"]

    def enum(model: str, field: str) -> set[str]:
        prop = models[model]["properties"][field]
        return set(prop.get("enum", ()))

    assert enum("JobOut", "state") == {
        "queued", "running", "waiting", "done", "partial", "failed", "cancelled", "interrupted",
    }  # fmt: skip
    assert enum("PacsNodeResult", "outcome") == {
        "success", "truncated", "failed", "cancelled", "no-association",
    }  # fmt: skip
    assert enum("CommitmentOut", "request_state") == {
        "pending", "answered", "superseded", "expired", "failed",
    }  # fmt: skip
    assert enum("CommitmentOut", "state") == {"pending", "committed", "failed", "unconfirmed"}
    assert {"ok", "refused", "timeout", "rejected", "unreachable", "tls"} <= enum("EchoOut", "kind")
    assert all(j.state == "done" for j in api.jobs(state="done"))
    with pytest.raises(ApiError) as err:
        api.jobs(state="finished")  # not a job state: was an empty 200
    assert err.value.status == 422 and "state" in err.value.detail


def test_enumerated_values_match_what_the_server_sets() -> None:
    """The Literal types are the contract; the server's own lists must stay inside them."""
    from typing import get_args

    from lucent.api import schemas
    from server.jobs import queue

    assert set(queue.FINAL_STATES) == set(schemas.JOB_FINAL_STATES)
    # "waiting": a commit job whose report is outstanding (ended its run, not final)
    not_final = {"queued", "running", "waiting"}
    assert set(schemas.JOB_FINAL_STATES) | not_final == set(get_args(schemas.JobState))
