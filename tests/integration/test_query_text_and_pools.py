"""Text matching beyond ASCII and pool-restricted patient lists, on SQLite and PostgreSQL.

Outside probe: "Schädel nativ" typed exactly found nothing (descriptions and referring
physicians were folded by the database, which folds ASCII only, and the pattern by Python);
a user with rights on one pool did not see a patient known there only from refused data.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO

from tests.integration.test_accounts_support import AppUnderTest, ct_bytes, make_app
from tests.support.postgres import TemporaryPostgres, postgres_available

POOLS = [
    {"name": "DEFAULT", "ae_title": "LUCENT", "port": 0},
    {"name": "ONCO", "ae_title": "LUCENT_ONCO", "port": 0},
]
STUDY = "1.2.826.0.1.3680043.10.1455.7.1"
FUSS = "1.2.826.0.1.3680043.10.1455.7.2"


def _refused(tmp: Path, patient_id: str) -> bytes:
    """A CT whose pixel data do not fit Rows x Columns: refused, a placeholder appears."""
    ds = dcmread(DicomBytesIO(ct_bytes(tmp, patient_id=patient_id)))
    ds.Rows = 64
    out = DicomBytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _os_locale(name: str) -> bool:
    done = subprocess.run(["locale", "-a"], capture_output=True, text=True)
    return name.lower().replace("-", "") in done.stdout.lower().replace("-", "")


@pytest.fixture(
    scope="module",
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("postgres-en_US", marks=pytest.mark.postgres),
    ],
)
def app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp(f"text-{request.param}")
    sections: dict[str, dict[str, Any]] = {}
    pg = None
    if request.param.startswith("postgres"):
        if not postgres_available():
            pytest.fail("PostgreSQL is not installed: run scripts/setup.sh")
        if request.param.endswith("en_US") and not _os_locale("en_US.utf8"):
            pytest.skip("the en_US.utf8 locale is not installed on this machine")
        pg = TemporaryPostgres()
        url = pg.__enter__()
        if request.param.endswith("en_US"):  # the usual collation of a Debian installation
            url = pg.create_database("lucent_en", locale="en_US.utf8")
        sections["index"] = {"database_url": url}
    try:
        with make_app(tmp, sections, pools=POOLS) as app:
            ds = dcmread(DicomBytesIO(ct_bytes(tmp, patient_id="TXT-1", study_uid=STUDY)))
            ds.SpecificCharacterSet = "ISO_IR 192"
            ds.StudyDescription = "Schädel nativ"
            ds.SeriesDescription = "Kopf ärztlich"
            ds.ReferringPhysicianName = "Bäcker^Hans"
            ds.StudyTime = "083015"
            out = DicomBytesIO()
            ds.save_as(out, enforce_file_format=True)
            assert app.store(out.getvalue()) == 0
            fuss = dcmread(DicomBytesIO(ct_bytes(tmp, patient_id="TXT-2", study_uid=FUSS)))
            fuss.SpecificCharacterSet = "ISO_IR 192"
            fuss.StudyDescription = "Fuß rechts"
            fuss.StudyTime = "090000"
            out = DicomBytesIO()
            fuss.save_as(out, enforce_file_format=True)
            assert app.store(out.getvalue()) == 0
            assert app.store(ct_bytes(tmp, patient_id="ONC-1"), pool="ONCO") == 0
            assert app.store(_refused(tmp, "REFUSED-HERE")) != 0
            assert app.store(_refused(tmp, "REFUSED-ONCO"), pool="ONCO") != 0
            app.add_user("rad-def", "radiologist", {"DEFAULT": ["read"]})
            yield app
    finally:
        if pg is not None:
            pg.__exit__(None, None, None)


def _get(app: AppUnderTest, path: str, **params: str) -> Any:
    r = app.http.get(path, params=params, headers=app.admin())
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("pattern", ["Schädel nativ", "schädel NATIV", "SCHÄDEL*", "*ÄDEL NA*"])
def test_study_description_matches_non_ascii_regardless_of_case(
    app: AppUnderTest, pattern: str
) -> None:
    found = _get(app, "/api/v1/studies", description=pattern)["items"]
    assert [s["study_uid"] for s in found] == [STUDY]


def test_qido_referring_physician_and_series_description_beyond_ascii(app: AppUnderTest) -> None:
    for name in ("Bäcker^Hans", "bäcker^hans"):
        studies = _get(app, "/dicom-web/studies", ReferringPhysicianName=name)
        assert [s["0020000D"]["Value"][0] for s in studies] == [STUDY], name
    series = _get(app, "/dicom-web/series", SeriesDescription="Kopf ärztlich")
    assert len(series) == 1 and series[0]["0020000D"]["Value"][0] == STUDY


def test_pool_user_lists_a_patient_known_there_only_from_refused_data(app: AppUnderTest) -> None:
    r = app.http.get("/api/v1/patients", headers=app.token("rad-def"))
    assert r.status_code == 200, r.text
    rows = {p["patient_id"]: p for p in r.json()["items"]}
    assert set(rows) == {"TXT-1", "TXT-2", "REFUSED-HERE"}
    assert rows["REFUSED-HERE"]["non_conformant"] == 1
    assert rows["REFUSED-HERE"]["study_count"] == 0
    assert rows["TXT-1"]["study_count"] == 1
    admin = {p["patient_id"] for p in _get(app, "/api/v1/patients")["items"]}
    assert {"ONC-1", "REFUSED-ONCO"} <= admin


@pytest.mark.parametrize("pattern", ["Fuß rechts", "fuß*", "FUSS RECHTS"])
def test_sharp_s_folds_like_python(app: AppUnderTest, pattern: str) -> None:
    """Python folds "ß" to "SS": the database side must fold alike (it kept "ß")."""
    found = _get(app, "/api/v1/studies", description=pattern)["items"]
    assert [s["study_uid"] for s in found] == [FUSS]


@pytest.mark.parametrize(
    ("time", "expected"),
    [("0830", {STUDY}), ("08", {STUDY}), ("0800-0900", {STUDY, FUSS}), ("-0900", {STUDY, FUSS}),
     ("0900-", {FUSS}), ("083015", {STUDY})],
)  # fmt: skip
def test_study_time_ranges_do_not_depend_on_the_collation(
    app: AppUnderTest, time: str, expected: set[str]
) -> None:
    """Range bounds end in U+FFFF, which an en_US collation sorts as nothing: "0830" found
    no study at 08:30:15 and 0800-0900 missed 09:00:00 on such a PostgreSQL."""
    found = _get(app, "/dicom-web/studies", StudyTime=time)
    assert {s["0020000D"]["Value"][0] for s in found} & {STUDY, FUSS} == expected


@pytest.mark.parametrize(
    ("prefix", "successor"),
    [("0830", "0831"), ("0859", "086"), ("083015.5", "083015.6"), ("20241231", "20241232"),
     ("9999", None)],
)  # fmt: skip
def test_range_upper_bounds_are_prefix_successors(prefix: str, successor: str | None) -> None:
    """No sentinel character and no COLLATE on the column (which kept PostgreSQL from using
    the study_date index: a sequential scan of every study for each date range)."""
    from server.index.queries import _successor

    assert _successor(prefix) == successor


def test_folding_without_icu_falls_back_to_the_database_upper() -> None:
    """A PostgreSQL built without ICU has no "und-x-icu": every case-insensitive search
    would fail (review); server.index.db notes it at first connect."""
    from sqlalchemy import column
    from sqlalchemy.dialects import postgresql

    from server.index.folding import folded

    dialect = postgresql.dialect()
    assert 'COLLATE "und-x-icu"' in str(folded(column("d")).compile(dialect=dialect))
    dialect.lucent_icu = False  # type: ignore[attr-defined]
    # İ and ı fold to i first, as fold_text does (Turkish names)
    assert str(folded(column("d")).compile(dialect=dialect)) == "upper(translate(d, 'İı', 'ii'))"
