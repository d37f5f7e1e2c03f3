"""Patient's Name and Patient ID match alike through findscu, the API and QIDO-RS (probe 46).

An outside tester sent the same queries through DCMTK findscu (our C-FIND SCP), the API list
route (``/api/v1/studies?patient_name=...&patient_id=...``) and QIDO-RS, on SQLite and
PostgreSQL:

- the API compared the alphabetic component group alone: "Yamada^Tarou=Δημήτρης^Γ" found
  "Yamada^Tarou=山田^太郎=やまだ^たろう", "*=Nomatch*" every study (PS3.5 6.2.1);
- the API found nothing for the Patient ID "SP ID " (trailing spaces are padding, PS3.5 6.2);
- "SMITH^JOHN^^^" found "SMITH^JOHN" on no channel: trailing empty components and groups
  may be omitted (PS3.5 6.2.1), so both are one name.

Every channel runs ``server.index.queries.match_pn``; the stored data travel by storescu.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import dcmread

from lucent.api import schemas
from tests.data import samples
from tests.integration.dicom_io import storescu
from tests.support.lucent import LucentServer
from tests.support.peers import dcmtk_tool, dicom_env
from tests.support.postgres import TemporaryPostgres, postgres_available

CT = "1.2.840.10008.5.1.4.1.1.2"
SCU = "PROBE46"  # findscu's calling AE title, a configured Q/R node

JP, GR, SMITH, JONES = "PN46-JP", "PN46-GR", "SP ID", "PN46-JONES"
#: Patient ID -> (Patient's Name as sent, Specific Character Set of the instance)
PATIENTS: dict[str, tuple[str, Any]] = {
    JP: ("Yamada^Tarou=山田^太郎=やまだ^たろう", ["", "ISO 2022 IR 87"]),  # PS3.5 H.3.1
    GR: ("Nobody=Νίκος", "ISO_IR 192"),
    SMITH: ("SMITH^JOHN", None),
    JONES: ("JONES^ANN^^^", None),  # archived with its trailing delimiters
}
CHANNELS = ("findscu", "api", "qido")


class Archive:
    def __init__(self, server: LucentServer, folder: Path) -> None:
        self.server = server
        self.folder = folder
        self.api = server.client()
        self.http = httpx.Client(
            base_url=server.api_url, headers={"Authorization": f"Bearer {self.api.token}"}
        )
        self._runs = 0

    def found(self, channel: str, name: str = "", patient_id: str = "", **extra: str) -> set[str]:
        """Patient IDs of the studies ``channel`` answers for these keys."""
        if channel == "api":
            params = {"patient_name": name, "patient_id": patient_id, "limit": "1000", **extra}
            r = self.http.get("/api/v1/studies", params=params)
            assert r.status_code == 200, r.text
            page = schemas.Page[schemas.StudyOut].model_validate(r.json())
            assert page.total == len(page.items)
            return {s.patient_id for s in page.items}
        if channel == "qido":
            params = {"PatientName": name, "PatientID": patient_id, **extra}
            r = self.http.get("/dicom-web/studies", params={k: v for k, v in params.items() if v})
            assert r.status_code == 200, r.text
            return {s["00100020"]["Value"][0] for s in r.json()}
        return self._findscu(name, patient_id)

    def _findscu(self, name: str, patient_id: str) -> set[str]:
        self._runs += 1
        out = self.folder / f"find-{self._runs}"
        out.mkdir()
        keys = ["QueryRetrieveLevel=STUDY", "SpecificCharacterSet=ISO_IR 192",
                "StudyInstanceUID", f"PatientName={name}" if name else "PatientName",
                f"PatientID={patient_id}" if patient_id else "PatientID"]  # fmt: skip
        done = subprocess.run(
            [dcmtk_tool("findscu"), "-v", "-aet", SCU, "-aec", self.server.ae_title, "-S",
             *[a for k in keys for a in ("-k", k)], "-X", "-od", str(out),
             "127.0.0.1", str(self.server.port)],
            capture_output=True, text=True, env=dicom_env(True), timeout=60,
        )  # fmt: skip
        assert done.returncode == 0 and "Success" in done.stdout + done.stderr, done.stderr[-2000:]
        return {str(dcmread(f).PatientID) for f in sorted(out.glob("rsp*.dcm"))}


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def archive(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Archive]:
    folder = tmp_path_factory.mktemp(f"probe46-{request.param}")
    pg = None
    settings: dict[str, dict[str, Any]] = {}
    if request.param == "postgres":
        if not postgres_available():
            pytest.fail("PostgreSQL is not installed: run scripts/setup.sh")
        pg = TemporaryPostgres()
        settings["index"] = {"database_url": pg.__enter__()}
    try:
        with LucentServer(folder / "srv", settings=settings) as server:
            files = []
            for patient_id, (name, charset) in PATIENTS.items():
                ds = samples.make_instance(CT, patient_id=patient_id, patient_name=name)
                if charset:
                    ds.SpecificCharacterSet = charset
                files.append(samples.write(ds, folder / f"{len(files)}.dcm"))
            sent = storescu("127.0.0.1", server.port, server.ae_title, files)
            assert sent.returncode == 0, sent.stderr[-2000:]
            archive = Archive(server, folder)
            archive.api.add_node(
                schemas.RemoteNodeIn(name="probe46", ae_title=SCU, host="127.0.0.1", port=104)
            )
            stored = {s.patient_id: s.patient_name for s in archive.api.studies(limit=1000)}
            assert stored == {pid: name for pid, (name, _) in PATIENTS.items()}
            yield archive
            archive.http.close()
            archive.api.close()
    finally:
        if pg is not None:
            pg.__exit__(None, None, None)


def _mismatches(
    archive: Archive, cases: list[tuple[dict[str, str], set[str]]], channels: tuple[str, ...]
) -> list[str]:
    wrong = []
    for keys, expected in cases:
        for channel in channels:
            got = archive.found(channel, **keys)
            if got != expected:
                wrong.append(f"{channel} {keys}: {sorted(got)}, expected {sorted(expected)}")
    return wrong


def test_component_groups_match_alike_on_every_channel(archive: Archive) -> None:
    """PS3.5 6.2.1: a pattern naming groups ("=") is matched group by group, as the C-FIND
    SCP matched it; the API compared the alphabetic group alone (and "*" of it: all)."""
    cases = [
        ({"name": "Yamada^Tarou=Δημήτρης^Γ"}, set()),
        ({"name": "*=Nomatch*"}, set()),
        ({"name": "*=山田*"}, {JP}),
        ({"name": "Nobody=X"}, set()),
        ({"name": "Nobody=Νίκος"}, {GR}),
        ({"name": "Yamada^Tarou=山田^太郎=やまだ^たろう"}, {JP}),
        ({"name": "Yamada^Tarou"}, {JP}),  # one group: the alphabetic one ...
        ({"name": "やまだ^たろう"}, {JP}),  # ... or, not ASCII, any
    ]
    wrong = _mismatches(archive, cases, CHANNELS)
    assert not wrong, "\n".join(wrong)


def test_trailing_empty_components_and_groups_are_not_significant(archive: Archive) -> None:
    """PS3.5 6.2.1: trailing empty components and component groups may be omitted, so
    "SMITH^JOHN^^^" is "SMITH^JOHN" (found on no channel before), with wildcards too, and a
    name archived as "JONES^ANN^^^" is found as "JONES^ANN"."""
    cases = [
        ({"name": "SMITH^JOHN^^^"}, {SMITH}),
        ({"name": "SMITH^J*^^"}, {SMITH}),
        ({"name": "SMITH^JOHN=="}, {SMITH}),
        ({"name": "SMITH^JOHN^^^=^^"}, {SMITH}),
        ({"name": "JONES^ANN"}, {JONES}),
        ({"name": "JONES^ANN^"}, {JONES}),
        ({"name": "JON?S^ANN"}, {JONES}),
        ({"name": "Yamada^Tarou^^=山田^太郎^=やまだ^たろう^^^"}, {JP}),
        ({"name": "やまだ^たろう^^"}, {JP}),
    ]
    wrong = _mismatches(archive, cases, CHANNELS)
    assert not wrong, "\n".join(wrong)


def test_trailing_spaces_of_a_patient_id_are_padding(archive: Archive) -> None:
    """PS3.5 6.2: "SP ID " is the Patient ID "SP ID" (the API found nothing, findscu and
    QIDO-RS the patient); the space inside stays significant."""
    cases = [
        ({"patient_id": "SP ID "}, {SMITH}),
        ({"patient_id": "SP ID"}, {SMITH}),
        ({"patient_id": "SP*  "}, {SMITH}),
        ({"patient_id": "SPID "}, set()),
    ]
    wrong = _mismatches(archive, cases, CHANNELS)
    assert not wrong, "\n".join(wrong)


def test_the_case_insensitive_switch_applies_to_every_group(archive: Archive) -> None:
    """The API's ``case_insensitive`` (its default) and QIDO-RS ``fuzzymatching`` fold every
    component group; the API folded the alphabetic group alone."""
    folded = [
        ({"name": "yamada^tarou=山田^太郎=やまだ^たろう"}, {JP}),
        ({"name": "nobody=νίκος"}, {GR}),
        ({"name": "*=νίκος"}, {GR}),
        ({"name": "*=NOMATCH*"}, set()),
        ({"name": "smith^john^^"}, {SMITH}),
        ({"name": "smith"}, {SMITH}),  # the API's prefix search of a plain word
    ]
    wrong = _mismatches(archive, folded, ("api",))
    fuzzy = [({**k, "fuzzymatching": "true"}, ids) for k, ids in folded[:-1]]
    wrong += _mismatches(archive, fuzzy, ("qido",))
    exact = [({**k, "case_insensitive": "false"}, set()) for k, _ in folded[:-1]]
    wrong += _mismatches(archive, exact, ("api",))
    assert not wrong, "\n".join(wrong)
