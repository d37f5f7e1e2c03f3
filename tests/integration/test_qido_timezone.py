"""Timezone Offset From UTC (0008,0201) in search answers: QIDO-RS and C-FIND.

PS3.18 Tables 10.6.3-3 (study), 10.6.3-4 (series) and 10.6.3-5 (instance) list it among
the attributes a QIDO-RS answer includes when known; C-FIND SCUs ask for it as a return key
(PS3.4 C.6.1.1). The index did not keep it, so every answer had it empty. The data travel
by DCMTK storescu, the C-FIND answers come from DCMTK findscu.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from pydicom import dcmread
from sqlalchemy import text

from lucent.api import schemas
from lucent.api.client import LucentClient
from server.index import db
from tests.data import samples
from tests.integration.dicom_io import storescu
from tests.support.lucent import LucentServer
from tests.support.peers import dcmtk_tool, dicom_env

SCU = "TZFIND"  # findscu's calling AE title, a configured Q/R node
TZ = "00080201"


def _series(folder: Path, patient_id: str, offsets: list[str | None]) -> list[Path]:
    """A small CT series (one study), instance i with Timezone Offset From UTC
    ``offsets[i]`` (None: without the attribute)."""
    files = samples.write_ct_series(folder, n=len(offsets), rows=16, cols=16, patient_id=patient_id)
    for path, offset in zip(files, offsets, strict=True):
        ds = dcmread(path)
        if offset is not None:
            ds.TimezoneOffsetFromUTC = offset
        elif "TimezoneOffsetFromUTC" in ds:
            del ds.TimezoneOffsetFromUTC
        ds.save_as(path)
    return files


@pytest.fixture(scope="module")
def stored(
    server: LucentServer, api: LucentClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """Four studies of one series each, sent in instance order by storescu:

    - ``with``: every instance says +0100;
    - ``without``: no instance has the attribute;
    - ``later``: the first instance has none, the next ones -0500 (the series is known to
      the server's ingest cache after the first: the offset must still reach the rows);
    - ``invalid``: "UTC+1", not an offset: unknown.
    """
    folder = tmp_path_factory.mktemp("tz")
    plan: dict[str, list[str | None]] = {
        "with": ["+0100"] * 3,
        "without": [None] * 3,
        "later": [None, "-0500", "-0500"],
        "invalid": ["UTC+1"] * 2,
    }
    out: dict[str, Any] = {}
    for name, offsets in plan.items():
        files = _series(folder / name, f"TZ-{name.upper()}", offsets)
        sent = storescu("127.0.0.1", server.port, server.ae_title, files)
        assert sent.returncode == 0, sent.stderr[-2000:]
        first = dcmread(files[0], stop_before_pixels=True)
        out[name] = {
            "study": str(first.StudyInstanceUID),
            "series": str(first.SeriesInstanceUID),
            "patient": str(first.PatientID),
            "folder": folder,
        }
    node = api.add_node(
        schemas.RemoteNodeIn(name="tz-findscu", ae_title=SCU, host="127.0.0.1", port=104)
    )
    yield out
    api.delete_node(node.id)


def _offsets(answers: list[dict[str, Any]]) -> list[Any]:
    """The 00080201 element of each answer (None when left out)."""
    return [a.get(TZ) for a in answers]


KNOWN = {"with": "+0100", "later": "-0500"}


@pytest.mark.parametrize("name", ["with", "without", "later", "invalid"])
def test_qido_answers_timezone_offset_at_every_level(
    http: httpx.Client, stored: dict[str, Any], name: str
) -> None:
    """PS3.18 Tables 10.6.3-3..5: the offset is a default return attribute of studies,
    series and instances; a known one has its value exactly as received, an unknown one
    (absent, or not ±HHMM) is zero-length."""
    s = stored[name]
    expected = {"vr": "SH", "Value": [KNOWN[name]]} if name in KNOWN else {"vr": "SH"}
    studies = http.get("/studies", params={"StudyInstanceUID": s["study"]})
    series = http.get(f"/studies/{s['study']}/series")
    instances = http.get(f"/studies/{s['study']}/series/{s['series']}/instances")
    for r in (studies, series, instances):
        assert r.status_code == 200, r.text
    assert _offsets(studies.json()) == [expected]
    assert _offsets(series.json()) == [expected]
    # at instance level an instance's own, else its series': "later"'s first has none
    n = 2 if name == "invalid" else 3
    assert _offsets(instances.json()) == [expected] * n


def test_qido_matches_on_timezone_offset(http: httpx.Client, stored: dict[str, Any]) -> None:
    """A value we keep is a matching key too (single value matching, PS3.4 C.2.2.2.1): it
    used to be ignored with a Warning, answering every study."""
    r = http.get("/studies", params={"TimezoneOffsetFromUTC": "+0100", "PatientID": "TZ-*"})
    assert r.status_code == 200, r.text
    assert "Warning" not in r.headers
    assert [a["0020000D"]["Value"][0] for a in r.json()] == [stored["with"]["study"]]


def _findscu(server: LucentServer, folder: Path, level: str, *keys: str) -> list[Any]:
    out = folder / f"find-{level}-{len(list(folder.glob('find-*')))}"
    out.mkdir()
    done = subprocess.run(
        [dcmtk_tool("findscu"), "-v", "-aet", SCU, "-aec", server.ae_title, "-S",
         "-k", f"QueryRetrieveLevel={level}", *[a for k in keys for a in ("-k", k)],
         "-X", "-od", str(out), "127.0.0.1", str(server.port)],
        capture_output=True, text=True, env=dicom_env(True), timeout=60,
    )  # fmt: skip
    assert done.returncode == 0 and "Success" in done.stdout + done.stderr, done.stderr[-2000:]
    return [dcmread(f) for f in sorted(out.glob("rsp*.dcm"))]


def _value(answer: Any) -> str:
    """The answer's TimezoneOffsetFromUTC ('' when zero-length); the key must be there."""
    assert "TimezoneOffsetFromUTC" in answer
    return str(answer.TimezoneOffsetFromUTC or "")


def test_findscu_returns_timezone_offset(server: LucentServer, stored: dict[str, Any]) -> None:
    """PS3.4 C.6.1.1: the return key TimezoneOffsetFromUTC carries the study's offset at
    STUDY level, the series' at SERIES level and the instance's at IMAGE level; empty
    where unknown."""
    folder = stored["with"]["folder"]
    for name in ("with", "without"):
        s = stored[name]
        [study] = _findscu(
            server, folder, "STUDY", f"StudyInstanceUID={s['study']}", "TimezoneOffsetFromUTC"
        )
        assert _value(study) == KNOWN.get(name, "")
        [series] = _findscu(
            server, folder, "SERIES", f"StudyInstanceUID={s['study']}",
            f"SeriesInstanceUID={s['series']}", "TimezoneOffsetFromUTC",
        )  # fmt: skip
        assert _value(series) == KNOWN.get(name, "")
        images = _findscu(
            server, folder, "IMAGE", f"StudyInstanceUID={s['study']}",
            f"SeriesInstanceUID={s['series']}", "SOPInstanceUID", "TimezoneOffsetFromUTC",
        )  # fmt: skip
        assert [_value(i) for i in images] == [KNOWN.get(name, "")] * 3


def test_index_of_0013_migrates_with_unknown_offsets(tmp_path: Path) -> None:
    """Migration 0014 adds the columns to an index that holds studies and series: their
    offset is "" (unknown, no backfill); downgrading drops the columns again."""
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    engine = db.make_engine(url)
    cfg = db.alembic_config(url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0013")
        conn.execute(
            text(
                "INSERT INTO patients (id, patient_id, issuer, name, name_folded, birth_date,"
                " sex, created_at) VALUES (1, 'OLD', '', '', '', '', '', CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO studies (id, patient_pk, study_uid, study_id, study_date,"
                " study_time, description, accession_number, referring_physician,"
                " requesting_service, pool, created_at, updated_at) VALUES (1, 1, '1.2.3', '',"
                " '', '', '', '', '', '', 'DEFAULT', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO series (study_pk, series_uid, modality, description, body_part,"
                " frame_of_reference_uid, created_at, updated_at) VALUES (1, '1.2.3.4', 'CT',"
                " '', '', '', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
    db.migrate(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT timezone_offset FROM studies")).scalars().all() == [""]
        assert conn.execute(text("SELECT timezone_offset FROM series")).scalars().all() == [""]
    with engine.connect() as conn:  # foreign keys off, as db.migrate has them for batch mode
        conn.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
        with conn.begin():
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0013")
    with engine.connect() as conn:
        for table in ("studies", "series"):
            columns = {r[1] for r in conn.exec_driver_sql(f"PRAGMA table_info({table})")}
            assert "timezone_offset" not in columns
    engine.dispose()
