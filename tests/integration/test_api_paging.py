"""Paging of /api/v1/studies against a real server: one ordered list of "non-conformant data"
entries and archived studies, paged as a whole (a page was longer than ``limit`` by its
placeholder entries, and hidden studies were removed after paging, so a page could come
back short while more existed and ``total`` counted what the user never sees)."""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread
from pydicom.uid import generate_uid

from lucent.api.client import LucentClient
from tests.data import samples
from tests.integration.dicom_io import storescu
from tests.support.lucent import LucentServer

PATIENT = "PAGING-1"


def _send_studies(server: LucentServer, folder: Path, studies: int, refused: int) -> None:
    """``studies`` one-instance studies, and ``refused`` studies never archived, each with
    two refused instances (Rows removed: refused A900, filed as placeholders under the same
    patient; one entry per study however many were refused)."""
    files = []
    refused_study = ""
    for i in range(studies + 2 * refused):
        (path,) = samples.write_ct_series(
            folder / str(i), n=1, rows=8, cols=8, patient_id=PATIENT, patient_name="Paging^Test"
        )
        ds = dcmread(path)
        ds.StudyInstanceUID, ds.StudyDate = generate_uid(), f"202401{10 + i:02d}"
        if i >= studies:
            del ds.Rows
            if (i - studies) % 2:
                ds.StudyInstanceUID = refused_study
            refused_study = ds.StudyInstanceUID
        ds.save_as(path)
        files.append(path)
    done = storescu("127.0.0.1", server.port, server.ae_title, files, "--no-halt")
    assert (
        done.stdout.count("Received Store Response (Success)")
        + done.stderr.count("Received Store Response (Success)")
        == studies
    ), done.stderr[-2000:]


def _all_pages(api: LucentClient, limit: int) -> tuple[list[list[str]], set[int]]:
    pages: list[list[str]] = []
    totals: set[int] = set()
    offset = 0
    while True:
        page = api.studies_page(offset=offset, limit=limit, patient_id=PATIENT)
        totals.add(page.total or 0)
        if not page.items:
            return pages, totals
        assert len(page.items) <= limit
        pages.append([s.study_uid + (" (refused)" if s.placeholder else "") for s in page.items])
        offset += limit


def test_pages_hold_limit_entries_count_placeholders_and_leave_hidden_studies_out(
    fresh_server: LucentServer, tmp_path: Path
) -> None:
    fresh_server.start()
    _send_studies(fresh_server, tmp_path, studies=5, refused=2)
    api = fresh_server.client()
    pages, totals = _all_pages(api, limit=2)
    entries = [e for page in pages for e in page]
    assert totals == {7} and len(entries) == 7 == len(set(entries))
    assert [len(p) for p in pages] == [2, 2, 2, 1]
    assert sum(e.endswith("(refused)") for e in entries) == 2
    hidden = next(e for e in entries if not e.endswith("(refused)"))
    api.hide("study", hidden)
    pages, totals = _all_pages(api, limit=2)
    entries = [e for page in pages for e in page]
    assert totals == {6} and len(entries) == 6 and hidden not in entries
    assert [len(p) for p in pages] == [2, 2, 2]  # no short page while more exist
