"""DICOMweb answers an outside tester found wrong (probe 57), against the real server.

``/rendered`` of an Encapsulated PDF was 406 "no pixel data and is not a report" for every
Accept, application/pdf included; series-level QIDO dropped included attributes that the
instances hold (Series Date, Manufacturer...) without a Warning; ``fuzzymatching=maybe``
was taken as false; ``frames/0``, ``frames/-1`` were 404 and ``frames/1,,2`` 200.
"""

from __future__ import annotations

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from tests.data import samples

CT = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
PDF = "1.2.840.10008.5.1.4.1.1.104.1"
CDA = "1.2.840.10008.5.1.4.1.1.104.2"
#: The probe's document: odd length, so stored with a pad byte after %%EOF.
PROBE_PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[3 0 R]"
    b"/Count 1>>endobj\n3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 200]>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)


def _path(ds: Dataset) -> str:
    return (
        f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )


@pytest.fixture(scope="module")
def documents(web: DICOMwebClient) -> dict[str, Dataset]:
    """An Encapsulated PDF as the probe wrote it (pad byte, Encapsulated Document Length
    without it), one as our samples write it (length with the pad) and a CDA document."""
    probe = samples.make_instance(PDF, patient_id="P57-DOC")
    assert len(PROBE_PDF) % 2 == 1
    probe.EncapsulatedDocument = PROBE_PDF + b"\0"
    probe.EncapsulatedDocumentLength = len(PROBE_PDF)
    ours = samples.make_instance(PDF, patient_id="P57-DOC")
    cda = samples.make_instance(CDA, patient_id="P57-DOC")
    web.store_instances([probe, ours, cda])
    return {"probe": probe, "ours": ours, "cda": cda}


def test_rendered_encapsulated_pdf_is_the_document(
    http: httpx.Client, documents: dict[str, Dataset]
) -> None:
    """PS3.18 8.7.4 (Table 8.7.4-1): the rendered form of an encapsulated PDF is the PDF,
    application/pdf, also for no Accept and */*; the pad byte after %%EOF is not part of
    it; other media types are 406 naming application/pdf (all were 406, probe 57)."""
    url = _path(documents["probe"]) + "/rendered"
    for accept in ("application/pdf", "*/*", "application/*", None):
        headers = {"Accept": accept} if accept else {}
        r = http.get(url, headers=headers)
        assert r.status_code == 200, (accept, r.status_code, r.text)
        assert r.headers["content-type"] == "application/pdf", accept
        assert r.content == PROBE_PDF, accept
    for accept in ("text/html", "text/plain", "image/jpeg"):
        r = http.get(url, headers={"Accept": accept})
        assert r.status_code == 406, (accept, r.status_code)
        assert "application/pdf" in r.json()["detail"], accept
    ours = http.get(_path(documents["ours"]) + "/rendered", headers={"Accept": "application/pdf"})
    assert ours.status_code == 200
    assert ours.content == samples.tiny_pdf()  # stored with a pad counted in its length
    assert ours.content.rstrip().endswith(b"%%EOF")


def test_rendered_cda_is_its_xml(http: httpx.Client, documents: dict[str, Dataset]) -> None:
    """An encapsulated CDA renders as its XML (text/xml); a PDF is not offered for it."""
    url = _path(documents["cda"]) + "/rendered"
    r = http.get(url, headers={"Accept": "text/xml"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/xml")
    assert r.content.startswith(b"<?xml") and b"<ClinicalDocument" in r.content
    assert http.get(url, headers={"Accept": "application/pdf"}).status_code == 406


@pytest.fixture(scope="module")
def ct_series(web: DICOMwebClient) -> list[Dataset]:
    """One CT series of two instances with series-level values the index does not keep,
    and an instance-level one (Slice Thickness) that differs between them."""
    study, series = generate_uid(), generate_uid()
    out = []
    for i in range(2):
        ds = samples.make_instance(
            CT, patient_id="P57-SERIES", study_uid=study, series_uid=series, instance_number=i + 1
        )
        ds.SeriesDate, ds.SeriesTime = "20240115", "101010"
        ds.Manufacturer = "Probe57"
        ds.ProtocolName = "Head routine"
        ds.PerformedProcedureStepStartDate = "20240115"
        ds.SliceThickness = str(2.5 + i)
        ds.PatientWeight = "70"
        out.append(ds)
    web.store_instances(out)
    return out


def _values(item: dict[str, dict[str, object]], tag: str) -> object:
    return item.get(tag, {}).get("Value")


def test_series_search_returns_included_series_attributes(
    http: httpx.Client, ct_series: list[Dataset]
) -> None:
    """PS3.18 8.3.4.3 / 10.6.3: series-level includefield gives the series' values, taken
    from an instance of the series (they were dropped silently while instance-level
    search returned them, probe 57), at /studies/{A}/series and at /series."""
    ds = ct_series[0]
    study, series = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
    r = http.get(
        f"/studies/{study}/series?SeriesInstanceUID={series}"
        "&includefield=SeriesDate&includefield=Manufacturer"
    )
    assert r.status_code == 200
    [found] = r.json()
    assert _values(found, "00080021") == ["20240115"]  # Series Date
    assert _values(found, "00080070") == ["Probe57"]  # Manufacturer
    assert "warning" not in r.headers
    r = http.get(
        "/series",
        params={
            "StudyInstanceUID": study,
            "includefield": "ProtocolName,PerformedProcedureStepStartDate,SeriesTime",
        },
    )
    [found] = r.json()
    assert _values(found, "00181030") == ["Head routine"]
    assert _values(found, "00400244") == ["20240115"]
    assert _values(found, "00080031") == ["101010"]


def test_series_search_warns_of_what_it_cannot_include(
    http: httpx.Client, ct_series: list[Dataset]
) -> None:
    """An instance's own attribute (Slice Thickness differs per instance) is no series
    value: left out with a Warning naming it, as for matching keys (PS3.18 8.3.4.3). A
    study answer names what it cannot give the same way."""
    study = str(ct_series[0].StudyInstanceUID)
    r = http.get(f"/studies/{study}/series", params={"includefield": "SliceThickness,Manufacturer"})
    [found] = r.json()
    assert "00180050" not in found
    assert _values(found, "00080070") == ["Probe57"]
    assert r.headers["warning"].startswith("299 ")
    assert "SliceThickness" in r.headers["warning"]
    assert "Manufacturer" not in r.headers["warning"]
    r = http.get("/studies", params={"StudyInstanceUID": study, "includefield": "PatientWeight"})
    [at_study] = r.json()
    assert "00101030" not in at_study
    assert "PatientWeight" in r.headers["warning"]


def test_series_search_includefield_all(http: httpx.Client, ct_series: list[Dataset]) -> None:
    """``includefield=all`` at series level adds the series' (and its study's and
    patient's) attributes of an instance of it, none of an instance's own (it gave 14
    attributes, probe 57)."""
    study = str(ct_series[0].StudyInstanceUID)
    [found] = http.get(f"/studies/{study}/series", params={"includefield": "all"}).json()
    assert _values(found, "00080021") == ["20240115"]
    assert _values(found, "00080070") == ["Probe57"]
    assert _values(found, "00181030") == ["Head routine"]
    assert _values(found, "00080080") == ["Lucent Test Clinic"]  # Institution Name
    assert _values(found, "00400244") == ["20240115"]
    for own in ("00180050", "00080018", "00200013", "00280010"):  # instance attributes
        assert own not in found, own
    assert len(found) > 20


def test_fuzzymatching_is_true_or_false(http: httpx.Client, ct_series: list[Dataset]) -> None:
    """PS3.18 8.3.4.2: fuzzymatching is true or false; another value is 400 naming it,
    as a bad limit is (it was taken as false: 200, probe 57)."""
    for value in ("maybe", "1", ""):
        r = http.get("/studies", params={"PatientID": "P57-SERIES", "fuzzymatching": value})
        assert r.status_code == 400, (value, r.status_code)
        assert "fuzzymatching" in r.json()["detail"]
    for value in ("true", "false", "TRUE"):
        r = http.get("/studies", params={"PatientID": "P57-SERIES", "fuzzymatching": value})
        assert r.status_code == 200, (value, r.text)
        assert len(r.json()) == 1


@pytest.fixture(scope="module")
def enhanced(web: DICOMwebClient) -> Dataset:
    """An enhanced MR of three frames."""
    ds = samples.make_instance(ENHANCED_MR, patient_id="P57-FRAMES", rows=32, cols=32)
    assert int(ds.NumberOfFrames) == 3
    web.store_instances([ds])
    return ds


@pytest.mark.parametrize("frames", ["0", "-1", "1,,2", "1,2,", ",1", "+1", "1,0", "1.5"])
def test_malformed_frame_list_is_400(http: httpx.Client, enhanced: Dataset, frames: str) -> None:
    """PS3.18 10.4.1 / 8.3.3.1: frame numbers are positive integers from 1; 0 and -1
    were 404 "does not exist" and an empty item was dropped (200 with 2 frames, probe
    57). Rendered and thumbnail frame resources read the list the same way."""
    octet = 'multipart/related; type="application/octet-stream"'
    base = _path(enhanced) + f"/frames/{frames}"
    r = http.get(base, headers={"Accept": octet})
    assert r.status_code == 400, (frames, r.status_code)
    assert "frame" in r.json()["detail"]
    assert http.get(base + "/rendered").status_code == 400, frames


def test_frame_beyond_the_instance_stays_404(http: httpx.Client, enhanced: Dataset) -> None:
    """A well-formed frame number beyond the frame count names no frame: 404."""
    octet = 'multipart/related; type="application/octet-stream"'
    assert http.get(_path(enhanced) + "/frames/1,4", headers={"Accept": octet}).status_code == 404
    r = http.get(_path(enhanced) + "/frames/1,3", headers={"Accept": octet})
    assert r.status_code == 200
